"""Each logits processor equals the transformers LogitsProcessor of the same name on the same
random logits; the OpenAI penalties follow their published formula; options are validated."""

import pytest
import torch
from transformers.generation import logits_process as hf

from llmkit.errors import LLMKitError
from llmkit.infer import sampling as S
from llmkit.infer.sampling import SamplingParams

V = 50


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(4, V) * 3  # (N, V)


@pytest.fixture
def input_ids():
    torch.manual_seed(1)
    return torch.randint(0, V, (4, 12))  # (N, L) prompt + generated


def seen_mask(ids):
    return torch.zeros(ids.size(0), V, dtype=torch.bool).scatter_(1, ids, True)


def same(a, b):
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("t", [0.3, 0.7, 1.5])
def test_temperature(logits, input_ids, t):
    same(S.apply_temperature(logits, t), hf.TemperatureLogitsWarper(t)(input_ids, logits))


@pytest.mark.parametrize("k", [1, 5, 49, 80])
def test_top_k(logits, input_ids, k):
    same(S.apply_top_k(logits, k), hf.TopKLogitsWarper(k)(input_ids, logits))


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 1.0])
def test_top_p(logits, input_ids, p):
    same(S.apply_top_p(logits, p), hf.TopPLogitsWarper(p)(input_ids, logits))


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 1.0])
def test_min_p(logits, input_ids, p):
    same(S.apply_min_p(logits, p), hf.MinPLogitsWarper(p)(input_ids, logits))


@pytest.mark.parametrize("mass", [0.2, 0.6, 0.95])
def test_typical_p(logits, input_ids, mass):
    same(S.apply_typical_p(logits, mass), hf.TypicalLogitsWarper(mass)(input_ids, logits))


@pytest.mark.parametrize("penalty", [0.8, 1.3, 2.0])
def test_repetition_penalty(logits, input_ids, penalty):
    ours = S.apply_repetition_penalty(logits, seen_mask(input_ids), penalty)
    same(ours, hf.RepetitionPenaltyLogitsProcessor(penalty)(input_ids, logits.clone()))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram(logits, n):
    ids = torch.tensor(
        [[1, 2, 3, 1, 2, 3, 1, 2], [5, 5, 5, 5, 5, 5, 5, 5], [1, 2, 1, 3, 1, 4, 1, 2], [9, 8, 7, 6, 5, 4, 3, 2]]
    )
    ours = S.apply_no_repeat_ngram(logits, ids.tolist(), n)
    same(ours, hf.NoRepeatNGramLogitsProcessor(n)(ids, logits.clone()))


def test_logit_bias_is_single_token_sequence_bias(logits, input_ids):
    bias = {5: 3.0, 7: -2.5, 0: -100.0}
    ours = S.apply_logit_bias(logits, S.bias_vector(bias, V, "cpu"))
    ref = hf.SequenceBiasLogitsProcessor({(k,): v for k, v in bias.items()})(input_ids, logits)
    same(ours, ref)


def test_banned_ids_are_suppress_tokens(logits, input_ids):
    mask = torch.zeros(V, dtype=torch.bool)
    mask[[3, 4, 40]] = True
    same(S.apply_token_mask(logits, mask), hf.SuppressTokensLogitsProcessor([3, 4, 40])(input_ids, logits))


def test_allowed_ids_are_prefix_constrained(logits, input_ids):
    allowed = [1, 2, 30]
    pipe = S.LogitsPipeline(SamplingParams(temperature=0, allowed_token_ids=allowed), V, [], "cpu")
    ref = hf.PrefixConstrainedLogitsProcessor(lambda b, ids: allowed, num_beams=1)(input_ids, logits)
    same(pipe(logits), ref)


@pytest.mark.parametrize("generated", [3, 5, 7])
def test_min_new_tokens(logits, generated):
    prompt_len = 4
    ids = torch.randint(0, V, (4, prompt_len + generated))
    stop_mask = torch.zeros(V, dtype=torch.bool)
    stop_mask[[2, 9]] = True
    ours = S.apply_min_new_tokens(logits, stop_mask, torch.full((4,), generated) < 5)
    ref = hf.MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=prompt_len, min_new_tokens=5, eos_token_id=[2, 9])(
        ids, logits
    )
    same(ours, ref)


