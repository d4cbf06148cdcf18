"""``POST /v1/chat/completions``: messages -> the model's chat template -> the engine -> a reply.

The path is a chain of small steps: :func:`template_messages` (request messages, tool calls and
results included -> what the template renders), :func:`retrieve` (with ``llmkit serve --rag``: the
last user message becomes numbered passages + the question, as in ``llmkit chat --rag``),
:func:`prompt_for` (-> token ids, the request's tools listed by the template), :func:`chat_params`
(-> engine options; the template's end-of-turn tokens stop the reply), then :func:`create` runs it
and :func:`reply_message` / the stream shape the answer (calls the model wrote become
``tool_calls``; see :mod:`llmkit.serve.tools`).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from llmkit.errors import LLMKitError
from llmkit.infer.engine import TokenLogprob, chat_prompt_ids
from llmkit.infer.sampling import SamplingParams
from llmkit.infer.tools.base import CALL_CLOSE
from llmkit.serve.errors import APIError, bad_request
from llmkit.serve.models import ServedModel
from llmkit.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatLogprobs,
    DeltaMessage,
    Source,
    TokenLogprobContent,
    TopLogprob,
    new_id,
    now,
)
from llmkit.serve.scheduler import Scheduler
from llmkit.serve.tools import (
    ToolMode,
    ToolStream,
    call_id_prefix,
    split_reply,
    template_message,
    tool_mode,
    wire_calls,
)
from llmkit.serve.translate import (
    SSE_DONE,
    Choice,
    EventStream,
    Limits,
    accepted,
    fit_prompt,
    gather,
    sampling_params,
    sse,
    stop_token_set,
    usage,
)


def template_messages(req: ChatCompletionRequest) -> list[dict]:
    """The request's messages as the chat template reads them: ``{"role", "content"}`` with text
    content (a list of text parts is joined; ``developer`` is the newer name of ``system``)."""
    out = []
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            parts = []
            for part in m.content:
                if part.type != "text" or part.text is None:
                    raise bad_request(
                        f"messages[{i}]: content of type {part.type!r} is not supported; this model reads text",
                        f"messages[{i}].content",
                    )
                parts.append(part.text)
            content = "".join(parts)
        else:
            content = m.content or ""
        role = "system" if m.role == "developer" else m.role
        out.append({"role": role, "content": content, **template_message(i, m, out)})
    return out


async def retrieve(index, messages: list[dict], served: ServedModel, mode: ToolMode, reply_room: int):
    """(messages, sources): the last user message replaced by the passages of ``index`` that fit
    the context (after the rest of the conversation and ``reply_room``) and the question, by
    :func:`llmkit.rag.answer.grounded_messages`, the code ``llmkit chat --rag`` uses."""
    from llmkit.rag.answer import grounded_messages, sources_json

    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        return messages, []
    tok = served.tokenizer
    blank = [{"role": "user", "content": ""}]
    try:
        rest = len(chat_prompt_ids(tok, [*messages[:-1], *blank], mode.schemas)) - len(chat_prompt_ids(tok, blank))
        budget = served.context - reply_room - rest
        with_lock = _locked(grounded_messages)
        grounded, hits = await run_in_threadpool(with_lock, index, messages[-1]["content"], tok, budget)
    except LLMKitError as e:
        raise bad_request(str(e), "messages") from None
    return [*messages[:-1], grounded[-1]], [Source(**s) for s in sources_json(hits)]


_SEARCH = threading.Lock()


def _locked(fn):
    """``fn`` run under one lock: searches share the index's caches (and its embedder's threads)."""

    def run(*args):
        with _SEARCH:
            return fn(*args)

    return run


def prompt_for(
    served: ServedModel, messages: list[dict], truncate: int | None = None, mode: ToolMode | None = None
) -> list[int]:
    """Token ids of ``messages`` in the model's chat template, ready for the assistant's turn
    (with the request's tools listed, and the reply begun when ``tool_choice`` forces a call)."""
    mode = mode or ToolMode()
    try:
        ids = chat_prompt_ids(served.tokenizer, messages, mode.schemas)
    except LLMKitError as e:
        raise bad_request(str(e), "messages") from None
    if mode.prefix:
        ids = ids + served.tokenizer.encode(mode.prefix)
    return fit_prompt(ids, served, truncate, "messages")


def chat_params(
    req: ChatCompletionRequest, served: ServedModel, limits: Limits, mode: ToolMode | None = None
) -> SamplingParams:
    max_tokens = req.max_completion_tokens or req.max_tokens
    k = (req.top_logprobs or 0) if req.logprobs else None
    if req.top_logprobs and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
    params = sampling_params(req, served, limits, max_tokens, k, served.end_of_turn_ids)
    return params if mode is None or mode.parallel or not mode.active else params.with_(stop=[*params.stop, CALL_CLOSE])


async def create(
    req: ChatCompletionRequest, served: ServedModel, scheduler: Scheduler, limits: Limits, request: Request, index=None
):
    """The whole endpoint: a :class:`ChatCompletion`, or an event stream of chunks. ``index``: the
    server's retrieval index (``--rag``), used unless the request says ``"rag": false``."""
    mode = tool_mode(req.tools, req.tool_choice, req.parallel_tool_calls)
    messages = template_messages(req)
    sources = None
    if index is not None and req.rag is not False:
        room = req.max_completion_tokens or req.max_tokens or served.context // 4
        messages, sources = await retrieve(index, messages, served, mode, room)
    elif req.rag:
        raise bad_request("this server has no retrieval index (start it with --rag INDEX)", "rag")
    ids = prompt_for(served, messages, req.truncate_prompt_tokens, mode)
    params = chat_params(req, served, limits, mode)
    stop_ids = stop_token_set(served, params)
    job = scheduler.submit(served.name, [ids], params)
    await accepted(job, scheduler)
    scheduler.metrics.prompt_tokens.labels(served.name).inc(len(ids))
    rid, created = new_id("chatcmpl"), now()
    if req.stream:
        events = _stream(req, served, job, stop_ids, rid, created, len(ids), mode, sources)
        return EventStream(events, on_close=lambda: scheduler.cancel(job))
    choices = await gather(job, scheduler, request, stop_ids)
    replies = [reply_message(c, mode) for c in choices]
    return ChatCompletion(
        id=rid,
        created=created,
        model=served.name,
        choices=[
            ChatChoice(
                index=i,
                message=message,
                logprobs=chat_logprobs(served, c.logprobs) if req.logprobs else None,
                finish_reason="tool_calls" if message.tool_calls else c.finish_reason,
            )
            for i, (c, message) in enumerate(zip(choices, replies, strict=True))
        ],
        usage=usage(len(ids), sum(len(c.tokens) for c in choices)),
        sources=sources,
    )


def reply_message(c: Choice, mode: ToolMode | None = None) -> AssistantMessage:
    """The assistant message of a finished choice: its text, or the text before its tool calls
    and the calls."""
    mode = mode or ToolMode()
    content, calls = split_reply(mode.prefix + "".join(c.text), mode, call_id_prefix())
    return AssistantMessage(content=content, tool_calls=wire_calls(calls) if calls else None)


def chat_logprobs(served: ServedModel, lps: list[TokenLogprob]) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            TokenLogprobContent(
                token=served.token_text(lp.token_id),
                logprob=lp.logprob,
                bytes=served.token_byte_list(lp.token_id),
                top_logprobs=[
                    TopLogprob(token=served.token_text(t), logprob=v, bytes=served.token_byte_list(t))
                    for t, v in lp.top
                ],
            )
            for lp in lps
        ]
    )


