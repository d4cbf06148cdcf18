"""Instruction formats: answer as JSON, in upper case, in a named language, within N words.

Each instruction has one exactly checkable reply, so following the format is measured, not judged.
"""

from __future__ import annotations

import json
import random

from llmkit.tasks.base import Problem, Task, final_line
from llmkit.tasks.strings import latin_word
from llmkit.tasks.words import EN_WORDS, ZH_CHARS, words

_EN_SMALL = words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen",
    keep_order=True,
)
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ZH_DIGITS = "零一二三四五六七八九"


def en_number(n: int) -> str:
    """0..99 in English words (``forty-two``)."""
    if n < 20:
        return _EN_SMALL[n]
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_SMALL[ones]}" if ones else "")


def zh_number(n: int) -> str:
    """0..99 in Chinese numerals (``四十二``)."""
    if n < 10:
        return _ZH_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _ZH_DIGITS[tens]) + "十" + (_ZH_DIGITS[ones] if ones else "")


class JsonFormat(Task):
    name = "json_format"
    family = "formats"
    verifier = "json"
    description = 'reply with a JSON object {"word": ..., "letters": N}'
    max_new_tokens = 40

    def draw(self, rng: random.Random) -> Problem:
        word = latin_word(rng)
        expected = {"word": word, "letters": len(word)}
        text = json.dumps(expected, ensure_ascii=False)

        def render(lang: str):
            if lang == "zh":
                prompt = f'用 JSON 回答：单词 {word} 有几个字母？格式 {{"word": 单词, "letters": 字母数}}'
            else:
                prompt = f'Answer in JSON: how many letters does "{word}" have? Format {{"word": ..., "letters": N}}'
            return prompt, text, text, {"expected": expected}

        return Problem(word, render)


class UpperCase(Task):
    name = "upper_case"
    family = "formats"
    verifier = "exact_case"
    description = "repeat English words in upper case"
    max_new_tokens = 32

    def draw(self, rng: random.Random) -> Problem:
        text = " ".join(rng.sample(EN_WORDS, rng.randint(1, 3)))
        up = text.upper()

        def render(lang: str):
            prompt = f"用大写字母写出：{text}" if lang == "zh" else f"Write in upper case: {text}"
            return prompt, up, final_line(up, lang), {}

        return Problem(text, render)


class AnswerLanguage(Task):
    name = "answer_language"
    family = "formats"
    description = "add two numbers (sum < 100) and answer with the number word in the language asked for"
    max_new_tokens = 12

    def draw(self, rng: random.Random) -> Problem:
        a = rng.randint(0, 60)
        b = rng.randint(0, 99 - a)
        target = rng.choice(["en", "zh"])
        word = (zh_number if target == "zh" else en_number)(a + b)

        def render(lang: str):
            if lang == "zh":
                want = "中文" if target == "zh" else "英文"
                prompt = f"{a}加{b}等于几？请用{want}数字词回答。"
            else:
                want = "Chinese" if target == "zh" else "English"
                prompt = f"What is {a} plus {b}? Answer with the number word in {want}."
            return prompt, word, final_line(word, lang), {"answer_language": target}

        return Problem(f"{a}+{b}>{target}", render)


class FirstWords(Task):
    name = "first_words"
    family = "formats"
    verifier = "max_words"
    description = "give only the first N words of a sentence (characters for Chinese)"
    max_new_tokens = 32

    def draw(self, rng: random.Random) -> Problem:
        if rng.random() < 0.5:
            words = rng.sample(EN_WORDS, rng.randint(4, 7))
            n = rng.randint(1, len(words) - 1)
            text, first = " ".join(words), " ".join(words[:n])
        else:
            chars = [rng.choice(ZH_CHARS) for _ in range(rng.randint(5, 9))]
            n = rng.randint(1, len(chars) - 1)
            text, first = "".join(chars), "".join(chars[:n])

        def render(lang: str):
            if lang == "zh":
                unit = "个字" if "\u4e00" <= text[0] <= "\u9fff" else "个单词"
                prompt = f"只写出这句话的前{n}{unit}：{text}"
            else:
                unit = "characters" if "\u4e00" <= text[0] <= "\u9fff" else "words"
                prompt = f"Write only the first {n} {unit} of: {text}"
            return prompt, first, final_line(first, lang), {"max_words": n}

        return Problem(f"{n}:{text}", render)


TASKS = [JsonFormat(), UpperCase(), AnswerLanguage(), FirstWords()]
