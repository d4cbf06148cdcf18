"""The continuation scorer against direct per-request forward passes."""

import pytest
import torch

from llmkit.config import ModelConfig
from llmkit.infer.sampling import GenerationError
from llmkit.infer.scoring import score
from llmkit.model.transformer import Transformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(
        ModelConfig(
            vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=24
        )
    ).eval()


def _direct(model, context, continuation):
    ids = torch.tensor([context + continuation])
    lp = torch.log_softmax(model(ids[:, :-1]).float(), -1)[0]
    n = len(continuation)
    rows = lp[-n:]
    picked = rows.gather(-1, torch.tensor(continuation)[:, None])[:, 0]
    return picked.tolist(), (rows.argmax(-1) == torch.tensor(continuation)).tolist()


def test_batched_scores_equal_one_request_at_a_time(model):
    g = torch.Generator().manual_seed(1)
    reqs = []
    for n_ctx, n_cont in [(1, 1), (5, 3), (12, 2), (3, 7), (9, 1)]:
        ctx = torch.randint(0, 97, (n_ctx,), generator=g).tolist()
        cont = torch.randint(0, 97, (n_cont,), generator=g).tolist()
        reqs.append((ctx, cont))
    got = score(model, reqs, batch_size=2, top_k=3)
    for (ctx, cont), s in zip(reqs, got, strict=True):
        want, greedy = _direct(model, ctx, cont)
        torch.testing.assert_close(torch.tensor(s.token_logprobs), torch.tensor(want), atol=1e-5, rtol=1e-5)
        assert s.greedy == greedy
        assert len(s.top) == len(cont) and all(len(t) == 3 for t in s.top)
        assert s.logprob == pytest.approx(sum(want), abs=1e-4)


def test_long_context_is_cut_on_the_left(model):
    ctx, cont = list(range(1, 40)), [5, 6]
    (s,) = score(model, [(ctx, cont)])
    want, _ = _direct(model, ctx[-(24 + 1 - 2) :], cont)
    torch.testing.assert_close(torch.tensor(s.token_logprobs), torch.tensor(want), atol=1e-5, rtol=1e-5)


def test_bad_requests(model):
    with pytest.raises(GenerationError, match="empty"):
        score(model, [([1], [])])
    with pytest.raises(GenerationError, match="context"):
        score(model, [([1], list(range(30)))])
