"""String skills: count a letter or a Chinese character, reverse, sort words, copy.

The content is English letters/words or Chinese characters, drawn independently of the language
the question is asked in (a Chinese question about an English word is fine, and common).
"""

from __future__ import annotations

import random
import string

from llmkit.tasks.base import Problem, Task, final_line
from llmkit.tasks.words import EN_WORDS, ZH_CHARS, ZH_WORDS


def latin_word(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(EN_WORDS)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 7)))


def _han(rng: random.Random, lo: int = 3, hi: int = 6) -> str:
    if rng.random() < 0.3:
        return rng.choice(ZH_WORDS) + rng.choice(ZH_WORDS)
    return "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(lo, hi)))


class CountChar(Task):
    name = "count_char"
    family = "strings"
    verifier = "number"
    description = "how many times a letter occurs in a word, or a character in a Chinese phrase"
    max_new_tokens = 12

    def draw(self, rng: random.Random) -> Problem:
        if rng.random() < 0.5:
            text = latin_word(rng)
            pool = string.ascii_lowercase
        else:
            text = _han(rng, 4, 8)
            pool = ZH_CHARS
            if rng.random() < 0.6:  # repeats make the count interesting
                ch = rng.choice(text)
                text = "".join(ch if rng.random() < 0.35 else c for c in text)
        ch = rng.choice(text) if rng.random() < 0.8 else rng.choice(pool)
        count = text.count(ch)
        han = ch in ZH_CHARS

        def render(lang: str):
            if lang == "zh":
                unit = "字" if han else "字母"
                prompt = f"“{text}”里有几个{unit}“{ch}”？"
            else:
                what = f"the character '{ch}'" if han else f"the letter '{ch}'"
                prompt = f"How many times does {what} appear in '{text}'?"
            return prompt, str(count), final_line(str(count), lang), {}

        return Problem(f"{ch}@{text}", render)


class Reverse(Task):
    name = "reverse"
    family = "strings"
    description = "write a word (letters) or a Chinese phrase (characters) backwards"

    def draw(self, rng: random.Random) -> Problem:
        text = latin_word(rng) if rng.random() < 0.5 else _han(rng)
        back = text[::-1]

        def render(lang: str):
            prompt = f"把“{text}”倒过来写。" if lang == "zh" else f"Write '{text}' backwards."
            return prompt, back, final_line(back, lang), {}

        return Problem(text, render)


class SortWords(Task):
    name = "sort_words"
    family = "strings"
    description = "put 3-5 English words in alphabetical order"
    max_new_tokens = 40

    def draw(self, rng: random.Random) -> Problem:
        words = rng.sample(EN_WORDS, rng.randint(3, 5))
        ordered = " ".join(sorted(words))
        shown = " ".join(words)

        def render(lang: str):
            if lang == "zh":
                prompt = f"把这些单词按字母顺序排列：{shown}"
            else:
                prompt = f"Sort these words alphabetically: {shown}"
            return prompt, ordered, final_line(ordered, lang), {}

        return Problem(shown, render)


class Copy(Task):
    name = "copy"
    family = "strings"
    description = "repeat a phrase exactly"
    max_new_tokens = 40

    def draw(self, rng: random.Random) -> Problem:
        if rng.random() < 0.5:
            text = " ".join(rng.sample(EN_WORDS, rng.randint(2, 5)))
        else:
            text = "".join(rng.sample(ZH_WORDS, rng.randint(2, 4)))

        def render(lang: str):
            prompt = f"原样重复这段文字：{text}" if lang == "zh" else f"Repeat exactly: {text}"
            return prompt, text, final_line(text, lang), {}

        return Problem(text, render)


TASKS = [CountChar(), Reverse(), SortWords(), Copy()]
