"""Tools on the wire: OpenAI's ``tools`` / ``tool_choice`` / ``tool_calls`` <-> the chat template's
``<tool_call>`` blocks.

The server never runs a tool (the client does, as with OpenAI's API). It checks the request's tool
schemas and tool messages (400 naming the field when one is malformed), hands the schemas to the
one chat template, and turns the calls the model wrote back into ``message.tool_calls`` with
:func:`llmkit.infer.tools.parse_tool_calls`, the parser the tool loop uses. ``tool_choice``:

* ``auto`` (the default with tools): the model decides; ``none``: the tools are not shown and the
  reply is plain text;
* ``required`` or ``{"type": "function", "function": {"name": ...}}``: the reply is started for
  the model (``<tool_call>{"name": "`` or ``<tool_call>{"name": "NAME", "arguments":``), so it
  must call a tool, or that tool.

A reply whose calls are malformed (not JSON, no name, a tool the request did not offer) comes back
as text content with the engine's ``finish_reason``, exactly as the model wrote it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from llmkit.infer.tools import parse_tool_calls
from llmkit.infer.tools.base import CALL_OPEN, ToolCall
from llmkit.serve.errors import bad_request

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SCHEMA_EXAMPLE = (
    '{"type": "function", "function": {"name": "get_weather", "description": "...", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}'
)


@dataclass
class ToolMode:
    """What a request's ``tools`` and ``tool_choice`` ask of the reply."""

    schemas: list[dict] | None = None
    """Tool schemas the template shows the model (None: no tools, or ``tool_choice: none``)."""
    names: tuple[str, ...] = ()
    prefix: str = ""
    """Reply text written for the model before it continues (``required`` or a named tool)."""
    parallel: bool = True
    """False: the reply ends after its first call (``parallel_tool_calls: false``)."""

    @property
    def active(self) -> bool:
        return self.schemas is not None


def tool_mode(tools, tool_choice, parallel_tool_calls: bool | None) -> ToolMode:
    """The checked ``tools`` / ``tool_choice`` of a request (400 naming the field if malformed)."""
    schemas = _check_tools(tools)
    names = tuple(s["function"]["name"] for s in schemas)
    choice = "auto" if tool_choice is None else tool_choice
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise bad_request(
                f'tool_choice {repr(choice)[:80]} is not one of "auto", "none", "required" or '
                '{"type": "function", "function": {"name": ...}}',
                "tool_choice",
            )
        if choice == "required" and not schemas:
            raise bad_request('tool_choice "required" needs tools: give them in "tools"', "tool_choice")
        if choice == "none" or not schemas:
            return ToolMode()
        prefix = CALL_OPEN + '{"name": "' if choice == "required" else ""
        return ToolMode(schemas, names, prefix, parallel_tool_calls is not False)
    if not (isinstance(choice, dict) and isinstance(choice.get("function"), dict)):
        raise bad_request(
            'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    name = choice["function"].get("name")
    if name not in names:
        offered = ", ".join(names) or "none"
        raise bad_request(
            f"tool_choice names the tool {repr(name)[:80]}, which is not in tools (offered: {offered})", "tool_choice"
        )
    prefix = CALL_OPEN + '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments":'
    return ToolMode(schemas, names, prefix, parallel_tool_calls is not False)


def _check_tools(tools) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request(f"tools must be a list of function tools like {_SCHEMA_EXAMPLE}", "tools")
    out, seen = [], set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise bad_request(f'{where}: only {{"type": "function", "function": {{...}}}} tools are supported', where)
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise bad_request(f'{where}: "function" must be an object like {_SCHEMA_EXAMPLE}', f"{where}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise bad_request(
                f"{where}.function.name must be 1-64 letters, digits, _ or -, got {repr(name)[:80]}",
                f"{where}.function.name",
            )
        if name in seen:
            raise bad_request(
                f"{where}: a second tool named {name!r}; tool names must differ", f"{where}.function.name"
            )
        seen.add(name)
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise bad_request(f"{where}.function.description must be text", f"{where}.function.description")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise bad_request(
                f'{where}.function.parameters must be a JSON schema of an object ({{"type": "object", '
                '"properties": {...}}})',
                f"{where}.function.parameters",
            )
        if not isinstance(params.get("properties", {}), dict):
            raise bad_request(
                f"{where}.function.parameters.properties must be an object", f"{where}.function.parameters"
            )
        function = {"name": name, **({"description": description} if description else {}), "parameters": params}
        out.append({"type": "function", "function": function})
    return out


def template_message(i: int, m, previous: list[dict]) -> dict:
    """One request message with its tool fields, as the template reads it; ``previous`` are the
    messages before it (a ``tool`` message must answer a call of the assistant message before)."""
    if m.role == "tool":
        if not isinstance(m.tool_call_id, str) or not m.tool_call_id:
            raise bad_request(f"messages[{i}]: a tool message needs the tool_call_id it answers", f"messages[{i}]")
        asked = _open_call_ids(previous)
        if asked is None:
            raise bad_request(
                f"messages[{i}]: a tool message must follow an assistant message with tool_calls", f"messages[{i}]"
            )
        if m.tool_call_id not in asked:
            raise bad_request(
                f"messages[{i}]: tool_call_id {m.tool_call_id!r} answers no call of the assistant message before it "
                f"(its calls: {', '.join(asked) or 'none'})",
                f"messages[{i}].tool_call_id",
            )
        return {"role": "tool", "tool_call_id": m.tool_call_id}
    if m.tool_calls is None:
        return {}
    if m.role != "assistant":
        raise bad_request(f"messages[{i}]: only assistant messages carry tool_calls", f"messages[{i}].tool_calls")
    if not isinstance(m.tool_calls, list):
        raise bad_request(f"messages[{i}].tool_calls must be a list", f"messages[{i}].tool_calls")
    calls = []
    for j, call in enumerate(m.tool_calls):
        where = f"messages[{i}].tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise bad_request(
                f'{where} must be {{"id": ..., "type": "function", "function": {{"name": ..., "arguments": '
                '"{...}"}}',
                where,
            )
        arguments = fn.get("arguments", "{}")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except (json.JSONDecodeError, RecursionError) as e:
            why = getattr(e, "msg", "nested too deeply")
            raise bad_request(
                f"{where}.function.arguments is not valid JSON ({why})", f"{where}.function.arguments"
            ) from None
        if not isinstance(parsed, dict):
            raise bad_request(f"{where}.function.arguments must be a JSON object", f"{where}.function.arguments")
        # the JSON string as sent: it renders exactly as the model wrote it (and its KV stays cached)
        function = {"name": fn["name"], "arguments": arguments}
        calls.append({"id": call["id"], "type": "function", "function": function})
    return {"tool_calls": calls} if calls else {}


