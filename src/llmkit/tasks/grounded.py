"""Answers grounded in numbered sources: the prompt format, and a task that teaches it.

The format (shared by ``llmkit rag ask``, ``llmkit chat --rag`` and the server):

    Sources:
    [1] <passage>
    [2] <passage>
    Question: <question>

and the reply ends with ``Answer: <answer> [n]``, ``n`` being the source that says so, or
``Answer: not in the sources`` when none does (Chinese: ``资料``, ``问题``, ``答案：资料中没有``).

``rag_cite`` makes such prompts from invented facts (an attribute of a named thing, a number),
with distractor sources about other things and, in a fifth of the examples, none about the asked
thing at all; the ``cited`` verifier checks the answer *and* the citation number.
"""

from __future__ import annotations

import random

from llmkit.tasks.base import Problem, Task, final_line
from llmkit.tasks.verifiers import CITATION, NOT_IN_SOURCES

LABELS = {
    "en": ("Sources:", "Question:", NOT_IN_SOURCES["en"]),
    "zh": ("资料：", "问题：", NOT_IN_SOURCES["zh"]),
}


def grounded_prompt(question: str, sources: list[str], lang: str = "en") -> str:
    """The user message: numbered sources, then the question."""
    head, ask, _ = LABELS.get(lang, LABELS["en"])
    lines = [head] + [f"[{i}] {' '.join(s.split())}" for i, s in enumerate(sources, 1)]
    return "\n".join([*lines, f"{ask}{'' if lang == 'zh' else ' '}{question}"])


def not_found(lang: str) -> str:
    return LABELS.get(lang, LABELS["en"])[2]


def cited(reply: str) -> list[int]:
    """Source numbers a reply cites, in order."""
    return [int(n) for n in CITATION.findall(reply)]


_THINGS = {
    "en": ["north gate", "blue locker", "west lab", "old barn", "river dock", "main vault", "red van", "roof hatch"],
    "zh": ["北门", "蓝色柜子", "西实验室", "旧仓库", "河边码头", "主金库", "红色货车", "屋顶天窗"],
}
_ATTRS = {
    "en": [("code", "The code of the {t} is {v}.", "What is the code of the {t}?")],
    "zh": [("code", "{t}的密码是{v}。", "{t}的密码是多少？")],
}


class GroundedCitation(Task):
    """Pick the source that answers, copy its number and cite it; say so when none does."""

    name = "rag_cite"
    family = "grounded"
    description = "answer from numbered sources and cite the one used ([n]), or say it is not there"
    verifier = "cited"
    max_new_tokens = 16

    def __init__(self, sources: int = 3, none_fraction: float = 0.2):
        self.sources, self.none_fraction = sources, none_fraction

    def draw(self, rng: random.Random) -> Problem:
        things = rng.sample(range(len(_THINGS["en"])), self.sources + 1)
        values = [rng.randint(100, 9999) for _ in things]
        asked = things[0]
        absent = rng.random() < self.none_fraction
        shown = things[1:] if absent else things[: self.sources]
        order = list(range(len(shown)))
        rng.shuffle(order)
        key = f"{asked}:{values[0]}:{absent}:" + ",".join(f"{shown[i]}={values[things.index(shown[i])]}" for i in order)

        def render(lang: str):
            _, fact, question = _ATTRS[lang][0]
            names = _THINGS[lang]
            srcs = [fact.format(t=names[shown[i]], v=values[things.index(shown[i])]) for i in order]
            prompt = grounded_prompt(question.format(t=names[asked]), srcs, lang)
            cite = 0 if absent else order.index(0) + 1
            answer = not_found(lang) if absent else f"{values[0]} [{cite}]"
            return prompt, answer, final_line(answer, lang), {"cite": cite}

        return Problem(key, render)


TASKS = [GroundedCitation()]
