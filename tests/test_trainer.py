"""The one training loop: learning, exact resume after SIGKILL (also mid-checkpoint). DDP and FSDP2
parity with one process: test_train_scale.py."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmkit.config import TrainConfig
from llmkit.train.optim import lr_factor

DRIVER = Path(__file__).with_name("train_driver.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_driver(out, steps, *overrides, env=None):
    return subprocess.run(
        [sys.executable, str(DRIVER), str(out), str(steps), *overrides],
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def step_rows(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    drop = {"tokens_per_s", "mfu", "elapsed_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def weights(out):
    return load_file(str(Path(out) / "model.safetensors"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    r = run_driver(out, 20)
    assert r.returncode == 0, r.stderr
    return out


def test_loss_falls(straight):
    rows = step_rows(straight)
    train = [r["loss"] for r in rows if "loss" in r]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert train[-1] < train[0] - 0.8
    assert val[-1] < val[0]
    assert (straight / "loss.png").stat().st_size > 1000


def _assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise
    assert step_rows(a) == step_rows(b)


def _kill_when(proc, predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never reached the point to kill it")


def test_resume_after_sigkill_is_bitwise_identical(straight, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(out), "20"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = out / "metrics.jsonl"
    _kill_when(proc, lambda: metrics.exists() and metrics.read_text().count('"loss"') >= 13)
    assert not (out / "model.safetensors").exists()
    r = run_driver(out, 20)
    assert r.returncode == 0, r.stderr
    assert re.search(r"resumed from step (5|10|15) ", r.stderr), r.stderr[:300]
    _assert_same_run(straight, out)


def test_resume_after_sigkill_during_checkpoint_write(straight, tmp_path):
    out = tmp_path / "killed_in_save"
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(out), "20"],
        env={**ENV, "SLOW_SAVE": "30"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seen = []

    def second_save_started():
        line = proc.stdout.readline()
        if "SAVING" in line:
            seen.append(line)
        return len(seen) >= 2  # inside the write of step 10, after the weights file was written

    _kill_when(proc, second_save_started)
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000005"
    assert not (ckpts / "step_00000010").exists()
    r = run_driver(out, 20)
    assert r.returncode == 0, r.stderr
    assert "resumed from step 5" in r.stderr
    assert not list(ckpts.glob(".*tmp*")), "leftover temporary directories were not cleaned"
    _assert_same_run(straight, out)


def test_ctrl_c_saves_at_the_interrupted_step_and_the_rerun_resumes_there(straight, tmp_path):
    out = tmp_path / "interrupted"
    r = run_driver(out, 20, env={**ENV, "SIGNAL_AT": "7:INT"})
    assert r.returncode != 0 and "DONE" not in r.stdout
    assert "interrupted at step 7: checkpoint saved to" in r.stderr and "run the same command again" in r.stderr
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000007"
    r = run_driver(out, 20)
    assert r.returncode == 0, r.stderr
    assert "resumed from step 7 " in r.stderr, r.stderr[:300]
    _assert_same_run(straight, out)


def test_a_kill_before_the_first_checkpoint_says_it_starts_over(straight, tmp_path):
    out = tmp_path / "killed_early"
    r = run_driver(out, 20, env={**ENV, "SIGNAL_AT": "3:KILL"})
    assert r.returncode == -9 and not (out / "checkpoints").exists()
    r = run_driver(out, 20)
    assert r.returncode == 0, r.stderr
    assert "no complete checkpoint" in r.stderr and "starting again from step 0" in r.stderr, r.stderr[:300]
    _assert_same_run(straight, out)


def test_schedules():
    cos = TrainConfig(max_steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cos) == pytest.approx(0.1)
    assert lr_factor(9, cos) == pytest.approx(1.0)
    assert lr_factor(99, cos) == pytest.approx(0.1, abs=0.01)
    wsd = TrainConfig(max_steps=100, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    assert lr_factor(50, wsd) == 1.0 and lr_factor(79, wsd) == 1.0
    assert lr_factor(90, wsd) == pytest.approx(0.5)


def test_muon_trains(tmp_path):
    r = run_driver(tmp_path, 10, "optimizer=muon")
    assert r.returncode == 0, r.stderr
    train = [x["loss"] for x in step_rows(tmp_path) if "loss" in x]
    assert train[-1] < train[0] - 0.5
