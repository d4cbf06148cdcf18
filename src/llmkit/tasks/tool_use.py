"""Tasks that teach when to call the calculator.

``calc_add4``, ``calc_sub4``, ``calc_mul3`` are arithmetic a small model gets wrong by itself: the
reference conversation calls the calculator (``<tool_call>{"name": "calculator", ...}``), reads the
result from the ``tool`` message and gives the final answer. ``tool_compare2`` offers the same tool
for a question that needs none, and the reference answers directly: the model learns to call the
tool when the arithmetic is hard, not always. The calls are exact: the result is computed by the
calculator itself.

Examples carry the tool schemas in ``meta["tools"]`` and the reference call and result in
``meta["tool_messages"]``; :func:`~llmkit.tasks.base.to_messages` puts them in the conversation and
:func:`~llmkit.tasks.runner.evaluate_tasks` runs the tool loop for such examples.
"""

from __future__ import annotations

import random

from llmkit.infer.tools.base import ToolCall
from llmkit.infer.tools.calculator import CALCULATOR, calculate
from llmkit.tasks.arithmetic import Arithmetic, Compare
from llmkit.tasks.base import Problem, Task


class WithCalculator(Task):
    family = "tools"
    max_new_tokens = 48

    def __init__(self, base: Task, call: bool):
        self.base, self.call = base, call
        self.name = f"{'calc' if call else 'tool'}_{base.name}"
        self.verifier = base.verifier
        self.description = f"{base.description}, {'with a' if call else 'needing no'} calculator call"

    def draw(self, rng: random.Random) -> Problem:
        problem = self.base.draw(rng)

        def render(lang: str):
            prompt, answer, solution, meta = problem.render(lang)
            meta = {**meta, "tools": [CALCULATOR.schema()]}
            if self.call:
                expression = problem.key.replace("×", "*")
                call = ToolCall("call_0", "calculator", {"expression": expression})
                meta["tool_messages"] = [
                    {"role": "assistant", "content": "", "tool_calls": [call.to_openai()]},
                    {"role": "tool", "tool_call_id": "call_0", "name": "calculator", "content": calculate(expression)},
                ]
            return prompt, answer, solution, meta

        return Problem(problem.key, render)


TASKS = [
    WithCalculator(Arithmetic("add", 4), call=True),
    WithCalculator(Arithmetic("sub", 4), call=True),
    WithCalculator(Arithmetic("mul", 3), call=True),
    WithCalculator(Compare(2), call=False),
]
