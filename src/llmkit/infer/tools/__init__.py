"""Tools a model can call: the OpenAI-style schema and call format, the loop that runs them, and
the built-ins (``calculator``; ``python``, a sandbox, only when asked for). Retrieval over an index
is a tool too (:func:`llmkit.rag.tool.retrieval_tool`). See docs/tools.md."""

from llmkit.infer.tools.base import Tool, ToolCall, ToolError, format_call, parse_tool_calls, run_call
from llmkit.infer.tools.runner import ToolTurn, run_tools


def builtin_tool(name: str) -> Tool:
    """A built-in tool by name: ``calculator`` or ``python`` (the sandbox)."""
    if name == "calculator":
        from llmkit.infer.tools.calculator import CALCULATOR

        return CALCULATOR
    if name == "python":
        from llmkit.infer.tools.sandbox import PYTHON

        return PYTHON
    raise ToolError(f"unknown tool {name!r}; built-in tools: calculator, python")


__all__ = [
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolTurn",
    "builtin_tool",
    "format_call",
    "parse_tool_calls",
    "run_call",
    "run_tools",
]
