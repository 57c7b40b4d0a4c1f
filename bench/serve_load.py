"""HTTP load: concurrent clients against `adaptrec serve` on 127.0.0.1, vs the same requests answered in-process.

A throwaway registry of 4 random LoRA adapters (r 8, q_proj + v_proj), preloaded by the server (a
subprocess on a free 127.0.0.1 port, default options). A plan: `--requests` /v1/score requests, each
one amazon:office test case (Amazon-length cross-domain history) with 2 items, adapters mixed
round-robin. The baseline: the same requests answered directly (`serve.plans.answer_directly`, the
work `/v1/score` does, in-process, one request at a time). The two alternate chunk by chunk (a chunk
of 2 × clients requests answered directly, then served), so both see the same machine: this
2-core VM's speed drifts by 20-30% within minutes. Per repeat, two fresh plans (no case is sent
twice, so no run reuses a prefix cache another filled): plan A against `--clients` asyncio httpx
clients (throughput), plan B against 1 client (latency). Bounded by `--requests` and `--seconds`.

    python bench/serve_load.py [--quick] [--clients 4] [--requests 24] [--repeats 3] [--seconds 120]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402
from load_client import free_port, run_load, seconds_to_413, start_server, stop_server  # noqa: E402
from serve_setup import QV, amazon_cases, backbone_and_registry, parser, random_adapters  # noqa: E402

from adaptrec import scripts
from adaptrec.errors import AdaptrecError
from adaptrec.serve.engine import Engine, LimitExceeded  # noqa: E402
from adaptrec.serve.plans import answer_directly  # noqa: E402
from adaptrec.serve.schemas import ScoreRequest  # noqa: E402

GENERIC = '"a generic item"'  # every request's second item
WARM_UP = 8  # requests each side answers before timing: a fresh process runs its first forwards slower


def body(case, adapter: str) -> dict:
    history = [{"text": h.text, "liked": h.liked, "domain": h.domain} for h in case.history]
    return {"user_id": case.user_id, "domain": case.domain, "noun": case.noun, "history": history,
            "items": [case.target, GENERIC], "adapter": adapter}


def within_limit(engine: Engine, case) -> bool:
    """Whether the case's prompt is within the server's token limit (the few longer Amazon histories are skipped)."""
    try:
        engine.measured_prompt(case)
        engine.measured_prompt(replace(case, target=GENERIC))
        return True
    except LimitExceeded:
        return False


def direct(engine: Engine, bodies: list[dict]) -> list[float]:
    """Seconds per request, answered in-process one at a time."""
    out = []
    for b in bodies:
        t = time.perf_counter()
        answer_directly(engine, ScoreRequest(**b))
        out.append(time.perf_counter() - t)
    return out


def compare(engine: Engine, url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """Direct and served, alternating by chunks of 2 × `clients` requests, until done or `seconds` have passed."""
    chunk, start = 2 * clients, time.perf_counter()
    direct_s, served_s, sent, errors, latencies = 0.0, 0.0, 0, 0, []
    for i in range(0, len(bodies), chunk):
        if time.perf_counter() - start > seconds:
            break
        part = bodies[i : i + chunk]
        direct_s += sum(direct(engine, part))
        result = asyncio.run(run_load(url, [("/v1/score", b) for b in part], clients, seconds))
        served_s += result.wall_s
        sent, errors, latencies = sent + result.sent, errors + result.errors, latencies + result.ok()
    ok = sent - errors
    return {"requests": sent, "errors": errors, "direct_requests_per_s": sent / direct_s,
            "served_requests_per_s": ok / served_s, "direct_mean_s": direct_s / sent,
            "served_mean_s": float(np.mean(latencies)) if latencies else None,
            "served_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
            "served_p99_s": float(np.percentile(latencies, 99)) if latencies else None}


def one_repeat(engine: Engine, url: str, plan_a: list[dict], plan_b: list[dict], args) -> dict:
    many, one = compare(engine, url, plan_a, args.clients, args.seconds), compare(engine, url, plan_b, 1, args.seconds)
    return {f"{args.clients}_clients": many, "1_client": one,
            "throughput_ratio": many["served_requests_per_s"] / many["direct_requests_per_s"],
            "latency_ratio_1_client": one["served_mean_s"] / one["direct_mean_s"] if one["served_mean_s"] else None}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--clients", type=scripts.positive_int, default=4)
    p.add_argument("--requests", type=scripts.positive_int, default=24)
    p.add_argument("--repeats", type=scripts.positive_int, default=3)
    p.add_argument("--seconds", type=scripts.positive_float, default=120.0)
    args = p.parse_args()
    if args.quick:
        args.requests, args.repeats, args.seconds = min(args.requests, 8), 1, min(args.seconds, 30.0)
    backbone, registry = backbone_and_registry(args)
    refs = random_adapters(backbone, registry, 4, QV)
    n, warm = args.requests, WARM_UP
    engine = Engine(backbone, registry)
    cases = [c for c in amazon_cases(2 * (n * 2 * args.repeats + warm)) if within_limit(engine, c)][: n * 2 * args.repeats + warm]
    if len(cases) < n * 2 * args.repeats + warm:  # a short plan would time fewer requests than the config records
        raise AdaptrecError(f"only {len(cases)} amazon:office test cases fit the prompt limit; lower --requests or "
                            f"--repeats (they need {n * 2 * args.repeats + warm})")
    bodies = [body(case, refs[i % len(refs)]) for i, case in enumerate(cases)]
    warm_up, plans = bodies[:warm], [bodies[warm + k * n : warm + (k + 1) * n] for k in range(2 * args.repeats)]
    for ref in refs:  # loaded before timing, as the server preloads them
        engine.load(ref)
    direct(engine, warm_up)
    port = free_port()
    proc = start_server(args, registry.home, port, [flag for ref in refs for flag in ("--preload", ref)])
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(run_load(url, [("/v1/score", b) for b in warm_up], 1, 600))
        repeats = [one_repeat(engine, url, plans[2 * r], plans[2 * r + 1], args) for r in range(args.repeats)]
        refuse_s = sorted(seconds_to_413(port) for _ in range(5))
    finally:
        stop_server(proc)
    ratios = [r["throughput_ratio"] for r in repeats]
    latency = [r["latency_ratio_1_client"] for r in repeats]
    report("serve_load", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "clients": args.clients, "requests": args.requests,
                   "repeats": args.repeats, "seconds_cap": args.seconds, "items_per_request": 2, "adapters": 4,
                   "adapter": QV, "data": "amazon:office:test (prompts within 1,024 tokens), a fresh slice per run", "server": "127.0.0.1, default options, 4 preloaded",
                   "client": "asyncio httpx"},
        "repeats": repeats, "throughput_ratios": ratios, "median_throughput_ratio": statistics.median(ratios),
        "min_throughput_ratio": min(ratios), "latency_ratios_1_client": latency,
        "oversized_body_413_s": {"announced_bytes": 21_800_000, "median": refuse_s[2], "max": refuse_s[-1]},
        "target": {"min_throughput_ratio": 0.95, "median_throughput_ratio": 1.0, "max_latency_ratio_1_client": 1.1},
    }, quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
