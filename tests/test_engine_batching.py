"""Continuous batching in the engine's step API: admission between steps under the row, KV and
prefill budgets, first-come-first-served order, cancellation, and results that never depend on
what else was in the batch."""

import pytest
import torch

from llmkit.infer.engine import Engine
from llmkit.infer.kv_cache import KVCache
from llmkit.infer.sampling import SamplingParams


@pytest.fixture(scope="module")
def model(tiny_engine_model):
    return tiny_engine_model


def greedy(n_tokens, **kw):
    return SamplingParams(temperature=0, max_new_tokens=n_tokens, ignore_eos=True, **kw)


def run(engine, requests):
    """Add every (prompt, params) at once, step until done; per request: its token ids, and the
    largest batch and cache seen on the way."""
    ids = [engine.add(p, params) for p, params in requests]
    tokens = {sid: [] for group in ids for sid in group}
    biggest, cache_slots = 0, 0
    while engine.has_work():
        for o in engine.step():
            tokens[o.seq_id].append(o.token_id)
        biggest = max(biggest, engine.num_running)
        cache_slots = max(cache_slots, engine.cache.max_batch * engine.cache.max_len)
    for group in ids:
        for sid in group:
            engine.result(sid)
    return [tokens[g[0]] for g in ids], biggest, cache_slots


def prompts(k, length=6):
    return [[1, *[(7 * i + j) % 90 + 3 for j in range(length + i % 5)]] for i in range(k)]


def test_kv_budget_bounds_rows_and_cache_and_changes_no_result(model):
    reqs = [(p, greedy(20)) for p in prompts(10)]
    free, free_rows, _ = run(Engine(model, max_batch=16), reqs)
    longest = max(len(p) + 20 for p, _ in reqs)
    budget = 3 * longest
    out, rows, slots = run(Engine(model, max_batch=16, max_batch_tokens=budget), reqs)
    assert out == free
    assert free_rows == 10 and rows == 3
    assert slots <= budget


def test_one_request_larger_than_the_budget_still_runs_alone(model):
    eng = Engine(model, max_batch_tokens=8)
    (out,), rows, _ = run(eng, [(prompts(1)[0], greedy(30))])
    assert len(out) == 30 and rows == 1


def test_prefill_budget_spreads_a_burst_over_steps(model):
    eng = Engine(model, max_batch=16, prefill_budget=20)
    for p in prompts(6, length=8):  # 9-13 tokens each: at most 2 per step fit in 20
        eng.add(p, greedy(10))
    admitted = []
    while eng.has_work():
        before = eng.num_waiting
        eng.step()
        admitted.append(before - eng.num_waiting)
    assert admitted[0] >= 1 and max(admitted) <= 2
    assert sum(admitted) == 6


def test_waiting_requests_are_admitted_in_order(model):
    eng = Engine(model, max_batch=2)
    first_token_step = {}
    order = [eng.add(p, greedy(4 + 3 * i))[0] for i, p in enumerate(prompts(6))]
    step = 0
    while eng.has_work():
        step += 1
        for o in eng.step():
            first_token_step.setdefault(o.seq_id, step)
    starts = [first_token_step[s] for s in order]
    assert starts == sorted(starts)


def test_a_late_short_request_starts_while_long_ones_run(model):
    eng = Engine(model, max_batch=8)
    long_ids = [eng.add(p, greedy(100))[0] for p in prompts(3)]
    for _ in range(10):
        eng.step()
    (short,) = eng.add([1, 5, 6], greedy(3))
    step, first, long_done = 0, None, None
    while eng.has_work():
        step += 1
        for o in eng.step():
            if o.seq_id == short and first is None:
                first = step
            if o.seq_id in long_ids and o.finished and long_done is None:
                long_done = step
    assert first == 1 and long_done > 80


def test_remove_frees_the_row_for_the_next_request(model):
    eng = Engine(model, max_batch=2)
    a, b = (eng.add(p, greedy(50))[0] for p in prompts(2))
    (c,) = eng.add(prompts(3)[2], greedy(5))
    eng.step()
    assert eng.num_running == 2 and eng.num_waiting == 1
    eng.remove(a)
    assert eng.num_running == 1
    eng.step()
    assert eng.num_running == 2 and eng.num_waiting == 0  # c took a's row at the next step
    eng.remove(b)
    eng.remove(c)
    assert not eng.has_work()


def test_cache_resize_keeps_rows_and_slots_that_fit():
    cache = KVCache(1, 2, 8, 1, 2, torch.float32, "cpu")
    for t in cache.k + cache.v:
        t.copy_(torch.arange(t.numel(), dtype=torch.float32).view_as(t))
    before = cache.k[0].clone()
    cache.resize(3, 4)
    assert cache.k[0].shape == (3, 1, 4, 2)
    assert torch.equal(cache.k[0][:2], before[:, :, :4]) and not cache.k[0][2].any()
