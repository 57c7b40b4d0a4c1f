"""Soak: mixed load on `adaptrec serve` for minutes, with adapter load/unload/promote churn and a restart midway.

A registry of 4 random LoRA adapters (2 promoted, 2 not) on the backbone; 3 asyncio httpx clients send
a mix of routed and named /v1/score, /v1/recommend and bad requests (a missing adapter, an oversized
request, an unpromoted adapter) to 127.0.0.1, one connection per request; a churn task preloads and
unloads adapters and re-promotes domains every 2 s; at half time the server gets SIGTERM (it
finishes what it accepted) and a new one starts on the same port while the clients keep sending. Every answer must be
200 or a `{"error": ...}` envelope; a request whose connection was refused, or one sent after the SIGTERM and closed
unread by the stopping server (uvicorn closes connections it has not read a request from), was never accepted; any
other request closed without an answer, one sent before the SIGTERM included, is `dropped` (the goal: none; counting
every request sent before the SIGTERM as accepted is the strict reading). Reports counts by status, RSS of each
server at start and end.

    python bench/serve_soak.py [--seconds 600] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from adaptrec import scripts

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_client import free_port, server_rss_mb, start_server, stop_server  # noqa: E402

TOKEN = "soak-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    refused: int = 0  # connection refused: never accepted (the restart gap)
    closed_unread: int = 0  # sent after the SIGTERM, closed by the stopping server before it read the request
    dropped: int = 0  # sent before the SIGTERM or to a serving server, never answered
    gap: tuple[float, float] | None = None  # monotonic times of the SIGTERM and the new server's first health answer
    transport_errors: Counter = field(default_factory=Counter)  # "<error>, <sent in the restart gap | serving>": n
    unenveloped: int = 0  # an error answer without the {"error": ...} envelope
    rss_mb: list = field(default_factory=list)
    served_before_restart: int | None = None

    def in_gap(self, sent: float) -> bool:
        """Whether a request sent at monotonic time `sent` went out between the SIGTERM and the new server."""
        return self.gap is not None and self.gap[0] <= sent < self.gap[1]

    def to_dict(self) -> dict:
        served = self.statuses.get(200, 0)
        errors = sum(n for s, n in self.statuses.items() if s != 200)
        return {"served": served, "served_after_restart": served - (self.served_before_restart or 0),
                "clear_errors": errors, "by_status": dict(sorted(self.statuses.items())),
                "server_errors": sum(n for s, n in self.statuses.items() if s >= 500), "refused": self.refused,
                "closed_unread_at_shutdown": self.closed_unread, "transport_errors": dict(self.transport_errors),
                "dropped": self.dropped, "unenveloped": self.unenveloped, "server_rss_mb": self.rss_mb}


def requests_mix(cases: list, refs: list[str], rng: random.Random) -> tuple[str, dict]:
    """One request of the mix: mostly good ones, some bad on purpose."""
    case = rng.choice(cases)
    history = [{"text": h.text, "liked": h.liked, "domain": h.domain} for h in case.history]
    base = {"user_id": case.user_id, "domain": case.domain, "noun": case.noun, "history": history}
    kind = rng.random()
    if kind < 0.4:
        return "/v1/score", {**base, "items": [case.target, '"another item"']}
    if kind < 0.6:
        return "/v1/score", {**base, "items": [case.target], "adapter": rng.choice(refs[:2])}
    if kind < 0.8:
        return "/v1/recommend", {**base, "candidates": [case.target, '"a"', '"b"'], "k": 2}
    if kind < 0.87:
        return "/v1/score", {**base, "items": [case.target], "adapter": "missing-adapter"}
    if kind < 0.94:
        return "/v1/score", {**base, "items": [case.target], "adapter": rng.choice(refs[2:])}  # 403 unless preloaded
    return "/v1/score", {**base, "items": ['"x"'] * 1000}  # over the candidate limit: 413


async def client(url: str, cases: list, refs: list[str], deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_keepalive_connections=0)  # one connection per request: "accepted" is well defined
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, trust_env=False) as http:
        while time.monotonic() < deadline:
            path, payload = requests_mix(cases, refs, rng)
            sent = time.monotonic()
            try:
                response = await http.post(path, json=payload)
            except httpx.ConnectError:
                tally.refused += 1
                await asyncio.sleep(0.2)
                continue
            except httpx.TransportError as e:  # closed without an answer
                unread = tally.in_gap(sent)  # a stopping uvicorn closes the connections it has not read from
                tally.transport_errors[f"{type(e).__name__}, {'sent in the restart gap' if unread else 'serving'}"] += 1
                if unread:
                    tally.closed_unread += 1
                else:
                    tally.dropped += 1
                continue
            tally.statuses[response.status_code] += 1
            if response.status_code != 200 and "error" not in _json(response):
                tally.unenveloped += 1


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def churn(url: str, refs: list[str], registry, deadline: float, seed: int) -> None:
    """Preload/unload adapters and re-promote domains every 2 s (failures are counted by the clients' view)."""
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
        while time.monotonic() < deadline:
            await asyncio.sleep(2.0)
            ref = rng.choice(refs)
            action = rng.choice(["load", "unload", "promote"])
            try:
                if action == "promote":
                    registry.promote(rng.choice(refs[:2]), rng.choice(["arts", "office"]))
                else:
                    await http.post(f"/v1/adapters/{action}", json={"ref": ref}, headers=ADMIN)
            except httpx.TransportError:
                pass  # the restart gap


async def restart_midway(args, registry, port: int, procs: list, seconds: float, tally: Tally, log: Path) -> None:
    """At half time: SIGTERM the server (it finishes what it accepted), then start a new one on the same port."""
    await asyncio.sleep(seconds / 2)
    tally.rss_mb[-1]["end"] = server_rss_mb(procs[-1].pid)
    tally.gap = (time.monotonic(), float("inf"))
    await asyncio.to_thread(stop_server, procs[-1])
    tally.served_before_restart = tally.statuses.get(200, 0)
    procs.append(await asyncio.to_thread(start_server, args, registry.home, port, (), log))
    tally.gap = (tally.gap[0], time.monotonic())
    tally.rss_mb.append({"server": 2, "start": server_rss_mb(procs[-1].pid)})


def soak(args, registry, refs: list[str], cases: list, seconds: float, clients: int = 3) -> dict:
    """Run the soak against a server over `registry` for `seconds`, restarting it at half time."""
    os.environ["ADAPTREC_ADMIN_TOKEN"] = TOKEN
    port, tally, start = free_port(), Tally(), time.perf_counter()
    url, log = f"http://127.0.0.1:{port}", Path(tempfile.mkdtemp(prefix="adaptrec-soak-")) / "server.log"
    procs = [start_server(args, registry.home, port, (), log)]
    tally.rss_mb.append({"server": 1, "start": server_rss_mb(procs[0].pid)})

    async def run() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(client(url, cases, refs, deadline, tally, seed) for seed in range(clients)),
                             churn(url, refs, registry, deadline, seed=99),
                             restart_midway(args, registry, port, procs, seconds, tally, log))

    try:
        asyncio.run(run())
        tally.rss_mb[-1]["end"] = server_rss_mb(procs[-1].pid)
    finally:
        stop_server(procs[-1])
    return {**tally.to_dict(), "seconds": time.perf_counter() - start, "clients": clients,
            "restarts": len(procs) - 1, "internal_errors": internal_errors(log)}


