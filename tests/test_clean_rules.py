"""Each cleaning step on its edge cases: real libraries, real corpora, text written here."""

from __future__ import annotations

import json

import pytest

from llmkit.config import CleanConfig
from llmkit.data.clean import html, langid, normalise, pii, quality, repetition
from llmkit.data.clean.decontaminate import ContaminationIndex, cut_spans
from llmkit.data.clean.mix import copies, epochs_for_weights
from llmkit.data.clean.steps import DocumentCleaner, validate
from llmkit.data.clean.tokens import ngram_hashes, tokens
from llmkit.data.corpora import corpus_documents, fetch_corpus
from llmkit.errors import ConfigError

POEM = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n    -- 李白《静夜思》"
SONG = (
    "《詩經‧ 國風‧ 王‧ 黍離》\n\n    彼黍離離，彼稷之苗。行邁靡靡，中心搖搖。\n"
    "    知我者，謂我心憂，不知我者，謂我何求。悠悠蒼天，此何人哉！\n"
    "    彼黍離離，彼稷之穗。行邁靡靡，中心如醉。\n"
    "    知我者，謂我心憂，不知我者，謂我何求。悠悠蒼天，此何人哉！\n"
)
VERSE = (
    "HAMLET.\nTo be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles,\n"
    "And by opposing end them? To die—to sleep,\nNo more; and by a sleep to say we end\n"
)
MIXED = "这个程序的 bug 在于 the function returns the wrong value when the input is empty，所以要先检查输入。"


def cleaner(**kw) -> DocumentCleaner:
    return DocumentCleaner(CleanConfig(**{"languages": ["en", "zh"], "dedup": "off", **kw}))


# ---------------------------------------------------------------------- tokens
def test_tokens_are_words_and_chinese_characters():
    assert tokens("To be, or not 'tis o'er 床前明月光！") == ["to", "be", "or", "not", "tis", "o'er", *"床前明月光"]
    h = ngram_hashes(tokens("a b c d e f"), 3)
    assert h.shape == (4,) and len(set(h.tolist())) == 4
    assert ngram_hashes(tokens("a b"), 5).shape == (1,)  # shorter than n: one hash of everything


# ---------------------------------------------------------------------- normalise
def test_normalise_repairs_mojibake_and_keeps_chinese_punctuation():
    assert normalise.normalise("The Mona Lisa doesnâ€™t have eyebrows.") == "The Mona Lisa doesn’t have eyebrows."
    assert normalise.normalise("caf\u00c3\u00a9 &amp; cr\u00c3\u00a8me") == "café & crème"
    zh = "床前明月光，疑是地上霜！（１０２１－１０８６）“好”"
    assert normalise.normalise(zh) == zh  # full-width punctuation and curly quotes survive
    messy = "\ufeffline one  \r\nline\x00 two\u200b\x07\n\n\n\n\n\n  indented\xa0verse\t\n"
    assert normalise.normalise(messy) == "line one\nline two\n\n\n  indented verse"
    assert normalise.normalise(" \n\x00\u200b\n") == ""
    assert normalise.normalise("e\u0301") == "é"  # NFC


# ---------------------------------------------------------------------- html
PAGE = """<!DOCTYPE html><html><head><title>t</title><script>var tracking = 1;</script></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
<article><h1>春眠不觉晓</h1><p>春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。</p>
<p>This paragraph explains the poem in English, with enough words to count as the main content of the page.</p>
</article><footer>Copyright 2024. All rights reserved. <a href="/privacy">Privacy policy</a></footer></body></html>"""


def test_html_pages_become_their_main_text():
    assert html.looks_like_html(PAGE) and not html.looks_like_html("a < b and <b> is bold")
    text = html.html_to_text(PAGE)
    assert "春眠不觉晓，处处闻啼鸟。" in text and "explains the poem" in text
    assert "tracking" not in text and "Privacy policy" not in text and "About us" not in text
    res = cleaner()(PAGE)
    assert res.text is not None and res.text.startswith("春眠不觉晓") and res.events["html_pages"] == 1
    assert cleaner()("<html><head><script>var a = 1;</script></head><body></body></html>").rule == "html"
    assert cleaner(html="off")(PAGE).text.startswith("<!DOCTYPE")