def test_presence_and_frequency_penalties_follow_openai_formula(logits):
    generated = [[1, 1, 1, 4], [], [7, 8, 7, 7], [0, 49, 49, 1]]
    counts = torch.zeros(4, V)
    for i, toks in enumerate(generated):
        for t in toks:
            counts[i, t] += 1
    ours = S.apply_presence_frequency(logits, counts, presence=0.5, frequency=0.25)
    expect = logits.clone()
    for i, toks in enumerate(generated):  # mu[j] -> mu[j] - c[j] * alpha_frequency - float(c[j] > 0) * alpha_presence
        for j in set(toks):
            expect[i, j] -= toks.count(j) * 0.25 + 0.5
    same(ours, expect)


def test_the_chain_runs_in_the_documented_order(logits, input_ids):
    params = SamplingParams(
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        min_p=0.02,
        typical_p=0.95,
        repetition_penalty=1.2,
        no_repeat_ngram_size=2,
        logit_bias={3: 2.0},
        banned_token_ids=[5],
        min_new_tokens=2,
    )
    pipe = S.LogitsPipeline(params, V, [2], "cpu")
    ours = pipe(
        logits, seen=seen_mask(input_ids), token_lists=input_ids.tolist(), n_generated=torch.tensor([0, 1, 2, 3])
    )
    prompt_len = input_ids.size(1) - 1
    chain = hf.LogitsProcessorList(
        [
            hf.SequenceBiasLogitsProcessor({(3,): 2.0}),
            hf.RepetitionPenaltyLogitsProcessor(1.2),
            hf.NoRepeatNGramLogitsProcessor(2),
            hf.SuppressTokensLogitsProcessor([5]),
        ]
    )
    ref = chain(input_ids, logits.clone())
    for row, gen in enumerate([0, 1, 2, 3]):  # min-new-tokens depends on each row's own count
        ref[row] = hf.MinNewTokensLengthLogitsProcessor(prompt_len, 2, [2])(
            input_ids[row : row + 1, : prompt_len + gen], ref[row : row + 1]
        )[0]
    for warper in (
        hf.TemperatureLogitsWarper(0.7),
        hf.TopKLogitsWarper(20),
        hf.TopPLogitsWarper(0.9),
        hf.MinPLogitsWarper(0.02),
        hf.TypicalLogitsWarper(0.95),
    ):
        ref = warper(input_ids, ref)
    same(ours, ref)


def test_greedy_and_seeded_sampling(logits):
    assert torch.equal(S.sample(logits, greedy=True), logits.argmax(-1))
    gens = lambda seed: [torch.Generator().manual_seed(seed + i) for i in range(4)]  # noqa: E731
    a = S.sample(logits, False, gens(3))
    assert torch.equal(a, S.sample(logits, False, gens(3)))
    # a row's draw depends only on its own generator, not on the batch around it
    assert S.sample(logits[2:3], False, gens(3)[2:3]).item() == a[2].item()


def test_sampling_follows_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([S.sample(logits, False, [g]) for _ in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freq, logits.softmax(-1)[0], atol=0.03, rtol=0)


def test_draw_follows_unnormalised_weights_and_never_picks_a_zero():
    weights = torch.tensor([[0.0, 3.0, 0.0, 1.0, 0.0], [5.0, 0.0, 0.0, 0.0, 0.0]])
    gens = [torch.Generator().manual_seed(1), None]
    draws = torch.stack([S.draw(weights, gens) for _ in range(4000)])  # (4000, 2)
    freq = torch.bincount(draws[:, 0], minlength=5).float() / len(draws)
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.75, 0.0, 0.25, 0.0]), atol=0.03, rtol=0)
    assert (draws[:, 1] == 0).all()
    with pytest.raises(LLMKitError, match="probability 0"):
        S.draw(torch.zeros(1, 5))
    with pytest.raises(LLMKitError, match="probability 0"):
        S.sample(torch.full((1, 5), float("-inf")), False)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=2.0), "min_p"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(num_beams=4, temperature=1.0, top_p=0.9), "num_beams=4 with sampling"),
        (dict(num_beams=2, n=3), "n=3"),
        (dict(allowed_token_ids=[]), "allowed_token_ids"),
        (dict(allowed_token_ids=[5, 6], banned_token_ids=[6, 5, 7]), "banned_token_ids"),
    ],
)
def test_bad_options_are_one_line_errors(kw, match):
    with pytest.raises(LLMKitError, match=match) as e:
        SamplingParams(**kw).validate()
    assert "\n" not in str(e.value)


def test_out_of_vocabulary_ids_are_errors():
    with pytest.raises(LLMKitError, match="logit_bias token id 99"):
        S.LogitsPipeline(SamplingParams(logit_bias={99: 1.0}), V, [], "cpu")
    with pytest.raises(LLMKitError, match="banned_token_ids contains id -1"):
        S.LogitsPipeline(SamplingParams(banned_token_ids=[-1]), V, [], "cpu")
