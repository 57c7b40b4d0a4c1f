"""The one thread that runs model work, fed by a bounded queue; plus the thread that prepares requests.

Forwards are not thread-safe, so every forward, adapter load and unload runs on ONE forward thread
(`adaptrec serve` makes it the main thread: `CallingThreadExecutor`).
Requests are prepared (routed, rendered, tokenized, length-checked) on a second thread, so neither
the event loop nor the forward thread waits on that. Single-prompt jobs waiting together may merge
into one batch, but only when that pays: at most `max_batch` rows, adapters that fit resident, and
padding under `max_padding` of the batch's tokens (padded attention runs on a slower kernel on CPU,
and 8-bit scores depend on batch-mates: docs/serving.md). Each job's adapters are loaded on their
own first, so a job naming a broken adapter fails alone; every other job is a callable run alone.
A full queue answers 503 at once; a job that waited past the queue timeout is refused before it runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, Callable, Sequence

import numpy as np

from .engine import Engine, ServeError, wait_or_refuse
from .guards import ClientClosed
from .metrics import Metrics


class QueueFull(ServeError):
    status = 503


_STOP = object()  # queued by `stop`: the worker ends once it reaches it
ENTRIES_PER_PLACE = 8  # entries the queue may hold per place, those of requests whose clients left included


@dataclass
class Job:
    """Score rows (mergeable with other row jobs) or a callable run alone on the forward thread."""

    future: asyncio.Future
    rows: list[tuple[str, str]] | None = None  # (adapter ref, prompt)
    tokens: list[int] | None = None  # each row's prompt length
    call: Callable[[], Any] | None = None
    enqueued: float = field(default_factory=time.monotonic)
    running: bool = False  # admitted to the forward thread: its future is settled once the forward ends
    waiting: bool = True  # in the queue, counted against its size, until the worker takes it or its client leaves

    @property
    def refs(self) -> set[str]:
        return {ref for ref, _ in self.rows or ()}


def padding_share(jobs: Sequence[Job]) -> float:
    """The share of a merged batch's token slots that would be padding."""
    lengths = [n for j in jobs for n in j.tokens]
    return 1 - sum(lengths) / (len(lengths) * max(lengths))


def forward_rows(engine: Engine, jobs: Sequence[Job]) -> list[Any]:
    """Each job's (rows, 3) logits, or the exception that job alone failed with; the others share one batch."""
    out: list[Any] = [None] * len(jobs)
    live = []
    for i, job in enumerate(jobs):
        try:
            for ref in job.refs:
                engine.load(ref)
            live.append(i)
        except Exception as e:  # noqa: BLE001 - this job's answer
            out[i] = e
    rows = [r for i in live for r in jobs[i].rows]
    try:
        logits = engine.logits(rows) if rows else np.empty((0, 3))
    except Exception as e:  # noqa: BLE001 - every job of the batch gets it
        return [e if i in live else o for i, o in enumerate(out)]
    start = 0
    for i in live:
        out[i], start = logits[start : start + len(jobs[i].rows)], start + len(jobs[i].rows)
    return out


def background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux nice 10; elsewhere a no-op): HTTP parsing and request
    preparation then fill the moments a forward leaves a core idle instead of stalling its thread team."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


class CallingThreadExecutor(Executor):
    """Runs submitted calls on whichever thread calls `run` (the process's main thread, in `adaptrec serve`).

    Why not a worker thread: once a second thread runs torch ops, OpenMP keeps a second thread team and
    every forward in the process ran a third to a half slower in probes on a 2-core machine; the main
    thread loaded the backbone, so forwards stay there and uvicorn's event loop moves to a thread instead.
    """

    def __init__(self) -> None:
        self._calls: SimpleQueue = SimpleQueue()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._calls.put(None)  # `run` returns once the calls before it are done

    def run(self) -> None:
        """Run calls until `shutdown` (waking every 0.5 s so the calling thread's signal handlers run)."""
        while True:
            try:
                item = self._calls.get(timeout=0.5)
            except Empty:
                continue
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as e:  # noqa: BLE001 - the caller's
                    future.set_exception(e)


