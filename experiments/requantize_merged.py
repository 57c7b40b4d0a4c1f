"""What re-quantizing a merged model to 8-bit costs: `compose --into-base` output loaded in 8-bit vs
the 8-bit backbone with the adapter beside it (the way adaptrec serves it), on one seeded test subset.

Rows, all scored through the one scoring path on the same cases: the fp32 merged model (= fp32 base
+ adapter), the 8-bit backbone + adapter (ΔW in fp32 beside int8 base weights), and the merged model
re-quantized to 8-bit (ΔW rounded into the int8 base weights); AUC with CIs and the paired AUC
difference against the 8-bit backbone + adapter. Writes experiments/results/requantize_merged.json.

    python experiments/requantize_merged.py --adapter movie-lora:1 [--limit 200] [--int8-backend torch]

Runs in $ADAPTREC_HOME (default experiments/home, where the grid registered its adapters).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

from report import write_results

from adaptrec import scripts

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "requantize_merged.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", default="movie-lora:1")
    p.add_argument("--spec", default="tallrec:movie:test")
    p.add_argument("--limit", type=scripts.positive_int, default=200)
    p.add_argument("--int8-backend", default=None, help="auto (default) | bitsandbytes | torch")
    args = p.parse_args()
    os.environ.setdefault("ADAPTREC_HOME", str(HERE / "home"))

    from adaptrec.adapters.attach import adapter_key, attach
    from adaptrec.adapters.files import FamilyMatchWarning
    from adaptrec.adapters.merge import merge_into_base
    from adaptrec.backbone import EMBEDDED, load_backbone
    from adaptrec.data.spec import load_spec
    from adaptrec.evaluation import select_cases
    from adaptrec.metrics import compute_classification, paired_difference
    from adaptrec.registry import Registry
    from adaptrec.score_cache import ScoreCache
    from adaptrec.scoring.core import backbone_scorer

    registry, cache = Registry(), ScoreCache.default()
    cases = select_cases(load_spec(args.spec), args.limit, seed=0)
    labels = [c.label for c in cases]
    record = registry.resolve(args.adapter)
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        merged_dir = merge_into_base(EMBEDDED, registry, record.ref, Path(tmp) / "merged")
        merged_fp32 = load_backbone(str(merged_dir), "none")
        scores["merged model, fp32"] = backbone_scorer(merged_fp32, cache=cache).score(cases)
        merged8 = load_backbone(str(merged_dir), "8bit", int8_backend=args.int8_backend)
        scores["merged model re-quantized to 8-bit"] = backbone_scorer(merged8, cache=cache).score(cases)
    base8 = load_backbone(EMBEDDED, "8bit", int8_backend=args.int8_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FamilyMatchWarning)
        model, _ = attach(base8, registry, [record.ref])
    served = "8-bit backbone + adapter (served)"
    scores[served] = backbone_scorer(base8, model, adapter_key(record.path), cache=cache).score(cases)
    rows = {}
    for name, s in scores.items():
        rows[name] = {"auc": vars(compute_classification(["auc"], labels, s)["auc"])}
        if name != served:
            rows[name]["auc_minus_served"] = vars(paired_difference("auc", labels, s, scores[served]))
            rows[name]["mean_abs_score_diff_vs_served"] = float(abs(s - scores[served]).mean())
    doc = {"adapter": record.ref, "spec": args.spec, "limit": args.limit, "backend": base8.backend,
           "environment": {**scripts.machine(), **base8.environment()}, "rows": rows}
    write_results(OUT, doc)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    scripts.run(main)
