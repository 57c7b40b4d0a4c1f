"""How much a prompt's score moves with its batch-mates: the same cases scored in length-sorted batches vs one at a
time, untuned SmolLM2, fp32 and the CPU int8 kernel. In fp32 only the summation order changes (~1e-6); in 8-bit a
last-bit change can flip an activation's int8 rounding and grow through 30 layers. This is why a score depends on
how a run was batched (docs/serving.md, Numerics).

    python experiments/batch_gap.py [--cases 32] [--batch-size 8]     # scores (no cache), writes JSON and region
    python experiments/batch_gap.py --render-only
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from report import ROOT, banner, machine, render_region, write_results

from adaptrec import scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "batch_gap.json"
DOC = ROOT / "docs" / "serving.md"
REGION = "batch-gap"


def measure(quantization: str, cases: list, batch_size: int) -> dict:
    from adaptrec.backbone import load_backbone
    from adaptrec.metrics import auc
    from adaptrec.scoring.core import backbone_scorer

    bb = load_backbone(quantization=quantization, device="cpu")
    batched = backbone_scorer(bb, batch_size=batch_size, progress=False).score(cases)
    alone = backbone_scorer(bb, batch_size=1, progress=False).score(cases)
    gap = np.abs(batched - alone)
    labels = np.array([c.label for c in cases])
    return {"environment": bb.environment(), "max_abs_dp": float(gap.max()), "mean_abs_dp": float(gap.mean()),
            "auc_batched": float(auc(labels, batched)), "auc_alone": float(auc(labels, alone))}


def run(n_cases: int, batch_size: int) -> dict:
    from adaptrec.data.spec import load_spec
    from adaptrec.evaluation import select_cases

    cases = select_cases(load_spec("tallrec:movie:test"), n_cases, 0)
    rows = {q: measure(q, cases, batch_size) for q in ("none", "8bit")}
    return {"spec": "tallrec:movie:test", "cases": len(cases), "seed": 0, "batch_size": batch_size, "rows": rows,
            "machine": machine()}


def render(doc: dict) -> str:
    lines = [banner("python experiments/batch_gap.py --render-only", [RESULTS]), "",
             f"{doc['cases']} seeded cases of `{doc['spec']}`, untuned SmolLM2-135M, scored in length-sorted batches "
             f"of {doc['batch_size']} and one at a time:", "",
             "| backend | max \\|ΔP(yes)\\| | mean \\|ΔP(yes)\\| | AUC batched | AUC one at a time |", "|---|---:|---:|---:|---:|"]
    for q, r in doc["rows"].items():
        lines.append(f"| {r['environment'].get('backend', q)} | {r['max_abs_dp']:.2g} | {r['mean_abs_dp']:.2g} | "
                     f"{r['auc_batched']:.3f} | {r['auc_alone']:.3f} |")
    machine = doc.get("machine")
    lines += ["", f"Machine: {machine}." if machine else "The stored run records no machine (cores, threads)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=scripts.positive_int, default=32)
    ap.add_argument("--batch-size", type=scripts.positive_int, default=8)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        write_results(RESULTS, run(args.cases, args.batch_size))
    render_region(RESULTS, DOC, REGION, render)


if __name__ == "__main__":
    scripts.run(main)