async def _stream(req, served, job, stop_ids, rid, created, prompt_tokens, mode, sources) -> AsyncIterator[str]:
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(choices, usage_=None, sources_=None):
        return sse(
            ChatCompletionChunk(
                id=rid, created=created, model=served.name, choices=choices, usage=usage_, sources=sources_
            )
        )

    # one choice per chunk, as OpenAI sends them; a step's chunks go out in one write
    yield "".join(
        chunk([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))], sources_=sources)
        for i in range(job.choices)
    )
    replies = [ToolStream(mode, call_id_prefix()) for _ in range(job.choices)]
    completion_tokens = 0
    try:
        async for deltas in job:
            events = []
            for d in deltas:
                if d.token_id is not None:
                    completion_tokens += 1
                lps = None
                if (
                    req.logprobs
                    and d.logprob is not None
                    and not (d.finish_reason == "stop" and d.token_id in stop_ids)
                ):
                    lps = chat_logprobs(served, [d.logprob])
                text = replies[d.index].push(d.text)
                if text or lps is not None:
                    events.append(
                        chunk([ChatChunkChoice(index=d.index, delta=DeltaMessage(content=text), logprobs=lps)])
                    )
                if d.finish_reason is not None:
                    rest, calls = replies[d.index].finish()
                    if rest:
                        events.append(chunk([ChatChunkChoice(index=d.index, delta=DeltaMessage(content=rest))]))
                    if calls:  # each call whole, in one delta (the client joins deltas by index)
                        events.extend(
                            chunk([ChatChunkChoice(index=d.index, delta=DeltaMessage(tool_calls=[call]))])
                            for call in wire_calls(calls)
                        )
                    finish = "tool_calls" if calls else d.finish_reason
                    events.append(chunk([ChatChunkChoice(index=d.index, delta=DeltaMessage(), finish_reason=finish)]))
            if events:
                yield "".join(events)
    except APIError as e:  # the engine failed mid-stream: say so, then end the stream properly
        yield sse(e.body())
        yield SSE_DONE
        return
    if include_usage:
        yield chunk([], usage(prompt_tokens, completion_tokens))
    yield SSE_DONE
