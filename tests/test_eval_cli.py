"""`llmkit eval`, `llmkit report` and `llmkit scaling` from the command line: real runs, one-line errors."""

import json

import pytest

from eval_fixtures import make_checkpoint
from llmkit.cli import main
from test_pipeline import cli, one_line_error


def in_process_error(capsys, *args) -> str:
    """Run the CLI in this process (no interpreter start-up) and return its one error line."""
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("evalcli") / "ckpt")


def test_eval_two_checkpoints_side_by_side_with_a_user_task_and_text(tmp_path, ckpt):
    other = make_checkpoint(tmp_path / "other", seed=1)
    task = tmp_path / "mine.jsonl"
    task.write_text(
        "".join(
            json.dumps({"question": q, "choices": c, "answer": 0}, ensure_ascii=False) + "\n"
            for q, c in [
                ("举头望明月，", ["低头思故乡。", "up"]),
                ("O Romeo,", ["Romeo", "床"]),
                ("king", ["queen", "夜"]),
            ]
        ),
        encoding="utf-8",
    )
    text = tmp_path / "verse.txt"
    text.write_text(
        "But soft, what light through yonder window breaks?\n床前明月光，疑是地上霜。\n" * 5, encoding="utf-8"
    )
    out = tmp_path / "out"
    r = cli(
        "eval",
        ckpt,
        other,
        "--task",
        task,
        "--task",
        "label-map",
        "--text",
        text,
        "--shots",
        "0",
        "2",
        "--limit",
        "10",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert [x["checkpoint"] for x in results] == [str(ckpt), str(other)]
    for x in results:
        assert x["text"]["" + str(text)]["bytes"] == len(text.read_text().encode())
        assert {(t["task"], t["shots"]) for t in x["tasks"]} == {
            ("mine", 0),
            ("mine", 2),
            ("label-map", 0),
            ("label-map", 2),
        }
    assert (out / "icl.png").is_file()
    assert "| mine (2-shot) acc |" in r.stdout and "bits/byte" in r.stdout


def test_eval_bad_input_is_one_line(tmp_path, ckpt, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "choices": ["x", "y"], "answer": 5}\n')
    one_line_error(cli("eval", ckpt, "--task", bad, "--out", tmp_path), "bad.jsonl:1", "out of range")
    line = in_process_error(capsys, "eval", ckpt, "--task", "nope", "--out", tmp_path)
    assert "unknown task 'nope'" in line and "copy-pattern" in line
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "zero items" in in_process_error(capsys, "eval", ckpt, "--task", empty, "--out", tmp_path)
    line = in_process_error(capsys, "eval", ckpt, "--task", "label-map", "--shots", "500", "--out", tmp_path)
    assert "500 shots" in line
    assert "missing" in in_process_error(capsys, "eval", tmp_path / "missing", "--out", tmp_path)


def test_scaling_budget_too_small_for_the_smallest_model(tmp_path, capsys):
    line = in_process_error(
        capsys, "scaling", "--run-dir", tmp_path / "s", "--sizes", "32x1,64x2", "--budgets", "1e9,1e12"
    )
    assert "--budgets" in line and "1.00e+09" in line and "smallest model (32x1" in line
    assert "multiple of 16" in in_process_error(capsys, "scaling", "--run-dir", tmp_path / "s", "--sizes", "30x1")


@pytest.mark.slow
def test_scaling_sweep_runs_in_parallel_resumes_and_fits(tmp_path):
    words = tmp_path / "words.yaml"  # a small task for the emergence plot (the built-in one has 200 items)
    words.write_text(
        "kind: loglikelihood\nitems:\n"
        + "".join(f"  - {{question: {q!r}, target: {t!r}}}\n" for q, t in [("O Romeo,", "Romeo"), ("Good", "night")])
    )
    common = [
        "scaling", "--run-dir", tmp_path / "s", "--sizes", "16x1,32x1,48x1", "--budgets", "2e9,6e9",
        "--min-steps", "4", "--bootstrap", "10", "--predict", "1e12", "--emergence-task", words,
        "data.max_documents=3", "tokenizer.vocab_size=320", "train.seq_len=32", "train.batch_size=4",
        "train.eval_batches=1",
    ]  # fmt: skip
    r = cli(*common, "--jobs", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("scaling [") == 6 and "6 to train, 2 at a time" in r.stderr
    out = tmp_path / "s" / "scaling"
    fits = json.loads((out / "scaling.json").read_text())
    assert len(fits["points"]) == 6 and fits["fits"]["chinchilla"]["bootstrap"] == 10
    for png in ("loss_vs_compute.png", "emergence.png"):
        assert (out / png).stat().st_size > 1000
    assert "Compute-optimal model for C = 1.00e+12" in (out / "scaling.md").read_text()
    r = cli(*common)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "6 already finished), 0 to train" in r.stderr