def internal_errors(log: Path) -> list[str]:
    """The last line (the exception) of each traceback the servers logged for a 500, from their stderr."""
    lines, found = log.read_text(errors="replace").splitlines(), []
    for i, line in enumerate(lines):
        if "internal error on" in line:
            tail = next((x for x in lines[i + 1 :] if x and not x.startswith((" ", "Traceback"))), line)
            found.append(f"{line.strip()} -> {tail.strip()}")
    return found


def main() -> None:
    from common import backend, report
    from serve_setup import QV, amazon_cases, backbone_and_registry, parser, random_adapters

    p = parser(__doc__)
    p.add_argument("--seconds", type=scripts.positive_float, default=600.0)
    args = p.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 60.0)
    backbone, registry = backbone_and_registry(args)
    refs = random_adapters(backbone, registry, 4, QV)
    registry.promote(refs[0], "office")
    registry.promote(refs[1], "arts")
    del backbone  # the server holds its own
    result = soak(args, registry, refs, amazon_cases(200), args.seconds)
    report("serve_soak", {"config": {"backbone": args.backbone, "quantization": args.quantization,
                                     "backend": backend(args.quantization), "adapters": 4, "adapter": QV,
                                     "data": "amazon:office:test", "seconds": args.seconds}, **result},
           quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
