"""Retrieval as a tool: the model asks ``search_documents`` and reads numbered passages back."""

from __future__ import annotations

from llmkit.infer.tools.base import Tool, ToolError


def retrieval_tool(index, k: int = 3, max_chars: int = 600) -> Tool:
    """A tool over a :class:`~llmkit.rag.index.RagIndex`: ``{"query": ...}`` -> the ``k`` best
    chunks, each as ``[n] file (position): text`` (cut to ``max_chars``)."""

    def search(args: dict) -> str:
        query = args["query"].strip()
        if not query:
            raise ToolError("search_documents: the query is empty")
        hits = index.search(query, k=k, mode=index.modes[0])
        if not hits:
            return "no passage matches the query"
        lines = []
        for i, h in enumerate(hits, 1):
            text = " ".join(h.chunk.text.split())
            text = text if len(text) <= max_chars else text[:max_chars] + " ..."
            lines.append(f"[{i}] {h.chunk.source} ({h.chunk.where}): {text}")
        return "\n".join(lines)

    return Tool(
        name="search_documents",
        description="Search the user's documents; returns numbered passages with their file and position.",
        parameters={"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        function=search,
    )
