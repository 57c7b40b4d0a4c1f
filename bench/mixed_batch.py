"""Mixed-adapter batches: one batch whose rows use 4 different LoRA adapters vs the same batch on one adapter.

Baseline: peft's usual single-adapter serving, the adapter made active with `set_adapter` once and
a plain forward (no per-row routing). Ours: the engine's mixed batch, 2 rows per adapter, each row
routed through peft's `_mixed_batch_forward`. Same prompts (amazon:office test cases), same batch size,
adapters r=8 on q_proj and v_proj with random weights. Throughput = prompts/s over whole batches. The two arms
are timed in turn within each repeat, in alternating order (ABBA), and the ratio is the median of the repeats'
ratios, so the machine's drift over minutes falls on both alike.

    python bench/mixed_batch.py [--quick] [--batch-size 8] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report, sync  # noqa: E402
from serve_setup import QV, amazon_cases, backbone_and_registry, parser, random_adapters  # noqa: E402

from adaptrec import scripts
from adaptrec.scoring.logits import last_token_logits, tokenize  # noqa: E402
from adaptrec.serve.engine import Engine  # noqa: E402


def throughput(fn, batches: list[list[str]]) -> float:
    """Prompts/s of `fn` over every batch once."""
    sync()
    start = time.perf_counter()
    for b in batches:
        fn(b)
    sync()  # on CUDA, an arm returning unsynced tensors would hand its last kernels to the next arm's clock
    return sum(map(len, batches)) / (time.perf_counter() - start)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch-size", type=scripts.positive_int, default=8)
    args = p.parse_args()
    backbone, registry = backbone_and_registry(args)
    refs = random_adapters(backbone, registry, 4, QV)
    engine = Engine(backbone, registry, max_resident=4, batch_size=args.batch_size)
    cases = amazon_cases(args.batch_size * (1 if args.quick else 4))
    prompts = [engine.prompt(c) for c in cases]
    batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]
    for ref in refs:
        engine.load(ref)
    model = engine.lora_model
    repeats = 1 if args.quick else 4

    def single(batch: list[str]) -> None:
        with torch.inference_mode():
            last_token_logits(model, tokenize(backbone.tokenizer, batch, backbone.device))

    def mixed(batch: list[str]) -> None:
        engine.logits([(refs[i % len(refs)], p) for i, p in enumerate(batch)])

    model.set_adapter(engine.load(refs[0]).name)
    single(batches[0])  # warm-up, both arms
    mixed(batches[0])
    runs = []
    for r in range(repeats):
        arms = [("single", single), ("mixed", mixed)]
        runs.append({name: throughput(fn, batches) for name, fn in (arms if r % 2 == 0 else arms[::-1])})
    ratios = [run["mixed"] / run["single"] for run in runs]
    tokens = [len(backbone.tokenizer(p).input_ids) for p in prompts]
    report("mixed_batch", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "batch_size": args.batch_size,
                   "adapters": 4, "adapter": QV, "data": f"amazon:office:test, first {len(prompts)} cases",
                   "mean_prompt_tokens": sum(tokens) / len(tokens), "repeats": repeats},
        "single_adapter_prompts_per_s": statistics.median(run["single"] for run in runs),
        "mixed_4_adapter_prompts_per_s": statistics.median(run["mixed"] for run in runs),
        "runs": runs, "ratios": ratios, "ratio": statistics.median(ratios), "target_ratio": 0.9,
    }, quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
