"""The app's worker: merging only when it pays, one bad job never fails another, a request that waited too long never runs."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from adaptrec.errors import RegistryError
from adaptrec.serve.engine import Limits, QueueTimeout
from adaptrec.serve.metrics import Metrics
from adaptrec.serve.worker import QueueFull, Worker


class FakeEngine:
    """Records the batches it is asked to score; each row's logits are its index in the batch."""

    def __init__(self, queue_timeout_s: float = 5.0, max_resident: int = 8):
        self.limits = Limits(queue_timeout_s=queue_timeout_s)
        self.max_resident = max_resident
        self.batches: list[list[tuple[str, str]]] = []
        self.missing: set[str] = set()

    def load(self, ref):
        if ref in self.missing:
            raise RegistryError(f"no adapter named {ref!r}")

    def logits(self, rows):
        self.batches.append(list(rows))
        return np.arange(len(rows) * 3, dtype=float).reshape(len(rows), 3)


class Hold:
    """A call that holds the forward thread until `release` is set: jobs submitted once `started` queue behind it
    whatever the machine's load (was: a 0.3 s sleep, raced by the submissions)."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.started.set()
        assert self.release.wait(30), "never released"

    async def running(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 30), "the worker never took the held call"


def _run(coro):
    return asyncio.run(coro)


def _worker(engine, max_batch=16, max_wait_ms=50.0, queue_size=8, max_padding=0.5) -> Worker:
    return Worker(engine, Metrics(lambda: 0, lambda: 0, lambda: 0), max_batch, max_wait_ms, queue_size, max_padding)


def _rows(*pairs, tokens=10):
    return {"rows": list(pairs), "tokens": [tokens] * len(pairs)}


def test_waiting_requests_share_one_batch_and_get_their_own_rows():
    engine = FakeEngine()

    async def go():
        worker = _worker(engine)
        worker.start()
        results = await asyncio.gather(worker.submit(**_rows(("a", "p1"))),
                                       worker.submit(**_rows(("b", "p2"), ("c", "p3"))))
        await worker.stop()
        return results, worker.metrics

    (first, second), metrics = _run(go())
    assert engine.batches == [[("a", "p1"), ("b", "p2"), ("c", "p3")]]  # one forward for both requests
    np.testing.assert_array_equal(first, [[0, 1, 2]])
    np.testing.assert_array_equal(second, [[3, 4, 5], [6, 7, 8]])
    assert metrics.registry.get_sample_value("adaptrec_batch_rows_count") == 1
    assert metrics.registry.get_sample_value("adaptrec_batch_rows_sum") == 3


def test_requests_merge_only_under_the_padding_cap_and_the_row_cap():
    engine = FakeEngine()

    async def go(max_batch):
        worker = _worker(engine, max_batch=max_batch, max_padding=0.1)
        worker.start()
        await asyncio.gather(worker.submit(**_rows(("a", "short"), tokens=100)),
                             worker.submit(**_rows(("a", "long"), tokens=200)),  # 25% padding beside "short"
                             worker.submit(**_rows(("a", "long too"), tokens=190)))  # 2.5% beside "long"
        await worker.stop()

    _run(go(16))
    assert engine.batches == [[("a", "short")], [("a", "long"), ("a", "long too")]]
    engine.batches.clear()
    _run(go(1))  # one row per batch: every request runs alone
    assert [len(b) for b in engine.batches] == [1, 1, 1]


def test_a_request_naming_a_missing_adapter_fails_alone():
    engine = FakeEngine()
    engine.missing = {"gone"}

    async def go():
        worker = _worker(engine)
        worker.start()
        good, bad = await asyncio.gather(worker.submit(**_rows(("a", "p"))), worker.submit(**_rows(("gone", "q"))),
                                         return_exceptions=True)
        await worker.stop()
        return good, bad

    good, bad = _run(go())
    assert isinstance(bad, RegistryError) and good.shape == (1, 3)
    assert engine.batches == [[("a", "p")]]


def test_a_batch_never_holds_more_adapters_than_fit_resident():
    engine = FakeEngine(max_resident=2)

    async def go():
        worker = _worker(engine)
        worker.start()
        await asyncio.gather(*(worker.submit(**_rows((ref, "p"))) for ref in "abac"))
        await worker.stop()

    _run(go())
    assert [[ref for ref, _ in b] for b in engine.batches] == [["a", "b", "a"], ["c"]]


def test_a_request_that_waited_past_the_timeout_is_refused_before_it_runs():
    engine = FakeEngine(queue_timeout_s=0.2)

    async def go():
        worker, hold = _worker(engine, max_wait_ms=1), Hold()
        worker.start()
        slow = asyncio.ensure_future(worker.submit(call=hold))  # occupies the worker
        await hold.running()
        late = asyncio.ensure_future(worker.submit(**_rows(("a", "p"))))
        await asyncio.sleep(0.3)  # past its queue timeout
        hold.release.set()
        await slow
        with pytest.raises(QueueTimeout, match="waited"):
            await late
        fresh = await worker.submit(**_rows(("a", "q")))  # the worker keeps serving
        await worker.stop()
        return fresh

    fresh = _run(go())
    assert engine.batches == [[("a", "q")]] and fresh.shape == (1, 3)


def test_a_full_queue_refuses_at_once():
    async def go():
        worker = _worker(FakeEngine(), max_batch=1, max_wait_ms=1, queue_size=1)  # not started: nothing drains
        first = asyncio.ensure_future(worker.submit(**_rows(("a", "p"))))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="full"):
            await worker.submit(**_rows(("a", "q")))
        first.cancel()

    _run(go())


def test_jobs_whose_clients_left_free_their_places_in_the_queue_at_once():
    """A job whose client left stayed an entry of the bounded queue until the forward thread passed it: retries
    behind a long forward got 503 "queue full" after being prepared, and the depth gauge counted the dead."""
    from adaptrec.serve.guards import ClientClosed

    engine = FakeEngine()

    async def go():
        worker, hold = _worker(engine, max_wait_ms=1, queue_size=2), Hold()
        worker.start()
        slow = asyncio.ensure_future(worker.submit(call=hold))  # holds the forward thread
        await hold.running()
        events = [asyncio.Event(), asyncio.Event()]
        left = [asyncio.ensure_future(worker.submit(**_rows(("a", f"p{i}")), gone=e)) for i, e in enumerate(events)]
        await asyncio.sleep(0.01)
        depth = [worker.waiting]
        for event in events:
            event.set()
        for request in left:
            with pytest.raises(ClientClosed):
                await request
        depth.append(worker.waiting)
        fresh = asyncio.ensure_future(worker.submit(**_rows(("a", "q"))))  # was: QueueFull
        hold.release.set()
        await slow
        answer = await fresh
        await worker.stop()
        return depth, answer

    depth, answer = _run(go())
    assert depth == [2, 0] and answer.shape == (1, 3) and engine.batches == [[("a", "q")]]


def test_jobs_already_waiting_merge_at_max_wait_zero():
    """The default `--max-wait-ms 0` waits for nothing new but still merges what queued behind a running job."""
    engine = FakeEngine()

    async def go():
        worker, hold = _worker(engine, max_wait_ms=0), Hold()
        worker.start()
        slow = asyncio.ensure_future(worker.submit(call=hold))  # occupies the worker
        await hold.running()
        queued = [asyncio.ensure_future(worker.submit(**_rows((ref, "p")))) for ref in "abcd"]
        deadline = time.monotonic() + 30
        while worker.waiting < 4:
            assert time.monotonic() < deadline, "the four jobs never queued"
            await asyncio.sleep(0.001)
        hold.release.set()
        await asyncio.gather(slow, *queued)
        await worker.stop()

    _run(go())
    assert engine.batches == [[(ref, "p") for ref in "abcd"]]


def test_a_cancelled_request_that_waited_past_the_timeout_does_not_stop_the_worker():
    """A client gone away (its future cancelled) and then timed out in the queue is skipped, not refused twice."""
    engine = FakeEngine(queue_timeout_s=0.1)

    async def go():
        worker, hold = _worker(engine, max_wait_ms=1), Hold()
        worker.start()
        slow = asyncio.ensure_future(worker.submit(call=hold))
        await hold.running()
        gone = asyncio.ensure_future(worker.submit(**_rows(("a", "p"))))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.2)  # past its queue timeout
        hold.release.set()
        await slow
        fresh = await asyncio.wait_for(worker.submit(**_rows(("a", "q"))), 2)
        await worker.stop()
        return fresh

    assert _run(go()).shape == (1, 3) and engine.batches == [[("a", "q")]]


def test_a_stop_that_arrives_while_a_batch_gathers_still_stops_the_worker():
    """The stop was taken as "nothing more to merge" and dropped, so `stop()` waited forever."""
    engine = FakeEngine()

    async def go():
        worker = _worker(engine, max_wait_ms=300.0)
        worker.start()
        answer = asyncio.ensure_future(worker.submit(**_rows(("a", "p1"))))
        await asyncio.sleep(0.05)  # the worker now gathers company for it
        await asyncio.wait_for(worker.stop(), 5)
        return await answer

    np.testing.assert_array_equal(_run(go()), [[0, 1, 2]])
    assert engine.batches == [[("a", "p1")]]


def test_request_preparation_runs_in_the_context_of_the_server_s_starter():
    """Under `adaptrec serve` a refusal prepared off the event loop (an adapter an anonymous request may not name)
    named the Python keyword: the preparation thread ran without the command line's context."""
    from adaptrec.errors import command_line, option

    async def spelled() -> str:
        return await _worker(FakeEngine()).prepare(lambda: option("allow_any_adapter", True))

    with command_line():
        assert _run(spelled()) == "--allow-any-adapter"
    assert _run(spelled()) == "allow_any_adapter=True"


