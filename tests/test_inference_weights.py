"""Inference-time weights and dtypes: packed/fused matmuls equal nn.Linear, follow training, an
inference-only model holds its weights once and refuses to train, bf16 stays close to fp32, the
RoPE table equals the direct formula, and ``--dtype`` reaches the CLI."""

import pytest
import torch
import torch.nn.functional as F

import llmkit
from llmkit.api import inference_dtype
from llmkit.checkpoint import load_model, save_checkpoint
from llmkit.cli import main
from llmkit.config import ModelConfig
from llmkit.infer.engine import Engine
from llmkit.infer.kv_cache import KVCache
from llmkit.infer.sampling import GenerationError, SamplingParams
from llmkit.model.inference import FastLinear, InferenceOnlyError, onednn_linear_works, prepare_for_inference
from llmkit.model.rope import RotaryEmbedding
from llmkit.model.transformer import Transformer

TEXT = "The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸跳过了懒狗。 " * 40


def config(**kw):
    kw = {
        "vocab_size": 320,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "initializer_range": 0.1,
        **kw,
    }
    return ModelConfig(**kw)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from llmkit.tokenizer import Tokenizer

    tok = Tokenizer.train([TEXT], vocab_size=320, show_progress=False)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "ckpt"
    save_checkpoint(path, Transformer(config(tie_word_embeddings=False)), tokenizer=tok)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pack", [False, True])
def test_fast_linear_equals_linear(dtype, pack):
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 200).to(dtype)
    fast = FastLinear(lin.weight.data, lin.bias.data, [lin.weight, lin.bias], pack)
    assert (fast.packed is not None) == (pack and onednn_linear_works(dtype))
    for shape in [(1, 1, 96), (3, 7, 96), (16, 96)]:
        x = torch.randn(shape).to(dtype)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(fast(x).float(), F.linear(x, lin.weight, lin.bias).float(), rtol=tol, atol=tol)


def test_fused_weights_are_views_and_packed_copies_follow_training(ckpt):
    """RL trains between rollouts: after an in-place optimizer step the fast path must compute
    with the new weights (the packed copy is rebuilt), and the fused matrices add no memory."""
    model = load_model(ckpt)
    Engine(model)  # prepares the weights
    attn = model.model.layers[0].self_attn
    fused = attn.fast["qkv"].weight
    assert attn.q_proj.weight.data_ptr() == fused.data_ptr()  # a row view, not a copy
    assert attn.k_proj.weight.data_ptr() == fused[attn.q_proj.out_features :].data_ptr()
    ids = torch.randint(0, 320, (2, 9))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(ids).float().pow(2).mean().backward()
    opt.step()
    with torch.no_grad():
        fast_logits = model(ids)  # the fast path, after the update
    with torch.enable_grad():
        plain_logits = model(ids)  # nn.Linear on the parameters themselves
    torch.testing.assert_close(fast_logits, plain_logits.detach(), rtol=1e-4, atol=1e-4)


def test_inference_only_holds_weights_once_and_refuses_to_train(ckpt):
    full = llmkit.load(ckpt, device="cpu")
    lean = llmkit.load(ckpt, device="cpu", inference_only=True)
    params = SamplingParams(temperature=0, max_new_tokens=20)
    assert (
        lean.engine.generate(["The quick"], params)[0][0].token_ids
        == full.engine.generate(["The quick"], params)[0][0].token_ids
    )
    released = [n for n, p in lean.model.named_parameters() if p.numel() == 0]
    assert any("q_proj" in n for n in released) and any("lm_head" in n for n in released)
    assert not any("embed_tokens" in n or "norm" in n for n in released)
    with pytest.raises(InferenceOnlyError, match="inference only"):
        lean.model(torch.randint(0, 320, (1, 5)))  # autograd on: the packed path cannot train


