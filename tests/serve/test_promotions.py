"""The promotion watcher on a fake registry, engine and worker: one champion that cannot serve, or an old version
removed while it drains, never holds up the other domains."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from adaptrec.errors import AdaptrecError, IntegrityError, RegistryBusy, RegistryError
from adaptrec.serve.engine import QueueTimeout, ServeError
from adaptrec.serve.promotions import PromotionWatcher, ServedRegistry


class FakeRegistry:
    def __init__(self, aliases: dict[str, str]):
        self.current, self.removed = dict(aliases), set()
        self.promoted_at: dict[str, str] = {}  # domain -> when its champion was promoted (default "")

    def aliases(self) -> dict[str, str]:
        return dict(self.current)

    def promotions(self) -> dict[str, tuple[str, str]]:
        return {domain: (ref, self.promoted_at.get(domain, "")) for domain, ref in self.current.items()}

    def resolve(self, ref: str):
        if ref in self.removed:
            raise RegistryError(f"no adapter {ref}")
        return SimpleNamespace(ref=ref, adapter_type="lora", adapter_config={})


class FakeEngine:
    def __init__(self, registry: FakeRegistry, refuse: dict[str, Exception]):
        self.registry, self.refuse, self.preloaded = registry, refuse, set()
        self.resident: set[str] = set()

    def load(self, ref: str) -> None:
        if ref in self.refuse:
            raise self.refuse[ref]
        self.resident.add(ref)

    def unload(self, ref: str) -> None:
        self.resident.discard(ref)


class InlineWorker:
    async def prepare(self, fn):
        return fn()

    async def submit(self, call):
        return call()


def _poll(watcher: PromotionWatcher, engine: FakeEngine) -> None:
    """Let `watcher` poll for 0.2 s."""
    async def go():
        task = asyncio.create_task(watcher.run(engine, InlineWorker(), 0.01))
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(go())


def _polls(registry: FakeRegistry, refuse: dict[str, Exception], promote: dict[str, str], removed=()):
    """Serve `registry`'s champions, then promote `promote` (and remove `removed`), and let the watcher poll."""
    engine = FakeEngine(registry, refuse)
    engine.resident = set(registry.current.values())
    watcher = PromotionWatcher(ServedRegistry(registry))
    watcher.start()
    registry.current.update(promote)
    registry.removed |= set(removed)
    _poll(watcher, engine)
    return watcher, engine


def test_a_champion_the_engine_refuses_is_not_retried_and_other_domains_switch():
    registry = FakeRegistry({"books": "books-lora:1", "movie": "movie-lora:1"})
    dora = ServeError("books-dora:1 is a DoRA adapter: peft cannot batch DoRA per row")
    watcher, engine = _polls(registry, {"books-dora:1": dora}, {"books": "books-dora:1", "movie": "movie-lora:2"})
    assert watcher.routing.served == {"books": "books-lora:1", "movie": "movie-lora:2"}
    assert watcher.failed == {("books", "books-dora:1", "")} and watcher.switches == 1
    assert engine.resident == {"books-lora:1", "movie-lora:2"}  # the old movie version drained
    registry.current["books"] = "books-lora:1"  # rolled back, then promoted again once it can serve (was: never tried)
    watcher.changes()
    del engine.refuse["books-dora:1"]
    registry.current["books"] = "books-dora:1"

    _poll(watcher, engine)
    assert watcher.routing.served["books"] == "books-dora:1" and watcher.failed == set()


def test_an_old_champion_kept_for_a_successor_that_cannot_load_is_no_longer_served_once_removed():
    """(was: the watcher kept routing the domain to the removed version: every request failed "no adapter", and
    nothing noticed at any poll)"""
    registry = FakeRegistry({"books": "books-lora:1"})
    tampered = {"books-lora:2": IntegrityError("tampered")}
    watcher, engine = _polls(registry, tampered, {"books": "books-lora:2"})
    assert watcher.routing.served == {"books": "books-lora:1"}  # kept while it is registered
    registry.removed.add("books-lora:1")
    _poll(watcher, engine)
    assert watcher.routing.served == {} and "books-lora:1" not in engine.resident  # drained; routed as unswitched


def test_a_version_that_failed_for_one_domain_is_tried_when_promoted_for_another():
    """Failures are kept per (domain, version) (was: per version, so its promotion elsewhere was never tried)."""
    registry = FakeRegistry({"books": "books-lora:1", "movie": "movie-lora:1"})
    watcher, engine = _polls(registry, {"shared:1": ServeError("a load failed")}, {"books": "shared:1"})
    assert watcher.failed == {("books", "shared:1", "")}
    del engine.refuse["shared:1"]
    registry.current["movie"] = "shared:1"

    _poll(watcher, engine)
    assert watcher.routing.served == {"books": "books-lora:1", "movie": "shared:1"}


