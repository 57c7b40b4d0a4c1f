"""Many adapters, measured the way S-LoRA does: throughput with Zipf-distributed adapters vs ONE adapter.

Registers `--adapters` random LoRA adapters (r=8, q_proj + v_proj, seeded like serve_setup.random_adapters)
in a throwaway registry, from ONE peft model whose LoRA weights are overwritten per adapter (every version still
goes through `Registry.register`: file hashes and base fingerprint recorded). Times `Engine.load` (hash verify +
attach) and `Engine.unload` in-process over ~20 adapters. Then starts `adaptrec serve --max-resident
--resident` and sends /v1/score requests (one amazon:office case, 2 items each) from `--clients` asyncio clients:
first every request naming ONE adapter, then the same requests naming adapters drawn from Zipf(`--alpha`)
(seeded). The server exposes no load counter, so adapter loads and the hot-set fraction come from an LRU of
`--resident` simulated over the sent request order (labelled `_simulated`); its final resident set is checked
against the server's /v1/adapters. The registry folder is removed at the end.

    python bench/many_adapters.py [--quick] [--adapters 1000] [--resident 16] [--alpha 1.0] [--clients 4] [--requests 200] [--seconds 120] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402
from load_client import LoadResult, free_port, run_load, server_rss_mb, start_server, stop_server  # noqa: E402
from serve_load import body  # noqa: E402
from serve_setup import QV, amazon_cases, backbone_and_registry, parser  # noqa: E402

from adaptrec.adapters import build_peft_model  # noqa: E402
from adaptrec.registry import Registry  # noqa: E402
from adaptrec.serve.engine import Engine  # noqa: E402

ALLOW_ANY = "--allow-any-adapter"


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


def engine_load_costs(backbone, registry: Registry, refs: Sequence[str], k: int = 20) -> dict:
    """Mean/median ms of `Engine.load` (verify + attach; no eviction) and `Engine.unload` over `k` adapters after
    one warm-up load, and of the hash + fingerprint check alone (`Registry.load_verified`)."""
    engine = Engine(backbone, registry, max_resident=k + 2)
    engine.load(refs[0])  # the first load wraps the backbone in its PeftModel: not representative
    sample = list(refs[1 : k + 1])
    load_ms, unload_ms, verify_ms = [], [], []
    for ref in sample:
        t = time.perf_counter()
        engine.load(ref)
        load_ms.append((time.perf_counter() - t) * 1000)
    for ref in sample:
        t = time.perf_counter()
        registry.load_verified(ref, backbone.fingerprint)
        verify_ms.append((time.perf_counter() - t) * 1000)
    for ref in [*sample, refs[0]]:
        t = time.perf_counter()
        engine.unload(ref)
        unload_ms.append((time.perf_counter() - t) * 1000)
    return {"adapters": len(sample), "load_ms": _stats(load_ms), "verify_ms": _stats(verify_ms),
            "unload_ms": _stats(unload_ms[:-1])}


def _stats(ms: list[float]) -> dict:
    return {"mean": float(np.mean(ms)), "median": float(np.median(ms))}


def zipf_order(n_adapters: int, n_requests: int, alpha: float, seed: int = 0) -> np.ndarray:
    """Adapter indices of `n_requests` requests, P(index k) proportional to 1/(k+1)^alpha (index 0 most popular)."""
    p = 1.0 / np.arange(1, n_adapters + 1) ** alpha
    return np.random.default_rng(seed).choice(n_adapters, size=n_requests, p=p / p.sum())


def simulate_lru(order: Sequence[str], cap: int, warm: Sequence[str] = ()) -> tuple[int, int, list[str]]:
    """(misses, hits, final resident list) of an LRU of `cap` adapters serving `order`, starting with `warm`."""
    lru: OrderedDict[str, None] = OrderedDict((r, None) for r in warm)
    misses = hits = 0
    for ref in order:
        if ref in lru:
            hits += 1
            lru.move_to_end(ref)
            continue
        misses += 1
        lru[ref] = None
        while len(lru) > cap:
            lru.popitem(last=False)
    return misses, hits, list(lru)


def allow_any_flag() -> list[str]:
    """[ALLOW_ANY] if this `adaptrec serve` knows the flag (per its --help), else []."""
    cmd = [sys.executable, "-c", "from adaptrec.cli import main; main()", "serve", "--help"]
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    return [ALLOW_ANY] if ALLOW_ANY in out.stdout + out.stderr else []


def measured_run(base: str, pid: int, plan: list[tuple[str, dict]], args) -> tuple[LoadResult, dict]:
    """One load run and its summary, with the server's RSS before and after."""
    rss_start = server_rss_mb(pid)
    result = asyncio.run(run_load(base, plan, args.clients, args.seconds))
    return result, {"requests_per_s": result.ok_rps, "p50_s": result.p50, "p99_s": result.p99, "sent": result.sent,
                    "errors": result.errors, "wall_s": result.wall_s, "server_rss_mb_start": rss_start,
                    "server_rss_mb_end": server_rss_mb(pid)}