# ---------------------------------------------------------------------- language
def test_language_identification_chinese_english_mixed():
    assert langid.identify(POEM)[0][0] == "zh"
    assert langid.identify(VERSE)[0][0] == "en"
    assert [code for code, _ in langid.identify(MIXED)] == ["zh", "en"]
    assert langid.identify("日々私たちが過ごしている日常は、実は奇跡の連続なのかもしれない。")[0][0] == "ja"
    assert langid.identify("╮(╯▽╰)╭") == [("zxx", 1.0)]
    en_only = cleaner(languages=["en"])
    assert en_only(MIXED).text is not None  # mixed text counts for English too
    assert en_only(POEM).rule == "language"
    assert cleaner(languages=["zh"])(VERSE).rule == "language"
    assert cleaner(lang_thresholds={"en": 1.01})(VERSE).rule == "language_score"


def test_unknown_language_code_is_a_config_error():
    with pytest.raises(ConfigError, match=r"clean.languages: unknown language code 'english'"):
        validate(CleanConfig(languages=["english"]))
    with pytest.raises(ConfigError, match=r"clean\.lang_thresholds"):
        validate(CleanConfig(lang_thresholds={"cn": 0.5}))
    with pytest.raises(ConfigError, match=r"clean\.dedup='fuzzy'"):
        validate(CleanConfig(dedup="fuzzy"))


# ---------------------------------------------------------------------- quality
Q = quality.QualityThresholds()


def fails(text: str, langs=("en",)) -> str | None:
    r = quality.check(text, tokens(text), list(langs), Q)
    return r[0] if r else None


def test_quality_rules_fire_on_their_cases():
    prose = "The quality of mercy is not strained; it droppeth as the gentle rain from heaven upon the place beneath."
    assert fails(prose) is None
    assert fails("Buy now") == "too_short"
    assert fails("Lorem ipsum dolor sit amet, and the rest of it, with the usual filler text.") == "lorem_ipsum"
    assert fails("xqzvbnmkwrtplkjhgfdsazxcvbnmqwertyuiop " * 12 + "the and of") == "mean_word_length"
    assert fails("# # # tags #love #life #the #and " * 5) == "symbol_ratio"
    assert fails("\n".join(["- item with the words of it"] * 10)) == "bullet_lines"
    assert fails("\n".join(["Read the rest of this long story of the day and of the night..."] * 5)) == "ellipsis_lines"
    assert fails("2023 1999 2024 55 66 77 88 99 12 13 the and of 44 33 22") == "alpha_tokens"
    assert fails("Zebras quickly jumped over seven lazy purple kangaroos near Paris yesterday.") == "stop_words"
    assert fails("The text \ufffd\ufffd\ufffd of \ufffd and the broken \ufffd bytes") == "broken_encoding"


def test_english_rules_do_not_drop_chinese_poetry_or_mixed_text():
    for text, langs in (
        (POEM, ["zh"]),
        (SONG, ["zh"]),
        (MIXED, ["zh", "en"]),
        ("三十不豪，四十不富，五十将来寻死路。", ["zh"]),
    ):
        assert fails(text, langs) is None, text
    dialogue = "甲：你在哪儿？……\n乙：我在路上……\n甲：快点！……"
    assert fails(dialogue, ["zh"]) is None  # Chinese ellipsis is punctuation, not a truncated line
    assert fails(VERSE) is None


def test_boilerplate_lines_are_removed_and_prose_kept():
    text = (
        "Accept cookies to use this site | Privacy Policy\n正文在这里，床前明月光。\n"
        "版权所有 © 2024 某某网\nI will subscribe to that."
    )
    out, n = quality.strip_boilerplate(text)
    assert n == 2 and out == "正文在这里，床前明月光。\nI will subscribe to that."
    assert quality.strip_boilerplate(VERSE) == (VERSE, 0)


# ---------------------------------------------------------------------- repetition
def test_repetition_catches_spam_and_spares_refrains():
    R = repetition.RepetitionThresholds()
    spam = "\n".join(["Best cheap watches online, buy the best cheap watches online now!"] * 40)
    assert repetition.check(spam, tokens(spam), R)[0] == "dup_lines"
    zh_spam = "点击购买最好的手表，" * 60 + "\n" + "。".join("欢迎光临本店优惠多多" for _ in range(20))
    assert repetition.check(zh_spam, tokens(zh_spam), R) is not None
    assert repetition.check(SONG, tokens(SONG), R) is None  # refrains of a short song
    words = "the slings and arrows of outrageous fortune ".split()
    n_gram_spam = " ".join(words[i % 3] + " " + words[(i * 5) % 7] for i in range(400))
    assert repetition.check(n_gram_spam, tokens(n_gram_spam), R) is not None