def test_a_champion_rolled_back_and_promoted_again_between_two_polls_is_tried_again():
    """The watcher saw the same alias before and after, so the failure stood and the re-promotion was never tried."""
    registry = FakeRegistry({"books": "books-lora:1"})
    watcher, engine = _polls(registry, {"books-dora:1": ServeError("a load failed")}, {"books": "books-dora:1"})
    assert watcher.routing.served == {"books": "books-lora:1"}
    del engine.refuse["books-dora:1"]  # fixed, then rolled back and promoted again before the next poll
    registry.promoted_at["books"] = "2026-12-07T01:00:00.000001+00:00"

    _poll(watcher, engine)
    assert watcher.routing.served == {"books": "books-dora:1"} and watcher.failed == set()


def test_an_unforeseen_prewarm_error_is_one_failure_and_the_watcher_goes_on():
    """A pre-warm error that was no AdaptrecError (files removed mid-read) ended the watcher unannounced: no later
    promotion was switched to; another AdaptrecError skipped every later domain, at every poll."""
    registry = FakeRegistry({"art": "art-lora:1", "books": "books-lora:1", "movie": "movie-lora:1"})
    refuse = {"art-lora:2": FileNotFoundError("adapter_model.safetensors"), "books-lora:2": AdaptrecError("odd")}
    watcher, engine = _polls(registry, refuse, {"art": "art-lora:2", "books": "books-lora:2", "movie": "movie-lora:2"})
    assert watcher.routing.served == {"art": "art-lora:1", "books": "books-lora:1", "movie": "movie-lora:2"}
    assert watcher.failed == {("art", "art-lora:2", ""), ("books", "books-lora:2", "")}
    registry.current["movie"] = "movie-lora:3"  # a later promotion still switches
    _poll(watcher, engine)
    assert watcher.routing.served["movie"] == "movie-lora:3"


def test_the_watcher_outlives_an_unforeseen_error_of_a_poll_or_a_drain():
    registry = FakeRegistry({"movie": "movie-lora:1"})
    watcher, engine = _polls(registry, {}, {"movie": "movie-lora:2"})
    calls = {"n": 0}
    real = registry.promotions

    def promotions():
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("a row of another shape")
        return real()

    registry.promotions, registry.current["movie"] = promotions, "movie-lora:3"
    unload = engine.unload
    engine.unload = lambda ref: (_ for _ in ()).throw(OSError("EIO")) if calls["n"] < 3 else unload(ref)
    _poll(watcher, engine)
    assert watcher.routing.served["movie"] == "movie-lora:3" and calls["n"] > 3
    assert engine.resident == {"movie-lora:3"} and watcher.draining == set()  # the failed unloads were retried


def test_a_busy_registry_is_retried_not_marked_failed():
    registry = FakeRegistry({"movie": "movie-lora:1"})
    busy = {"movie-lora:2": RegistryBusy("the registry stayed busy")}
    watcher, _ = _polls(registry, busy, {"movie": "movie-lora:2"})
    assert watcher.failed == set() and watcher.routing.served == {"movie": "movie-lora:1"}


def test_a_busy_registry_while_draining_is_asked_again_not_read_as_a_removal():
    registry = FakeRegistry({"movie": "movie-lora:1"})
    real, busy = registry.resolve, {"on": True}

    def resolve(ref):
        if ref == "movie-lora:1" and busy["on"]:
            raise RegistryBusy("the registry stayed busy")
        return real(ref)

    registry.resolve = resolve
    watcher, engine = _polls(registry, {}, {"movie": "movie-lora:2"})
    assert watcher.draining == {"movie-lora:1"} and "movie-lora:1" in engine.resident  # kept for the next poll


def test_an_old_version_removed_while_it_drains_is_unloaded():
    registry = FakeRegistry({"movie": "movie-lora:1"})
    watcher, engine = _polls(registry, {}, {"movie": "movie-lora:2"}, removed=["movie-lora:1"])
    assert watcher.routing.served == {"movie": "movie-lora:2"} and watcher.draining == set()
    assert engine.resident == {"movie-lora:2"}


