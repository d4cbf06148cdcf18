"""On-policy RL in the one loop: rollouts from the engine on the weights being trained, GRPO raising a
verifiable reward, PPO and GRPO resuming bitwise after SIGKILL (inside a rollout round and between
rounds), and reward functions that fail."""

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

from llmkit.checkpoint import load_model, save_checkpoint
from llmkit.config import ModelConfig
from llmkit.model.transformer import Transformer
from llmkit.tokenizer import Tokenizer

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TEXT = "The quick brown fox jumps over the lazy dog 0123456789. 敏捷的棕色狐狸跳过了懒狗。 " * 40
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon"
REWARDS = '''
def digits(prompt, completion, **fields):
    """The easy verifiable task: the share of the completion's characters that are digits."""
    return sum(c.isdigit() for c in completion) / max(1, len(completion))


def flaky(prompt, completion, **fields):
    if "a" in prompt:
        raise ValueError("no reward for prompts with an a")
    return "none" if prompt.startswith("z") else 1.0


def vowels(prompt, completion, **fields):
    return sum(c in "aeiou" for c in completion) / max(1, len(completion))


def broken(prompt, completion, **fields):
    return {}["missing"]
'''
GRPO = [
    "grpo.prompts_per_round=4",
    "grpo.samples=4",
    "grpo.max_new_tokens=12",
    "grpo.lr=3e-3",
    "grpo.warmup_steps=2",
    "grpo.eval_prompts=4",
]
COMMON = ["train.log_every=1", "train.device=cpu", "train.dtype=fp32", "train.keep_last=4"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """A tiny random model with a tokenizer, a prompt file and a file of reward functions."""
    root = tmp_path_factory.mktemp("rl")
    tok = Tokenizer.train([TEXT], vocab_size=320, show_progress=False)
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    save_checkpoint(root / "model", Transformer(config), tokenizer=tok)
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": w}) + "\n" for w in WORDS.split()))
    (root / "rewards.py").write_text(REWARDS)
    return root


def cli(fx, verb, out, *extra, reward="digits", popen=False):
    flags = [x for x in extra if not ("=" in str(x) and "." in str(x).split("=")[0])]
    settings = [x for x in extra if x not in flags]
    args = [sys.executable, "-m", "llmkit.cli", verb, fx / "model", *COMMON, *settings, "--out", out, *flags]
    args += ["--prompts", fx / "prompts.jsonl", "--reward", f"{fx / 'rewards.py'}:{reward}"]
    args = [str(a) for a in args]
    if popen:
        return subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)


def rows(out):
    drop = {"tokens_per_s", "mfu", "elapsed_s", "rollout_tokens_per_s"}
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]


