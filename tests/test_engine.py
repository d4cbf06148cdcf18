"""The inference engine against transformers (greedy, beam search) and against itself (batched vs
one by one, step API, prefix sharing), plus stopping, streaming and error messages."""

import pytest
import torch
import transformers
from torch import nn

import llmkit
from llmkit.checkpoint import load_model, save_checkpoint
from llmkit.config import ModelConfig
from llmkit.errors import LLMKitError
from llmkit.infer.engine import Engine
from llmkit.infer.sampling import SamplingParams
from llmkit.model.transformer import Transformer

TEXT = "Hello world, this is a test of the engine. 你好，世界！床前明月光，疑是地上霜。😀🎉 " * 40


def tiny_config(vocab=320, **kw):
    # initializer_range 0.1 makes a random model's logits peaked enough that greedy decoding is
    # not decided by rounding noise.
    kw = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 160,
        "initializer_range": 0.1,
        **kw,
    }
    return ModelConfig(vocab_size=vocab, **kw)


@pytest.fixture(scope="module")
def tokenizer():
    from llmkit.tokenizer import Tokenizer

    return Tokenizer.train([TEXT], vocab_size=320, show_progress=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("eng") / "ckpt"
    save_checkpoint(path, Transformer(tiny_config(tie_word_embeddings=False)), tokenizer=tokenizer)
    return path


@pytest.fixture(scope="module")
def hf_model(ckpt):
    return transformers.AutoModelForCausalLM.from_pretrained(ckpt).eval()


@pytest.fixture(scope="module")
def engine(ckpt, tokenizer):
    return Engine(load_model(ckpt), tokenizer)


class ScriptedLM(nn.Module):
    """A stand-in model that emits a fixed token script after a prompt of known length, so stop
    strings and UTF-8 boundaries can be placed exactly. Same interface as Transformer."""

    def __init__(self, script: list[int], prompt_len: int, vocab: int):
        super().__init__()
        self.config = ModelConfig(
            vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=256
        )
        self.script, self.prompt_len = script, prompt_len
        self.lm_head = nn.Linear(vocab, vocab, bias=False)
        self.lm_head.weight.data = torch.eye(vocab) * 10

    def hidden_states(self, input_ids, position_ids=None, attn_mask=None, kv_cache=None):
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T).expand(B, T)
        step = (position_ids - self.prompt_len + 1).clamp(0, len(self.script) - 1)  # (B, T)
        return nn.functional.one_hot(torch.tensor(self.script)[step], self.config.vocab_size).float()

    def head(self, h):
        return self.lm_head(h)

    def forward(self, input_ids, position_ids=None, attn_mask=None, kv_cache=None, last_only=False):
        return self.head(self.hidden_states(input_ids, position_ids))


def greedy(**kw):
    return SamplingParams(temperature=0, **kw)


# ------------------------------------------------------------------ parity with transformers
def test_greedy_equals_transformers_token_for_token(engine, hf_model):
    prompts = [[1, 50, 60, 70], [1, *list(range(100, 140))], [1, 7]]
    ours = engine.generate(prompts, greedy(max_new_tokens=80, min_new_tokens=80))
    for p, (c,) in zip(prompts, ours, strict=True):
        ref = hf_model.generate(torch.tensor([p]), max_new_tokens=80, do_sample=False, min_new_tokens=80)
        assert c.token_ids == ref[0, len(p) :].tolist()
        assert len(c.token_ids) == 80


def test_greedy_stops_at_eos_like_transformers(engine, hf_model):
    # a bias on EOS makes it likely after a few tokens; both sides apply the same bias
    p = [1, 20, 30]
    ours = engine.generate([p], greedy(max_new_tokens=64, logit_bias={2: 4.0}))[0][0]
    ref = hf_model.generate(torch.tensor([p]), max_new_tokens=64, do_sample=False, sequence_bias={(2,): 4.0})
    assert ours.token_ids == ref[0, len(p) :].tolist()
    assert ours.finish_reason == "stop" and ours.token_ids[-1] == 2


