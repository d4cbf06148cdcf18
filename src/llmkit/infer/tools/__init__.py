"""Tools a model can call: the OpenAI-style schema and call format, the loop that runs them, and
the built-ins (``calculator``; ``python``, a sandbox, only when asked for). Retrieval over an index
is a tool too (:func:`llmkit.rag.tool.retrieval_tool`). See docs/tools.md."""

from llmkit.infer.tools.base import Tool, ToolCall, ToolError, format_call, parse_tool_calls, run_call
from llmkit.infer.tools.runner import ToolTurn, run_tools

__all__ = ["Tool", "ToolCall", "ToolError", "ToolTurn", "format_call", "parse_tool_calls", "run_call", "run_tools"]
