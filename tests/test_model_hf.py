"""Our checkpoints are Hugging Face Llama checkpoints: same logits in transformers, no custom code."""

import json

import pytest
import torch
import transformers

from llmkit.checkpoint import check_checkpoint, load_model, save_checkpoint
from llmkit.config import ModelConfig
from llmkit.errors import CheckpointError
from llmkit.model.transformer import Transformer


def tiny(tie=True, kv=4, **kw):
    return ModelConfig(
        vocab_size=320,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv,
        tie_word_embeddings=tie,
        max_position_embeddings=64,
        **kw,
    )


@pytest.mark.parametrize("tie,kv", [(True, 4), (False, 4), (True, 2), (False, 1)])
def test_transformers_loads_checkpoint_with_same_logits(tmp_path, tie, kv):
    torch.manual_seed(0)
    model = Transformer(tiny(tie, kv, rope_theta=500.0)).eval()
    save_checkpoint(tmp_path / "ckpt", model)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    x = torch.randint(0, 320, (3, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=0)
        reloaded = load_model(tmp_path / "ckpt")
        torch.testing.assert_close(reloaded(x), model(x), atol=0, rtol=0)


def test_qwen2_variant_round_trips(tmp_path):
    torch.manual_seed(0)
    model = Transformer(tiny(True, 2, attention_bias=True)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.k_proj.bias.normal_()
    save_checkpoint(tmp_path / "ckpt", model)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    assert type(hf).__name__ == "Qwen2ForCausalLM"
    x = torch.randint(0, 320, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-5, rtol=0)
    assert model.num_params() == model.config.num_params()


def test_we_load_a_checkpoint_written_by_transformers(tmp_path):
    cfg = transformers.LlamaConfig(
        vocab_size=200,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")
    x = torch.randint(0, 200, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=1e-5, rtol=0)


def test_transformers_pipeline_generates_what_llmkit_generate_does(tmp_path, capfd):
    """Same prompt ids (BOS from the tokenizer's post-processor), same greedy text, and no warning
    about a saved max_length when the caller passes max_new_tokens."""
    from llmkit.cli import main
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.train(["Hello world, this is a test. 你好，世界！ " * 50], vocab_size=300, show_progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=320,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        initializer_range=0.2,  # peaked logits: greedy choices are far from ties
    )
    save_checkpoint(tmp_path / "ckpt", Transformer(cfg), tokenizer=tok)
    assert "max_length" not in json.loads((tmp_path / "ckpt" / "generation_config.json").read_text())
    prompt = "Hello 你好"
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert hf_tok(prompt)["input_ids"] == tok.encode(prompt, bos=True)

    transformers.logging.set_verbosity_warning()
    capfd.readouterr()
    pipe = transformers.pipeline("text-generation", model=str(tmp_path / "ckpt"), device="cpu")
    out = pipe(prompt, max_new_tokens=16, do_sample=False)[0]["generated_text"]
    assert "max_length" not in capfd.readouterr().err
    argv = ["generate", str(tmp_path / "ckpt"), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "16"]
    assert main([*argv, "--dtype", "float32"]) == 0
    ours = capfd.readouterr().out
    assert ours.rstrip("\n") == out and len(out) > len(prompt)


def test_incomplete_checkpoint_is_a_clear_error(tmp_path):
    model = Transformer(tiny())
    save_checkpoint(tmp_path / "c", model)
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing model.safetensors"):
        load_model(tmp_path / "c")
    with pytest.raises(CheckpointError, match=r"not found"):
        check_checkpoint(tmp_path / "nope")


def test_incompatible_version_and_corrupt_files(tmp_path):
    model = Transformer(tiny())
    save_checkpoint(tmp_path / "c", model)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["llmkit_format_version"] = 99
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"newer than this llmkit"):
        load_model(tmp_path / "c")
    cfg["llmkit_format_version"] = 1
    cfg["hidden_size"] = 128
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"do not match config.json"):
        load_model(tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"corrupt"):
        load_model(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"not valid JSON"):
        load_model(tmp_path / "c")


def test_flops_and_param_count_agree_with_config():
    cfg = tiny(False, 2)
    model = Transformer(cfg)
    assert model.num_params() == cfg.num_params()


def test_training_after_generation_reaches_every_parameter(tmp_path):
    """The engine's fused inference matmuls must not cut gradients off (RL trains after rollouts)."""
    import llmkit
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.train(["Hello world, this is a test. 你好，世界！ " * 50], vocab_size=300, show_progress=False)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", Transformer(tiny(True, 2)), tokenizer=tok)
    lm = llmkit.load(tmp_path / "ckpt", device="cpu")
    lm.generate("Hello", max_new_tokens=4, temperature=0)
    lm.model.train()
    lm.model(torch.randint(0, 300, (2, 12))).float().pow(2).mean().backward()
    missing = [n for n, p in lm.model.named_parameters() if p.grad is None]
    assert not missing
