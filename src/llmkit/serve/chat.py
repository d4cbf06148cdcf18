"""``POST /v1/chat/completions``: messages -> the model's chat template -> the engine -> a reply.

The path is a chain of small steps so that retrieval (context added to the messages) and tools
(``tools`` in, ``tool_calls`` out) can each replace one step: :func:`template_messages` (request
messages -> what the template renders), :func:`prompt_for` (-> token ids), :func:`chat_params`
(-> engine options; the template's end-of-turn tokens stop the reply), then :func:`create` runs it
and :func:`reply_message` / the stream shape the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from llmkit.errors import LLMKitError
from llmkit.infer.engine import TokenLogprob, chat_prompt_ids
from llmkit.infer.sampling import SamplingParams
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
    TokenLogprobContent,
    TopLogprob,
    new_id,
    now,
)
from llmkit.serve.scheduler import Scheduler
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
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


def prompt_for(served: ServedModel, messages: list[dict], truncate: int | None = None) -> list[int]:
    """Token ids of ``messages`` in the model's chat template, ready for the assistant's turn."""
    try:
        ids = chat_prompt_ids(served.tokenizer, messages)
    except LLMKitError as e:
        raise bad_request(str(e), "messages") from None
    return fit_prompt(ids, served, truncate, "messages")


def chat_params(req: ChatCompletionRequest, served: ServedModel, limits: Limits) -> SamplingParams:
    max_tokens = req.max_completion_tokens or req.max_tokens
    k = (req.top_logprobs or 0) if req.logprobs else None
    if req.top_logprobs and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
    return sampling_params(req, served, limits, max_tokens, k, served.end_of_turn_ids)


async def create(
    req: ChatCompletionRequest, served: ServedModel, scheduler: Scheduler, limits: Limits, request: Request
):
    """The whole endpoint: a :class:`ChatCompletion`, or an event stream of chunks."""
    messages = template_messages(req)
    ids = prompt_for(served, messages, req.truncate_prompt_tokens)
    params = chat_params(req, served, limits)
    stop_ids = stop_token_set(served, params)
    job = scheduler.submit(served.name, [ids], params)
    await accepted(job, scheduler)
    scheduler.metrics.prompt_tokens.labels(served.name).inc(len(ids))
    rid, created = new_id("chatcmpl"), now()
    if req.stream:
        return EventStream(
            _stream(req, served, job, stop_ids, rid, created, len(ids)), on_close=lambda: scheduler.cancel(job)
        )
    choices = await gather(job, scheduler, request, stop_ids)
    return ChatCompletion(
        id=rid,
        created=created,
        model=served.name,
        choices=[
            ChatChoice(
                index=i,
                message=reply_message(c),
                logprobs=chat_logprobs(served, c.logprobs) if req.logprobs else None,
                finish_reason=c.finish_reason,
            )
            for i, c in enumerate(choices)
        ],
        usage=usage(len(ids), sum(len(c.tokens) for c in choices)),
    )


def reply_message(c: Choice) -> AssistantMessage:
    """The assistant message of a finished choice (tools will parse ``tool_calls`` out of it)."""
    return AssistantMessage(content="".join(c.text))


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


async def _stream(req, served, job, stop_ids, rid, created, prompt_tokens) -> AsyncIterator[str]:
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(choices, usage_=None):
        return sse(ChatCompletionChunk(id=rid, created=created, model=served.name, choices=choices, usage=usage_))

    # one choice per chunk, as OpenAI sends them; a step's chunks go out in one write
    yield "".join(
        chunk([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))]) for i in range(job.choices)
    )
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
                if d.text or lps is not None:
                    events.append(
                        chunk([ChatChunkChoice(index=d.index, delta=DeltaMessage(content=d.text), logprobs=lps)])
                    )
                if d.finish_reason is not None:
                    events.append(
                        chunk([ChatChunkChoice(index=d.index, delta=DeltaMessage(), finish_reason=d.finish_reason)])
                    )
            if events:
                yield "".join(events)
    except APIError as e:  # the engine failed mid-stream: say so, then end the stream properly
        yield sse(e.body())
        yield SSE_DONE
        return
    if include_usage:
        yield chunk([], usage(prompt_tokens, completion_tokens))
    yield SSE_DONE
