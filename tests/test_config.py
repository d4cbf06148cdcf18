"""Presets, overrides and validation: every user mistake is one clear line."""

import subprocess
import sys

import pytest
import torch

from llmkit.config import ModelConfig, list_presets, resolve
from llmkit.errors import ConfigError
from llmkit.model.transformer import Transformer


def test_presets_resolve_and_overrides_apply():
    assert {"cpu-micro", "cpu-tiny", "cpu-small", "gpu-125m", "gpu-1b"} <= set(list_presets())
    cfg = resolve(
        "cpu-tiny",
        ["train.max_steps=7", "train.lr=1e-3", "data.sources=[a.txt, b.jsonl]", "model.tie_word_embeddings=false"],
    )
    assert cfg.train.max_steps == 7 and cfg.train.lr == 1e-3
    assert cfg.data.sources == ["a.txt", "b.jsonl"]
    assert cfg.model.tie_word_embeddings is False


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["train.max_stepz=3"], "unknown field 'max_stepz'"),
        (["modle.hidden_size=3"], "unknown config section 'modle'; sections: data, "),
        (["model.hidden_size=100", "model.num_attention_heads=3"], "not divisible by model.num_attention_heads"),
        (["model.num_key_value_heads=3"], "num_key_value_heads"),
        (["train.max_steps=abc"], "train.max_steps must be int"),
        (["train.optimizer=sgd"], "train.optimizer"),
        (["train.max_steps"], "section.field=value"),
        (["train.batch_size=0"], "train.batch_size must be positive"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve("cpu-micro", overrides)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; choose one of"):
        resolve("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:.*not valid YAML"):
        resolve(str(bad))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model:\n  hiddn_size: 4\n")
    with pytest.raises(ConfigError, match=r"model: unknown field 'hiddn_size'"):
        resolve(str(wrong))


def test_cli_prints_one_line_and_exits_2():
    r = subprocess.run(
        [sys.executable, "-m", "llmkit.cli", "pretrain", "--preset", "cpu-micro", "model.num_attention_heads=5"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr


def test_help_explains_every_config_field():
    r = subprocess.run([sys.executable, "-m", "llmkit.cli", "speedrun", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for name in ("train.max_steps", "model.num_key_value_heads", "data.text_field", "tokenizer.vocab_size"):
        assert name in r.stdout


@pytest.mark.parametrize(
    "preset,max_params,processes,max_gib",
    [
        ("gpu-125m", 150e6, 1, 80),
        ("gpu-1b", 1.3e9, 8, 40),
        ("gpu-7b", 7.5e9, 32, 80),
        ("cpu-small", 40e6, 1, 8),
        ("cpu-tiny", 10e6, 1, 4),
    ],
)
def test_presets_build_with_expected_size_and_fit_in_memory(preset, max_params, processes, max_gib):
    """Shape check on the meta device (no memory used) and the training-memory estimate per process
    (llmkit.train.memory: weights, gradients, optimizer, DDP buckets or FSDP2 shards, activations
    with or without checkpointing, logits) for the process count the preset is written for."""
    from llmkit.train.memory import estimate

    cfg = resolve(preset)
    with torch.device("meta"):
        model = Transformer(cfg.model)
    n = model.num_params()
    assert n == cfg.model.num_params()
    assert 0.5 * max_params < n < max_params
    gib = estimate(cfg.model, cfg.train, processes).total
    assert gib < max_gib, f"{preset}: ~{gib:.1f} GiB per device"


def test_memory_estimate_follows_sharding_and_checkpointing():
    from llmkit.train.memory import estimate

    cfg = resolve("gpu-7b")
    sharded = estimate(cfg.model, cfg.train, 32)
    cfg.train.parallel = "ddp"
    whole = estimate(cfg.model, cfg.train, 32)
    assert whole.weights == pytest.approx(32 * sharded.weights) and whole.total > 140  # 7B x 16 B + buckets: no fit
    cfg.train.activation_checkpointing = False
    assert estimate(cfg.model, cfg.train, 32).activations > 10 * whole.activations


def test_model_config_hf_round_trip():
    cfg = ModelConfig(
        hidden_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    )
    back = ModelConfig.from_hf_dict(cfg.to_hf_dict())
    assert back == cfg


def test_every_cli_option_has_help():
    import argparse

    from llmkit.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not action.help and action.dest != "help":
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}")

    walk(build_parser(), ["llmkit"])
    assert not missing
    verbs = {"data", "tokenizer", "pretrain", "sample", "speedrun", "generate", "chat"}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert verbs <= set(sub.choices)
