"""What a prefix adapter's scores follow in the runs that score below chance: for each text-init prefix run of the
TALLRec grid (docs/results.md), on its 200-case test subset, the AUC and the Spearman correlation of P(yes) with the
prompt's length in tokens and with the user's like-ratio, beside the untuned backbone and the labels themselves.

    python experiments/prefix_phase.py --domain movie

Scores come from the score cache the grid filled (no model forward when it holds them). Writes
experiments/results/prefix_phase.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from report import EXPERIMENTS, table, write_results
from tallrec_grid import RESULTS, adapter_kind, grid_backbone, grid_rows, llm_scores

from adaptrec import scripts
from adaptrec.errors import AdaptrecError

OUT = EXPERIMENTS / "results" / "prefix_phase.json"


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with tied values sharing their mean rank (labels and like-ratios tie a lot)."""
    from scipy.stats import spearmanr  # scipy comes with scikit-learn

    return float(spearmanr(a, b).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domain", default="movie")
    args = p.parse_args()
    os.environ.setdefault("ADAPTREC_HOME", str(EXPERIMENTS / "home"))
    from adaptrec.baselines import like_ratio_scores
    from adaptrec.data.spec import load_spec
    from adaptrec.evaluation import select_cases
    from adaptrec.metrics.classification import auc
    from adaptrec.scoring.core import backbone_scorer

    runs = [r for r in grid_rows() if r["domain"] == args.domain and adapter_kind(r) == "prefix"]
    if not runs:
        raise AdaptrecError(f"no text-init prefix runs for {args.domain} in {RESULTS}")
    cases = select_cases(load_spec(runs[0]["spec"]), runs[0]["limit"], seed=0)
    labels = np.array([c.label for c in cases])
    scorer = backbone_scorer(grid_backbone(), max_prompt_tokens=512, progress=False)
    lengths = np.array([len(scorer.tokenizer(x).input_ids) for x in scorer.prompts(cases)], dtype=float)
    like = like_ratio_scores(cases)
    scores = llm_scores([r["record"] for r in runs], cases)

    def describe(name: str, s: np.ndarray, **extra) -> dict:
        return {"name": name, **extra, "auc": auc(labels, s), "rho_length": _spearman(s, lengths),
                "rho_like_ratio": _spearman(s, like), "mean_pyes": float(s.mean())}

    rows = [{"name": "labels", "rho_length": _spearman(labels, lengths), "rho_like_ratio": _spearman(labels, like)},
            describe("untuned", scores["base"])]
    for r in sorted(runs, key=lambda r: (r["budget"], r["shots"], r["seed"])):
        rows.append(describe(r["record"], scores[r["record"]], shots=r["shots"], seed=r["seed"], budget=r["budget"]))
    write_results(OUT, {"domain": args.domain, "spec": runs[0]["spec"], "n": len(cases), "rows": rows,
                     "environment": {**scripts.machine(), **grid_backbone().environment()}})
    cells = [[r["name"], r.get("shots", "–"), r.get("seed", "–"), r.get("budget", "–"),
              f"{r['auc']:.3f}" if "auc" in r else "–", f"{r['rho_length']:+.3f}", f"{r['rho_like_ratio']:+.3f}",
              f"{r['mean_pyes']:.3f}" if "mean_pyes" in r else "–"] for r in rows]
    print("\n".join(table(["scores", "shots", "seed", "steps", "AUC", "ρ(score, prompt tokens)", "ρ(score, like-ratio)",
                           "mean P(yes)"], "lrrrrrrr", cells)))


if __name__ == "__main__":
    scripts.run(main)