def assert_same_run(a, b):
    wa, wb = load_file(str(Path(a) / "model.safetensors")), load_file(str(Path(b) / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise
    assert rows(a) == rows(b)


def kill_after(proc, out, steps, timeout=1200):  # generous: a loaded 2-core machine is slow
    metrics = Path(out) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count('"loss"') >= steps:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never reached the step to kill it at")


GRPO_RUN = [*GRPO, "grpo.max_steps=12", "grpo.epochs=2", "grpo.minibatches=2", "grpo.ckpt_every=3", "grpo.eval_every=6"]
PPO_RUN = [
    "ppo.prompts_per_round=4",
    "ppo.samples=2",
    "ppo.max_new_tokens=12",
    "ppo.lr=3e-3",
    "ppo.epochs=2",
    "ppo.max_steps=8",
    "ppo.ckpt_every=2",
    "ppo.eval_every=4",
    "ppo.eval_prompts=4",
]


@pytest.fixture(scope="module")
def grpo_straight(fx):
    out = fx / "grpo_straight"
    r = cli(fx, "grpo", out, *GRPO_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_grpo_resumes_bitwise_inside_a_rollout_round(fx, grpo_straight):
    """4 optimizer steps per round (2 epochs x 2 minibatches), checkpoints every 3 steps: the run is
    killed after step 7 and resumes from step 6, the middle of round 2, whose rollouts come back
    from trainer_state.pt."""
    out = fx / "grpo_killed"
    kill_after(cli(fx, "grpo", out, *GRPO_RUN, popen=True), out, 8)
    r = cli(fx, "grpo", out, *GRPO_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 6" in r.stderr, r.stderr[-2000:]
    assert_same_run(grpo_straight, out)


@pytest.mark.slow
def test_ppo_resumes_bitwise_between_rounds(fx):
    """2 steps per round, checkpoints every 2: resuming at a round's start regenerates its rollouts
    from the seed and the restored weights, and they must be the very samples of the first run."""
    straight, out = fx / "ppo_straight", fx / "ppo_killed"
    r = cli(fx, "ppo", straight, *PPO_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not any(k.startswith("value_head") for k in load_file(str(straight / "model.safetensors")))
    load_model(straight)  # the published policy is a plain causal LM
    kill_after(cli(fx, "ppo", out, *PPO_RUN, popen=True), out, 3)  # early: 8 steps take ~1 s on a quiet machine
    r = cli(fx, "ppo", out, *PPO_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"resumed from step [246]\b", r.stderr), r.stderr[
        -2000:
    ]  # a round's start, wherever the kill landed
    assert_same_run(straight, out)


@pytest.mark.slow
def test_grpo_raises_the_mean_reward_on_an_easy_verifiable_task(fx):
    out = fx / "grpo_learns"
    r = cli(
        fx,
        "grpo",
        out,
        "grpo.prompts_per_round=4",
        "grpo.samples=8",
        "grpo.max_new_tokens=4",
        "grpo.lr=5e-2",
        "grpo.max_steps=12",
        "grpo.eval_every=0",
        "grpo.eval_prompts=4",
        "grpo.loss_norm=sequence",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rewards = [x["reward"] for x in rows(out) if "reward" in x]
    assert len(rewards) == 12  # one rollout round per step
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.2, rewards


def test_reward_functions_that_fail_are_counted_and_the_run_goes_on(fx):
    out = fx / "flaky"
    r = cli(fx, "grpo", out, *GRPO, "grpo.max_steps=1", reward="flaky")
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [line for line in r.stderr.splitlines() if "reward call failed" in line]
    assert len(warnings) == 1 and "ValueError: no reward for prompts with an a" in warnings[0], r.stderr[-2000:]
    (row,) = [x for x in rows(out) if "loss" in x]
    assert 0 < row["reward_failures"] < 16 and row["reward"] == 1.0


def test_reward_function_errors_are_one_line(fx, tmp_path):
    r = cli(fx, "grpo", tmp_path / "a", *GRPO, "grpo.max_steps=1", reward="broken")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "rewards.py:broken: all 16 reward calls of a batch failed (first: KeyError" in r.stderr
    from llmkit.errors import ConfigError
    from llmkit.train.rewards import load_reward_function

    for reward, needle in (  # the CLI prints these ConfigErrors as the one line above, exit 2
        (f"{tmp_path}/nowhere.py:f", "nowhere.py does not exist"),
        (f"{fx / 'rewards.py'}:nothing", "has no function 'nothing'; functions there: digits, flaky, vowels, broken"),
        (f"{fx / 'rewards.py'}", "write it as path/to/file.py:function_name"),
    ):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_reward_function(reward)


def test_rollouts_repeat_with_the_seed_and_follow_in_place_training(fx):
    """The engine samples from the weights being trained: after an in-place optimizer step its
    samples equal those of a fresh model loaded with the updated weights."""
    from llmkit.infer.engine import Engine
    from llmkit.train.rollout import RLPrompt, SamplingSettings, sample_completions

    tok = Tokenizer.load(fx / "model")
    model = load_model(fx / "model")
    prompts = [RLPrompt(tok.encode(w, bos=True), w) for w in WORDS.split()[:3]]
    settings = SamplingSettings(max_new_tokens=8)

    def samples(engine, seed):
        return [[c.token_ids for c in g] for g in sample_completions(engine, prompts, 3, settings, seed)]

    engine = Engine(model, tok)
    before = samples(engine, 5)
    assert samples(engine, 5) == before and samples(engine, 6) != before
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    ids = torch.tensor([tok.encode("The quick brown fox 0123456789", bos=True)])
    torch.nn.functional.cross_entropy(model(ids)[0, :-1], ids[0, 1:]).backward()
    opt.step()
    after = samples(engine, 5)
    fresh = Transformer(model.config)
    fresh.load_state_dict(model.state_dict())
    assert after != before
    assert samples(Engine(fresh, tok), 5) == after


def test_task_suite_prompts_with_verifier_rewards(fx, tmp_path):
    """``tasks:`` prompts: chat prompts of the suite's training split, held-out prompts from its
    test split, rewards from the verifiers (the default)."""
    out = tmp_path / "tasks"
    args = ["grpo", fx / "model", *COMMON, *GRPO, "grpo.max_steps=1", "grpo.task_examples=8", "--out", out]
    r = subprocess.run(
        [sys.executable, "-m", "llmkit.cli", *map(str, args), "--prompts", "tasks:compare2,copy"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "grpo: 16 prompts" in r.stderr
    (row,) = [x for x in rows(out) if "reward" in x]
    assert row["reward_failures"] == 0 and 0.0 <= row["reward"] <= 1.0
    assert "val_reward" in json.loads((out / "train_summary.json").read_text())


@pytest.mark.slow
def test_ppo_with_lora_trains_adapters_and_the_value_head(fx, tmp_path):
    from llmkit.model.lora import read_adapter_config

    out = tmp_path / "lora"
    r = cli(fx, "ppo", out, "--lora", "4", *PPO_RUN[:4], "ppo.max_steps=2", "ppo.eval_prompts=2", reward="vowels")
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_adapter_config(out / "adapter").r == 4
    merged = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k or "value_head" in k or "base_layer" in k for k in merged)
    start = load_file(str(fx / "model" / "model.safetensors"))
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], start["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(merged["model.embed_tokens.weight"], start["model.embed_tokens.weight"])  # frozen
