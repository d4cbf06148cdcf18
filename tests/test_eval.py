"""Evaluation: bits per byte by hand, sliding windows, multiple choice against transformers, shots,
task files and their one-line errors, and `llmkit eval` end to end."""

import json
import math

import pytest
import torch
import transformers

import llmkit
from eval_fixtures import make_checkpoint
from llmkit.eval.perplexity import EvalError, rolling_requests, score_texts
from llmkit.eval.runner import build_context, encode_pair, run_task
from llmkit.eval.taskfile import load_task

TEXTS = ["But soft, what light? 床前明月光，疑是地上霜。", "O Romeo, Romeo!"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("eval") / "ckpt")


@pytest.fixture(scope="module")
def lm(ckpt):
    return llmkit.load(ckpt, device="cpu")


def test_bits_per_byte_equals_a_hand_computation(lm):
    got = score_texts(lm.model, lm.tokenizer, TEXTS)
    assert all(len(lm.tokenizer.encode(t)) < 128 for t in TEXTS)  # one window each
    nats, n_tokens = 0.0, 0
    for text in TEXTS:
        ids = torch.tensor([[lm.tokenizer.bos_id, *lm.tokenizer.encode(text)]])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(ids[:, :-1]).double(), -1)[0]
        nats -= logp.gather(-1, ids[0, 1:, None]).sum().item()
        n_tokens += ids.shape[1] - 1
    n_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    assert got.tokens == n_tokens and got.bytes == n_bytes == 22 + 36 + 15
    assert got.bits_per_byte == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(nats / n_tokens), rel=1e-5)


def test_sliding_window_equals_full_context_when_the_text_fits(lm):
    text = TEXTS[0]
    assert len(lm.tokenizer.encode(text)) < 128  # fits the model's context
    full = score_texts(lm.model, lm.tokenizer, [text])
    for window, stride in [(8, 3), (10, 10), (17, 5), (128, 32)]:
        slid = score_texts(lm.model, lm.tokenizer, [text], window=window, stride=stride, batch_size=3)
        assert slid.nats == pytest.approx(full.nats, rel=1e-5), (window, stride)


def test_windows_predict_every_token_once_and_long_texts_differ_from_a_cut_context(lm):
    ids = list(range(10, 30))
    reqs = rolling_requests(ids, [1], window=8, stride=5)
    assert [c for _, c in reqs] == [ids[:8], ids[8:13], ids[13:18], ids[18:20]]
    assert all(ctx == [1, *ids[: len(ctx) - 1]] for ctx, _ in reqs)
    long = " ".join(TEXTS * 6)
    assert len(lm.tokenizer.encode(long)) > 128
    wide = score_texts(lm.model, lm.tokenizer, [long], stride=96)
    narrow = score_texts(lm.model, lm.tokenizer, [long], stride=128)
    assert wide.tokens == narrow.tokens and wide.nats != pytest.approx(narrow.nats, rel=1e-6)


