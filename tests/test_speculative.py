"""Speculative decoding: greedy output equals plain greedy (draft model and prompt lookup), sampling
keeps the target's distribution, and a mismatched draft is refused."""

import pytest
import torch

from llmkit.config import ModelConfig
from llmkit.errors import LLMKitError
from llmkit.infer.engine import Engine
from llmkit.infer.sampling import SamplingParams
from llmkit.infer.speculative import SpeculativeDecoder
from llmkit.model.transformer import Transformer


def model(seed, layers=2, hidden=64, vocab=200, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.1,
        **kw,
    )
    return Transformer(cfg).eval()


@pytest.fixture(scope="module")
def target():
    return Engine(model(0))


def test_draft_model_greedy_equals_plain_greedy(target):
    # a draft that agrees partly: the target with its last layer dropped
    draft = model(0, layers=1)
    spec = SpeculativeDecoder(target, draft, num_draft_tokens=4)
    for p in ([1, 5, 9], [1, *list(range(20, 60))]):
        params = SamplingParams(temperature=0, max_new_tokens=50, ignore_eos=True)
        assert spec.generate(p, params).token_ids == target.generate([p], params)[0][0].token_ids
    assert spec.stats.drafted > 0 and 0 <= spec.stats.acceptance_rate <= 1


def test_identical_draft_accepts_everything(target):
    spec = SpeculativeDecoder(target, model(0), num_draft_tokens=3)
    params = SamplingParams(temperature=0, max_new_tokens=30, ignore_eos=True)
    assert spec.generate([1, 2, 3], params).token_ids == target.generate([[1, 2, 3]], params)[0][0].token_ids
    assert spec.stats.acceptance_rate == 1.0 and spec.stats.tokens_per_forward > 3


def test_prompt_lookup_greedy_equals_plain_greedy_with_processors(target):
    spec = SpeculativeDecoder(target, prompt_lookup=True, num_draft_tokens=5)
    prompt = [1] + [7, 8, 9, 10, 11] * 6
    for params in (
        SamplingParams(temperature=0, max_new_tokens=40, ignore_eos=True),
        SamplingParams(
            temperature=0,
            max_new_tokens=40,
            ignore_eos=True,
            repetition_penalty=1.3,
            no_repeat_ngram_size=3,
            frequency_penalty=0.5,
        ),
    ):
        plain = target.generate([prompt], params)[0][0].token_ids
        assert spec.generate(prompt, params).token_ids == plain


def test_sampling_keeps_the_target_distribution():
    # first-token distribution after a fixed prompt, estimated from many seeded runs
    tgt, drf = Engine(model(0, vocab=16, hidden=32)), model(5, vocab=16, hidden=32, layers=1)
    spec = SpeculativeDecoder(tgt, drf, num_draft_tokens=2)
    params = SamplingParams(temperature=1.0, max_new_tokens=2, ignore_eos=True)
    with torch.no_grad():
        logits = tgt.model(torch.tensor([[1, 3, 4]]))[0, -1]
        probs = logits.softmax(-1)
        # second token's marginal: sum_x p(x) p(y | x)
        second = torch.zeros(16)
        for x in range(16):
            second += probs[x] * tgt.model(torch.tensor([[1, 3, 4, x]]))[0, -1].softmax(-1)
    first_counts, second_counts = torch.zeros(16), torch.zeros(16)
    n = 1500
    for seed in range(n):
        toks = spec.generate([1, 3, 4], params.with_(seed=seed)).token_ids
        first_counts[toks[0]] += 1
        second_counts[toks[1]] += 1
    torch.testing.assert_close(first_counts / n, probs, atol=0.04, rtol=0)
    torch.testing.assert_close(second_counts / n, second, atol=0.04, rtol=0)


def test_seeded_speculative_sampling_is_reproducible(target):
    spec = SpeculativeDecoder(target, model(3, layers=1), num_draft_tokens=3)
    params = SamplingParams(temperature=0.8, top_k=50, max_new_tokens=20, seed=11, ignore_eos=True)
    assert spec.generate([1, 2], params).token_ids == spec.generate([1, 2], params).token_ids


def test_stream_matches_generate(target):
    spec = SpeculativeDecoder(target, prompt_lookup=True)
    params = SamplingParams(temperature=0, max_new_tokens=25, ignore_eos=True)
    assert [o.token_id for o in spec.stream([1, 4, 4, 4], params)] == spec.generate([1, 4, 4, 4], params).token_ids


def test_draft_with_another_vocabulary_is_refused(target):
    with pytest.raises(LLMKitError, match="vocabulary"):
        SpeculativeDecoder(target, model(0, vocab=300))
    with pytest.raises(LLMKitError, match="draft model or prompt_lookup"):
        SpeculativeDecoder(target)


def test_draft_checkpoint_with_another_tokenizer_is_refused(tmp_path):
    import llmkit
    from llmkit.checkpoint import save_checkpoint
    from llmkit.tokenizer import Tokenizer

    a = Tokenizer.train(["hello world " * 50], vocab_size=300, show_progress=False)
    b = Tokenizer.train(["你好世界 goodbye " * 50], vocab_size=300, show_progress=False)
    save_checkpoint(tmp_path / "target", model(0, vocab=320), tokenizer=a)
    save_checkpoint(tmp_path / "draft", model(1, vocab=320, layers=1), tokenizer=b)
    lm = llmkit.load(tmp_path / "target", device="cpu")
    with pytest.raises(LLMKitError, match="different tokenizer"):
        lm.generate("hello", max_new_tokens=3, draft=tmp_path / "draft")
