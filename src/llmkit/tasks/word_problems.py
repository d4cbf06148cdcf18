"""Short word problems with worked solutions: a line of reasoning per step, then the answer line.

Each template states a small story (buy, give away, share into boxes, two steps), fills in names,
things and numbers, and writes the solution the way a tutor would, in the question's language.
"""

from __future__ import annotations

import random

from llmkit.tasks.base import Problem, Task, final_line

_PEOPLE = [("Tom", "小明"), ("Anna", "小红"), ("Li Wei", "李伟"), ("Sara", "小丽"), ("Ben", "王强"), ("Mia", "小芳")]
_THINGS = [
    ("apples", "个苹果"),
    ("pencils", "支铅笔"),
    ("books", "本书"),
    ("stamps", "张邮票"),
    ("marbles", "颗弹珠"),
    ("cookies", "块饼干"),
]


def _story(kind: str, who: tuple[str, str], thing: tuple[str, str], a: int, b: int, lang: str):
    """(question, worked steps, answer) for one template."""
    en, zh = who
    th_en, th_zh = thing
    if kind == "buy":
        c = a + b
        if lang == "zh":
            return (
                f"{zh}有{a}{th_zh}，又买了{b}{th_zh}。{zh}现在有多少{th_zh[1:]}？",
                f"{zh}原来有{a}{th_zh}，又买了{b}{th_zh}：{a} + {b} = {c}。",
                c,
            )
        return (
            f"{en} has {a} {th_en} and buys {b} more. How many {th_en} does {en} have now?",
            f"{en} starts with {a} {th_en} and buys {b} more: {a} + {b} = {c}.",
            c,
        )
    if kind == "give":
        c = a - b
        if lang == "zh":
            return (
                f"{zh}有{a}{th_zh}，送给朋友{b}{th_zh}。{zh}还剩多少{th_zh[1:]}？",
                f"{zh}原来有{a}{th_zh}，送出{b}{th_zh}：{a} - {b} = {c}。",
                c,
            )
        return (
            f"{en} has {a} {th_en} and gives {b} to a friend. How many {th_en} are left?",
            f"{en} starts with {a} {th_en} and gives away {b}: {a} - {b} = {c}.",
            c,
        )
    if kind == "boxes":
        c = a * b
        if lang == "zh":
            return (
                f"{zh}有{a}个盒子，每个盒子里有{b}{th_zh}。一共有多少{th_zh[1:]}？",
                f"{a}个盒子，每个{b}{th_zh}：{a} × {b} = {c}。",
                c,
            )
        return (
            f"{en} has {a} boxes with {b} {th_en} in each. How many {th_en} are there in all?",
            f"There are {a} boxes of {b} {th_en}: {a} × {b} = {c}.",
            c,
        )
    # two steps: buy b, then give away half of a (kept whole)
    d = a // 2
    c1 = a + b
    c = c1 - d
    if lang == "zh":
        return (
            f"{zh}有{a}{th_zh}，买了{b}{th_zh}，然后送出{d}{th_zh}。{zh}最后有多少{th_zh[1:]}？",
            f"买完以后：{a} + {b} = {c1}。\n送出以后：{c1} - {d} = {c}。",
            c,
        )
    return (
        f"{en} has {a} {th_en}, buys {b} more, then gives away {d}. How many {th_en} does {en} have at the end?",
        f"After buying: {a} + {b} = {c1}.\nAfter giving away: {c1} - {d} = {c}.",
        c,
    )


class WordProblems(Task):
    name = "word_problems"
    family = "word_problems"
    verifier = "number"
    description = "one- and two-step story problems (add, take away, boxes) with worked solutions"
    max_new_tokens = 64

    def draw(self, rng: random.Random) -> Problem:
        kind = rng.choice(["buy", "give", "boxes", "two_step"])
        who, thing = rng.choice(_PEOPLE), rng.choice(_THINGS)
        if kind == "boxes":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
        elif kind == "give":
            a = rng.randint(10, 60)
            b = rng.randint(1, a - 1)
        else:
            a, b = rng.randint(2, 40), rng.randint(1, 30)

        def render(lang: str):
            question, steps, c = _story(kind, who, thing, a, b, lang)
            return question, str(c), f"{steps}\n{final_line(str(c), lang)}", {"kind": kind}

        # the story's numbers and shape are the problem; names and things are decoration
        return Problem(f"{kind}:{a}:{b}:{thing[0]}", render)


TASKS = [WordProblems()]
