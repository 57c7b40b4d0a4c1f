"""A promotion reaches serving without a restart, warm: the server routes each domain to the version it last switched
to; a poll of the registry's aliases finds a new champion, loads it on the forward thread (pre-warm), then switches
routing to it, then queues the old version's unload behind the requests already queued for it (the drain).

A domain the server has not switched yet (first promoted after start) routes straight to the registry's alias, so a
fresh promotion serves at once, loaded on first use. A new champion that fails to load is not switched to: the old one
keeps serving, and the failure is logged once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from adaptrec.errors import AdaptrecError

log = logging.getLogger("adaptrec.serve")


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
    new: str


@dataclass
class PromotionWatcher:
    """Finds changed aliases; `run` pre-warms, switches and drains each one (see the module docstring)."""

    routing: ServedRegistry
    failed: set[str] = field(default_factory=set)  # champions that would not load: not retried
    switches: int = 0

    def start(self) -> None:
        """Serve the champions of now (loaded on first use)."""
        self.routing.served.update(self.routing.registry.aliases())

    def changes(self) -> list[Switch]:
        current = self.routing.registry.aliases()
        return [Switch(domain, self.routing.served.get(domain), ref) for domain, ref in current.items()
                if domain in self.routing.served and self.routing.served[domain] != ref and ref not in self.failed]

    async def run(self, engine, worker, interval: float) -> None:
        """Poll every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            for switch in await worker.prepare(self.changes):
                await self.apply(engine, worker, switch)

    async def apply(self, engine, worker, switch: Switch) -> None:
        try:
            await worker.submit(call=lambda: engine.load(switch.new))  # pre-warm on the forward thread
        except AdaptrecError as e:
            self.failed.add(switch.new)
            log.warning("not switching %s to %s, which failed to load (%s); %s keeps serving", switch.domain,
                        switch.new, e, switch.old)
            return
        self.routing.served[switch.domain] = switch.new
        self.switches += 1
        old = switch.old
        if old is not None and old not in self.routing.served.values() and old not in engine.preloaded:
            try:  # queued behind every job already waiting, those routed to the old version included
                await worker.submit(call=lambda: engine.unload(old))
            except AdaptrecError:  # evicted meanwhile (LRU) or never loaded: nothing to drain
                pass
