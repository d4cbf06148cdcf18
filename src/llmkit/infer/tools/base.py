"""Tools a model may call, in the OpenAI ``tools`` schema, and the text form of a call.

A :class:`Tool` has a name, a description and JSON-schema ``parameters`` (what the OpenAI API's
``tools=[{"type": "function", "function": {...}}]`` carries) and a Python function from the
arguments to a result string. A model asks for a tool by writing, inside its reply,

    <tool_call>{"name": "calculator", "arguments": {"expression": "37*8"}}</tool_call>

(the convention of Qwen2.5 and Hermes templates, which llmkit's chat template renders too).
:func:`parse_tool_calls` finds those blocks; whatever is wrong with one (not JSON, unknown tool,
missing or mistyped arguments) becomes a :class:`ToolCall` carrying an ``error`` that is sent back
to the model as the tool's result, so a malformed call never stops the conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from llmkit.errors import LLMKitError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CALL_CLOSE) + r"|$)", re.S)
_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


class ToolError(LLMKitError):
    """A tool could not do what was asked; the message goes back to the model as the result."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict
    """JSON schema of the arguments object (``type: object``, ``properties``, ``required``)."""
    function: Callable[[dict], str]

    def schema(self) -> dict:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def check(self, arguments) -> dict:
        """Arguments validated against the schema's required names and simple types."""
        if not isinstance(arguments, dict):
            raise ToolError(f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}")
        props = self.parameters.get("properties", {})
        for key in arguments:
            if key not in props:
                raise ToolError(f"{self.name}: unknown argument {key!r}; it takes {', '.join(props) or 'none'}")
        missing = [k for k in self.parameters.get("required", []) if k not in arguments]
        if missing:
            raise ToolError(f"{self.name}: missing argument {missing[0]!r}")
        for key, value in arguments.items():
            want = _JSON_TYPES.get(props[key].get("type", ""))
            if want is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
                raise ToolError(f"{self.name}: argument {key!r} must be a {props[key]['type']}")
        return arguments

    def __call__(self, arguments: dict) -> str:
        return str(self.function(self.check(arguments)))


@dataclass
class ToolCall:
    """One call found in a reply. ``error`` is set when the call itself is malformed."""

    id: str
    name: str
    arguments: dict = field(default_factory=dict)
    error: str | None = None

    def to_openai(self) -> dict:
        """As an OpenAI ``tool_calls`` entry (arguments as a JSON string, as the API sends them)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


def tool_schemas(tools: list[Tool]) -> list[dict]:
    return [t.schema() for t in tools]


def has_tool_call(text: str) -> bool:
    return CALL_OPEN in text


def split_reply(text: str) -> tuple[str, list[str]]:
    """(the text before the first call, the raw body of each call)."""
    first = text.find(CALL_OPEN)
    if first < 0:
        return text, []
    return text[:first].rstrip(), [m.group(1) for m in _CALL.finditer(text, first)]


def parse_tool_calls(text: str, tools: Collection[str], id_prefix: str = "call") -> tuple[str, list[ToolCall]]:
    """The reply's text before its calls, and each call (malformed ones with ``error`` set).
    ``tools``: the names on offer (a dict name -> :class:`Tool` will do)."""
    content, bodies = split_reply(text)
    calls = []
    for i, body in enumerate(bodies):
        cid = f"{id_prefix}_{i}"
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            calls.append(ToolCall(cid, "", error=f"the tool call is not valid JSON ({e.msg}); write {_EXAMPLE}"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            calls.append(ToolCall(cid, "", error=f'a tool call needs a "name"; write {_EXAMPLE}'))
            continue
        name, args = obj["name"], obj.get("arguments", {})
        if isinstance(args, str):  # some models write the arguments as a JSON string, as the API does
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                calls.append(ToolCall(cid, name, error="the arguments are not a JSON object"))
                continue
        if name not in tools:
            known = ", ".join(tools) or "none"
            calls.append(
                ToolCall(cid, name, args if isinstance(args, dict) else {}, f"no tool {name!r}; tools: {known}")
            )
            continue
        calls.append(ToolCall(cid, name, args if isinstance(args, dict) else {"_": args}))
    return content, calls


_EXAMPLE = '<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>'


def run_call(call: ToolCall, tools: dict[str, Tool]) -> str:
    """The result text of a call: the tool's answer, or ``error: ...`` for anything that failed."""
    if call.error:
        return f"error: {call.error}"
    try:
        return tools[call.name](call.arguments)
    except ToolError as e:
        return f"error: {e}"
    except Exception as e:  # a tool's own bug must not end the conversation
        return f"error: {call.name} failed ({type(e).__name__}: {e})"


def format_call(name: str, arguments: dict) -> str:
    """A call as the model writes it."""
    return CALL_OPEN + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + CALL_CLOSE
