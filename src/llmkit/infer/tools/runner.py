"""The tool loop: generate, stop at a tool call, run the tool, add its result, generate again.

:func:`run_tools` renders the conversation with the tools in the chat template, lets the engine
write the assistant's reply (stopping at ``</tool_call>`` or the end of the turn), and if the reply
asks for tools it appends the assistant message with OpenAI-style ``tool_calls`` and one ``tool``
message per call (the result, or ``error: ...`` when the call was malformed or the tool failed),
then asks the model again, for at most ``max_rounds`` rounds of calls. The engine and sampler are
the ordinary ones; the loop only edits messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from llmkit.infer.tools.base import CALL_CLOSE, Tool, parse_tool_calls, run_call, tool_schemas


@dataclass
class ToolTurn:
    """What one user turn produced: the new messages (assistant calls, tool results, final reply)."""

    messages: list[dict] = field(default_factory=list)
    rounds: int = 0
    """Rounds in which the model called tools."""
    finish_reason: str = "stop"

    @property
    def reply(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""


def run_tools(
    engine,
    tokenizer,
    messages: list[dict],
    tools: list[Tool],
    params,
    max_rounds: int = 4,
    on_message: Callable[[dict], None] | None = None,
) -> ToolTurn:
    """Answer the last user message of ``messages``, calling ``tools`` as the model asks."""
    return run_tools_batch(engine, tokenizer, [messages], [tools], params, max_rounds, on_message)[0]


def run_tools_batch(
    engine,
    tokenizer,
    conversations: list[list[dict]],
    tools: list[list[Tool]],
    params,
    max_rounds: int = 4,
    on_message: Callable[[dict], None] | None = None,
) -> list[ToolTurn]:
    """:func:`run_tools` for many conversations at once (``tools[i]`` are conversation ``i``'s):
    each round generates the next reply of every conversation still calling tools in one batch.
    Greedy replies equal those of one conversation at a time (the engine's batching guarantee)."""
    from llmkit.infer.engine import chat_prompt_ids, chat_stop_ids

    params = replace(
        params,
        stop=[*params.stop, CALL_CLOSE],
        stop_token_ids=[*params.stop_token_ids, *chat_stop_ids(tokenizer)],
    )
    by_name = [{t.name: t for t in ts} for ts in tools]
    schemas = [tool_schemas(ts) for ts in tools]
    turns = [ToolTurn() for _ in conversations]
    histories = [list(m) for m in conversations]
    active = list(range(len(conversations)))
    for round_no in range(max_rounds + 1):
        if not active:
            break
        prompts = [chat_prompt_ids(tokenizer, histories[i], tools=schemas[i]) for i in active]
        completions = [c[0] for c in engine.generate(prompts, params)]
        calling = []
        for i, completion in zip(active, completions, strict=True):
            turn, history = turns[i], histories[i]
            content, calls = parse_tool_calls(completion.text, by_name[i], id_prefix=f"call_{round_no}")
            if not calls or round_no == max_rounds:
                final = {"role": "assistant", "content": content if calls else completion.text}
                turn.finish_reason = "tool_rounds" if calls else completion.finish_reason
                _add(turn, history, final, on_message)
                continue
            turn.rounds += 1
            calling.append(i)
            _add(
                turn,
                history,
                {"role": "assistant", "content": content, "tool_calls": [c.to_openai() for c in calls]},
                on_message,
            )
            for call in calls:
                result = run_call(call, by_name[i])
                _add(
                    turn,
                    history,
                    {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result},
                    on_message,
                )
        active = calling
    return turns


def _add(turn: ToolTurn, history: list[dict], message: dict, on_message) -> None:
    turn.messages.append(message)
    history.append(message)
    if on_message is not None:
        on_message(message)