def test_real_corpora_survive_the_rules():
    c = cleaner()
    plays = list(corpus_documents("shakespeare"))
    assert all(c(p).text is not None for p in plays)  # every play, verse and all
    poems = [
        json.loads(line)["text"]
        for f in fetch_corpus("fortunes-zh")
        if f.stem in ("tang300", "song100")
        for line in f.read_text(encoding="utf-8").splitlines()
    ]
    assert len(poems) > 400
    assert [p[:40] for p in poems if c(p).text is None] == []  # every Tang and Song poem (each checked once)


# ---------------------------------------------------------------------- pii
def test_pii_scrubbing_catches_planted_items_and_not_look_alikes():
    planted = (
        "联系我：zhang.san@example.com 或 13812345678、+86 139-1234-5678，办公室 010-62751234。"
        " Call (555) 123-4567 or +44 20 7946 0958 from 192.168.1.20 or 2001:db8::8a2e:370:7334."
        " 身份证号 11010519491231002X 请保密。"
    )
    out, found = pii.scrub(planted)
    assert found == {"EMAIL": 1, "PHONE": 5, "IP": 2, "ID": 1}, (out, found)
    for secret in ("zhang.san", "13812345678", "1234-5678", "62751234", "123-4567", "7946", "192.168", "8a2e", "1949"):
        assert secret not in out
    look_alikes = (
        "version 1.13.2, released 2024-01-15 at 12:30:45; order 12345678901234; 999.1.1.1; 1.2.3.4.5;"
        " ISBN 978-7-111-12345-6; 1949-1976; 110105194912310021 (wrong check digit); std::vector; a::b;"
        " port 8080; 10.5.3 s; 12345678901; call 1234; 第3.14节; user@localhost; 12.5%"
    )
    assert pii.scrub(look_alikes) == (look_alikes, {})
    assert cleaner(pii=True)(VERSE + " Mail hamlet@elsinore.dk now.").text.endswith("Mail <EMAIL> now.")


# ---------------------------------------------------------------------- decontamination
def test_decontamination_index_and_spans():
    item = "What is the capital city of France? Answer with one word only please."
    zh_item = "小明有三个苹果，又买了五个，一共有几个苹果？请写出计算过程。"
    index = ContaminationIndex([item, zh_item, "too short"], n=8)
    assert index.items == 2 and index.ignored == 1
    doc = "Some preface text here.\n" + item + "\nAnd an unrelated epilogue of the story."
    hits = index.matches(tokens(doc))
    assert hits and cut_spans(doc, hits) == "Some preface text here.\n.\nAnd an unrelated epilogue of the story."
    assert index.matches(tokens("一段完全无关的文字，" + zh_item[:6])) == []
    assert index.matches(tokens("前文。" + zh_item + "后文。"))
    c = DocumentCleaner(CleanConfig(dedup="off", decontam_ngram=8, decontam_mode="span"), index)
    assert c(doc).text == "Some preface text here.\n.\nAnd an unrelated epilogue of the story."
    c = DocumentCleaner(CleanConfig(dedup="off", decontam_ngram=8), index)
    assert c(doc).rule == "decontaminate" and c(VERSE).text is not None


# ---------------------------------------------------------------------- mix
def test_mix_copies_and_weights():
    docs = [f"document number {i}" for i in range(2000)]
    assert sum(copies(d, 2.0) for d in docs) == 4000
    half = sum(copies(d, 0.5) for d in docs)
    assert 900 < half < 1100 and half == sum(copies(d, 0.5) for d in docs)  # the same half every time
    e = epochs_for_weights({"a": 100, "b": 300}, {"a": 1, "b": 1})
    assert e == {"a": 2.0, "b": 2 / 3}
    with pytest.raises(ConfigError, match="unknown source 'c'"):
        epochs_for_weights({"a": 1}, {"c": 1})