def _movie_switched() -> tuple[FakeEngine, PromotionWatcher]:
    """A watcher that served movie-lora:1 (resident) and has switched movie to movie-lora:2, before any drain."""
    registry = FakeRegistry({"movie": "movie-lora:1"})
    engine = FakeEngine(registry, {})
    engine.resident = {"movie-lora:1"}
    watcher = PromotionWatcher(ServedRegistry(registry))
    watcher.start()
    registry.current["movie"] = "movie-lora:2"

    async def switch_all():
        for switch in watcher.changes():
            await watcher.apply(engine, InlineWorker(), switch)

    asyncio.run(switch_all())
    return engine, watcher


def test_an_unload_the_queue_refuses_is_tried_again_at_the_next_poll():
    """(was: the old version left the drain before its unload was queued, so a full or slow queue left it resident)"""
    engine, watcher = _movie_switched()

    class BusyQueue(InlineWorker):
        async def submit(self, call):
            raise QueueTimeout("the request waited 5.1 s in the queue (limit 5.0 s); retry later")

    async def go():
        await watcher.drain(engine, BusyQueue())
        assert watcher.draining == {"movie-lora:1"} and "movie-lora:1" in engine.resident
        await watcher.drain(engine, InlineWorker())

    asyncio.run(go())
    assert watcher.draining == set() and engine.resident == {"movie-lora:2"}


def test_an_admin_preload_between_the_drains_read_and_its_unload_stays_loaded():
    """The drain read what was preloaded on the preparation thread; an admin preload of the old version queued
    before its unload (both run on the one worker) was unloaded right after (was: resident no more, its preload
    ended)."""
    engine, watcher = _movie_switched()

    class PreloadFirst(InlineWorker):  # the admin's preload reaches the worker's queue before the unload
        async def submit(self, call):
            engine.preloaded.add("movie-lora:1")
            return call()

    asyncio.run(watcher.drain(engine, PreloadFirst()))
    assert watcher.draining == set() and engine.resident == {"movie-lora:1", "movie-lora:2"}


def test_a_champion_removed_by_force_stops_being_routed_to_and_drains():
    """`registry remove X:2 --force` drops the alias; the server kept routing the domain to X:2 (404 for every
    request, never drained) instead of answering it as a domain without a champion."""
    registry = FakeRegistry({"movie": "movie-lora:1", "books": "books-lora:1"})
    engine = FakeEngine(registry, {})
    engine.resident = {"movie-lora:1", "books-lora:1"}
    watcher = PromotionWatcher(ServedRegistry(registry))
    watcher.start()
    del registry.current["movie"]
    registry.removed.add("movie-lora:1")

    async def go():
        for switch in watcher.changes():
            await watcher.apply(engine, InlineWorker(), switch)
        await watcher.drain(engine, InlineWorker())

    asyncio.run(go())
    assert watcher.routing.served == {"books": "books-lora:1"} and watcher.draining == set()
    assert engine.resident == {"books-lora:1"}
    registry.promoted = lambda domain: None
    assert watcher.routing.promoted("movie") is None  # routed as unpromoted: a RouteError, not a 404


def test_a_request_routed_to_the_old_version_just_before_the_drain_keeps_it_loaded():
    """Planning runs on the preparation thread and the request holds its adapters on the event loop once planned
    (was: the drain counted what was in flight on that thread too, right after the plan and before the hold, and
    unloaded the version the request was about to score with)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    class ThreadWorker(InlineWorker):  # as the server's Worker: one preparation thread
        prep = ThreadPoolExecutor(1)

        async def prepare(self, fn):
            return await asyncio.get_running_loop().run_in_executor(self.prep, fn)

    registry = FakeRegistry({"movie": "movie-lora:1"})
    engine, worker = FakeEngine(registry, {}), ThreadWorker()
    engine.resident = {"movie-lora:1"}
    watcher = PromotionWatcher(ServedRegistry(registry))
    watcher.start()
    registry.current["movie"] = "movie-lora:2"
    queued = threading.Event()

    def plan() -> list[str]:  # routed to the old version just before the switch
        queued.wait(5)
        return ["movie-lora:1"]

    async def request() -> None:
        adapters = await worker.prepare(plan)
        watcher.hold(adapters)
        await asyncio.sleep(0.05)  # scoring
        watcher.release(adapters)

    async def go() -> None:
        asked = asyncio.create_task(request())
        for switch in watcher.changes():
            await watcher.apply(engine, worker, switch)
        draining = asyncio.create_task(watcher.drain(engine, worker))
        await asyncio.sleep(0.02)  # the drain's registry reads wait behind the plan on the one thread
        queued.set()
        await draining
        assert "movie-lora:1" in engine.resident and watcher.draining == {"movie-lora:1"}
        await asked
        await watcher.drain(engine, worker)

    asyncio.run(go())
    assert engine.resident == {"movie-lora:2"} and watcher.draining == set()
