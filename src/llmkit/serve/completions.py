"""``POST /v1/completions``: prompts (text or token ids) -> the engine -> text, logprobs, usage.

``echo`` with ``logprobs`` returns the prompt's own tokens with their log-probabilities, computed
by :mod:`llmkit.infer.scoring` (the one continuation scorer); with ``max_tokens=0`` nothing is
generated. That is the request ``lm-eval``'s ``local-completions`` makes for log-likelihood tasks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from llmkit.infer.engine import TokenLogprob
from llmkit.infer.scoring import Scored
from llmkit.serve.errors import APIError, bad_request
from llmkit.serve.models import ServedModel
from llmkit.serve.protocol import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, new_id, now
from llmkit.serve.scheduler import Scheduler
from llmkit.serve.translate import (
    SSE_DONE,
    Choice,
    EventStream,
    Limits,
    TextOffsets,
    accepted,
    fit_prompt,
    gather,
    sampling_params,
    sse,
    stop_token_set,
    usage,
)


def prompt_ids(req: CompletionRequest, served: ServedModel, limits: Limits) -> tuple[list[list[int]], list[str | None]]:
    """Each prompt as token ids (text gets BOS, as the model saw documents in training; ids are
    taken as they are), with its original text when it was given as text (for ``echo``)."""
    p = req.prompt
    if isinstance(p, str) or (p and isinstance(p[0], int)):
        p = [p]
    if len(p) > limits.max_prompts:
        raise bad_request(f"{len(p)} prompts in one request; this server takes at most {limits.max_prompts}", "prompt")
    tok = served.tokenizer
    bos = served.engine.add_bos and tok.bos_id is not None
    ids, texts = [], []
    for item in p:
        if isinstance(item, str):
            ids.append(fit_prompt(tok.encode(item, bos=bos), served, req.truncate_prompt_tokens, "prompt"))
            texts.append(item if req.truncate_prompt_tokens is None else None)
        else:
            ids.append(fit_prompt(list(item), served, req.truncate_prompt_tokens, "prompt"))
            texts.append(None)
    return ids, texts


def check_unsupported(req: CompletionRequest) -> None:
    if req.suffix:
        raise bad_request("suffix (insertion) is not supported; put all the text in the prompt", "suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise bad_request("best_of other than n is not supported; use n and pick among the choices", "best_of")


async def create(req: CompletionRequest, served: ServedModel, scheduler: Scheduler, limits: Limits, request: Request):
    """The whole endpoint: a :class:`Completion`, or an event stream of them."""
    check_unsupported(req)
    prompts, texts = prompt_ids(req, served, limits)
    generate = req.max_tokens != 0
    params = sampling_params(req, served, limits, req.max_tokens if generate else 1, req.logprobs, [])
    stop_ids = stop_token_set(served, params)
    echoes = await _echoes(req, served, scheduler, prompts, texts) if req.echo else None
    rid, created = new_id("cmpl"), now()
    job = None
    if generate:
        job = scheduler.submit(served.name, prompts, params)
        await accepted(job, scheduler)
    scheduler.metrics.prompt_tokens.labels(served.name).inc(sum(len(p) for p in prompts))
    if req.stream:
        return EventStream(
            _stream(req, served, job, echoes, len(prompts) * req.n, stop_ids, rid, created, sum(map(len, prompts))),
            on_close=lambda: job is not None and scheduler.cancel(job),
        )
    choices = (
        await gather(job, scheduler, request, stop_ids)
        if job is not None
        else [Choice(finish_reason="length") for _ in range(len(prompts) * req.n)]
    )
    out = []
    for i, c in enumerate(choices):
        echo = echoes[i // req.n] if echoes else None
        out.append(_choice(served, i, c, echo, req.logprobs))
    return Completion(
        id=rid,
        created=created,
        model=served.name,
        choices=out,
        usage=usage(sum(len(p) for p in prompts), sum(len(c.tokens) for c in choices)),
    )


async def _echoes(req, served: ServedModel, scheduler: Scheduler, prompts, texts) -> list[_Echo]:
    """Each prompt as echoed; with logprobs, its tokens scored by the one continuation scorer (the
    first token has no log-probability: nothing comes before it)."""
    scored: list[Scored | None] = [None] * len(prompts)
    if req.logprobs is not None:
        todo = [i for i, p in enumerate(prompts) if len(p) > 1]
        results = await scheduler.score(served.name, [(prompts[i][:1], prompts[i][1:]) for i in todo], req.logprobs)
        for i, r in zip(todo, results, strict=True):
            scored[i] = r
    return [_echo(served, p, t, s, req.logprobs) for p, t, s in zip(prompts, texts, scored, strict=True)]


class _Echo:
    """A prompt as echoed: its text and (with logprobs) its tokens' entries."""

    def __init__(self, text: str, logprobs: CompletionLogprobs | None):
        self.text = text
        self.logprobs = logprobs