def _task_file(tmp_path, items, **spec):
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    path = tmp_path / "t.yaml"
    spec = {"name": "t", "data": "items.jsonl", **spec}
    path.write_text("".join(f"{k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in spec.items()), encoding="utf-8")
    return path


ITEMS = [
    {"question": "Romeo, Romeo,", "choices": ["wherefore art thou", "床前明月光", "up"], "answer": 0},
    {"question": "举头望明月，", "choices": ["低头思故乡。", "the sun"], "answer": 0},
    {"question": "It is the east, and Juliet is", "choices": ["the sun.", "down", "疑是地上霜"], "answer": 0},
    {"question": "king queen", "choices": ["lord lady", "sword"], "answer": 1},
    {"question": "春眠不觉晓，", "choices": ["处处闻啼鸟。", "moon star sea"], "answer": 0},
]


def test_multiple_choice_equals_summed_logprobs_from_transformers(tmp_path, ckpt, lm):
    task = load_task(str(_task_file(tmp_path, ITEMS, description="Verse.\n", template="Q: {question}\nA:")))
    hf = transformers.AutoModelForCausalLM.from_pretrained(ckpt).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    result = run_task(lm.model, lm.tokenizer, task, shots=2, seed=3, batch_size=4, details=True)
    for i, row in enumerate(result.details):
        context = build_context(task, i, 2, 3)
        assert context.startswith("Verse.\nQ: ") and context.endswith(f"Q: {ITEMS[i]['question']}\nA:")
        want = []
        for choice in ITEMS[i]["choices"]:
            ctx = [hf_tok.bos_token_id, *hf_tok(context, add_special_tokens=False).input_ids]
            cont = hf_tok(context + " " + choice, add_special_tokens=False).input_ids[len(ctx) - 1 :]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(hf(ids[:, :-1]).logits.double(), -1)[0, -len(cont) :]
            want.append(logp.gather(-1, torch.tensor(cont)[:, None]).sum().item())
        assert row["loglikelihoods"] == pytest.approx(want, abs=1e-4)
        assert row["acc"] == float(max(range(len(want)), key=want.__getitem__) == ITEMS[i]["answer"])
    accs = [r["acc"] for r in result.details]
    p = sum(accs) / len(accs)
    assert result.metrics["acc"] == pytest.approx(p)
    se = math.sqrt(sum((a - p) ** 2 for a in accs) / (len(accs) - 1) / len(accs))
    assert result.metrics["acc_stderr"] == pytest.approx(se, nan_ok=True)


def test_few_shot_prompts_are_deterministic_for_a_seed(tmp_path):
    task = load_task(str(_task_file(tmp_path, ITEMS)))
    a = [build_context(task, i, 3, seed=7) for i in range(5)]
    assert a == [build_context(task, i, 3, seed=7) for i in range(5)]
    assert a != [build_context(task, i, 3, seed=8) for i in range(5)]
    for i, context in enumerate(a):
        shots = context.split("\n\n")
        assert len(shots) == 4 and shots[-1] == ITEMS[i]["question"]
        assert all(not s.startswith(ITEMS[i]["question"] + " ") for s in shots[:-1])  # never the item itself


def test_encode_pair_moves_a_trailing_space_into_the_continuation(lm):
    ctx, cont = encode_pair(lm.tokenizer, "Romeo, Romeo, ", "wherefore")
    assert lm.tokenizer.decode(ctx[1:]) == "Romeo, Romeo," and lm.tokenizer.decode(cont) == " wherefore"


def test_loglikelihood_task_reports_greedy_match_and_answer_loss(tmp_path, lm):
    items = [{"question": "O Romeo,", "target": "Romeo"}, {"question": "床前明月", "target": "光"}]
    task = load_task(str(_task_file(tmp_path, items, kind="loglikelihood")))
    r = run_task(lm.model, lm.tokenizer, task)
    assert r.n == 2 and 0 <= r.metrics["acc"] <= 1 and r.metrics["answer_loss"] > 0


@pytest.mark.parametrize(
    "items,spec,needle",
    [
        ([{"question": "a", "answer": 0}], {}, "items.jsonl:1: missing field 'choices'"),
        ([{"question": "a", "choices": ["x", "y"], "answer": 2}], {}, "answer index 2 is out of range for 2 choices"),
        ([{"question": "a", "choices": ["x", "y"], "answer": "x"}], {}, "answer must be the index"),
        ([{"question": "a", "choices": ["x", "y"], "answer": 0}], {"template": "{prompt}"}, "missing field 'prompt'"),
        ([], {}, "zero items"),
        ([{"question": "a", "choices": ["x", "y"], "answer": 0}], {"kind": "essay"}, "kind 'essay'"),
    ],
)
def test_bad_task_files_are_one_line_errors(tmp_path, items, spec, needle):
    with pytest.raises(EvalError, match=None) as e:
        load_task(str(_task_file(tmp_path, items, **spec)))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_more_shots_than_examples(tmp_path, lm):
    task = load_task(str(_task_file(tmp_path, ITEMS)))
    with pytest.raises(EvalError, match="5 shots asked but only 4 other items"):
        run_task(lm.model, lm.tokenizer, task, shots=5)


def test_builtin_tasks_are_deterministic_and_teachable_by_context():
    copy = load_task("copy-pattern")
    assert copy.items == load_task("copy-pattern").items and len(copy.items) == 120
    item = copy.items[0]
    assert item["choices"][item["answer"]] + " ->" == item["question"]
    labels = load_task("label-map").items
    mapping = {}
    for it in labels:  # one fixed mapping: the same key always has the same label
        assert mapping.setdefault(it["question"], it["answer"]) == it["answer"]
    assert len(set(mapping.values())) == 2


def test_suite_tasks_through_the_task_runner_with_and_without_chain_of_thought(lm, monkeypatch):
    import llmkit.tasks.runner as runner
    from llmkit.eval.suite import run_suite_task
    from llmkit.tasks.base import final_line

    pools = []
    real = runner.evaluate_tasks

    def spy(*args, **kw):  # the real runner, with its shot pool recorded
        pools.append(kw["shot_pool"])
        return real(*args, **kw)

    monkeypatch.setattr(runner, "evaluate_tasks", spy)
    with_cot = run_suite_task(lm.model, lm.tokenizer, "word_problems", shots=2, cot=True, n=4)
    without = run_suite_task(lm.model, lm.tokenizer, "word_problems", shots=2, cot=False, n=4)
    assert with_cot["n"] == without["n"] == 4 and 0 <= without["acc"] <= 1
    assert any(ex.solution != final_line(ex.answer, ex.lang) for ex in pools[0])  # worked solutions
    assert all(ex.solution == final_line(ex.answer, ex.lang) for ex in pools[1])  # final answers only
    with pytest.raises(EvalError, match="--suite"):
        run_suite_task(lm.model, lm.tokenizer, "no-such-task")
