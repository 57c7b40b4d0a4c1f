"""Adapter switch cost: the engine's per-request adapter choice vs peft's global `set_adapter`, in one run.

Two measures per target set (q/v, and all projections), 4 random LoRA adapters (r 8) used round-robin:

* a request, the target (≥ 1×: the engine's per-row adapters cost no more than peft's global switch): the switch
  and one forward of a batch of amazon:office prompts (peft: `set_adapter`, then a plain forward; the engine:
  `Engine.logits`, lookup and hooks included). The arms alternate per repeat (ABBA); the ratio is the median of
  the repeats' ratios, the lower of the two target sets.
* selection, outside any forward, for information only (no target: the engine's side is a dict lookup, so any
  bound on the ratio would hold by construction): peft's `PeftModel.set_adapter(name)` between resident adapters
  (what a single-adapter server does per request) against the engine's LRU lookup plus the per-row adapter
  labels its LoRA-layer hooks read. What the hooks cost inside the forward is in the request measure.

    python bench/swap_latency.py [--quick] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report, sync  # noqa: E402
from serve_setup import ALL, QV, amazon_cases, backbone_and_registry, parser, random_adapters  # noqa: E402

from adaptrec import scripts
from adaptrec.scoring.logits import last_token_logits, tokenize  # noqa: E402
from adaptrec.serve.engine import Engine, adapter_rows  # noqa: E402

REQUEST_BATCH = 2  # prompts per timed request: enough for a real forward, few enough to repeat


def per_call_ms(fn, args: list, repeats: int) -> float:
    sync()
    start = time.perf_counter()
    for i in range(repeats):
        fn(args[i % len(args)])
    sync()  # on CUDA, an arm returning unsynced tensors would hand its last kernels to the next arm's clock
    return (time.perf_counter() - start) / repeats * 1000


def measure(backbone, registry, settings: dict, tag: str, repeats: int, request_repeats: int) -> dict:
    refs = random_adapters(backbone, registry, 4, settings, prefix=tag)
    engine = Engine(backbone, registry, max_resident=4)
    for ref in refs:
        engine.load(ref)
    model = engine.lora_model
    names = [engine.load(r).name for r in refs]
    prompts = [engine.prompt(c) for c in amazon_cases(REQUEST_BATCH)]

    def engine_switch(ref: str) -> None:
        name = engine.load(ref).name
        with adapter_rows([name] * 8):
            pass

    def peft_request(name: str) -> None:  # tokenizing inside, as the engine does, with the engine's special tokens
        model.set_adapter(name)
        with torch.inference_mode():
            last_token_logits(model, tokenize(backbone.tokenizer, prompts, backbone.device, engine.special))

    def engine_request(ref: str) -> None:
        engine.logits([(ref, p) for p in prompts])

    selection = {"peft_set_adapter_ms": per_call_ms(model.set_adapter, names, repeats),
                 "engine_switch_ms": per_call_ms(engine_switch, refs, repeats)}
    peft_request(names[0])  # warm-up, both arms
    engine_request(refs[0])
    runs = []
    for r in range(request_repeats):
        arms = [("peft", peft_request, names), ("engine", engine_request, refs)]
        runs.append({arm: per_call_ms(fn, args, len(refs)) for arm, fn, args in (arms if r % 2 == 0 else arms[::-1])})
    for ref in refs:
        engine.unload(ref)
    backbone.model = model.unload()
    request_ratios = [run["peft"] / run["engine"] for run in runs]
    return {"targets": settings["target_modules"], "rank": settings["r"], **selection,
            "speedup": selection["peft_set_adapter_ms"] / selection["engine_switch_ms"],
            "peft_request_ms": statistics.median(run["peft"] for run in runs),
            "engine_request_ms": statistics.median(run["engine"] for run in runs),
            "request_runs": runs, "request_ratio": statistics.median(request_ratios)}


def main() -> None:
    args = parser(__doc__).parse_args()
    backbone, registry = backbone_and_registry(args)
    repeats, request_repeats = (20, 2) if args.quick else (200, 4)
    rows = [measure(backbone, registry, QV, "qv", repeats, request_repeats),
            measure(backbone, registry, ALL, "all", repeats, request_repeats)]
    report("swap_latency", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "adapters": 4, "repeats": repeats,
                   "request_repeats": request_repeats, "request_batch": REQUEST_BATCH,
                   "request_data": f"amazon:office:test, first {REQUEST_BATCH} cases"},
        "rows": rows, "ratio": min(r["request_ratio"] for r in rows), "target_ratio": 1.0,
    }, quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