def _echo(served: ServedModel, ids: list[int], text: str | None, scored: Scored | None, k: int | None) -> _Echo:
    if text is None:
        text = served.tokenizer.decode(ids, skip_special=True)
    if k is None:
        return _Echo(text, None)
    lp = CompletionLogprobs()
    offsets = TextOffsets(served)
    for i, t in enumerate(ids):
        lp.tokens.append(served.token_text(t))
        lp.text_offset.append(offsets.next(t))
        if i == 0 or scored is None:
            lp.token_logprobs.append(None)
            lp.top_logprobs.append(None)
        else:
            lp.token_logprobs.append(scored.token_logprobs[i - 1])
            lp.top_logprobs.append(_top(served, scored.top[i - 1] if scored.top else []))
    return _Echo(text, lp)


def _top(served: ServedModel, pairs) -> dict[str, float]:
    out: dict[str, float] = {}
    for tid, lp in pairs:
        out.setdefault(served.token_text(tid), lp)
    return out


def _logprobs(served: ServedModel, lps: list[TokenLogprob], offsets: TextOffsets, echo=None) -> CompletionLogprobs:
    """Generated tokens' entries (after the echoed prompt's, if any); ``offsets`` continues where
    the text so far ends."""
    out = echo.model_copy(deep=True) if echo is not None else CompletionLogprobs()
    for lp in lps:
        out.tokens.append(served.token_text(lp.token_id))
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append(_top(served, lp.top))
        out.text_offset.append(offsets.next(lp.token_id))
    return out


def _choice(served: ServedModel, index: int, c: Choice, echo: _Echo | None, k: int | None) -> CompletionChoice:
    prefix = echo.text if echo else ""
    logprobs = None
    if k is not None:
        logprobs = _logprobs(served, c.logprobs, TextOffsets(served, len(prefix)), echo.logprobs if echo else None)
    return CompletionChoice(
        index=index, text=prefix + "".join(c.text), logprobs=logprobs, finish_reason=c.finish_reason
    )


async def _stream(req, served, job, echoes, n_choices, stop_ids, rid, created, prompt_tokens) -> AsyncIterator[str]:
    """The echoed prompts first (if asked), then each step's deltas, one choice per chunk."""

    def chunk(choices, usage_=None):
        return sse(Completion(id=rid, created=created, model=served.name, choices=choices, usage=usage_))

    k = req.logprobs
    offsets = {}
    if echoes:
        for i in range(n_choices):
            e = echoes[i // req.n]
            offsets[i] = TextOffsets(served, len(e.text))
            yield chunk([CompletionChoice(index=i, text=e.text, logprobs=e.logprobs)])
    completion_tokens = 0
    if job is None:
        for i in range(n_choices):
            yield chunk([CompletionChoice(index=i, text="", finish_reason="length")])
    else:
        try:
            async for deltas in job:
                events = []
                for d in deltas:
                    if d.token_id is not None:
                        completion_tokens += 1
                    lps = None
                    if (
                        k is not None
                        and d.logprob is not None
                        and not (d.finish_reason == "stop" and d.token_id in stop_ids)
                    ):
                        off = offsets.setdefault(d.index, TextOffsets(served))
                        lps = _logprobs(served, [d.logprob], off)
                    if d.text or lps is not None:
                        events.append(chunk([CompletionChoice(index=d.index, text=d.text, logprobs=lps)]))
                    if d.finish_reason is not None:
                        events.append(chunk([CompletionChoice(index=d.index, text="", finish_reason=d.finish_reason)]))
                if events:
                    yield "".join(events)
        except APIError as e:  # the engine failed mid-stream: say so, then end the stream properly
            yield sse(e.body())
            yield SSE_DONE
            return
    if req.stream_options and req.stream_options.include_usage:
        yield chunk([], usage(prompt_tokens, completion_tokens))
    yield SSE_DONE