class Worker:
    def __init__(self, engine: Engine, metrics: Metrics, max_batch: int, max_wait_ms: float, queue_size: int,
                 max_padding: float, executor: Executor | None = None):
        self.engine, self.metrics = engine, metrics
        self.max_batch, self.max_wait, self.max_padding = max_batch, max_wait_ms / 1000, max_padding
        # jobs, then `_STOP`; bounded by the jobs still waiting (`waiting`), not by its entries: a job whose client
        # left stays an entry until the worker passes it, and must not refuse the requests that come after
        self.queue: asyncio.Queue[Job | object] = asyncio.Queue()
        self.queue_size, self.waiting = queue_size, 0
        self.pool = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptrec-forward")
        self.prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptrec-prepare",
                                       initializer=background_priority)
        self.task: asyncio.Task | None = None

    async def prepare(self, fn: Callable[[], Any]) -> Any:
        """Run request preparation (routing, rendering, tokenizing) off the event loop and the forward thread, in the
        caller's context (as `asyncio.to_thread`: its messages spell options as the server's starter does)."""
        return await asyncio.get_running_loop().run_in_executor(self.prep, contextvars.copy_context().run, fn)

    async def submit(self, rows: list[tuple[str, str]] | None = None, tokens: list[int] | None = None,
                     call: Callable[[], Any] | None = None, since: float | None = None,
                     gone: asyncio.Event | None = None) -> Any:
        """Queue a job and await its result; `since` (`time.monotonic()`, default now): when its request arrived,
        from which the queue timeout counts. `gone` set (the client disconnected) before the answer: `ClientClosed`
        is raised, at once for a job still queued (it is not run), once its forward ends for a running one (its
        answer dropped; until then the request still counts against the queue size)."""
        if gone is not None and gone.is_set():
            raise ClientClosed()
        if self.waiting >= self.queue_size or self.queue.qsize() >= ENTRIES_PER_PLACE * self.queue_size:
            raise QueueFull(f"the server queue is full ({self.queue_size} jobs); retry later")
        job = Job(asyncio.get_running_loop().create_future(), rows, tokens, call)
        if since is not None:
            job.enqueued = since
        self.queue.put_nowait(job)
        self.waiting += 1
        leaving = asyncio.ensure_future(gone.wait()) if gone is not None else None
        try:
            if leaving is not None:
                await asyncio.wait((job.future, leaving), return_when=asyncio.FIRST_COMPLETED)
                if not job.future.done():
                    if job.running:  # its forward holds the thread: the request counts as admitted until it ends
                        await asyncio.wait((job.future,))
                        if not job.future.cancelled():
                            job.future.exception()  # its answer, or its error, dropped: retrieved, not reported
                    raise ClientClosed()
            return await job.future
        finally:
            if leaving is not None:
                leaving.cancel()
            if not job.future.done():  # cancelled or left: the worker skips the job, or drops its answer
                job.future.cancel()
            if not job.running:  # no longer waiting, though the worker has yet to pass its entry: an empty one
                self._taken(job)
                job.rows = job.tokens = job.call = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued job, then stop."""
        await self.queue.put(_STOP)
        if self.task is not None:
            await self.task
        self.pool.shutdown(wait=True)
        self.prep.shutdown(wait=True)

    async def _loop(self) -> None:
        pending: Job | object | None = None
        while True:
            job = pending or await self.queue.get()
            pending = None
            if job is _STOP:
                return
            if not self._admit(job):
                continue
            if job.call is not None:
                await self._run([job], partial(lambda call: [call()], job.call))
                continue
            batch, pending = await self._gather(job)
            self.metrics.batch_rows.observe(sum(len(j.rows) for j in batch))
            await self._run(batch, partial(forward_rows, self.engine, batch))

    async def _gather(self, first: Job) -> tuple[list[Job], Job | object | None]:
        """`first` and the row jobs that arrive within `max_wait` and merge under the limits; the job (or the stop)
        that ended the gathering, which comes next, or None."""
        loop = asyncio.get_running_loop()
        batch, deadline = [first], loop.time() + self.max_wait
        while sum(len(j.rows) for j in batch) < self.max_batch:
            try:  # what already waits merges even at max_wait 0 (wait_for(..., 0) would not take it before 3.12)
                nxt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    return batch, None
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    return batch, None
            if nxt is not _STOP and nxt.future.done():  # its client left: passed, never batched
                self._taken(nxt)
                continue
            if nxt is _STOP or nxt.call is not None or not self._fits(batch, nxt):
                return batch, nxt
            if self._admit(nxt):
                batch.append(nxt)
        return batch, None

    def _fits(self, batch: list[Job], job: Job) -> bool:
        merged = [*batch, job]
        return (sum(len(j.rows) for j in merged) <= self.max_batch
                and len(set().union(*(j.refs for j in merged))) <= self.engine.max_resident
                and padding_share(merged) <= self.max_padding)

    def _taken(self, job: Job) -> None:
        """`job` no longer counts against the queue size: the worker took it, or its client left."""
        if job.waiting:
            job.waiting = False
            self.waiting -= 1

    def _admit(self, job: Job) -> bool:
        """Whether `job` runs: not if its client went away (its future cancelled) or it waited past the timeout."""
        self._taken(job)
        if job.future.done():
            return False
        try:
            wait_or_refuse(job.enqueued, self.engine.limits)
            job.running = True
            return True
        except ServeError as e:
            job.future.set_exception(e)
            return False

    async def _run(self, jobs: list[Job], fn: Callable[[], list[Any]]) -> None:
        """Run `fn` on the forward thread; hand job i the i-th answer (an exception fails that job only)."""
        try:
            answers = await asyncio.get_running_loop().run_in_executor(self.pool, fn)
        except Exception as e:  # noqa: BLE001 - handed to the waiting requests
            answers = [e] * len(jobs)
        for job, answer in zip(jobs, answers):
            if job.future.done():  # a client that went away cancelled its future
                continue
            if isinstance(answer, Exception):
                job.future.set_exception(answer)
            else:
                job.future.set_result(answer)
