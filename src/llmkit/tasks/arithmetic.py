"""Arithmetic: addition, subtraction, multiplication and comparison with a chosen number of digits.

``add2`` is two-digit addition (10..99 + 10..99); the digits are part of the name, so ``add5`` or
``mul3`` work too (:func:`parse`). Commutative problems share one key (``37+45`` is ``45+37``), so
the swapped form of a test problem never appears in training.
"""

from __future__ import annotations

import random
import re

from llmkit.tasks.base import Problem, Task, final_line

_OPS = {
    "add": ("+", "加", lambda a, b: a + b),
    "sub": ("-", "减", lambda a, b: a - b),
    "mul": ("×", "乘以", lambda a, b: a * b),
}


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)


class Arithmetic(Task):
    family = "arithmetic"
    verifier = "number"
    max_new_tokens = 16

    def __init__(self, op: str, digits: int):
        self.op, self.digits = op, digits
        self.name = f"{op}{digits}"
        self.description = {
            "add": f"addition of two {digits}-digit numbers",
            "sub": f"subtraction of two {digits}-digit numbers (result >= 0)",
            "mul": f"a {digits}-digit number times a 1-digit number",
        }[op]

    def draw(self, rng: random.Random) -> Problem:
        a = _operand(rng, self.digits)
        b = _operand(rng, 1 if self.op == "mul" else self.digits)
        if self.op == "sub" and b > a:
            a, b = b, a  # non-negative results
        sym, zh_word, fn = _OPS[self.op]
        c = fn(a, b)
        key = f"{min(a, b)}{sym}{max(a, b)}" if self.op in ("add", "mul") else f"{a}{sym}{b}"

        def render(lang: str):
            if lang == "zh":
                prompt = rng_choice(
                    a + b, [f"{a} {zh_word} {b} 等于多少？", f"计算：{a} {sym} {b} = ?", f"{a}{sym}{b}是多少？"]
                )
            else:
                prompt = rng_choice(a + b, [f"What is {a} {sym} {b}?", f"Compute {a} {sym} {b}.", f"{a} {sym} {b} = ?"])
            return prompt, str(c), final_line(str(c), lang), {}

        return Problem(key, render)


class Compare(Task):
    family = "arithmetic"
    verifier = "number"
    max_new_tokens = 16

    def __init__(self, digits: int):
        self.digits = digits
        self.name = f"compare{digits}"
        self.description = f"which of two {digits}-digit numbers is larger"

    def draw(self, rng: random.Random) -> Problem:
        a, b = _operand(rng, self.digits), _operand(rng, self.digits)
        while b == a:
            b = _operand(rng, self.digits)
        big = max(a, b)

        def render(lang: str):
            if lang == "zh":
                prompt = f"{a} 和 {b}，哪个数更大？"
            else:
                prompt = f"Which is larger, {a} or {b}?"
            return prompt, str(big), final_line(str(big), lang), {}

        return Problem(f"{min(a, b)}<>{big}", render)


def rng_choice(salt: int, options: list[str]) -> str:
    """A phrasing picked by the problem itself (stable across languages and calls)."""
    return options[salt % len(options)]


_NAME = re.compile(r"^(add|sub|mul|compare)([1-9])$")


def parse(name: str) -> Task | None:
    """``add2``, ``sub3``, ``mul2``, ``compare2`` ... -> a task (None for other names)."""
    m = _NAME.match(name)
    if not m:
        return None
    op, digits = m.group(1), int(m.group(2))
    return Compare(digits) if op == "compare" else Arithmetic(op, digits)


TASKS = [Arithmetic("add", 2), Arithmetic("add", 3), Arithmetic("sub", 2), Arithmetic("mul", 2), Compare(2)]
