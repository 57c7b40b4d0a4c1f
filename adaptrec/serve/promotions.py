"""A promotion reaches serving without a restart, warm: the server routes each domain to the version it last switched
to; a poll of the registry's aliases finds a new champion, loads it on the forward thread (pre-warm; a promoted
score-level mix: its sources), then switches routing to it; the old version is unloaded once no request routed to
it is still in flight (the drain).

Until the first poll after a domain's first promotion, that domain routes straight to the registry's alias (loaded on
first use), so a fresh promotion serves at once. A new champion that cannot load (corrupt files, another base model,
a failed load, any other error of its pre-warm) is not switched to: the old one keeps serving (until it is removed:
then the domain routes to the registry's champion, as a domain without a switch does), the other domains
switch, and the failure is logged once; promoted anew (a rollback and a re-promotion between two polls included) it
is tried again. A poll that fails for a passing reason (a busy registry, a full queue) is logged and retried at the
next one; so is one that fails for an unforeseen reason, with its traceback: the watcher never stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from adaptrec.errors import (AdaptrecError, FingerprintMismatch, IntegrityError, RegistryBusy, RegistryError,
                             RegistryUnavailable)
from adaptrec.router.policy import serving

from .engine import QueueTimeout, ServeError
from .worker import QueueFull

log = logging.getLogger("adaptrec.serve")
PASSING = (QueueFull, QueueTimeout, RegistryBusy, RegistryUnavailable)  # the next poll retries
# a version the engine refuses (a failed load, a DoRA or unsupported type), corrupt files, another base model, or a
# version removed meanwhile: retrying will not help
NOT_SERVABLE = (ServeError, IntegrityError, FingerprintMismatch, RegistryError)


@dataclass
class ServedRegistry:
    """The registry as routing sees it: `promoted` and `aliases` answer the versions this server has switched to;
    everything else is the registry's own."""

    registry: Any
    served: dict[str, str] = field(default_factory=dict)  # domain -> name:version routing uses

    def promoted(self, domain: str):
        ref = self.served.get(domain)
        return self.registry.resolve(ref) if ref is not None else self.registry.promoted(domain)

    def aliases(self) -> dict[str, str]:
        return {**self.registry.aliases(), **self.served}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)


@dataclass
class Switch:
    domain: str
    old: str | None
    new: str | None  # None: the domain lost its champion (`registry remove --force`); it is routed as unpromoted
    promoted: str = ""  # the mark of the promotion that made `new` champion (`Registry.promotions`)


