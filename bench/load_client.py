"""Shared parts of the HTTP benchmarks: start/stop `adaptrec serve` on 127.0.0.1, an asyncio load client, server RSS.

    from load_client import free_port, start_server, stop_server, run_load, server_rss_mb
    result = asyncio.run(run_load("http://127.0.0.1:PORT", [("/v1/score", body), ...], clients=4, seconds=60))
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

LOCAL = "http://127.0.0.1:"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, home: Path, port: int, extra_flags: Sequence[str] = (), log: Path | None = None
                 ) -> subprocess.Popen:
    """`adaptrec serve` on 127.0.0.1:`port` over registry `home` (args: backbone, quantization), once /healthz answers.

    The server's stderr goes to `log` (appended) or a temporary file; its tail is raised if start-up fails.
    """
    cmd = [sys.executable, "-c", "from adaptrec.cli import main; main()", "serve", "--backbone", args.backbone,
           "--quantization", args.quantization, "--port", str(port), "--queue-timeout", "60", "--registry", str(home),
           *extra_flags]
    with open(log, "a+b") if log else tempfile.TemporaryFile() as out:  # the child keeps its own handle
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{LOCAL}{port}/healthz", timeout=2):
                    return proc
            except OSError:
                if proc.poll() is not None:
                    out.seek(0)
                    tail = out.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the server exited during start-up:\n{tail}") from None
                time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("the server did not start in 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server (in-flight requests finish), killing it if it has not exited after 60 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_rss_mb(pid: int) -> float | None:
    """Resident set size of process `pid` in MiB (VmRSS of /proc/<pid>/status); None where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class LoadResult:
    """Per-request latency (s) and HTTP status (0: connection error or timeout), in completion order."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.statuses)

    @property
    def errors(self) -> int:
        return sum(s != 200 for s in self.statuses)

    def ok(self) -> list[float]:
        return [lat for lat, s in zip(self.latencies, self.statuses) if s == 200]

    @property
    def ok_rps(self) -> float:
        return len(self.ok()) / self.wall_s if self.wall_s else 0.0

    def _pct(self, q: float) -> float | None:
        ok = self.ok()
        return float(np.percentile(ok, q)) if ok else None

    @property
    def p50(self) -> float | None:
        return self._pct(50)

    @property
    def p99(self) -> float | None:
        return self._pct(99)


async def _worker(client: httpx.AsyncClient, plan: deque, deadline: float, out: LoadResult) -> None:
    """Send plan items (in plan order across workers) until the plan is empty or the deadline has passed."""
    while plan and time.monotonic() < deadline:
        path, payload = plan.popleft()
        t = time.perf_counter()
        try:
            status = (await client.post(path, json=payload)).status_code
        except httpx.HTTPError:
            status = 0
        out.latencies.append(time.perf_counter() - t)
        out.statuses.append(status)


async def run_load(url_base: str, plan: Sequence[tuple[str, dict]], clients: int, seconds: float,
                   timeout: float = 120.0) -> LoadResult:
    """POST each (path, json body) of `plan` from `clients` concurrent workers until done or `seconds` pass.

    Items are taken in plan order, so the first `result.sent` items are the ones sent. 127.0.0.1 only.
    """
    if not url_base.startswith(LOCAL):
        raise ValueError(f"run_load targets 127.0.0.1 only, not {url_base}")
    queue, out = deque(plan), LoadResult()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url_base, timeout=timeout, limits=limits, trust_env=False) as client:
        start = time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_worker(client, queue, deadline, out) for _ in range(clients)))
        out.wall_s = time.perf_counter() - start
    return out


def seconds_to_413(port: int, announced: int = 21_800_000) -> float:
    """Seconds from sending a request that announces `announced` body bytes (1 KB of it sent) to the 413 status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.perf_counter()
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % announced + b"{" * 1000)
        status = sock.recv(64)
        seconds = time.perf_counter() - start
    if not status.startswith(b"HTTP/1.1 413"):
        raise RuntimeError(f"expected 413, got {status!r}")
    return seconds
