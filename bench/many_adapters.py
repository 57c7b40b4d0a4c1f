"""Many adapters, measured the way S-LoRA does: throughput with Zipf-distributed adapters vs ONE adapter.

Registers `--adapters` random LoRA adapters (r=8, q_proj + v_proj, seeded like serve_setup.random_adapters)
in a throwaway registry, from ONE peft model whose LoRA weights are overwritten per adapter (every version still
goes through `Registry.register`: file hashes and base fingerprint recorded). Times `Engine.load` (hash verify +
attach) and `Engine.unload` in-process over ~20 adapters. Then starts `adaptrec serve --max-resident
--resident` and sends /v1/score requests (one amazon:office case per user, 2 items each) from `--clients` asyncio
clients, after a warm-up and the admin preloading the hot set (the `--resident` most popular adapters): every request
naming ONE adapter, and the same requests naming adapters drawn from Zipf(`--alpha`) (seeded), in `--blocks`
interleaved blocks per arm (ABBA order: neither arm is always the warmer one). Adapter loads come
from the server's own counter (`adaptrec_adapter_loads` in /metrics). The registry folder is removed at the end.

    python bench/many_adapters.py [--quick] [--adapters 1000] [--resident 64] [--alpha 1.0] [--clients 4]
        [--requests 200] [--seconds 300] [--blocks 4] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402
from load_client import LoadResult, free_port, run_load, server_rss_mb, start_server, stop_server  # noqa: E402
from serve_load import body, within_limit  # noqa: E402
from serve_setup import QV, amazon_cases, backbone_and_registry, parser  # noqa: E402

from adaptrec import scripts
from adaptrec.adapters import build_peft_model  # noqa: E402
from adaptrec.errors import AdaptrecError
from adaptrec.registry import Registry  # noqa: E402
from adaptrec.serve.engine import Engine  # noqa: E402

ALLOW_ANY = "--allow-any-adapter"
TOKEN = "many-adapters-bench"
WARMUP = 4  # requests before the measured blocks, on cases of their own


def register_fast(backbone, registry: Registry, n: int, settings: dict, prefix: str = "many") -> list[str]:
    """Register `n` LoRA adapters with the weights `random_adapters` gives (seed i for adapter i), from ONE peft
    model whose trainable LoRA weights are overwritten before each `Registry.register`; the backbone is restored."""
    model = build_peft_model(backbone.model, settings, total_steps=10)
    params = [p for _, p in model.named_parameters() if p.requires_grad]  # the order random_adapters fills them in
    refs = []
    try:
        for i in tqdm(range(n), desc="registering", unit="adapter", mininterval=2.0):
            gen = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for p in params:
                    p.copy_(torch.randn(p.shape, generator=gen).to(p.dtype) * 0.02)
            record = registry.register(model, name=f"{prefix}-{i}", domain="office", kind="trained",
                                       adapter_type="lora", adapter_config=None, fingerprint=backbone.fingerprint)
            refs.append(record.ref)
    finally:
        backbone.model = model.unload()
    return refs


def engine_load_costs(backbone, registry: Registry, refs: Sequence[str], k: int = 20, cap: int = 64) -> dict:
    """Mean/median ms of `Engine.load` (verify + attach; no eviction) and `Engine.unload` over `k` adapters after
    one warm-up load, of the hash + fingerprint check alone (`Registry.load_verified`), and of `Engine.load` at a
    full cap of `cap` adapters (the server's: each load evicts the LRU adapter), over `k` loads."""
    engine = Engine(backbone, registry, max_resident=cap)
    engine.load(refs[0])  # the first load wraps the backbone in its PeftModel: not representative
    sample = list(refs[1 : k + 1])
    load_ms = _timed(engine.load, sample)
    verify_ms = _timed(lambda ref: registry.load_verified(ref, backbone.fingerprint), sample)
    unload_ms = _timed(engine.unload, sample)
    for ref in refs[1:cap]:  # full
        engine.load(ref)
    at_cap_ms = _timed(engine.load, list(refs[cap : cap + k]))
    for resident in engine.resident():
        engine.unload(resident["ref"])
    return {"adapters": len(sample), "cap": cap, "load_ms": _stats(load_ms), "verify_ms": _stats(verify_ms),
            "unload_ms": _stats(unload_ms), "load_at_cap_ms": _stats(at_cap_ms)}


def _timed(call, refs: Sequence[str]) -> list[float]:
    """Milliseconds of `call(ref)` for each ref, in order."""
    out = []
    for ref in refs:
        t = time.perf_counter()
        call(ref)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _stats(ms: list[float]) -> dict:
    return {"mean": float(np.mean(ms)), "median": float(np.median(ms))}


def zipf_order(n_adapters: int, n_requests: int, alpha: float, seed: int = 0) -> np.ndarray:
    """Adapter indices of `n_requests` requests, P(index k) proportional to 1/(k+1)^alpha (index 0 most popular)."""
    p = 1.0 / np.arange(1, n_adapters + 1) ** alpha
    return np.random.default_rng(seed).choice(n_adapters, size=n_requests, p=p / p.sum())


def allow_any_flag() -> list[str]:
    """[ALLOW_ANY] if this `adaptrec serve` knows the flag (per its --help), else []."""
    cmd = [sys.executable, "-c", "from adaptrec.cli import main; main()", "serve", "--help"]
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    return [ALLOW_ANY] if ALLOW_ANY in out.stdout + out.stderr else []


def adapter_loads(client: httpx.Client) -> int:
    """The server's count of adapters loaded from disk since it started (`adaptrec_adapter_loads` in /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(client.get("/metrics").text)
    return int(next(f.samples[0].value for f in families if f.name == "adaptrec_adapter_loads"))


def measured_blocks(client: httpx.Client, pid: int, plans: dict[str, list], blocks: int, args) -> dict:
    """Each arm's plan cut into `blocks` runs, the arms taking turns in ABBA order (A B, B A, ...) so neither is
    always the warmer one; per arm: throughput over its summed wall time, latency, errors, adapter loads (the
    server's own count), RSS before its first block and after the last block of either arm, each block's throughput,
    and (`sent_index`) which requests of its plan went out, a block cut short by its time cap sending fewer."""
    arms, n = list(plans), len(next(iter(plans.values())))
    cuts = np.linspace(0, n, blocks + 1).astype(int)
    merged = {arm: LoadResult() for arm in arms}
    loads, per_block, sent = dict.fromkeys(arms, 0), {arm: [] for arm in arms}, {arm: [] for arm in arms}
    rss_start: dict[str, float] = {}
    for b in range(blocks):
        for arm in (arms if b % 2 == 0 else arms[::-1]):
            rss_start.setdefault(arm, server_rss_mb(pid))
            before = adapter_loads(client)
            part = plans[arm][cuts[b]:cuts[b + 1]]
            result = asyncio.run(run_load(str(client.base_url).rstrip("/"), part, args.clients,
                                          args.seconds / blocks))
            loads[arm] += adapter_loads(client) - before
            merged[arm].latencies += result.latencies
            merged[arm].statuses += result.statuses
            merged[arm].wall_s += result.wall_s
            per_block[arm].append(result.ok_rps)
            sent[arm] += range(cuts[b], cuts[b] + result.sent)  # run_load sends each part in plan order
    rss_end = server_rss_mb(pid)
    out = {}
    for arm, r in merged.items():
        out[arm] = {"requests_per_s": r.ok_rps, "p50_s": r.p50, "p99_s": r.p99, "sent": r.sent, "errors": r.errors,
                    "wall_s": r.wall_s, "adapter_loads": loads[arm],
                    "adapter_loads_per_s": loads[arm] / r.wall_s if r.wall_s else None,
                    "resident_hit_fraction": 1 - loads[arm] / r.sent if r.sent else None,
                    "server_rss_mb_start": rss_start[arm], "server_rss_mb_end": rss_end,
                    "block_requests_per_s": per_block[arm], "sent_index": sent[arm]}
    return out


def preload(client: httpx.Client, refs: Sequence[str]) -> None:
    """The admin loads `refs` in order (the last stays longest in the LRU); any refusal stops the bench."""
    for ref in refs:
        r = client.post("/v1/adapters/load", json={"ref": ref}, headers={"Authorization": f"Bearer {TOKEN}"})
        if r.status_code != 200:
            raise RuntimeError(f"preloading {ref} answered {r.status_code}: {r.text[:200]}")


def served_runs(args, home: Path, refs: list[str], cases: list, warmup: list, order: np.ndarray, flags: list[str]
                ) -> dict:
    """Start the server; warm it up on `WARMUP` requests, preload the hot set (the `--resident` most popular
    adapters, ONE adapter's among them), then run the one-adapter and the Zipf requests over the same cases in
    interleaved ABBA blocks."""
    os.environ["ADAPTREC_ADMIN_TOKEN"] = TOKEN
    port = free_port()
    proc = start_server(args, home, port, ["--max-resident", str(args.resident), *flags])
    plans = {"one_adapter": [("/v1/score", body(cases[i % len(cases)], refs[0])) for i in range(len(order))],
             "many_adapters": [("/v1/score", body(cases[i % len(cases)], refs[k])) for i, k in enumerate(order)]}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=300) as client:
            for case in warmup:  # other users than the measured ones: no prefix cache carries over
                if client.post("/v1/score", json=body(case, refs[0])).status_code != 200:
                    raise RuntimeError("a warm-up request failed")
            preload(client, list(reversed(refs[: args.resident])))  # the most popular last
            runs = measured_blocks(client, proc.pid, plans, args.blocks, args)
    finally:
        stop_server(proc)
    for run in runs.values():
        picked = order[run.pop("sent_index")]
        if run is runs["many_adapters"]:
            run["distinct_adapters"] = len(set(picked.tolist()))
            run["requests_to_hot_set"] = float(np.mean(picked < args.resident)) if len(picked) else 0.0
    return runs


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--adapters", type=scripts.positive_int, default=1000)
    p.add_argument("--resident", type=scripts.positive_int, default=64, help="the server's LRU cap (--max-resident); this many of the "
                   "most popular adapters are preloaded before the Zipf run")
    p.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent of adapter popularity")
    p.add_argument("--clients", type=scripts.positive_int, default=4)
    p.add_argument("--requests", type=scripts.positive_int, default=200, help="per arm")
    p.add_argument("--seconds", type=scripts.positive_float, default=300.0, help="cap per arm (split over its blocks)")
    p.add_argument("--blocks", type=scripts.positive_int, default=4, help="interleaved blocks per arm (ABBA order)")
    args = p.parse_args()
    if args.quick:
        args.requests, args.seconds = min(args.requests, 12), min(args.seconds, 20.0)
    backbone, registry = backbone_and_registry(args)
    try:
        start = time.perf_counter()
        refs = register_fast(backbone, registry, args.adapters, QV)
        registration_s = time.perf_counter() - start
        k = min(20, (args.adapters - 1) // 3)
        load_costs = engine_load_costs(backbone, registry, refs, k=k, cap=min(args.resident, args.adapters - k))
        flags = allow_any_flag()
        order = zipf_order(args.adapters, args.requests, args.alpha)
        engine = Engine(backbone, registry)
        # one case per user: two cases of one user share their history, and the one-adapter run would reuse its
        # prefix cache where the Zipf run (another adapter each time) cannot
        cases = [c for c in amazon_cases(2 * args.requests + WARMUP, distinct_users=True) if within_limit(engine, c)]
        if len(cases) < args.requests + WARMUP:
            raise AdaptrecError(f"{len(cases)} usable cases, fewer than --requests {args.requests} + {WARMUP}")
        cases, warmup = cases[: args.requests], cases[-WARMUP:]
        runs = served_runs(args, registry.home, refs, cases, warmup, order, flags)
    finally:
        shutil.rmtree(registry.home, ignore_errors=True)
    one, many = runs["one_adapter"]["requests_per_s"], runs["many_adapters"]["requests_per_s"]
    report("many_adapters", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "adapters": args.adapters, "resident_cap": args.resident,
                   "alpha": args.alpha, "clients": args.clients, "requests": args.requests,
                   "seconds_cap": args.seconds, "blocks": args.blocks, "order": "ABBA", "warmup_requests": WARMUP,
                   "items_per_request": 2, "adapter": QV,
                   "data": "amazon:office:test, one case per user (prompts within 1,024 tokens)",
                   "server": "127.0.0.1, default options, the hot set preloaded", "server_flags": flags,
                   "baseline_adapter": refs[0]},
        "registration_s": registration_s, "registration_ms_per_adapter": registration_s / args.adapters * 1000,
        "engine_load": load_costs, **runs,
        "ratio": many / one if one else None, "target_ratio": 0.8,
        "block_ratios": [m / o if o else None for m, o in zip(runs["many_adapters"]["block_requests_per_s"],
                                                              runs["one_adapter"]["block_requests_per_s"])],
    }, quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