@pytest.mark.parametrize(
    "length_penalty,early_stopping,eos_bias", [(1.0, False, 0.0), (0.5, True, 3.0), (2.0, False, 3.0), (1.0, True, 3.5)]
)
def test_beam_search_equals_transformers(engine, hf_model, length_penalty, early_stopping, eos_bias):
    for p in ([1, 50, 60, 70], [1, *list(range(100, 120))]):
        ours = engine.beam_search(
            p,
            SamplingParams(
                max_new_tokens=24,
                temperature=0,
                num_beams=4,
                n=4,
                length_penalty=length_penalty,
                early_stopping=early_stopping,
                logit_bias={2: eos_bias} if eos_bias else None,
            ),
        )
        ref = hf_model.generate(
            torch.tensor([p]),
            max_new_tokens=24,
            do_sample=False,
            num_beams=4,
            num_return_sequences=4,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
            output_scores=True,
            return_dict_in_generate=True,
            sequence_bias={(2,): eos_bias} if eos_bias else None,
        )
        for c, seq, score in zip(ours, ref.sequences, ref.sequences_scores, strict=True):
            gen = seq[len(p) :].tolist()
            assert c.token_ids == gen[: len(c.token_ids)]
            # transformers pads shorter beams (with EOS when pad_token_id is 0)
            assert all(t in (0, 2) for t in gen[len(c.token_ids) :])
            assert c.score == pytest.approx(score.item(), abs=1e-4)


# ------------------------------------------------------------------ batching and the step API
def test_batched_equals_one_by_one_for_very_different_lengths(engine):
    prompts = [[1, 9], [1, *list(range(30, 130))], [1, 5, 6, 7, 8, 9, 10], [1] * 40]
    params = greedy(max_new_tokens=40, ignore_eos=True)
    batched = engine.generate(prompts, params)
    for p, (c,) in zip(prompts, batched, strict=True):
        assert engine.generate([p], params)[0][0].token_ids == c.token_ids


def test_seeded_sampling_is_reproducible_and_batch_independent(engine):
    params = SamplingParams(max_new_tokens=30, temperature=1.0, top_k=40, seed=7, ignore_eos=True)
    a = engine.generate([[1, 5], [1, 6, 7]], params)
    b = engine.generate([[1, 5], [1, 6, 7]], params)
    assert [c[0].token_ids for c in a] == [c[0].token_ids for c in b]
    # prompt i uses seed + i: alone, the second prompt needs seed 8 to reproduce its batched result
    alone = engine.generate([[1, 6, 7]], params.with_(seed=8))
    assert alone[0][0].token_ids == a[1][0].token_ids
    other = engine.generate([[1, 5]], params.with_(seed=123))
    assert other[0][0].token_ids != a[0][0].token_ids


def test_n_samples_share_the_prefill(engine):
    outs = engine.generate([[1, 40, 41, 42]], greedy(max_new_tokens=20, ignore_eos=True, n=3))[0]
    single = engine.generate([[1, 40, 41, 42]], greedy(max_new_tokens=20, ignore_eos=True))[0][0]
    assert [c.token_ids for c in outs] == [single.token_ids] * 3
    sampled = engine.generate([[1, 40]], SamplingParams(max_new_tokens=20, seed=1, n=3, ignore_eos=True))[0]
    assert len({tuple(c.token_ids) for c in sampled}) == 3


def test_step_api_join_and_leave_mid_flight(engine):
    params = greedy(max_new_tokens=25, ignore_eos=True)
    ref = {tuple(p): engine.generate([p], params)[0][0].token_ids for p in ([1, 3, 4], [1] + [8] * 30, [1, 99])}
    (a,) = engine.add([1, 3, 4], params)
    (cancel,) = engine.add([1, 55, 56], params)
    for _ in range(5):
        engine.step()
    (b,) = engine.add([1] + [8] * 30, params)  # joins while a is running
    engine.step()
    engine.remove(cancel)  # leaves mid-flight; its row is reused
    (c,) = engine.add([1, 99], params)
    while engine.has_work():
        engine.step()
    assert engine.result(a).token_ids == ref[(1, 3, 4)]
    assert engine.result(b).token_ids == ref[tuple([1] + [8] * 30)]
    assert engine.result(c).token_ids == ref[(1, 99)]