def served_runs(args, home: Path, refs: list[str], cases: list, order: np.ndarray, flags: list[str]) -> dict:
    """Start the server, warm it up, run ONE adapter then the Zipf mix over the same cases; simulate the LRU."""
    port = free_port()
    proc = start_server(args, home, port, ["--max-resident", str(args.resident), *flags])
    base = f"http://127.0.0.1:{port}"
    plan_one = [("/v1/score", body(cases[i % len(cases)], refs[0])) for i in range(len(order))]
    plan_many = [("/v1/score", body(cases[i % len(cases)], refs[k])) for i, k in enumerate(order)]
    try:
        warm = asyncio.run(run_load(base, plan_one[:1], 1, 300))
        if warm.statuses != [200]:
            raise RuntimeError(f"the warm-up request answered {warm.statuses}")
        _, one = measured_run(base, proc.pid, plan_one, args)
        many_result, many = measured_run(base, proc.pid, plan_many, args)
        with httpx.Client(base_url=base, trust_env=False, timeout=60) as client:
            server_resident = [r["ref"] for r in client.get("/v1/adapters").json()["resident"]]
    finally:
        stop_server(proc)
    sent = [refs[k] for k in order[: many_result.sent]]
    misses, hits, final = simulate_lru(sent, args.resident, warm=[refs[0]])
    many.update({"distinct_adapters": len(set(sent)), "adapter_loads_simulated": misses,
                 "adapter_loads_per_s_simulated": misses / many_result.wall_s if many_result.wall_s else None,
                 "hot_set_fraction_simulated": hits / len(sent) if sent else None,
                 "lru_simulation_check": {"server_resident": len(server_resident),
                                          "matching_simulated": len(set(server_resident) & set(final))}})
    return {"one_adapter": one, "many_adapters": many}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--adapters", type=int, default=1000)
    p.add_argument("--resident", type=int, default=16, help="the server's LRU cap (--max-resident)")
    p.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent of adapter popularity")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=200, help="per run")
    p.add_argument("--seconds", type=float, default=120.0, help="cap per run")
    args = p.parse_args()
    if args.quick:
        args.requests, args.seconds = min(args.requests, 12), min(args.seconds, 20.0)
    backbone, registry = backbone_and_registry(args)
    try:
        start = time.perf_counter()
        refs = register_fast(backbone, registry, args.adapters, QV)
        registration_s = time.perf_counter() - start
        load_costs = engine_load_costs(backbone, registry, refs, k=min(20, args.adapters - 1))
        flags = allow_any_flag()
        order = zipf_order(args.adapters, args.requests, args.alpha)
        runs = served_runs(args, registry.home, refs, amazon_cases(args.requests), order, flags)
    finally:
        shutil.rmtree(registry.home, ignore_errors=True)
    one, many = runs["one_adapter"]["requests_per_s"], runs["many_adapters"]["requests_per_s"]
    report("many_adapters", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "adapters": args.adapters, "resident_cap": args.resident,
                   "alpha": args.alpha, "clients": args.clients, "requests": args.requests,
                   "seconds_cap": args.seconds, "items_per_request": 2, "adapter": QV, "data": "amazon:office:test",
                   "server": "127.0.0.1, max-batch 8, max-wait 10 ms", "server_flags": flags,
                   "baseline_adapter": refs[0]},
        "registration_s": registration_s, "registration_ms_per_adapter": registration_s / args.adapters * 1000,
        "engine_load": load_costs, **runs,
        "ratio": many / one if one else None, "target_ratio": 0.8,
    })


if __name__ == "__main__":
    main()
