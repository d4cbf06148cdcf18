"""Tokenizer: lossless round trip, special ids, HF AutoTokenizer parity, chat template, bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmkit.errors import CheckpointError, ConfigError, DataError
from llmkit.tokenizer import SPECIAL_TOKENS, Tokenizer, split_pattern, tokenizer_stats

EN = (
    "It was the best of times, it was the worst of times, it was the age of wisdom. "
    "The 3 ships sailed at 10:45 on 2024-05-17 carrying 1,250 barrels of oil. "
    "\"Don't stop,\" she said; we'll meet again in the morning.\n"
)
ZH = (
    "今天天气很好，我们一起去公园散步。学而时习之，不亦说乎？有朋自远方来，不亦乐乎？"
    "人工智能正在改变我们的生活和工作方式。床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
)
MIXED = "我们用 Python 3.12 训练了一个 tokenizer，vocab_size=512，效果 great! 😀\n"

CASES = [
    "",
    " ",
    "  leading and trailing  ",
    "\r\n",
    "a\r\nb\rc\n",
    "\t\ttabs\t",
    "\x00NUL\x00",
    "\x07\x1b[31mred\x1b[0m",
    "emoji 😀👍🏽 👨‍👩‍👧",
    "e\u0301 combining, n\u0303, \u0915\u094d\u0937",
    "数字 1234567890 和 ３４５",
    "日本語のテキストとカタカナ",
    "한국어 문장입니다",
    "Ελληνικά и кириллица",
    "\u200b\u200d\ufeff zero width",
    "  中文  前后空格  ",
    "tab\t中\t文",
    ZH,
    MIXED,
    EN,
    "<|bos|> looks special",
    "\U0010ffff\ue000",
]


EN_WORDS = """
the of and to in a is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if so no what up out king queen
night morning river city garden letter window music winter summer friend stranger quickly slowly
brightly softly speak wander remember forgive believe tomorrow yesterday
""".split()
ZH_WORDS = """
我们 你们 他们 今天 明天 昨天 天气 公园 学习 工作 生活 朋友 老师 学生 中国 北京 上海
城市 春天 夏天 秋天 冬天 月亮 太阳 山水 花园 音乐 电影 时间 地方 问题 方法 技术
语言 模型 数据 我 你 他 她 的 了 是 在 有 和 不 很 也 都 就 去 来 说 看 想 做 好 大 小 多 少
""".split()


def corpus(n_sentences: int = 3000, seed: int = 0) -> list[str]:
    """~150 KB of varied English, Chinese and mixed sentences (enough pairs for 512 merges)."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n_sentences):
        en = " ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(4, 12))).capitalize() + rng.choice(".!?")
        zh = "".join(rng.choice(ZH_WORDS) for _ in range(rng.randint(4, 12))) + rng.choice("。！？，")
        out.append([en, zh, f"{zh[:6]} {en[:20]} {rng.randint(0, 99999)}"][i % 3])
    return ["\n".join(out[i : i + 30]) for i in range(0, len(out), 30)] + [EN, ZH, MIXED]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(corpus(), vocab_size=512, show_progress=False)


@pytest.fixture(scope="module")
def tok_dir(tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tok.save(d)
    return d


@pytest.fixture(scope="module")
def hf(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_dir))