def test_a_prompt_continuing_a_finished_sequence_reuses_its_cache(ckpt, tokenizer, engine):
    """A chat's next turn: the previous prompt + reply + a new message prefills only the new part,
    and the result equals a full prefill."""
    remembering = Engine(load_model(ckpt), tokenizer, prefix_cache=4)
    params = greedy(max_new_tokens=20, ignore_eos=True)
    first = [1, *list(range(40, 70))]
    reply = remembering.generate([first], params)[0][0].token_ids
    assert remembering.prefixes.reused_tokens == 0
    turn2 = first + reply + [5, 6, 7, 8]
    out = remembering.generate([turn2], params)[0][0].token_ids
    assert remembering.prefixes.reused_tokens == len(first) + len(reply) - 1  # all but the unfed last token
    assert out == engine.generate([turn2], params)[0][0].token_ids  # engine: no prefix cache
    # a prompt sharing only a few tokens is prefilled in full; one sharing none too
    before = remembering.prefixes.reused_tokens
    remembering.generate([[1, *list(range(40, 50))], [1, 2, 3]], params)
    assert remembering.prefixes.reused_tokens == before
    # a prompt that shares a long part (then diverges) reuses that part; batch-mates prefill normally
    forked = first + [9] * 10
    outs = remembering.generate([forked, [1] + [3] * 20], params)
    assert remembering.prefixes.reused_tokens > before
    assert [o[0].token_ids for o in outs] == [o[0].token_ids for o in engine.generate([forked, [1] + [3] * 20], params)]


def test_max_batch_admits_new_rows_as_old_ones_finish(ckpt, tokenizer):
    small = Engine(load_model(ckpt), tokenizer, max_batch=2)
    prompts = [[1, i] for i in range(10, 15)]
    outs = small.generate(prompts, greedy(max_new_tokens=12, ignore_eos=True))
    big = Engine(load_model(ckpt), tokenizer).generate(prompts, greedy(max_new_tokens=12, ignore_eos=True))
    assert [o[0].token_ids for o in outs] == [o[0].token_ids for o in big]


def test_stops_at_the_context_length(ckpt, tokenizer):
    eng = Engine(load_model(ckpt), tokenizer)  # context 160
    (c,) = eng.generate([[1] * 150], greedy(max_new_tokens=50, ignore_eos=True))[0]
    assert len(c.token_ids) == 10 and c.finish_reason == "length"


def test_logprobs_are_the_model_distribution(engine):
    p = [1, 10, 11, 12]
    (c,) = engine.generate([p], greedy(max_new_tokens=6, ignore_eos=True, logprobs=3))[0]
    with torch.no_grad():
        full = torch.log_softmax(engine.model(torch.tensor([p + c.token_ids])).float(), -1)[0]
    for i, lp in enumerate(c.logprobs):
        row = full[len(p) - 1 + i]
        assert lp.token_id == c.token_ids[i]
        assert lp.logprob == pytest.approx(row[lp.token_id].item(), abs=1e-4)
        assert [t for t, _ in lp.top] == row.topk(3).indices.tolist()
        assert lp.top[0][0] == lp.token_id  # greedy picks the top alternative


# ------------------------------------------------------------------ text: stop strings, streaming
def script_engine(tokenizer, text: str, prompt="Hi", bytewise=False):
    """An engine whose model writes ``text`` (tokenized normally, or one byte per token)."""
    if bytewise:
        table = tokenizer.token_byte_strings()
        ids = [table.index(bytes([b])) for b in text.encode("utf-8")]
    else:
        ids = tokenizer.encode(text)
    prompt_ids = tokenizer.encode(prompt, bos=True)
    model = ScriptedLM([*ids, tokenizer.eos_id], len(prompt_ids), tokenizer.vocab_size)
    return Engine(model, tokenizer), ids