def _open_call_ids(previous: list[dict]) -> list[str] | None:
    """Ids of the calls of the assistant message that the trailing tool messages answer (None: the
    messages before are not an assistant message with calls, perhaps followed by tool results)."""
    for m in reversed(previous):
        if m["role"] == "tool":
            continue
        if m["role"] == "assistant" and m.get("tool_calls"):
            return [c["id"] for c in m["tool_calls"]]
        return None
    return None


def call_id_prefix() -> str:
    return f"call_{uuid.uuid4().hex[:12]}"


def split_reply(full: str, mode: ToolMode, id_prefix: str) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a whole reply (``mode.prefix`` + what the model wrote): well-formed calls
    of offered tools come out as calls, the text before them as the content (None when empty);
    a reply without calls, or with a malformed one, is all content."""
    if not mode.active or CALL_OPEN not in full:
        return full, []
    content, calls = parse_tool_calls(full, mode.names, id_prefix=id_prefix)
    if not calls or any(c.error for c in calls):
        return full, []
    return content or None, calls


def wire_calls(calls: list[ToolCall]) -> list[dict]:
    """``message.tool_calls`` (each with its ``index``, which streamed deltas need)."""
    return [{"index": i, **c.to_openai()} for i, c in enumerate(calls)]


class ToolStream:
    """One streamed choice: text before a call streams as content at once; from ``<tool_call>``
    on, the rest is held until the reply ends and then goes out as whole calls (or, if they are
    malformed, as the text the model wrote). Content sent + :meth:`finish` = :func:`split_reply`."""

    def __init__(self, mode: ToolMode, id_prefix: str):
        self.mode, self.id_prefix = mode, id_prefix
        self.text = mode.prefix
        self.sent = 0  # characters of self.text already sent as content

    def push(self, delta: str) -> str:
        """Content to send now."""
        self.text += delta
        if not self.mode.active:
            end = len(self.text)
        else:  # hold back a call, what may begin one, and whitespace that may precede one
            at = self.text.find(CALL_OPEN)
            end = at if at >= 0 else len(self.text) - _partial_open(self.text)
            end = max(len(self.text[:end].rstrip()), self.sent)
        out, self.sent = self.text[self.sent : end], end
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(the content not yet sent, the calls) once the reply has ended."""
        _, calls = split_reply(self.text, self.mode, self.id_prefix)
        return ("", calls) if calls else (self.text[self.sent :], [])


def _partial_open(text: str) -> int:
    """Length of the longest end of ``text`` that could begin ``<tool_call>``."""
    for n in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-n:]):
            return n
    return 0
