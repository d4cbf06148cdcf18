"""The int8 KV cache: a quarter of the fp32 cache's bytes, logits close to the full-precision
cache's, and rows and slots that move (copy, reorder, resize, prefix reuse) as in the fp32 cache."""

import pytest
import torch

from llmkit.infer.engine import Engine
from llmkit.infer.kv_cache import Int8KVCache, KVCache
from llmkit.infer.sampling import GenerationError, SamplingParams


@pytest.fixture(scope="module")
def model(tiny_engine_model):
    return tiny_engine_model


def test_quantize_round_trip_error_is_half_a_step():
    x = torch.randn(3, 2, 5, 64)
    q, scale = Int8KVCache.quantize(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 2, 5, 1)
    err = (q.float() * scale - x).abs()
    assert (err <= scale / 2 + 1e-7).all()  # round to nearest: at most half a step per number
    assert q.abs().amax(-1).eq(127).all()  # each vector's largest number uses the full range


def test_int8_cache_is_about_a_quarter_of_fp32(model):
    fp = KVCache.for_model(model, 4, 64)
    q8 = KVCache.for_model(model, 4, 64, "int8")
    assert isinstance(q8, Int8KVCache) and q8.dtype == torch.float32
    head_dim = model.config.head_dim
    assert q8.nbytes() / fp.nbytes() == pytest.approx((1 + 4 / head_dim) / 4)
    with pytest.raises(ValueError, match="int8"):
        KVCache.for_model(model, 1, 8, "fp4")


def test_logits_through_int8_cache_are_close_to_fp32(model):
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (2, 40))
    out = {}
    for kind in ("auto", "int8"):
        cache = KVCache.for_model(model, 2, 48, kind)
        cache.bind(slice(0, 2), [0, 0], 32)
        logits = [model(ids[:, :32], kv_cache=cache)]  # prefill (2, 32, V)
        for p in range(32, 40):  # then decode one token at a time, each reading the cache
            cache.bind(slice(0, 2), [p, p], 1)
            logits.append(model(ids[:, p : p + 1], position_ids=torch.full((2, 1), p), kv_cache=cache))
        out[kind] = torch.cat(logits, 1)  # (2, 40, V)
    rel = (out["int8"] - out["auto"]).norm() / out["auto"].norm()
    assert 0 < rel < 0.01


def test_rows_move_with_their_scales():
    cache = Int8KVCache(1, 3, 6, 1, 4, torch.float32, "cpu")
    k = torch.randn(1, 1, 6, 4)
    cache.bind(slice(0, 1), [0], 6)
    want, _ = cache.update(0, k, k * 2)
    cache.copy_row(0, 2, 6)
    cache.bind(slice(2, 3), [6], 0)
    got, got_v = cache.update(0, k[:, :, :0], k[:, :, :0])
    assert torch.equal(got, want) and torch.allclose(got_v, 2 * want, rtol=0.02, atol=0.02)
    cache.reorder(slice(0, 3), torch.tensor([2, 1, 0]), 6)
    cache.resize(4, 8)
    cache.bind(slice(0, 1), [6], 0)
    assert torch.equal(cache.update(0, k[:, :, :0], k[:, :, :0])[0], want)


def test_engine_with_int8_cache_batched_equals_alone_and_reuses_prefixes(model):
    params = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)
    prompts = [[1, 5, 9, 13, 17], list(range(2, 30))]
    fp = Engine(model, max_batch=4).generate(prompts, params)
    engine = Engine(model, max_batch=4, kv_cache="int8", prefix_cache=2)
    batched = [c[0].token_ids for c in engine.generate(prompts, params)]
    alone = [engine.generate([p], params)[0][0].token_ids for p in prompts]
    assert batched == alone
    agree = sum(a == b for x, y in zip(batched, fp, strict=True) for a, b in zip(x, y[0].token_ids, strict=True))
    assert agree >= 20  # of 24 greedy tokens: the quantized cache rarely changes a choice
    # a continuation of a finished sequence reuses its int8 keys/values
    follow = prompts[1] + batched[1] + [3, 4]
    engine.generate([follow], params)
    assert engine.prefixes.reused_tokens >= len(prompts[1])
    with pytest.raises(GenerationError, match="kv_cache"):
        Engine(model, kv_cache="int4")
