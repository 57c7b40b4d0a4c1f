"""8-bit backends on CPU: speed with a LoRA adapter active, weight memory, and score/AUC agreement with fp32.

Backends, all loaded from the same weights in one run: fp32 (the baseline of every ratio), bitsandbytes
int8, adaptrec's torch int8 kernel (`adaptrec/int8_cpu.py`, the CPU default) and torch's
`quantize_dynamic` (decoder linears; its modules take no LoRA, so it has bare-backbone numbers only).
torchao row: `quantize_(decoder, Int8DynamicActivationInt8WeightConfig())` on the fp32 load (per-token int8
activations, per-channel int8 weights, as adaptrec's kernel), with LoRA by peft's `TorchaoLoraLinear`; an
optional package (`pip install torchao==0.18.0`): without it, or if peft refuses, the row records why in `skipped`.
Speed: TALLRec movie test prompts in batches of `--batch-size`, inference mode, logits at the last
position, each backend timed in turn within every repeat (so drift hits them alike); median of repeats.
Agreement: P(yes) on a seeded `--limit` subset of tallrec:movie:test, bare and with the adapter,
against fp32's scores: max and mean |Δ|, and each backend's AUC with its bootstrap CI.

    python bench/quant_backends.py [--limit 200] [--adapter movie-lora:1 --registry experiments/home] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import report  # noqa: E402
from serve_setup import QV, random_adapters, throwaway_registry  # noqa: E402

from adaptrec import scripts
from adaptrec.adapters.attach import attach  # noqa: E402
from adaptrec.adapters.files import FamilyMatchWarning  # noqa: E402
from adaptrec.backbone import EMBEDDED, Backbone, load_backbone  # noqa: E402
from adaptrec.data.spec import load_spec  # noqa: E402
from adaptrec.evaluation import select_cases  # noqa: E402
from adaptrec.metrics import auc, bootstrap_ci  # noqa: E402
from adaptrec.registry import Registry  # noqa: E402
from adaptrec.scoring.core import Scorer
from adaptrec.scoring.logits import last_token_logits, tokenize  # noqa: E402

try:
    import torchao
except ImportError:
    torchao = None
# peft warns once per wrapped linear that merge() needs the requantizing config; the bench never merges
warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")


def quantize_dynamic_backbone(fp32: Backbone) -> Backbone:
    """torch's own dynamic int8 on the decoder linears of a copy of `fp32` (the output embedding stays fp32)."""
    model = copy.deepcopy(fp32.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated; this row is a reference point
        torch.ao.quantization.quantize_dynamic(model.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return Backbone(model, fp32.tokenizer, fp32.fingerprint, "8bit", fp32.source, backend="quantize_dynamic")


def torchao_backbone(fp32: Backbone) -> Backbone:
    """torchao's int8 dynamic-activation / int8-weight on the decoder linears of `fp32` (in place; lm_head stays fp32)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(fp32.model.model, Int8DynamicActivationInt8WeightConfig())
    return Backbone(fp32.model, fp32.tokenizer, fp32.fingerprint, "8bit", fp32.source, backend="torchao")


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor; a tensor subclass (torchao's Int8Tensor) counts the inner tensors it holds."""
    if hasattr(t, "__tensor_flatten__"):
        return sum(tensor_bytes(getattr(t, name)) for name in t.__tensor_flatten__()[0])
    return t.numel() * t.element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the decoder layers (parameters, buffers and fbgemm's packed weights)."""
    layers = model.get_base_model().model.layers if hasattr(model, "get_base_model") else model.model.layers
    total = sum(map(tensor_bytes, [*layers.parameters(), *layers.buffers()]))
    for m in layers.modules():  # quantize_dynamic keeps its int8 weights outside parameters and buffers
        if type(m).__name__ == "LinearPackedParams":
            total += m._weight_bias()[0].numel()
    return total


def timed_pass(model: torch.nn.Module, tokenizer, batches: list[list[str]]) -> float:
    """Prompts per second over one pass of `batches`."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            last_token_logits(model, tokenize(tokenizer, batch, torch.device("cpu")))
    return sum(map(len, batches)) / (time.perf_counter() - start)


def adapter_model(backbone: Backbone, registry: Registry, ref: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FamilyMatchWarning)  # the fp32 load matches an 8-bit adapter by family
        model, _ = attach(backbone, registry, [ref])
    return model


def scores(model: torch.nn.Module, backbone: Backbone, cases: list, batch_size: int) -> np.ndarray:
    return Scorer(model, backbone.tokenizer, "unused", batch_size=batch_size).score(cases)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default=EMBEDDED)
    p.add_argument("--limit", type=scripts.positive_int, default=200, help="seeded test cases for the agreement/AUC part")
    p.add_argument("--batch-size", type=scripts.positive_int, default=8)
    p.add_argument("--batches", type=scripts.positive_int, default=2, help="batches per timed pass")
    p.add_argument("--repeats", type=scripts.positive_int, default=3)
    p.add_argument("--adapter", help="registry ref of a trained adapter (default: a random r 8 q/v LoRA)")
    p.add_argument("--registry", type=Path, help="registry folder of --adapter (default: a throwaway one)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (16 cases, 1 batch, 1 repeat), written to bench/results/"
                   "quant_backends.quick.json, never the file docs render")
    args = p.parse_args()
    if args.quick:
        args.limit, args.batches, args.repeats = min(args.limit, 16), 1, 1

    loaders = {
        "fp32": lambda: load_backbone(args.backbone, "none", device="cpu"),
        "bitsandbytes": lambda: load_backbone(args.backbone, "8bit", device="cpu", int8_backend="bitsandbytes"),
        "torch-int8": lambda: load_backbone(args.backbone, "8bit", device="cpu", int8_backend="torch"),
    }
    skipped: dict[str, dict[str, str]] = {}  # backend -> variant -> why it has no numbers
    if torchao is None:
        skipped["torchao"] = {"bare": "torchao not installed", "lora": "torchao not installed"}
    else:
        loaders["torchao"] = lambda: torchao_backbone(load_backbone(args.backbone, "none", device="cpu"))
    backbones = {name: load() for name, load in loaders.items()}
    fp32 = backbones["fp32"]
    backbones["quantize_dynamic"] = quantize_dynamic_backbone(fp32)
    if args.adapter:
        registry, ref = Registry(args.registry), args.adapter
    else:
        registry = throwaway_registry()
        ref = random_adapters(loaders["torch-int8"](), registry, 1, QV)[0]
    # attaching injects LoRA layers into the model it wraps: the "lora" variants get their own load
    models = {name: {"bare": bb.model} for name, bb in backbones.items()}
    for name, load in loaders.items():
        try:
            models[name]["lora"] = adapter_model(load(), registry, ref)
        except Exception as e:  # peft refusing LoRA on torchao's linears is a result; elsewhere a bug
            if name != "torchao":
                raise
            skipped["torchao"] = {"lora": f"{type(e).__name__}: {e}"}

    spec = load_spec("tallrec:movie:test")
    prompts = Scorer(fp32.model, fp32.tokenizer, "unused").prompts(spec.cases[: args.batch_size * args.batches])
    batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]
    speed: dict[str, dict[str, list[float]]] = {n: {k: [] for k in m} for n, m in models.items()}
    for name, variants in models.items():  # warm-up
        for model in variants.values():
            timed_pass(model, fp32.tokenizer, batches[:1])
    for _ in range(args.repeats):
        for name, variants in models.items():
            for kind, model in variants.items():
                speed[name][kind].append(timed_pass(model, fp32.tokenizer, batches))

    cases = select_cases(spec, args.limit, seed=0)
    labels = np.array([c.label for c in cases])
    results = {}
    ref_scores = {kind: scores(model, fp32, cases, args.batch_size) for kind, model in models["fp32"].items()}
    for name, variants in models.items():
        rows = {}
        for kind, model in variants.items():
            s = ref_scores[kind] if name == "fp32" else scores(model, backbones[name], cases, args.batch_size)
            ci = bootstrap_ci(auc, labels, s, seed=0)
            rows[kind] = {
                "prompts_per_s": statistics.median(speed[name][kind]),
                "speed_ratio_vs_fp32": statistics.median(speed[name][kind]) / statistics.median(speed["fp32"][kind]),
                "auc": auc(labels, s), "auc_ci": list(ci),
                "max_abs_diff_vs_fp32": float(np.abs(s - ref_scores[kind]).max()),
                "mean_abs_diff_vs_fp32": float(np.abs(s - ref_scores[kind]).mean()),
            }
        results[name] = {"decoder_weight_mb": weight_bytes(variants["bare"]) / 2**20, **rows}
    for name, variants in skipped.items():
        results.setdefault(name, {}).update({kind: {"skipped": why} for kind, why in variants.items()})
    tokens = [len(fp32.tokenizer(p).input_ids) for p in prompts]
    report("quant_backends", {
        "config": {"backbone": args.backbone, "backend": "torch-int8",  # the ratio's; every backend's row is below
                   "batch_size": args.batch_size, "timed_prompts": len(prompts),
                   "mean_prompt_tokens": sum(tokens) / len(tokens), "repeats": args.repeats,
                   "adapter": args.adapter or f"random {QV}", "agreement_data": f"tallrec:movie:test, {args.limit} seeded cases",
                   "torchao": torchao.__version__ if torchao else None},
        "backends": results,
        "ratio": results["torch-int8"]["lora"]["speed_ratio_vs_fp32"], "target_ratio": 1.5,
    }, device="cpu", quick=args.quick)  # every backend here is a CPU kernel, whatever else the machine holds


if __name__ == "__main__":
    scripts.run(main)
