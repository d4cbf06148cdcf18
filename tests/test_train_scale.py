"""Training at scale on CPU (gloo, 2 processes): FSDP2 against one process and against DDP, sharded
checkpoints resumed on another process count and across modes, Muon split across processes,
activation checkpointing, fp16 loss scaling, and the one-line errors."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmkit.config import TrainConfig, resolve
from llmkit.errors import ConfigError
from llmkit.train.distributed import DistInfo
from llmkit.train.precision import GROWTH_INTERVAL, LossScaler

TESTS = Path(__file__).parent
DRIVER = TESTS / "train_driver.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(out, steps, *overrides, procs=1, env=None):
    """The trainer test driver on ``procs`` processes (torchrun for more than one; ``--standalone``
    takes a free port, so runs in parallel test workers never collide)."""
    launch = [sys.executable]
    if procs > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    cmd = [*launch, str(DRIVER), str(out), str(steps), *overrides]
    return subprocess.run(cmd, env=env or ENV, capture_output=True, text=True, timeout=300)


def rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def max_diff(a, b):
    wa, wb = load_file(str(Path(a) / "model.safetensors")), load_file(str(Path(b) / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


# ---- in one process -------------------------------------------------------------------------------


def test_activation_checkpointing_gives_the_same_gradients_from_fewer_saved_activations():
    from llmkit.train.parallel import set_activation_checkpointing
    from parallel_driver import tiny_model

    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    grads, saved = {}, {}
    for on in (False, True):
        model = tiny_model()
        set_activation_checkpointing(model, on)
        nbytes = []

        def pack(t, nbytes=nbytes):
            nbytes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = model(ids[:, :-1])  # (2, 15, 64)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        grads[on] = {n: p.grad for n, p in model.named_parameters()}
        saved[on] = sum(nbytes)
    for name, g in grads[False].items():
        assert torch.equal(g, grads[True][name]), name
    assert saved[True] < 0.5 * saved[False], saved  # what backward keeps alive between the passes


def test_loss_scaler_halves_on_overflow_and_grows_after_clean_steps():
    s = LossScaler(enabled=True, initial=1024.0)
    assert s.update(finite=False) is False and s.scale == 512.0 and s.skipped == 1
    for _ in range(GROWTH_INTERVAL):
        assert s.update(finite=True)
    assert s.scale == 1024.0 and s.skipped == 1
    again = LossScaler(enabled=True)
    again.load_state_dict(s.state_dict())
    assert again.state_dict() == s.state_dict()
    off = LossScaler(enabled=False, initial=1024.0)
    assert off.scale == 1.0 and off.update(finite=False)  # bf16/fp32 never skip


def test_fp16_skips_overflowing_steps_logs_the_count_and_recovers(tmp_path):
    # 2**21 overflows this model's scaled fp16 gradients: the first steps are skipped and halve it
    r = run(tmp_path, 10, "dtype=fp16", "loss_scale=2097152", "eval_every=10")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "precision: fp16 (requested)" in r.stderr
    steps = [x for x in rows(tmp_path) if "loss" in x]
    skipped = [x["skipped_steps"] for x in steps]
    assert skipped[:2] == [1, 2] and all(b - a in (0, 1) for a, b in itertools.pairwise(skipped))
    assert all(x["loss_scale"] == 2.0**21 / 2 ** x["skipped_steps"] for x in steps)
    updated = [x for x, was in zip(steps, [0, *skipped], strict=False) if x["skipped_steps"] == was]
    assert len(updated) >= 3 and all(x["grad_norm"] < 10 for x in updated)  # recovered: finite steps
    assert f"skipped {skipped[-1]} (loss scale {2**21 // 2 ** skipped[-1]})" in r.stderr
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.1


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.parallel=zero3", r"train.parallel='zero3': use 'ddp' or 'fsdp'"),
        ("train.dtype=fp8", r"train.dtype=fp8 needs an NVIDIA GPU with FP8 tensor cores .*this run is on cpu"),
        ("train.dtype=int8", r"train.dtype='int8': use 'auto', 'fp32', 'bf16', 'fp16' or 'fp8'"),
        ("train.cpu_offload=true", r"train.cpu_offload=true offloads FSDP2 shards; set train.parallel=fsdp"),
        ("train.loss_scale=0.5", r"train.loss_scale must be >= 1"),
    ],
)
def test_bad_scale_settings_are_one_line_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve("cpu-micro", ["train.device=cpu", override])


def test_cpu_offload_on_a_cpu_run_is_refused():
    from llmkit.train.parallel import check_backend

    cfg = TrainConfig(parallel="fsdp", cpu_offload=True, device="cpu")
    with pytest.raises(ConfigError, match=r"this run is on the CPU already; drop train.cpu_offload"):
        check_backend(cfg, DistInfo(world_size=2))


def test_resuming_on_another_process_count_needs_the_same_global_batch(tmp_path):
    from llmkit.train.parallel import check_global_batch

    state = {"world_size": 2, "train_config": {"batch_size": 2, "grad_accum": 1}}  # 4 sequences per step
    check_global_batch(tmp_path, state, TrainConfig(batch_size=2, grad_accum=2), world=1)  # also 4: fine
    with pytest.raises(ConfigError, match=r"global batch of 4 sequences \(2 processes\); to resume it on 1 process"):
        check_global_batch(tmp_path, state, TrainConfig(batch_size=2), world=1)
    with pytest.raises(ConfigError, match=r"3 process\(es\) x train.batch_size=2 does not divide it"):
        check_global_batch(tmp_path, state, TrainConfig(batch_size=2), world=3)


def test_cli_fp8_on_cpu_exits_2_with_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "llmkit.cli", "pretrain", "--preset", "cpu-micro", "train.dtype=fp8"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "train.dtype=fp8" in r.stderr and "Traceback" not in r.stderr


# ---- two processes (gloo) -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """The same 10 steps and global batch (4 sequences) on one process, DDP x2 and FSDP2 x2 (session
    scope: built once in the worker that runs the "parallel" group, whatever runs in between)."""
    root = tmp_path_factory.mktemp("parallel")
    out = {"single": root / "single", "ddp": root / "ddp", "fsdp": root / "fsdp"}
    for r in (
        run(out["single"], 10, "batch_size=2", "grad_accum=2"),
        run(out["ddp"], 10, "batch_size=2", procs=2),
        run(out["fsdp"], 10, "batch_size=2", "parallel=fsdp", procs=2),
    ):
        assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("parallel")
def test_fsdp_and_ddp_match_one_process(runs):
    """Loss curves within 1e-4 and final weights within 1e-5 (fp32; only summation order differs)."""
    curves = {k: [x for x in rows(v) if "loss" in x] for k, v in runs.items()}
    assert len(curves["single"]) == len(curves["ddp"]) == len(curves["fsdp"]) == 10
    for mode in ("ddp", "fsdp"):
        for a, b in zip(curves["single"], curves[mode], strict=True):
            assert abs(a["loss"] - b["loss"]) < 1e-4, (mode, a, b)
        val = {k: [x["val_loss"] for x in rows(v) if "val_loss" in x] for k, v in runs.items()}
        assert val[mode] == pytest.approx(val["single"], abs=1e-4)
        assert max_diff(runs["single"], runs[mode]) < 1e-5
    assert max_diff(runs["ddp"], runs["fsdp"]) < 1e-5
    ckpt = runs["fsdp"] / "checkpoints" / "step_00000010"
    assert (ckpt / "model.safetensors").is_file() and any((ckpt / "sharded").glob("*.distcp"))


@pytest.mark.slow
@pytest.mark.xdist_group("parallel")
def test_fsdp_killed_and_resumed_on_one_process_with_ddp_reaches_the_same_weights(runs, tmp_path):
    out = tmp_path / "killed"
    r = run(out, 10, "batch_size=2", "parallel=fsdp", procs=2, env={**ENV, "SIGNAL_AT": "7:KILL"})
    assert r.returncode != 0 and not (out / "model.safetensors").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000005"
    # one process, and DDP's layout: the sharded optimizer state is read whole
    r = run(out, 10, "batch_size=2", "grad_accum=2", "parallel=ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 5" in r.stderr
    assert max_diff(out, runs["fsdp"]) < 1e-5
    from transformers import AutoModelForCausalLM

    from llmkit.checkpoint import load_model

    ids = torch.tensor([[72, 101, 108, 108, 111, 32, 229, 186, 138]])
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ours = load_model(out)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.xdist_group("parallel")
def test_muon_split_across_two_processes_equals_one_and_fsdp_checkpointing_keeps_gradients(tmp_path):
    from parallel_driver import muon_case, tiny_model

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = subprocess.run(
        [*cmd, str(TESTS / "parallel_driver.py"), str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(tmp_path / "results.pt")
    assert got["weights_round_trip"] == 0.0  # gathered to HF files, read on process 0, broadcast, sharded
    assert got["uneven_forwards"] == 3  # process 0 ran 3 forwards, process 1 one, gathered: no hang
    assert got["newton_schulz_calls"] == [6, 4]  # 5 matrices x 2 steps, split 3/2 per step
    one = muon_case()
    for mode in ("muon_whole", "muon_sharded"):
        for a, b in zip(one, got[mode], strict=True):
            assert torch.equal(a, b), mode
    for name, g in got["grads_plain"].items():
        torch.testing.assert_close(got["grads_checkpointed"][name], g, rtol=0, atol=1e-7)
    whole, converted = got["optimizer_whole_and_converted"]  # a DDP checkpoint's optimizer under FSDP2
    assert whole.keys() == converted.keys() and len(whole) == len(dict(tiny_model().named_parameters()))
    for name, state in whole.items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(converted[name][key])), (name, key)
