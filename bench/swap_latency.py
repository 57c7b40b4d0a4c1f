"""Adapter switch latency: the engine's per-request adapter choice vs peft's global `set_adapter`, in one run.

Baseline: `PeftModel.set_adapter(name)` between resident adapters (what a single-adapter server does
per request). Ours: what the engine does per request instead: look the adapter up in its LRU (a
dict lookup) and set the per-row adapter names of a batch of 8 that its persistent LoRA-layer hooks
hand to peft's mixed-batch forward. Both are measured for q,v targets and for all projections.

    python bench/swap_latency.py [--quick] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402
from serve_setup import ALL, QV, backbone_and_registry, parser, random_adapters  # noqa: E402

from adaptrec.serve.engine import Engine, adapter_rows  # noqa: E402


def per_switch_ms(fn, names: list[str], repeats: int) -> float:
    start = time.perf_counter()
    for i in range(repeats):
        fn(names[i % len(names)])
    return (time.perf_counter() - start) / repeats * 1000


def measure(backbone, registry, settings: dict, tag: str, repeats: int) -> dict:
    refs = random_adapters(backbone, registry, 4, settings, prefix=tag)
    engine = Engine(backbone, registry, max_resident=4)
    for ref in refs:
        engine.load(ref)
    model = engine.lora_model
    names = [engine.load(r).name for r in refs]

    def engine_switch(ref: str) -> None:
        name = engine.load(ref).name
        with adapter_rows([name] * 8):
            pass

    baseline = per_switch_ms(model.set_adapter, names, repeats)
    ours = per_switch_ms(engine_switch, refs, repeats)
    for ref in refs:
        engine.unload(ref)
    backbone.model = model.unload()
    return {"targets": settings["target_modules"], "rank": settings["r"], "peft_set_adapter_ms": baseline,
            "engine_switch_ms": ours, "speedup": baseline / ours}


def main() -> None:
    args = parser(__doc__).parse_args()
    backbone, registry = backbone_and_registry(args)
    repeats = 20 if args.quick else 200
    rows = [measure(backbone, registry, QV, "qv", repeats), measure(backbone, registry, ALL, "all", repeats)]
    report("swap_latency", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "adapters": 4, "repeats": repeats},
        "rows": rows, "ratio": min(r["speedup"] for r in rows), "target_ratio": 15.0, "target_engine_switch_ms": 1.0,
    })


if __name__ == "__main__":
    main()