# ---------------------------------------------------------------------- lossless
@pytest.mark.parametrize("text", CASES)
def test_round_trip_hand_written(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_bos_eos_and_skip_special(tok):
    ids = tok.encode(ZH, bos=True, eos=True)
    assert ids[0] == tok.bos_id == 1 and ids[-1] == tok.eos_id == 2 and tok.pad_id == 0
    assert tok.decode(ids) == "<|bos|>" + ZH + "<|eos|>"
    assert tok.decode(ids, skip_special=True) == ZH
    assert tok.encode_batch([EN, ZH], bos=True) == [tok.encode(EN, bos=True), tok.encode(ZH, bos=True)]


def test_special_tokens_layout(tok):
    assert len(SPECIAL_TOKENS) == 16 and SPECIAL_TOKENS[:3] == ["<|pad|>", "<|bos|>", "<|eos|>"]
    assert [tok.token_to_id(s) for s in SPECIAL_TOKENS] == list(range(16))
    assert tok.id_to_token(7) == "<|end|>" and tok.token_to_id("<|nope|>") is None
    assert tok.vocab_size == 512


# ---------------------------------------------------------------------- pre-tokenization
def test_digits_split_one_by_one(tok):
    for number in ["2024", "1234567890", "3.14159"]:
        pieces = [tok.id_to_token(i) for i in tok.encode(number)]
        assert [p for p in pieces if p.isdigit()] == [c for c in number if c.isdigit()]
    a = tok.encode(" 1999 and 2999")
    b = tok.encode(" 2999 and 1999")
    assert sorted(a) == sorted(b)  # a digit string tokenizes the same wherever it appears


def test_chinese_is_not_one_giant_pretoken():
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(split_pattern()), behavior="isolated")
    pieces = [p for p, _ in split.pre_tokenize_str("床前明月光，疑是地上霜。Hello world")]
    assert max(len(p) for p in pieces if "\u4e00" <= p[0] <= "\u9fff") <= 3
    assert " world" in pieces


def test_chinese_compresses(tok):
    zh = "我们今天在公园学习音乐，明天去北京工作。"
    (row,) = tokenizer_stats(tok, {"zh": zh})
    assert row["chars"] == len(zh) and row["bytes"] == len(zh.encode())
    assert row["chars_per_token"] >= 0.9  # each common Han character learned as one token (3 bytes)
    assert row["bytes_per_token"] > 2.5


# ---------------------------------------------------------------------- errors
def test_vocab_too_small_is_config_error():
    with pytest.raises(
        ConfigError,
        match=r"tokenizer\.vocab_size=100 is too small: needs at least 272 "
        r"\(256 bytes \+ 16 special tokens\)",
    ):
        Tokenizer.train([EN], vocab_size=100)


def test_empty_training_text_is_data_error():
    with pytest.raises(DataError, match=r"empty"):
        Tokenizer.train(["", ""], vocab_size=300, show_progress=False)


def test_load_missing_or_corrupt(tmp_path):
    with pytest.raises(CheckpointError, match=r"tokenizer.json: tokenizer not found"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"not a valid tokenizer") as e:
        Tokenizer.load(tmp_path)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------- files, HF parity
def test_save_load_round_trip(tok, tok_dir):
    again = Tokenizer.load(tok_dir)
    assert again.fingerprint() == tok.fingerprint() and len(tok.fingerprint()) == 16
    assert again.encode(MIXED) == tok.encode(MIXED)
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["add_bos_token"] is False
    assert cfg["clean_up_tokenization_spaces"] is False and "<|assistant|>" in cfg["chat_template"]
    assert not list(tok_dir.glob(".*tmp*"))


@pytest.mark.parametrize("text", [EN, ZH, MIXED, "  spaced\r\n\tout  ", "数字 2024 年 😀"])
def test_autotokenizer_gives_same_ids_and_decode(tok, hf, text):
    ids = tok.encode(text)
    assert hf(text)["input_ids"] == ids  # no BOS added by transformers either
    assert hf.encode(text) == ids
    assert hf.decode(ids) == tok.decode(ids) == text
    with_specials = tok.encode(text, bos=True, eos=True)
    assert hf.decode(with_specials, skip_special_tokens=True) == tok.decode(with_specials, skip_special=True)
    assert hf.decode(with_specials) == tok.decode(with_specials)


def test_autotokenizer_special_ids(hf):
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2)


def test_chat_template_matches_transformers(tok, hf):
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "床前明月光的下一句是什么？"},
        {"role": "assistant", "content": "疑是地上霜。"},
        {"role": "user", "content": "And in English?"},
    ]
    for gen in (False, True):
        ours = tok.apply_chat_template(messages, add_generation_prompt=gen)
        theirs = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        assert ours == theirs
    assert ours.startswith("<|bos|><|system|>\nYou are helpful.<|end|>\n<|user|>\n") and ours.endswith(
        "<|assistant|>\n"
    )
    ids = tok.encode(ours)
    assert tok.token_to_id("<|user|>") in ids and tok.token_to_id("<|end|>") in ids


