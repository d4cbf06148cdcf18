"""The bridge between asyncio request handlers and the engines' step API.

One thread owns every served model's :class:`~llmkit.infer.engine.Engine` (torch work never runs
on the event loop, and two engines never compete for the cores at once). Between steps it takes
what the handlers asked for (new requests, cancellations, prompts to score) from a queue, then
advances every engine that has work by one step, round robin, and hands each request its new
tokens through the event loop. What runs together, in which order and under which budgets is the
engine's business (:meth:`Engine.step`); this module only moves requests in and tokens out, and
keeps count for ``/metrics``.

A handler gets a :class:`Job`: ``await job.accepted`` (raises the engine's
:class:`~llmkit.infer.sampling.GenerationError` for a request it cannot run), then
``async for deltas in job`` until every choice has finished. ``cancel(job)`` (client gone) frees
its batch rows before the next step. ``drain(timeout)`` refuses new work and, after ``timeout``,
ends what still runs with ``finish_reason="abort"``, so graceful shutdown always ends streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

from llmkit.console import say
from llmkit.infer.engine import TokenLogprob
from llmkit.infer.sampling import SamplingParams
from llmkit.infer.scoring import Scored, score
from llmkit.serve.errors import APIError, queue_full, unavailable
from llmkit.serve.metrics import Metrics
from llmkit.serve.models import ServedModel


@dataclass
class Delta:
    """What one choice of a request produced in one step."""

    index: int
    """The choice: prompt_index * n + sample_index."""
    token_id: int | None
    """None for the closing delta of an aborted choice (no token was generated)."""
    text: str
    logprob: TokenLogprob | None
    finish_reason: str | None


class Job:
    """One request's sequences in one engine, and the queue its deltas arrive on."""

    def __init__(self, model: str, prompts: list[list[int]], params: SamplingParams, loop: asyncio.AbstractEventLoop):
        self.model = model
        self.prompts = prompts
        self.params = params
        self.loop = loop
        self.accepted: asyncio.Future = loop.create_future()
        self.choices = len(prompts) * params.n
        self.index_of: dict[int, int] = {}  # engine sequence id -> choice index
        self.first_token_at: dict[int, float] = {}
        self.tokens: dict[int, int] = {}  # sequence id -> tokens generated so far
        self.live: set[int] = set()  # sequence ids not finished
        self.submitted_at = time.monotonic()
        self.started = False
        self.done = False
        self._queue: asyncio.Queue[list[Delta] | BaseException] = asyncio.Queue()
        self._open = self.choices

    def __aiter__(self):
        return self

    async def __anext__(self) -> list[Delta]:
        if self._open == 0:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._open = 0
            raise item
        self._open -= sum(d.finish_reason is not None for d in item)
        return item

    # called on the event loop (scheduled from the scheduler thread)
    def _push(self, item) -> None:
        self._queue.put_nowait(item)