@dataclass
class PromotionWatcher:
    """Finds changed aliases and pre-warms, switches and drains each one (see the module docstring). Requests
    `hold` the adapters they were routed to while in flight; holds, releases and the drain's count all run on the
    event loop, so counts never race."""

    routing: ServedRegistry
    # (domain, champion, promotion mark) that could not load: not retried until promoted anew (after a rollback, say)
    failed: set[tuple[str, str, str]] = field(default_factory=set)
    draining: set[str] = field(default_factory=set)  # old champions to unload once nothing holds them
    in_flight: Counter = field(default_factory=Counter)
    switches: int = 0

    def start(self) -> None:
        """Serve the champions of now (loaded on first use)."""
        self.routing.served.update(self.routing.registry.aliases())

    def hold(self, refs: Sequence[str]) -> None:
        self.in_flight.update(refs)

    def release(self, refs: Sequence[str]) -> None:
        self.in_flight.subtract(refs)

    def changes(self) -> list[Switch]:
        current = self.routing.registry.promotions()
        # promoted again later (even within one poll), or for another domain: tried again
        self.failed = {failure for failure in self.failed if current.get(failure[0]) == failure[1:]}
        return [Switch(domain, self.routing.served.get(domain), ref, when)
                for domain, (ref, when) in current.items()
                if self.routing.served.get(domain) != ref and (domain, ref, when) not in self.failed] + \
            [Switch(domain, ref, None) for domain, ref in self.routing.served.items()
             if domain not in current or (current[domain][0] != ref and not self._registered(ref))]

    def _registered(self, ref: str) -> bool:
        """Whether `ref` is still registered: an old champion kept serving because its successor could not load is
        no longer served once removed (was: every request failed "no adapter", at every poll)."""
        try:
            self.routing.registry.resolve(ref)
        except RegistryError:
            return False
        return True

    async def run(self, engine, worker, interval: float) -> None:
        """Poll every `interval` seconds until cancelled; a failed poll is logged and the next one retries."""
        while True:
            await asyncio.sleep(interval)
            for step, what in ((self.switch_all, "checking for new champions"),
                               (self.drain, "unloading old champions")):
                try:
                    await step(engine, worker)
                except AdaptrecError as e:  # a passing failure: what was not done is found again next poll
                    log.warning("%s failed (%s); retrying in %g s", what, e, interval)
                except Exception:  # was: ended the watcher unannounced, so no later promotion was ever switched to
                    log.exception("%s failed; retrying in %g s", what, interval)

    async def switch_all(self, engine, worker) -> None:
        """Apply each changed alias (`changes`); a passing failure leaves the rest to the next poll."""
        for switch in await worker.prepare(self.changes):
            await self.apply(engine, worker, switch)

    async def apply(self, engine, worker, switch: Switch) -> None:
        """Pre-warm `switch.new` (a mix: its sources), then route to it; the old version starts draining. A domain
        without a champion any more stops routing to the old one at once."""
        if switch.new is None:
            del self.routing.served[switch.domain]
            self.draining.add(switch.old)
            log.info("%s has no champion any more; %s drains", switch.domain, switch.old)
            return

        def prewarm() -> None:
            for ref in serving(engine.registry.resolve(switch.new))[0]:
                engine.load(ref)

        try:
            await worker.submit(call=prewarm)
        except PASSING:
            raise
        except Exception as e:  # NOT_SERVABLE, or anything else (was: skipped every later domain, at every poll)
            self.failed.add((switch.domain, switch.new, switch.promoted))
            log.warning("not switching %s to %s, which cannot serve (%s: %s); %s keeps serving", switch.domain,
                        switch.new, type(e).__name__, e, switch.old or "the registry's alias",
                        exc_info=not isinstance(e, NOT_SERVABLE))
            return
        self.routing.served[switch.domain] = switch.new
        self.switches += 1
        if switch.old is not None:
            self.draining.add(switch.old)

    async def drain(self, engine, worker) -> None:
        """Unload each draining version's adapters (a mix: its sources) that nothing holds, serves or preloaded."""
        if not self.draining:
            return

        def adapters(ref: str) -> tuple[str, ...]:
            try:
                return serving(engine.registry.resolve(ref))[0]
            except RegistryBusy:  # not an answer: the next poll asks again
                raise
            except RegistryError:  # removed from the registry meanwhile: unload what is resident under its ref
                return (ref,)

        def resolved() -> tuple[set[str], dict[str, tuple[str, ...]]]:  # registry reads: off the event loop
            kept = {a for ref in self.routing.served.values() for a in adapters(ref)} | engine.preloaded
            return kept, {old: adapters(old) for old in sorted(self.draining)}

        kept, sources_of = await worker.prepare(resolved)
        # Counted here, on the event loop, where requests hold what they were routed to: a request planned on the
        # preparation thread before `resolved` woke first and holds its adapters by now.
        idle = []
        for old, sources in sources_of.items():
            if old in self.draining and all(self.in_flight[a] <= 0 for a in sources):
                self.draining.discard(old)
                idle += [(old, a) for a in sources if a not in kept]

        def unload(ref: str) -> None:  # on the worker, after any admin preload queued before it
            if ref not in engine.preloaded:
                engine.unload(ref)

        for old, ref in idle:
            try:
                await worker.submit(call=lambda ref=ref: unload(ref))
            except PASSING as e:  # a full or slow queue: the next poll drains it again
                self.draining.add(old)
                log.info("unloading %s waits for the next poll (%s)", ref, e)
            except (ServeError, RegistryError):  # evicted meanwhile (LRU), never loaded, or removed: nothing to unload
                pass
            except Exception:  # the next poll tries again; the others still unload (was: left resident for good)
                self.draining.add(old)
                log.exception("unloading %s failed; retrying at the next poll", ref)