def test_loaded_config_names_the_specials_and_template(tok, tmp_path):
    """An imported checkpoint's tokenizer_config.json (other BOS/EOS, own template) is honoured."""
    from transformers import AutoTokenizer

    tok.save(tmp_path)
    template = "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + eos_token }}{% endfor %}"
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.update(bos_token=None, eos_token="<|end|>", chat_template=None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (tmp_path / "chat_template.jinja").write_text(template, encoding="utf-8")
    loaded = Tokenizer.load(tmp_path)
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (None, 7, 0)
    messages = [{"role": "user", "content": "你好"}]
    assert loaded.apply_chat_template(messages) == "[user] 你好<|end|>"
    assert loaded.apply_chat_template(messages) == AutoTokenizer.from_pretrained(str(tmp_path)).apply_chat_template(
        messages, tokenize=False
    )
    loaded.model_max_length = 256
    loaded.save(tmp_path / "again")  # written back as it was, plus the template and context length
    again = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert again["bos_token"] is None and again["chat_template"] == template and again["model_max_length"] == 256
    assert Tokenizer.load(tmp_path / "again").eos_id == 7
    cfg["eos_token"] = {"__type": "AddedToken", "content": "<|end|>"}  # older transformers' layout
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    assert Tokenizer.load(tmp_path).eos_id == 7


def test_chat_template_errors_are_data_errors(tok):
    bad = Tokenizer(tok.inner)
    bad.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(DataError, match=r"chat template: roles must alternate"):
        bad.apply_chat_template([{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------- bytes per token
@pytest.mark.parametrize("text", [EN, ZH, MIXED, "😀 e\u0301 \x00"])
def test_token_bytes_sum_to_utf8_length(tok, text):
    tb = tok.token_bytes()
    assert tb.dtype.is_floating_point is False and tb.shape == (tok.vocab_size,)
    assert int(tb[:16].sum()) == 0
    assert int(tb[tok.encode(text, bos=True, eos=True)].sum()) == len(text.encode("utf-8"))
    assert b"".join(tok.token_byte_strings()[i] for i in tok.encode(text)) == text.encode("utf-8")


# ---------------------------------------------------------------------- CLI
def test_cli_train_stats_encode(tmp_path, capsys):
    from llmkit.cli import main

    (tmp_path / "corpus").mkdir()
    for i, text in enumerate(corpus(600)):
        (tmp_path / "corpus" / f"{i}.txt").write_text(text, encoding="utf-8")
    assert (
        main(["tokenizer", "train", str(tmp_path / "corpus"), "--out", str(tmp_path / "tok"), "--vocab-size", "400"])
        == 0
    )
    assert "trained 400 tokens" in capsys.readouterr().out
    assert main(["tokenizer", "stats", str(tmp_path / "tok")]) == 0
    out = capsys.readouterr().out
    assert all(lang in out for lang in ("English", "Chinese", "Mixed")) and "bytes/token" in out
    (tmp_path / "zh.txt").write_text(ZH, encoding="utf-8")
    assert main(["tokenizer", "stats", str(tmp_path / "tok"), "--text", str(tmp_path / "zh.txt")]) == 0
    assert "zh.txt" in capsys.readouterr().out
    assert main(["tokenizer", "encode", str(tmp_path / "tok"), "我们 2024"]) == 0
    out = capsys.readouterr().out
    assert "ids:" in out and "| 2 | 0 | 2 | 4" in out
    assert (
        main(["tokenizer", "train", str(tmp_path / "corpus"), "--out", str(tmp_path / "t2"), "--vocab-size", "100"])
        == 2
    )
    assert "tokenizer.vocab_size=100 is too small" in capsys.readouterr().err
