"""Task accuracy by generation: prompts through the inference engine, replies through the verifiers.

One function, :func:`evaluate_tasks`, serves SFT (held-out accuracy during training), evaluation and
RL: it builds each example's prompt (the chat template for a chat model, or few-shot text for a
base model), generates greedy replies in batches through :class:`~llmkit.infer.engine.Engine`, and
scores them with :func:`llmkit.tasks.score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmkit.errors import ConfigError
from llmkit.tasks.base import SHOT_STOP, Example, few_shot_prompt, pick_shots, to_messages
from llmkit.tasks.registry import get_task
from llmkit.tasks.scoring import TaskScore, score, verdicts


@dataclass
class TaskEval:
    """Scores per task, and per example its reply and verdict (same order as the examples)."""

    scores: dict[str, TaskScore]
    responses: list[str]
    correct: list[bool]
    truncated: int = 0
    """Prompts cut on the left to fit the context (after dropping every few-shot example)."""
    shots: list[int] = field(default_factory=list)
    """Few-shot examples each prompt kept (few-shot mode)."""

    def table(self) -> dict[str, dict]:
        return {k: v.to_dict() for k, v in self.scores.items()}


def evaluate_tasks(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    mode: str = "chat",
    shot_pool: Sequence[Example] = (),
    k: int = 3,
    seed: int = 0,
    system: str | None = None,
    max_batch: int = 64,
    engine=None,
    tools: bool = True,
) -> TaskEval:
    """Generate a greedy reply to each example and score it.

    ``mode="chat"``: the prompt is the user message in the tokenizer's chat template, the reply ends
    at the end-of-turn token. ``mode="few_shot"``: ``k`` examples of ``shot_pool`` (training items,
    picked per example from ``seed``) precede the question as plain text, and the reply ends at a
    blank line; shots are dropped until the prompt fits the context. ``engine`` reuses an engine
    built on ``model``. Chat examples that offer tools (``meta["tools"]``, the ``tools`` family) are
    answered through the tool loop, which runs the calls the model makes (``tools=False``: asked
    plainly, without tools, to measure what the tool adds).
    """
    from llmkit.infer.engine import Engine, chat_prompt_ids, chat_stop_ids
    from llmkit.infer.sampling import SamplingParams

    if mode not in ("chat", "few_shot"):
        raise ConfigError(f"mode={mode!r}: use 'chat' or 'few_shot'")
    engine = engine or Engine(model, tokenizer, max_batch=max_batch)
    stops = chat_stop_ids(tokenizer) if mode == "chat" else []
    requests, kept, truncated = [], [], 0
    for ex in examples:
        budget = get_task(ex.task).max_new_tokens
        if mode == "chat":
            ids = chat_prompt_ids(tokenizer, to_messages(ex, system, with_answer=False))
        else:
            shots = pick_shots(list(shot_pool), ex, k, seed) if shot_pool else []
            while True:
                ids = tokenizer.encode(few_shot_prompt(ex, shots), bos=tokenizer.bos_id is not None)
                if len(ids) + budget <= engine.context or not shots:
                    break
                shots = shots[:-1]
            kept.append(len(shots))
        if len(ids) + budget > engine.context:
            truncated += 1
        params = SamplingParams(
            max_new_tokens=budget,
            temperature=0.0,
            stop=[] if mode == "chat" else [SHOT_STOP],
            stop_token_ids=stops,
            truncate_prompt=True,
        )
        requests.append((ids, params))
    with_tools = [i for i, ex in enumerate(examples) if mode == "chat" and tools and ex.meta.get("tools")]
    plain = [i for i in range(len(examples)) if i not in set(with_tools)]
    responses = [""] * len(examples)
    for i, text in zip(plain, _generate(engine, [requests[i] for i in plain]), strict=True):
        responses[i] = text
    groups: dict[str, list[int]] = {}  # tool examples batched by their decoding options (reply budgets)
    for i in with_tools:
        groups.setdefault(repr(requests[i][1]), []).append(i)
    for group in groups.values():
        replies = _with_tools(engine, tokenizer, [examples[i] for i in group], system, requests[group[0]][1])
        for i, reply in zip(group, replies, strict=True):
            responses[i] = reply
    correct = verdicts(examples, responses)
    return TaskEval(score(examples, responses), responses, correct, truncated, kept)


def _with_tools(engine, tokenizer, examples: list[Example], system: str | None, params) -> list[str]:
    """The final replies after the tool loop (at most two rounds of calls), all examples at once."""
    from llmkit.infer.tools import builtin_tool
    from llmkit.infer.tools.runner import run_tools_batch

    conversations = [to_messages(e, system, with_answer=False) for e in examples]
    tools = [[builtin_tool(t["function"]["name"]) for t in e.meta["tools"]] for e in examples]
    turns = run_tools_batch(engine, tokenizer, conversations, tools, params, max_rounds=2)
    return [t.reply for t in turns]


def _generate(engine, requests: list[tuple[list[int], object]]) -> list[str]:
    """Replies in request order; requests are queued longest-first so batches hold similar lengths."""
    from llmkit.infer.sampling import GenerationError

    if engine.has_work():
        raise GenerationError("the engine is busy with other sequences; evaluate with an idle engine")
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]))
    seq_of: dict[int, int] = {}
    for i in order:
        ids, params = requests[i]
        (sid,) = engine.add(ids, params)
        seq_of[sid] = i
    out = [""] * len(requests)
    collected: set[int] = set()
    try:
        while engine.has_work():
            engine.step()
        for sid, i in seq_of.items():
            out[i] = engine.result(sid).text
            collected.add(sid)
    finally:
        for sid in seq_of.keys() - collected:
            engine.remove(sid)
    return out