def test_bf16_generation_stays_close_to_fp32(ckpt):
    fp32, bf16 = load_model(ckpt), load_model(ckpt, dtype=torch.bfloat16)
    assert bf16.model.rotary_emb.inv_freq.dtype == torch.float32  # angles are not rounded to bf16
    eng32, eng16 = Engine(fp32), Engine(bf16)
    assert KVCache.for_model(bf16, 1, 8).k[0].dtype == torch.float32  # fp32 attention on CPU
    ids = torch.randint(0, 320, (1, 40))
    with torch.no_grad():
        a, b = fp32(ids)[0], bf16(ids)[0].float()  # (T, V)
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    params = SamplingParams(temperature=0, max_new_tokens=16)
    prompts = [[1, 50, 60], list(range(10, 50))]
    out32 = [c[0].token_ids for c in eng32.generate(prompts, params)]
    out16 = [c[0].token_ids for c in eng16.generate(prompts, params)]
    # bf16 rounding may flip a near-tie, after which the continuations diverge; they start the same
    assert all(x[:3] == y[:3] for x, y in zip(out32, out16, strict=True))
    # batched bf16 equals one by one (the engine's own invariant holds in every dtype)
    assert out16 == [eng16.generate([p], params)[0][0].token_ids for p in prompts]


def test_rope_table_equals_the_direct_formula():
    cfg = config(max_position_embeddings=4096)  # head_dim 16
    rope = RotaryEmbedding(cfg)
    pos = torch.tensor([[0, 3, 255, 256, 1000, 3000]])  # past the first table (256): it grows
    cos, sin = rope(torch.zeros(1, 6, 64), pos)  # (1, 6, 1, d)
    freqs = pos[0, :, None].float() * rope.inv_freq  # (6, d/2) as transformers computes them
    emb = torch.cat((freqs, freqs), -1)
    assert torch.equal(cos[0, :, 0], emb.cos())
    assert torch.equal(sin[0, :, 0], torch.cat((-freqs.sin(), freqs.sin()), -1))
    # rotate_half form == roll form
    from llmkit.model.rope import apply_rope

    x = torch.randn(1, 6, 3, 16)
    x1, x2 = x.chunk(2, -1)
    hf = x * emb.cos()[None, :, None] + torch.cat((-x2, x1), -1) * emb.sin()[None, :, None]
    torch.testing.assert_close(apply_rope(x, cos, sin), hf, rtol=0, atol=0)


def test_dtype_auto_follows_the_hardware():
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    assert inference_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert inference_dtype(None, "cpu") == torch.float32
    assert inference_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(GenerationError, match="float64"):
        inference_dtype("float64", "cpu")


def test_dtype_flag_reaches_the_cli(ckpt, capsys):
    outs = {}
    for dtype in ("float32", "bfloat16"):
        assert (
            main(
                [
                    "generate",
                    str(ckpt),
                    "--prompt",
                    "The quick",
                    "--max-new-tokens",
                    "6",
                    "--temperature",
                    "0",
                    "--dtype",
                    dtype,
                ]
            )
            == 0
        )
        outs[dtype] = capsys.readouterr().out
    assert all(o.startswith("The quick") for o in outs.values())
    with pytest.raises(SystemExit) as e:
        main(["generate", str(ckpt), "--prompt", "x", "--dtype", "float64"])
    assert e.value.code == 2
    assert "float64" in capsys.readouterr().err


def test_prepare_is_idempotent_and_survives_inference_mode(ckpt):
    model = load_model(ckpt)
    with torch.inference_mode():
        prepare_for_inference(model)  # parameters must stay ordinary tensors (trainable later)
    first = model.model.layers[0].mlp.fast["gate_up"]
    prepare_for_inference(model)
    assert model.model.layers[0].mlp.fast["gate_up"] is first
    assert not model.model.layers[0].mlp.gate_proj.weight.is_inference()


def test_a_model_loaded_inside_inference_mode_can_be_prepared_and_generate(ckpt):
    with torch.inference_mode():
        model = load_model(ckpt)
        prepare_for_inference(model, release_dense=True)
        out = Engine(model).generate([[1, 5, 6]], SamplingParams(temperature=0, max_new_tokens=5))
    assert len(out[0][0].token_ids) == 5
