"""What both endpoints share: request fields -> engine options, the server's limits, collecting a
request's deltas into choices, logprobs and usage in OpenAI's shapes, server-sent events."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import StreamingResponse

from llmkit.infer.engine import TokenLogprob
from llmkit.infer.sampling import GenerationError, SamplingParams
from llmkit.serve.errors import APIError, bad_request
from llmkit.serve.models import ServedModel
from llmkit.serve.protocol import Usage
from llmkit.serve.scheduler import Delta, Job, Scheduler


@dataclass
class Limits:
    """What one request may ask of this server."""

    max_n: int = 16
    """Largest ``n`` (choices per prompt)."""
    max_tokens: int | None = None
    """Largest ``max_tokens``; None: the model's context."""
    max_prompts: int = 256
    """Most prompts in one completions request."""


def sampling_params(
    req, served: ServedModel, limits: Limits, max_tokens: int | None, logprobs: int | None, stop_ids: list[int]
) -> SamplingParams:
    """The engine's options for a request's decoding fields (400 naming the field if one cannot
    be honoured). ``max_tokens`` None means as many as the context leaves."""
    if req.n > limits.max_n:
        raise bad_request(f"n={req.n} is more than this server allows ({limits.max_n}); ask for fewer choices", "n")
    cap = limits.max_tokens or served.context
    if max_tokens is not None and max_tokens > cap:
        raise bad_request(
            f"max_tokens={max_tokens} is more than this server allows ({cap}); ask for fewer tokens", "max_tokens"
        )
    if req.response_format is not None and req.response_format.type != "text":
        raise bad_request(
            f"response_format {req.response_format.type!r} is not supported (no constrained decoding); use "
            '{"type": "text"} and ask for JSON in the prompt',
            "response_format",
        )
    params = SamplingParams(
        max_new_tokens=cap if max_tokens is None else max(max_tokens, 1),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(req.top_k or 0, 0),
        min_p=req.min_p or 0.0,
        repetition_penalty=req.repetition_penalty or 1.0,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logit_bias={int(k): v for k, v in req.logit_bias.items()} if req.logit_bias else None,
        stop=[req.stop] if isinstance(req.stop, str) else list(req.stop or []),
        stop_token_ids=[*(req.stop_token_ids or []), *stop_ids],
        ignore_eos=req.ignore_eos,
        min_new_tokens=req.min_tokens,
        seed=req.seed,
        logprobs=logprobs,
        n=req.n,
    )
    try:
        return params.validate()
    except GenerationError as e:
        raise bad_request(str(e)) from None


def fit_prompt(ids: list[int], served: ServedModel, truncate: int | None, param: str) -> list[int]:
    """Apply ``truncate_prompt_tokens`` and reject a prompt that leaves no room to generate."""
    if truncate is not None:
        ids = ids[-truncate:]
    if not ids:
        raise bad_request("the prompt is empty; give at least one token to continue from", param)
    if len(ids) >= served.context:
        raise bad_request(
            f"the prompt is {len(ids)} tokens but the model's context is {served.context}; shorten it, or send "
            f'"truncate_prompt_tokens": N to keep only its last N tokens',
            param,
            code="context_length_exceeded",
        )
    bad = [t for t in ids if t >= len(served.raw_bytes)]
    if bad:
        raise bad_request(f"token id {bad[0]} is outside the vocabulary (0..{len(served.raw_bytes) - 1})", param)
    return ids


def stop_token_set(served: ServedModel, params: SamplingParams) -> set[int]:
    """Token ids that end a sequence without being part of its text."""
    return (set() if params.ignore_eos else set(served.engine.eos_ids)) | set(params.stop_token_ids)


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


@dataclass
class Choice:
    """One choice's text, tokens and logprobs as its deltas arrive."""

    text: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, d: Delta, stop_ids: set[int]) -> None:
        self.text.append(d.text)
        if d.token_id is not None:
            self.tokens.append(d.token_id)
            ends = d.finish_reason == "stop" and d.token_id in stop_ids
            if d.logprob is not None and not ends:  # the end-of-text token is not part of the reply
                self.logprobs.append(d.logprob)
        if d.finish_reason is not None:
            self.finish_reason = d.finish_reason


async def accepted(job: Job, scheduler: Scheduler) -> None:
    """Wait until the engine took the request (400 if it refused)."""
    try:
        await job.accepted
    except GenerationError as e:
        raise bad_request(str(e)) from None
    except asyncio.CancelledError:
        scheduler.cancel(job)
        raise


async def gather(job: Job, scheduler: Scheduler, request: Request, stop_ids: set[int]) -> list[Choice]:
    """All of a request's choices; a client that disconnects first cancels the request."""
    choices = [Choice() for _ in range(job.choices)]

    async def run():
        async for deltas in job:
            for d in deltas:
                choices[d.index].add(d, stop_ids)

    work = asyncio.ensure_future(run())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait([work, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            scheduler.cancel(job)
    if work.cancelled():
        raise APIError(499, "client closed the request")
    work.result()  # re-raise an engine failure
    return choices


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def sse(obj) -> str:
    """One server-sent event with a JSON payload (a pydantic model or a dict)."""
    payload = obj.model_dump_json() if hasattr(obj, "model_dump_json") else json.dumps(obj, ensure_ascii=False)
    return f"data: {payload}\n\n"


SSE_DONE = "data: [DONE]\n\n"


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response that notices a client going away even while no event is
    due, and always calls ``on_close`` (which cancels the request if it still runs)."""

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        import anyio

        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went away mid-write
                        await self.stream_response(send)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            self.on_close()
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()


class TextOffsets:
    """Character offset of each token in the text its tokens decode to (``text_offset``)."""

    def __init__(self, served: ServedModel, start: int = 0):
        self.raw = served.raw_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.chars = start

    def next(self, token_id: int) -> int:
        at = self.chars
        raw = self.raw[token_id] if 0 <= token_id < len(self.raw) else b""
        self.chars += len(self.decoder.decode(raw))
        return at