def _settle(fut: asyncio.Future, value=None, error: BaseException | None = None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class Scheduler:
    def __init__(self, models: dict[str, ServedModel], metrics: Metrics, max_queue: int = 256):
        self.models = models
        self.metrics = metrics
        self.max_queue = max_queue
        self._inbox: queue.Queue = queue.Queue()
        self._jobs: dict[str, dict[int, Job]] = {name: {} for name in models}  # model -> seq id -> job
        self._waiting = dict.fromkeys(models, 0)  # per model: requests submitted, not yet producing tokens
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.draining = False
        self._deadline: float | None = None

    # ------------------------------------------------------------------ handler side (event loop)
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llmkit-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (after :meth:`drain`, or at once: whatever still runs is aborted)."""
        self._stop = True
        self._inbox.put(("wake", None))
        if self._thread is not None:
            self._thread.join(timeout=30)

    def drain(self, timeout: float) -> None:
        """Refuse new requests (503) and end running ones with ``abort`` after ``timeout`` seconds."""
        self.draining = True
        self._deadline = time.monotonic() + timeout
        self._inbox.put(("wake", None))

    def submit(self, model: str, prompts: list[list[int]], params: SamplingParams) -> Job:
        """Queue a request (one or more prompts, ``params.n`` choices each); 429 when more than
        ``max_queue`` requests would wait beyond the batch's free rows, 503 while draining. Await
        ``job.accepted`` before reading its deltas."""
        if self.draining:
            raise unavailable("the server is shutting down; send the request to another instance or retry later")
        engine = self.models[model].engine
        free_rows = max(engine.max_batch - engine.num_running, 0)  # read across threads: a snapshot is enough
        with self._lock:
            beyond = self._waiting[model] - free_rows
            if beyond >= self.max_queue:
                raise queue_full(beyond)
            self._waiting[model] += 1
        job = Job(model, prompts, params, asyncio.get_running_loop())
        self._inbox.put(("add", job))
        return job

    def cancel(self, job: Job) -> None:
        """Forget a request whose client left: its rows are freed before the next step."""
        if not job.done:
            self._inbox.put(("cancel", job))

    async def score(self, model: str, requests: Sequence[tuple[list[int], list[int]]], top_k: int) -> list[Scored]:
        """Log-probabilities of given continuations (:func:`llmkit.infer.scoring.score`), computed
        on the scheduler thread between steps."""
        if self.draining:
            raise unavailable("the server is shutting down; send the request to another instance or retry later")
        fut = asyncio.get_running_loop().create_future()
        self._inbox.put(("score", (model, list(requests), top_k, fut)))
        return await fut

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            busy = any(m.engine.has_work() for m in self.models.values())
            self._take_inbox(block=not busy)
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._abort_all("abort")
            if self._stop:
                self._abort_all("abort")
                return
            for name, served in self.models.items():
                if served.engine.has_work():
                    self._step(name, served)
            self._update_gauges()

    def _take_inbox(self, block: bool) -> None:
        timeout = 0.5 if block else 0
        while True:
            try:
                kind, item = self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()
            except queue.Empty:
                return
            timeout = 0
            if kind == "add":
                self._add(item)
            elif kind == "cancel":
                self._cancel(item, "cancelled")
            elif kind == "score":
                self._score(*item)

    def _add(self, job: Job) -> None:
        engine = self.models[job.model].engine
        ids: list[int] = []
        try:
            for p, prompt in enumerate(job.prompts):
                ids += engine.add(prompt, job.params, seed_offset=p * job.params.n)
        except Exception as e:  # GenerationError: the request cannot run as asked
            for sid in ids:
                engine.remove(sid)
            self._unwait(job)
            job.done = True
            self._post(job, lambda e=e: _settle(job.accepted, error=e))
            return
        for index, sid in enumerate(ids):
            job.index_of[sid] = index
            self._jobs[job.model][sid] = job
        job.live = set(ids)
        self._post(job, lambda: _settle(job.accepted, True))

    def _step(self, name: str, served: ServedModel) -> None:
        try:
            outs = served.engine.step()
        except Exception:  # a bug: fail this engine's requests, keep serving
            say(f"engine {name!r} failed; its running requests end with an error:\n{traceback.format_exc()}")
            for sid in list(self._jobs[name]):
                served.engine.remove(sid)
            for job in {id(j): j for j in self._jobs[name].values()}.values():
                self._finish_job(job)
                err = APIError(500, "the engine failed on this request; see the server log", code="engine_error")
                self._post(job, lambda job=job, err=err: job._push(err))
            self._jobs[name].clear()
            return
        now = time.monotonic()
        per_job: dict[int, tuple[Job, list[Delta]]] = {}
        jobs = self._jobs[name]
        generated = 0
        for o in outs:
            job = jobs.get(o.seq_id)
            if job is None:
                continue
            generated += 1
            if not job.started:
                job.started = True
                self._unwait(job)
                self.metrics.ttft.labels(name).observe(now - job.submitted_at)
            job.first_token_at.setdefault(o.seq_id, now)
            job.tokens[o.seq_id] = job.tokens.get(o.seq_id, 0) + 1
            delta = Delta(
                job.index_of[o.seq_id], o.token_id, o.text, o.logprob, o.finish_reason if o.finished else None
            )
            per_job.setdefault(id(job), (job, []))[1].append(delta)
            if o.finished:
                served.engine.result(o.seq_id)  # collected here; the handler has every token already
                del jobs[o.seq_id]
                job.live.discard(o.seq_id)
                self.metrics.finished.labels(name, o.finish_reason or "stop").inc()
                first = job.first_token_at.pop(o.seq_id)
                count = job.tokens.pop(o.seq_id)
                if count > 1:
                    self.metrics.tpot.labels(name).observe((now - first) / (count - 1))
                if not job.live:
                    job.done = True
        self.metrics.generation_tokens.labels(name).inc(generated)
        for job, deltas in per_job.values():
            self._post(job, lambda job=job, deltas=deltas: job._push(deltas))

    def _cancel(self, job: Job, reason: str) -> None:
        if job.done:
            return
        engine = self.models[job.model].engine
        closing = []
        for sid in sorted(job.live):
            engine.remove(sid)
            self._jobs[job.model].pop(sid, None)
            job.first_token_at.pop(sid, None)
            self.metrics.finished.labels(job.model, reason).inc()
            closing.append(Delta(job.index_of[sid], None, "", None, reason))
        job.live.clear()
        self._finish_job(job)
        if closing:
            self._post(job, lambda: job._push(closing))

    def _finish_job(self, job: Job) -> None:
        if not job.started:
            job.started = True
            self._unwait(job)
        job.done = True

    def _abort_all(self, reason: str) -> None:
        for jobs in self._jobs.values():
            for job in {id(j): j for j in jobs.values()}.values():
                self._cancel(job, reason)
        while True:  # requests that were never added
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                self._unwait(item)
                item.done = True
                self._post(
                    item, lambda job=item: _settle(job.accepted, error=unavailable("the server is shutting down"))
                )
            elif kind == "score":
                fut = item[3]
                self._post_loop(fut.get_loop(), lambda fut=fut: _settle(fut, error=unavailable("shutting down")))

    def _score(self, model: str, requests, top_k: int, fut: asyncio.Future) -> None:
        served = self.models[model]
        try:
            out = score(served.model, requests, top_k=top_k, max_len=served.context)
        except Exception as e:
            self._post_loop(fut.get_loop(), lambda e=e: _settle(fut, error=e))
            return
        self._post_loop(fut.get_loop(), lambda: _settle(fut, out))

    def _unwait(self, job: Job) -> None:
        with self._lock:
            self._waiting[job.model] -= 1

    def _update_gauges(self) -> None:
        for name, served in self.models.items():
            jobs = {id(j): j for j in self._jobs[name].values()}.values()
            self.metrics.running.labels(name).set(sum(j.started for j in jobs))
            self.metrics.batch.labels(name).set(served.engine.num_running)
            self.metrics.prefix_reused.labels(name).set(served.engine.prefixes.reused_tokens)
        self.metrics.waiting.set(sum(self._waiting.values()))

    @staticmethod
    def _post(job: Job, fn) -> None:
        Scheduler._post_loop(job.loop, fn)

    @staticmethod
    def _post_loop(loop: asyncio.AbstractEventLoop, fn) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            loop.call_soon_threadsafe(fn)
