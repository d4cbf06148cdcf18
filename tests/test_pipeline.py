"""End to end: the cpu-micro speedrun, resume of a finished run, and bad input through the CLI."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

import llmkit


def cli(*args, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "llmkit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "micro"
    r = cli("speedrun", "--preset", "cpu-micro", "--run-dir", run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, r


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_cpu_micro_speedrun_end_to_end(micro_run):
    run_dir, _r = micro_run
    for rel in (
        "config.yaml",
        "tokenizer/tokenizer.json",
        "data/train/index.json",
        "data/stats.json",
        "base/config.json",
        "base/model.safetensors",
        "base/metrics.jsonl",
        "base/loss.png",
        "samples/base.json",
        "eval/results.json",
        "eval/icl.png",
        "clean/report.json",
        "clean/DATACARD.md",
        "clean/corpus/shakespeare",
        "rl/config.json",
        "rl/eval_rl.json",
        "stages.json",
        "report.md",
        "report.html",
    ):
        assert (run_dir / rel).exists(), rel
    report = (run_dir / "report.md").read_text()
    for needle in (
        "val_bpb",
        "tokens/s",
        "Romeo.",
        "loss.png",
        "## Cleaning",
        "clean/lengths.png",
        "## Evaluation",
        "label-map (2-shot) acc",
        "icl.png",
        "| SFT | RL |",
        "RL training (GRPO",
    ):
        assert needle in report
    assert 'src="data:image/png;base64,' in (run_dir / "report.html").read_text()
    rows = [json.loads(line) for line in (run_dir / "base" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in rows if "loss" in x]
    assert losses[-1] < losses[0]
    lm = llmkit.load(run_dir / "base", device="cpu")
    ids = lm.tokenizer.encode("ROMEO: 你好")
    assert lm.tokenizer.decode(ids) == "ROMEO: 你好"
    import torch

    logits = lm.model(torch.tensor([ids]))
    assert logits.shape == (1, len(ids), lm.config.vocab_size)


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_rerun_of_a_finished_speedrun_skips_work(micro_run):
    run_dir, _ = micro_run
    before = (run_dir / "base" / "model.safetensors").stat().st_mtime_ns
    record = json.loads((run_dir / "stages.json").read_text())
    r = cli("speedrun", "--preset", "cpu-micro", "--run-dir", run_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    for stage in ("data", "pretrain", "samples"):
        assert f"{stage}: complete; skipping" in r.stderr
    assert (run_dir / "base" / "model.safetensors").stat().st_mtime_ns == before
    # each stage keeps the time it really took; the report shows those, not this invocation's
    assert json.loads((run_dir / "stages.json").read_text()) == record
    times = _report_section(run_dir, "Stage times")
    for stage, entry in record.items():
        assert f"| {stage} | {entry['seconds']:.0f} s |" in times, times
    total = sum(e["seconds"] for e in record.values())
    assert f"| total | {total:.0f} s ({total / 60:.1f} min) |" in times, times


def _report_section(run_dir, heading):
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    return report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_from_reruns_a_stage_and_the_ones_after_it(micro_run):
    run_dir, _ = micro_run
    record = json.loads((run_dir / "stages.json").read_text())
    base = (run_dir / "base" / "model.safetensors").stat().st_mtime_ns
    samples = (run_dir / "samples" / "base.json").read_text(encoding="utf-8")
    r = cli("speedrun", "--preset", "cpu-micro", "--run-dir", run_dir, "--from", "samples")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "samples: removed" in r.stderr and "samples: complete" not in r.stderr
    assert "pretrain: complete; skipping" in r.stderr
    assert (run_dir / "base" / "model.safetensors").stat().st_mtime_ns == base
    assert (run_dir / "samples" / "base.json").read_text(encoding="utf-8") == samples  # same seed, same text
    after = json.loads((run_dir / "stages.json").read_text())
    assert after["data"] == record["data"] and after["pretrain"] == record["pretrain"]
    assert after["samples"]["finished"] >= record["samples"]["finished"]
    # a stage whose output was deleted by hand is not complete: the next run redoes it
    shutil.rmtree(run_dir / "samples")
    r = cli("speedrun", "--preset", "cpu-micro", "--run-dir", run_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "samples: complete" not in r.stderr and "pretrain: complete; skipping" in r.stderr
    assert (run_dir / "samples" / "base.json").read_text(encoding="utf-8") == samples


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_samples_are_text_as_llmkit_sample_writes_it(micro_run):
    run_dir, r = micro_run
    (s,) = json.loads((run_dir / "samples" / "base.json").read_text(encoding="utf-8"))
    assert s["prompt"] == "Romeo.\n" and "\ufffd" not in s["text"][-1:]
    assert "sample 1 of 1:\n" + s["prompt"] + s["text"] + "\n" in r.stderr  # the text itself, not its repr
    assert "**Romeo.**\n" in (run_dir / "report.md").read_text(encoding="utf-8")  # the prompt's newline kept out
    n = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["sample"]["max_new_tokens"]
    same = cli("sample", run_dir / "base", "--prompt", s["prompt"], "--max-new-tokens", n)
    assert same.returncode == 0, same.stderr[-2000:]
    assert same.stdout == "---\n" + s["prompt"] + s["text"] + "\n"


@pytest.mark.slow
def test_until_stops_after_the_named_stage(tmp_path):
    run_dir = tmp_path / "r"
    r = cli("speedrun", "--preset", "cpu-micro", "--run-dir", run_dir, "--until", "data")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file() and (run_dir / "data" / "stats.json").is_file()
    assert not (run_dir / "base").exists() and not (run_dir / "samples").exists()
    assert list(json.loads((run_dir / "stages.json").read_text())) == ["clean", "data"]
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Data" in report and "## Pretraining" not in report


@pytest.mark.slow
@pytest.mark.xdist_group("e2e")
def test_run_dir_refuses_a_different_config(micro_run):
    run_dir, _ = micro_run
    r = cli("pretrain", "--preset", "cpu-micro", "--run-dir", run_dir, "model.hidden_size=32")
    one_line_error(r, "different config", "model.hidden_size")


def test_missing_source(tmp_path):
    r = cli("pretrain", "--preset", "cpu-micro", "--run-dir", tmp_path / "r", f"data.sources=[{tmp_path}/nope.txt]")
    one_line_error(r, "nope.txt")


def test_empty_source(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    r = cli("pretrain", "--preset", "cpu-micro", "--run-dir", tmp_path / "r", f"data.sources=[{tmp_path}/empty.txt]")
    one_line_error(r, "empty.txt")


def test_corpus_smaller_than_one_sequence(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    for i in range(4):
        (d / f"{i}.txt").write_text(f"短文{i}. A tiny doc {i}.")
    r = cli(
        "pretrain",
        "--preset",
        "cpu-micro",
        "--run-dir",
        tmp_path / "r",
        f"data.sources=[{d}]",
        "pipeline.stages=[data,pretrain]",  # the data stage's own check (cleaning would drop them first)
        "tokenizer.vocab_size=300",
    )
    one_line_error(r, "fewer than one sequence", "train.seq_len")


def test_jsonl_without_text_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"content": f"line {i} 内容"}) for i in range(50)))
    r = cli("pretrain", "--preset", "cpu-micro", "--run-dir", tmp_path / "r", f"data.sources=[{p}]")
    one_line_error(r, "d.jsonl", "text_field")


def test_vocab_too_small(tmp_path):
    d = tmp_path / "t.txt"
    d.write_text("hello world 你好 " * 1000)
    r = cli(
        "pretrain",
        "--preset",
        "cpu-micro",
        "--run-dir",
        tmp_path / "r",
        f"data.sources=[{d}]",
        "pipeline.stages=[data,pretrain]",  # the tokenizer's own check (cleaning would drop the text first)
        "tokenizer.vocab_size=100",
    )
    one_line_error(r, "tokenizer.vocab_size")


def test_sample_on_incomplete_checkpoint(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text("{}")
    r = cli("sample", tmp_path / "ck", "--prompt", "hi")
    one_line_error(r, "incomplete checkpoint")


def _corpus_lines(n=400):
    return [
        f"Line {i}: the quick brown fox jumps over the lazy dog. 第{i}行：春眠不觉晓，处处闻啼鸟。" for i in range(n)
    ]


def test_malformed_jsonl_lines_are_skipped_and_counted_or_fatal_with_strict(tmp_path):
    p = tmp_path / "d.jsonl"
    lines = [json.dumps({"text": t}) for t in _corpus_lines()]
    lines[6] = "{not json"
    lines[20] = "[1, 2]"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = [
        "--preset",
        "cpu-micro",
        f"data.sources=[{p}]",
        "data.max_documents=0",
        "train.max_steps=2",
        "train.seq_len=32",
        "tokenizer.vocab_size=300",
    ]
    r = cli("pretrain", "--run-dir", tmp_path / "lenient", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 malformed" in r.stderr and "d.jsonl:7" in r.stderr
    r = cli("pretrain", "--run-dir", tmp_path / "strict", *common, "data.strict=true")
    one_line_error(r, "d.jsonl:7")


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes("\n".join(_corpus_lines()).encode("utf-8") + b"\xff\xfe broken \xc3(\n")
    r = cli(
        "pretrain",
        "--run-dir",
        tmp_path / "r",
        "--preset",
        "cpu-micro",
        f"data.sources=[{p}]",
        "pipeline.stages=[data,pretrain]",  # one document of 400 near-identical lines, mostly Chinese
        "train.max_steps=2",
        "train.seq_len=32",
        "tokenizer.vocab_size=300",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "invalid UTF-8" in r.stderr


def test_a_stage_still_to_run_may_change_its_settings_a_finished_one_may_not(tmp_path):
    from llmkit.config import resolve
    from llmkit.errors import ConfigError
    from llmkit.pipeline import init_run_dir
    from llmkit.stages import get_stages

    init_run_dir(resolve("cpu-micro", []), tmp_path)
    tuned = resolve("cpu-micro", ["grpo.lr=0.01"])
    with pytest.raises(ConfigError, match=r"grpo\.lr.*--from rl"):
        init_run_dir(tuned, tmp_path)  # every stage finished: the rl output was built from the old value
    init_run_dir(tuned, tmp_path, get_stages(["rl"]))  # rl runs again (or has not run): its section may change
    assert "lr: 0.01" in (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"model\.hidden_size.*--from pretrain"):
        init_run_dir(resolve("cpu-micro", ["grpo.lr=0.01", "model.hidden_size=32"]), tmp_path, get_stages(["rl"]))


def test_a_run_saved_before_a_field_existed_continues(tmp_path):
    """A field added to llmkit after a run started takes its default there: not a config change."""
    from llmkit.config import resolve
    from llmkit.errors import ConfigError
    from llmkit.pipeline import init_run_dir

    cfg = resolve("cpu-micro")
    init_run_dir(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text(encoding="utf-8"))
    del saved["train"]["parallel"], saved["train"]["activation_checkpointing"]  # as an older llmkit wrote it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    init_run_dir(cfg, tmp_path)  # accepted
    changed = resolve("cpu-micro", ["train.parallel=fsdp"])
    with pytest.raises(ConfigError, match=r"train\.parallel"):
        init_run_dir(changed, tmp_path)
