"""The app's worker: dynamic batching merges waiting requests, a request that waited too long never runs."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from adaptrec.serve.app import Metrics, QueueFull, Worker
from adaptrec.serve.engine import Limits, QueueTimeout


class FakeEngine:
    """Records the batches it is asked to score; each row's logits are its index in the batch."""

    def __init__(self, queue_timeout_s: float = 5.0, max_resident: int = 8):
        self.limits = Limits(queue_timeout_s=queue_timeout_s)
        self.max_resident = max_resident
        self.batches: list[list[tuple[str, str]]] = []

    def logits(self, rows):
        self.batches.append(list(rows))
        return np.arange(len(rows) * 3, dtype=float).reshape(len(rows), 3)


def _run(coro):
    return asyncio.run(coro)


def test_waiting_requests_share_one_batch_and_get_their_own_rows():
    engine = FakeEngine()

    async def go():
        worker = Worker(engine, Metrics(), max_batch=16, max_wait_ms=50, queue_size=8)
        worker.start()
        results = await asyncio.gather(worker.submit(rows=[("a", "p1")]), worker.submit(rows=[("b", "p2"), ("c", "p3")]))
        await worker.stop()
        return results, worker.metrics

    (first, second), metrics = _run(go())
    assert engine.batches == [[("a", "p1"), ("b", "p2"), ("c", "p3")]]  # one forward for both requests
    np.testing.assert_array_equal(first, [[0, 1, 2]])
    np.testing.assert_array_equal(second, [[3, 4, 5], [6, 7, 8]])
    assert metrics.batch_rows.n == 1 and metrics.batch_rows.total == 3


def test_a_batch_never_holds_more_adapters_than_fit_resident():
    engine = FakeEngine(max_resident=2)

    async def go():
        worker = Worker(engine, Metrics(), max_batch=16, max_wait_ms=50, queue_size=8)
        worker.start()
        await asyncio.gather(*(worker.submit(rows=[(ref, "p")]) for ref in "abac"))
        await worker.stop()

    _run(go())
    assert [[ref for ref, _ in b] for b in engine.batches] == [["a", "b", "a"], ["c"]]


def test_a_request_that_waited_past_the_timeout_is_refused_before_it_runs():
    engine = FakeEngine(queue_timeout_s=0.2)

    async def go():
        worker = Worker(engine, Metrics(), max_batch=16, max_wait_ms=1, queue_size=8)
        worker.start()
        slow = asyncio.ensure_future(worker.submit(call=lambda: time.sleep(0.5)))  # occupies the worker
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(worker.submit(rows=[("a", "p")]))
        await slow
        with pytest.raises(QueueTimeout, match="waited"):
            await late
        fresh = await worker.submit(rows=[("a", "q")])  # the worker keeps serving
        await worker.stop()
        return fresh

    fresh = _run(go())
    assert engine.batches == [[("a", "q")]] and fresh.shape == (1, 3)


def test_a_full_queue_refuses_at_once():
    async def go():
        worker = Worker(FakeEngine(), Metrics(), max_batch=1, max_wait_ms=1, queue_size=1)  # not started: nothing drains
        first = asyncio.ensure_future(worker.submit(rows=[("a", "p")]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="full"):
            await worker.submit(rows=[("a", "q")])
        first.cancel()

    _run(go())