def test_a_client_that_left_drops_a_queued_job_and_holds_a_running_one_until_its_forward_ends():
    """A queued job whose client left is never run; a running one's request waits for its forward (was: it left at
    once, no longer counted against the queue size while the forward still held the thread)."""
    from adaptrec.serve.guards import ClientClosed

    engine, hold, ended = FakeEngine(), Hold(), []
    real = engine.logits

    def slow(rows):
        hold()
        ended.append(time.monotonic())
        return real(rows)

    engine.logits = slow

    async def go():
        worker = _worker(engine, max_batch=1, max_wait_ms=0.0)
        worker.start()
        gone = asyncio.Event()
        finished = {}

        async def request(name, pair):
            try:
                return await worker.submit(**_rows(pair), gone=gone)
            finally:
                finished[name] = time.monotonic()

        running = asyncio.ensure_future(request("running", ("a", "p1")))
        queued = asyncio.ensure_future(request("queued", ("b", "p2")))
        await hold.running()
        gone.set()  # both clients leave while the first one's forward runs
        await asyncio.wait([queued])  # the queued one leaves at once, the forward still held
        assert "running" not in finished
        hold.release.set()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        await worker.stop()
        return outcomes, finished

    outcomes, finished = _run(go())
    assert all(isinstance(o, ClientClosed) for o in outcomes)
    assert engine.batches == [[("a", "p1")]]  # the queued job never ran
    assert finished["running"] >= ended[0] > finished["queued"]
