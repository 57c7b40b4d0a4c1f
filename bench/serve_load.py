"""HTTP load: concurrent clients against `adaptrec serve` on 127.0.0.1, vs the engine called directly.

Starts the server as a subprocess on a free 127.0.0.1 port with a throwaway registry of 4 random
LoRA adapters (r=8, q_proj + v_proj), then runs `--clients` threads that each send /v1/score
requests (one amazon:office case, 2 items, a random one of the 4 adapters) until `--requests` in all
or `--seconds` have passed. Baseline, in the same run: the same requests through `Engine.score`
in-process, one at a time (also capped by `--seconds`). Reports p50/p99 latency, requests/s, errors
and the ratio of served to direct requests/s (dynamic batching should lift it above 1 with several
clients).

    python bench/serve_load.py [--quick] [--clients 4] [--requests 40] [--seconds 60] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402
from serve_setup import QV, amazon_cases, backbone_and_registry, parser, random_adapters  # noqa: E402

from adaptrec.serve.engine import Engine  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(case, adapter: str) -> dict:
    history = [{"text": h.text, "liked": h.liked, "domain": h.domain} for h in case.history]
    return {"user_id": case.user_id, "domain": case.domain, "noun": case.noun, "history": history,
            "items": [case.target, '"a generic item"'], "adapter": adapter}


def post(url: str, payload: dict) -> int:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def start_server(args, home: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from adaptrec.cli import main; main()", "serve", "--backbone", args.backbone,
           "--quantization", args.quantization, "--port", str(port), "--max-batch", "8", "--max-wait-ms", "10",
           "--queue-timeout", "60", "--registry", str(home)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the server did not start in 300 s")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    if args.quick:
        args.requests, args.seconds = min(args.requests, 12), min(args.seconds, 20.0)
    backbone, registry = backbone_and_registry(args)
    refs = random_adapters(backbone, registry, 4, QV)
    cases = amazon_cases(args.requests)
    plan = [(cases[i % len(cases)], refs[i % len(refs)]) for i in range(args.requests)]

    engine = Engine(backbone, registry)
    engine.score([plan[0][0]], plan[0][1])  # warm-up
    start, done = time.perf_counter(), 0
    for case, ref in plan:  # bounded like the served run: by count and by --seconds
        if time.perf_counter() - start > args.seconds:
            break
        engine.score([case, replace(case, target='"a generic item"')], ref)
        done += 1
    direct_rps = done / (time.perf_counter() - start)

    port = free_port()
    proc = start_server(args, registry.home, port)
    url = f"http://127.0.0.1:{port}/v1/score"
    latencies: list[float] = []
    statuses: list[int] = []
    lock, queue = threading.Lock(), list(plan)
    deadline = time.monotonic() + args.seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if not queue:
                    return
                case, ref = queue.pop()
            t = time.perf_counter()
            status = post(url, body(case, ref))
            with lock:
                latencies.append(time.perf_counter() - t)
                statuses.append(status)

    try:
        post(url, body(*plan[0]))  # warm-up
        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    ok = [lat for lat, s in zip(latencies, statuses) if s == 200]
    served_rps = len(ok) / wall
    report("serve_load", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "clients": args.clients,
                   "requests": len(statuses), "seconds_cap": args.seconds, "items_per_request": 2, "adapters": 4,
                   "adapter": QV, "data": "amazon:office:test", "server": "127.0.0.1, max-batch 8, max-wait 10 ms"},
        "p50_s": float(np.percentile(ok, 50)) if ok else None, "p99_s": float(np.percentile(ok, 99)) if ok else None,
        "served_requests_per_s": served_rps, "errors": sum(s != 200 for s in statuses),
        "direct_sequential_requests_per_s": direct_rps, "ratio": served_rps / direct_rps, "target_ratio": 1.0,
    })


if __name__ == "__main__":
    main()