@pytest.mark.parametrize("stop", ["world, th", "d, t", "o w", "！", "好，世", "😀", "is a test of"])
def test_stop_strings_straddling_tokens_stop_and_are_not_emitted(tokenizer, stop):
    text = "Hello world, this is a test of the engine. 你好，世界！😀 more text"
    eng, _ids = script_engine(tokenizer, text)
    params = greedy(max_new_tokens=60, stop=[stop, "never appears"])
    (c,) = eng.generate(["Hi"], params)[0]
    assert c.text == text[: text.index(stop)]
    assert c.finish_reason == "stop"
    deltas = [o.text for o in eng.stream("Hi", params)]
    assert "".join(deltas) == c.text and stop not in "".join(deltas)


def test_stream_concatenates_to_the_final_text_and_never_breaks_characters(tokenizer):
    text = "你好😀世界🎉 ok é"
    eng, _ids = script_engine(tokenizer, text, bytewise=True)  # every multi-byte char spans tokens
    deltas = [o.text for o in eng.stream("Hi", greedy(max_new_tokens=100))]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert len([d for d in deltas if d]) == len(text)  # one whole character at a time
    (c,) = eng.generate(["Hi"], greedy(max_new_tokens=100))[0]
    assert c.text == text == tokenizer.decode(c.token_ids, skip_special=True)


def test_cut_off_mid_character_ends_in_a_replacement_like_decode(tokenizer):
    eng, _ids = script_engine(tokenizer, "你好", bytewise=True)
    (c,) = eng.generate(["Hi"], greedy(max_new_tokens=4))[0]  # 3 bytes of 你, 1 of 好
    assert c.text == tokenizer.decode(c.token_ids) == "你\ufffd"
    assert "".join(o.text for o in eng.stream("Hi", greedy(max_new_tokens=4))) == c.text


def test_stream_of_the_real_model_matches_generate(engine):
    params = SamplingParams(max_new_tokens=40, temperature=0.9, seed=3)
    deltas = [o.text for o in engine.stream("你好", params)]
    (c,) = engine.generate(["你好"], params)[0]
    assert "".join(deltas) == c.text == engine.tokenizer.decode(c.token_ids, skip_special=True)


# ------------------------------------------------------------------ the Python API
def test_loaded_model_generate_stream_chat(ckpt):
    lm = llmkit.load(ckpt, device="cpu")
    one = lm.generate("Hello", max_new_tokens=10, temperature=0)
    assert isinstance(one, str)
    many = lm.generate(["Hello", "你好"], max_new_tokens=10, temperature=0)
    assert many[0] == one and len(many) == 2
    full = lm.generate("Hello", max_new_tokens=10, temperature=0, return_ids=True, return_logprobs=True)
    assert full.text == one and len(full.logprobs) == len(full.token_ids)
    assert "".join(lm.stream("Hello", max_new_tokens=10, temperature=0)) == one
    assert isinstance(lm.chat([{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0), str)
    assert len(lm.generate("Hello", max_new_tokens=5, n=3, seed=0)) == 3


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "prompt,kw,match",
    [
        ("", {}, "empty prompt"),
        ([], {}, "empty prompt"),
        ("Hello " * 400, {}, "context is 160"),
        ("Hello", {"temperature": -1}, "temperature"),
        ("Hello", {"top_p": 0}, "top_p"),
        ("Hello", {"top_k": -3}, "top_k"),
        ("Hello", {"num_beams": 3, "top_p": 0.5}, "num_beams=3 with sampling"),
        ("Hello", {"tempreature": 0.5}, "unknown decoding option 'tempreature'"),
        ([1, 5000], {}, "outside the vocabulary"),
    ],
)
def test_bad_input_is_a_one_line_error(ckpt, prompt, kw, match):
    lm = llmkit.load(ckpt, device="cpu")
    with pytest.raises(LLMKitError, match=match) as e:
        lm.generate(prompt, max_new_tokens=5, **kw)
    assert "\n" not in str(e.value)


def test_long_prompt_is_left_truncated_when_asked(ckpt):
    lm = llmkit.load(ckpt, device="cpu")
    out = lm.generate(
        "Hello " * 400, max_new_tokens=20, temperature=0, truncate_prompt=True, return_ids=True, ignore_eos=True
    )
    assert out.prompt_tokens == 160 - 20 and len(out.token_ids) == 20
