"""The OpenAI wire format as pydantic models: requests, responses, stream chunks and errors.

Requests accept what OpenAI's API accepts (and the extras that vLLM made common: ``top_k``,
``min_p``, ``repetition_penalty``, ``stop_token_ids``, ``ignore_eos``, ``min_tokens``,
``truncate_prompt_tokens``); unknown fields are ignored, as OpenAI's clients expect. Every bound
that can be checked without the model is checked here, so a malformed request fails with 422 and
the field's name before any work is queued. The server's own limits (``n``, ``max_tokens``, prompt
length) depend on its settings and the model and are checked where the request is translated.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

_INT64 = 2**63


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


TokenId = Annotated[int, Field(ge=0, lt=_INT64)]
StopList = Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=16)]


class StreamOptions(_In):
    include_usage: bool = False
    """Send one last chunk with the request's ``usage`` (and no choices) before ``[DONE]``."""


class ResponseFormat(_In):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None


class _SamplingRequest(_In):
    """The fields both endpoints share (decoding options, streaming, the model)."""

    model: str | None = Field(None, description="A served model's id (GET /v1/models); default: the first one.")
    n: int = Field(1, ge=1, le=1024, description="Choices to generate per prompt.")
    temperature: float | None = Field(None, ge=0, le=100, description="0 = greedy; default 1.")
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Annotated[str, Field(min_length=1)] | StopList | None = None
    seed: int | None = Field(None, ge=-_INT64, lt=_INT64)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, description='Token id (as a string) -> bias added to its logit, e.g. {"50": -100}.'
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    # the common extras
    top_k: int | None = Field(None, ge=-1, description="Keep the k most likely tokens (0 or -1 = off).")
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=100)
    stop_token_ids: list[TokenId] | None = Field(None, max_length=256)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0, lt=_INT64)
    truncate_prompt_tokens: int | None = Field(
        None, ge=1, lt=_INT64, description="Keep only the prompt's last k tokens (instead of failing when too long)."
    )

    @field_validator("logit_bias")
    @classmethod
    def _integer_keys(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key in v or {}:
            if not key.strip().isdigit():
                raise ValueError(f"logit_bias keys are token ids written as strings, got {key!r}")
        return v


class CompletionRequest(_SamplingRequest):
    """POST /v1/completions."""

    prompt: (
        Annotated[str, Field(max_length=4_000_000)]
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1)]
    ) = Field(description="Text, a list of texts, token ids, or a list of token-id lists.")
    max_tokens: int | None = Field(16, ge=0, lt=_INT64, description="0 with echo scores the prompt only.")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1024)


class ContentPart(_In):
    type: str
    text: str | None = None


class ChatMessage(_In):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: Any = None
    """An assistant message's calls: ``[{"id", "type": "function", "function": {"name", "arguments"}}]``
    (checked where the messages are rendered, so a malformed one is a 400 that names it)."""
    tool_call_id: Any = None
    """A ``tool`` message: the id of the call it answers."""


class ChatCompletionRequest(_SamplingRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, lt=_INT64, description="Default: what the context leaves.")
    max_completion_tokens: int | None = Field(None, ge=1, lt=_INT64, description="Same as max_tokens (newer name).")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: Any = Field(
        None, description='Function tools: [{"type": "function", "function": {"name", "description", "parameters"}}].'
    )
    tool_choice: Any = Field(None, description='"auto" (default), "none", "required" or {"type": "function", ...}.')
    parallel_tool_calls: bool | None = Field(None, description="false: at most one call per reply.")
    rag: bool | None = Field(
        None, description="Retrieval from the server's --rag index for this request (default: on when it has one)."
    )


class TokenizeRequest(_In):
    """POST /tokenize: text (or chat messages, rendered by the template) -> token ids."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(_In):
    model: str | None = None
    tokens: list[TokenId] = Field(max_length=1_000_000)


# --------------------------------------------------------------------- responses
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(_Out):
    """The legacy completions format: parallel lists, one entry per token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Out):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(_Out):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(_Out):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobContent(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(_Out):
    content: list[TokenLogprobContent] | None = None


class ToolCallFunction(_Out):
    name: str
    arguments: str
    """The arguments as a JSON string, as OpenAI sends them."""


class ToolCallOut(_Out):
    index: int
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class Source(_Out):
    """A retrieved passage shown to the model as ``[n]`` (``llmkit serve --rag``)."""

    n: int
    source: str
    """The file it comes from."""
    where: str
    """Its position in words: ``line 12``, ``page 3``..."""
    line: int | None = None
    page: int | None = None
    score: float
    text: str


def _without_nones(handler, value, keys: tuple[str, ...]) -> dict:
    out = handler(value)
    return {k: v for k, v in out.items() if not (k in keys and v is None)}


class AssistantMessage(_Out):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = None

    @model_serializer(mode="wrap")
    def _calls_when_any(self, handler):
        return _without_nones(handler, self, ("tool_calls",))


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    sources: list[Source] | None = None
    """llmkit's extra: the passages retrieved for the request (``llmkit serve --rag``)."""

    @model_serializer(mode="wrap")
    def _sources_when_any(self, handler):
        return _without_nones(handler, self, ("sources",))


class DeltaMessage(_Out):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = None

    @model_serializer(mode="wrap")
    def _only_set(self, handler):
        """A delta carries only what changed (the closing chunk's delta is ``{}``, as OpenAI's)."""
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(_Out):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Out):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    sources: list[Source] | None = None
    """On the first chunk, with ``llmkit serve --rag``: the passages retrieved for the request."""

    @model_serializer(mode="wrap")
    def _sources_when_any(self, handler):
        return _without_nones(handler, self, ("sources",))


class ModelCard(_Out):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmkit"
    max_model_len: int
    root: str
    parent: str | None = None
    """For a LoRA adapter: the model it applies to."""


class ModelList(_Out):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(_Out):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeResponse(_Out):
    prompt: str


class ErrorInfo(_Out):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Out):
    error: ErrorInfo
