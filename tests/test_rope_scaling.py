"""RoPE scaling (linear, dynamic NTK, YaRN, llama3) gives the logits transformers gives, and the
``rope_scaling`` config round-trips through config.json."""

import json

import pytest
import torch
import transformers

from llmkit.checkpoint import load_model, save_checkpoint
from llmkit.config import ModelConfig
from llmkit.errors import ConfigError
from llmkit.infer.engine import context_length
from llmkit.model.rope import rope_inv_freq
from llmkit.model.transformer import Transformer

SCALINGS = [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0},
    {"rope_type": "yarn", "factor": 2.0, "beta_fast": 16, "beta_slow": 2, "original_max_position_embeddings": 32},
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
]


def _cfg(scaling):
    return ModelConfig(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        rope_theta=500.0,
        rope_scaling=scaling,
    )


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: s["rope_type"] + str(s["factor"]))
def test_scaled_logits_match_transformers_beyond_trained_length(tmp_path, scaling):
    torch.manual_seed(0)
    model = Transformer(_cfg(dict(scaling))).eval()
    save_checkpoint(tmp_path / "ckpt", model)
    written = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert written["rope_scaling"] == scaling  # round-trips the way transformers writes it
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    ours = load_model(tmp_path / "ckpt")
    assert ours.config.rope_scaling == scaling
    for T in (20, 96):  # inside and 3x past the trained length
        x = torch.randint(0, 128, (2, T))
        with torch.no_grad():
            torch.testing.assert_close(ours(x), hf(x).logits, atol=2e-5, rtol=0)


def test_scaling_changes_frequencies_and_context():
    plain, _ = rope_inv_freq(_cfg(None))
    lin, a = rope_inv_freq(_cfg({"rope_type": "linear", "factor": 2.0}))
    torch.testing.assert_close(lin, plain / 2)
    assert a == 1.0
    _, yarn_scale = rope_inv_freq(_cfg({"rope_type": "yarn", "factor": 4.0}))
    assert yarn_scale == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1)
    assert context_length(_cfg({"rope_type": "yarn", "factor": 4.0})) == 128
    assert context_length(_cfg(None)) == 32


def test_bad_scaling_is_a_config_error():
    with pytest.raises(ConfigError, match="rope_type='longrope'"):
        rope_inv_freq(_cfg({"rope_type": "longrope", "factor": 2.0}))
    with pytest.raises(ConfigError, match="factor"):
        rope_inv_freq(_cfg({"rope_type": "linear", "factor": 0.5}))


def test_scaling_set_at_inference_extends_the_engine_context(tmp_path):
    from llmkit.model.rope import parse_rope_scaling, set_rope_scaling

    torch.manual_seed(0)
    model = Transformer(_cfg(None)).eval()
    save_checkpoint(tmp_path / "ckpt", model)
    ours = load_model(tmp_path / "ckpt")
    set_rope_scaling(ours, parse_rope_scaling("yarn:4"))
    assert context_length(ours.config) == 128
    scaled = dict(ours.config.rope_scaling)
    save_checkpoint(tmp_path / "scaled", ours)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "scaled").eval()
    x = torch.randint(0, 128, (1, 100))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=2e-5, rtol=0)
    assert load_model(tmp_path / "scaled").config.rope_scaling == scaled
    with pytest.raises(ConfigError, match="TYPE:FACTOR"):
        parse_rope_scaling("yarn")
    with pytest.raises(ConfigError):
        set_rope_scaling(ours, {"rope_type": "weird", "factor": 2})
    assert ours.config.rope_scaling == scaled  # unchanged on error
