"""Open checkpoints as inputs: Llama, Mistral, Qwen2 and Qwen3 models saved by transformers load
into llmkit with the same logits, and what llmkit saves from them loads back in transformers."""

import json

import pytest
import torch
import transformers

from llmkit.checkpoint import load_model, save_checkpoint
from llmkit.errors import ConfigError
from llmkit.infer.engine import Engine
from llmkit.infer.sampling import SamplingParams

SHAPE = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)

FAMILIES = {
    # family: (config class, extra config, save options)
    "llama-untied-sharded": (transformers.LlamaConfig, dict(tie_word_embeddings=False), dict(max_shard_size="20KB")),
    "llama-tied-bf16": (transformers.LlamaConfig, dict(tie_word_embeddings=True, rope_theta=500.0), dict(bf16=True)),
    "mistral-window": (transformers.MistralConfig, dict(sliding_window=7), dict(max_shard_size="30KB")),
    "qwen2-window-bf16": (
        transformers.Qwen2Config,
        dict(use_sliding_window=True, sliding_window=6, max_window_layers=1, tie_word_embeddings=True),
        dict(bf16=True),
    ),
    "qwen3-headdim": (transformers.Qwen3Config, dict(head_dim=16, tie_word_embeddings=True), {}),
    "qwen3-window-sharded": (
        transformers.Qwen3Config,
        dict(head_dim=8, use_sliding_window=True, sliding_window=5, max_window_layers=2),
        dict(max_shard_size="20KB"),
    ),
}


def save_hf(family: str, path):
    """A random model of ``family`` saved by transformers; returns it in fp32 with the saved weights."""
    cls, extra, opts = FAMILIES[family]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cls(**SHAPE, **extra))
    with torch.no_grad():  # biases and norm gains start at 0 and 1: make them count
        for name, p in model.named_parameters():
            if name.endswith(("bias", "norm.weight")):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    if opts.get("bf16"):
        model = model.to(torch.bfloat16)
    kwargs = {"max_shard_size": opts["max_shard_size"]} if "max_shard_size" in opts else {}
    model.save_pretrained(path, **kwargs)
    return model.float().eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_transformers_checkpoints_load_with_equal_logits(tmp_path, family):
    hf = save_hf(family, tmp_path / "hf")
    if "sharded" in family or "mistral" in family:
        assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    ours = load_model(tmp_path / "hf")
    assert ours.config.model_type == family.split("-")[0]
    x = torch.randint(0, 96, (2, 24))  # longer than every sliding window above
    with torch.no_grad():
        expected = hf(x).logits
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
        # ... and what llmkit writes from it is the same model to transformers
        save_checkpoint(tmp_path / "ours", ours)
        again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
        assert type(again).__name__ == type(hf).__name__
        torch.testing.assert_close(again(x).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(load_model(tmp_path / "ours")(x), ours(x), atol=0, rtol=0)


@pytest.mark.parametrize("family", ["mistral-window", "qwen3-window-sharded"])
def test_engine_decodes_past_the_sliding_window_like_transformers(tmp_path, family):
    hf = save_hf(family, tmp_path / "hf")
    ours = load_model(tmp_path / "hf")
    prompts = [[5, 9, 11], [7, 3, 2, 8, 1, 4, 6, 12, 13]]  # rows of different lengths share a batch
    engine = Engine(ours, add_bos=False)
    params = SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True)
    got = [c[0].token_ids for c in engine.generate(prompts, params)]
    for prompt, tokens in zip(prompts, got, strict=True):
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None)
        assert tokens == out[0, len(prompt) :].tolist()


def test_unsupported_architecture_is_one_line(tmp_path):
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError) as e:
        load_model(tmp_path / "gpt2")
    msg = str(e.value)
    assert "\n" not in msg and "GPT2LMHeadModel" in msg
    assert all(a in msg for a in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"))


def test_a_config_without_family_defaults_takes_transformers_defaults(tmp_path):
    """Older config.json files omit keys whose transformers default differs from llmkit's own."""
    save_hf("llama-untied-sharded", tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    for key in ("tie_word_embeddings", "rms_norm_eps"):
        cfg.pop(key)
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    model = load_model(tmp_path / "hf")
    assert not model.config.tie_word_embeddings and model.config.rms_norm_eps == 1e-6
