"""The lm-eval adapter: a local harness task through lm_eval.simple_evaluate gives the same scores as
llmkit's own runner; rolling log-likelihoods and generation go through the scorer and the engine."""

import json

import pytest

import llmkit
from eval_fixtures import make_checkpoint
from llmkit.eval.perplexity import score_texts
from llmkit.eval.runner import run_task
from llmkit.eval.taskfile import load_task

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import llmkit.eval.harness  # noqa: E402  (registers "llmkit")

ITEMS = [
    {"question": "Romeo, Romeo,", "choices": ["wherefore art thou", "床前明月光", "up"], "answer": 0},
    {"question": "举头望明月，", "choices": ["低头思故乡。", "the sun"], "answer": 0},
    {"question": "It is the east, and Juliet is", "choices": ["the sun.", "down", "疑是地上霜"], "answer": 0},
    {"question": "king queen", "choices": ["lord lady", "sword"], "answer": 1},
    {"question": "春眠不觉晓，", "choices": ["处处闻啼鸟。", "moon star sea"], "answer": 0},
    {"question": "But soft, what light", "choices": ["through yonder window", "春眠"], "answer": 0},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    ckpt = make_checkpoint(root / "ckpt")
    data = root / "items.jsonl"
    data.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ITEMS), encoding="utf-8")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "verse.yaml").write_text(
        "task: llmkit_verse\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n",
        encoding="utf-8",
    )
    return ckpt, data, tasks


def test_simple_evaluate_on_a_local_task_matches_llmkit_eval(setup, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ckpt, data, tasks = setup
    out = lm_eval.simple_evaluate(
        model="llmkit",
        model_args=f"pretrained={ckpt},device=cpu,batch_size=4",
        tasks=["llmkit_verse"],
        num_fewshot=0,
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        log_samples=True,
        bootstrap_iters=10,  # acc is a mean: lm-eval reports its closed-form standard error
    )
    harness = out["results"]["llmkit_verse"]
    lm = llmkit.load(ckpt, device="cpu", inference_only=True)
    ours = run_task(lm.model, lm.tokenizer, load_task(str(data)), details=True)
    assert harness["acc,none"] == pytest.approx(ours.metrics["acc"])
    assert harness["acc_norm,none"] == pytest.approx(ours.metrics["acc_norm"])
    assert harness["acc_stderr,none"] == pytest.approx(ours.metrics["acc_stderr"])
    for sample in out["samples"]["llmkit_verse"]:
        got = [r[0][0] for r in sample["resps"]]
        assert got == pytest.approx(ours.details[sample["doc_id"]]["loglikelihoods"], abs=1e-5)


def test_rolling_loglikelihood_and_generation_use_the_scorer_and_the_engine(setup):
    ckpt, _, _ = setup
    adapter = llmkit.eval.harness.LLMKitLM(str(ckpt), device="cpu")
    text = "But soft, what light through yonder window breaks? 床前明月光，疑是地上霜。" * 3
    (rolled,) = adapter.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    lm = adapter.loaded
    expect = score_texts(lm.model, lm.tokenizer, [text], stride=lm.config.max_position_embeddings)
    assert rolled == pytest.approx(-expect.nats, rel=1e-6)
    reqs = [
        Instance("generate_until", {}, ("ROMEO.", {"until": ["\n"], "max_gen_toks": 8}), 0),
        Instance("generate_until", {}, ("床前明月光，", {"until": ["。"], "max_gen_toks": 6}), 1),
    ]
    texts = adapter.generate_until(reqs)
    assert texts[0] == lm.generate("ROMEO.", max_new_tokens=8, temperature=0, stop=["\n"])
    assert texts[1] == lm.generate("床前明月光，", max_new_tokens=6, temperature=0, stop=["。"])


def test_registering_the_adapter_keeps_lm_evals_own_models():
    """lm-eval imports its built-in models only while its registry is empty: registering ``llmkit``
    first must not hide ``hf`` or ``local-completions`` from a later simple_evaluate."""
    from lm_eval.api.registry import get_model

    import llmkit.eval.harness  # noqa: F401

    assert get_model("llmkit").__name__ == "LLMKitLM"
    assert get_model("local-completions") and get_model("hf")
