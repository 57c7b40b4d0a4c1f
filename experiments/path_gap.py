"""How far the two scoring paths disagree: full prompts vs the shared-prefix path (history run once, then each
candidate's suffix), on the office ranking protocol, for the untuned backbone and the office adapter.

On fp32 the paths agree to ~1e-4 (tested); on the int8 kernels a cached history prefix sees other activation
scales than the whole prompt does, so P(yes) moves. This measures how much, and what it does to per-user AUC,
which is why the score cache keeps the two paths' rows apart.

    python experiments/path_gap.py [--users 50] [--negatives 19]      # scores (cached), writes the JSON and region
    python experiments/path_gap.py --render-only

Runs in $ADAPTREC_HOME (default experiments/home; the office adapter of the methods grid).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from report import ROOT, banner, machine, render_region, table, write_results

from adaptrec import scripts
from adaptrec.backbone import load_backbone
from adaptrec.data.candidates import candidate_cases
from adaptrec.data.spec import load_spec
from adaptrec.evaluation import rank_lists
from adaptrec.metrics import bootstrap_ci
from adaptrec.metrics.ranking import user_auc
from adaptrec.registry import Registry
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import backbone_scorer
from adaptrec.scoring.variants import llm_variants

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "path_gap.json"
DOC = ROOT / "docs" / "serving.md"
REGION = "path-gap"
COMMAND = "python experiments/path_gap.py"


def run(users: int, negatives: int, adapter: str, max_tokens: int, seed: int = 0) -> dict:
    dataset = load_spec("amazon:office:test", seed=seed)
    positives, lists = rank_lists(dataset, users, seed, negatives)
    candidates = [candidate_cases(lst, case, dataset.catalogues) for lst, case in zip(lists, positives)]
    idx = np.array([lst.target_index for lst in lists])
    bb = load_backbone()
    rows = []
    for name, key, model in llm_variants(bb, Registry(), [adapter]):
        scorer = backbone_scorer(bb, model, key, max_prompt_tokens=max_tokens, cache=ScoreCache.default())
        full, prefix = (np.stack(scorer.score_lists(candidates, shared_prefix=s)) for s in (False, True))
        a_full, a_prefix = user_auc(full, idx), user_auc(prefix, idx)
        ci = bootstrap_ci(np.mean, a_full - a_prefix, seed=seed)
        rows.append({"name": name, "auc_full": float(a_full.mean()), "auc_prefix": float(a_prefix.mean()),
                     "diff": float((a_full - a_prefix).mean()), "diff_ci": [ci.low, ci.high],
                     "mean_abs_dp": float(np.abs(full - prefix).mean()), "max_abs_dp": float(np.abs(full - prefix).max())})
    return {"spec": dataset.spec, "users": len(lists), "negatives": negatives, "max_prompt_tokens": max_tokens,
            "environment": bb.environment(), "machine": machine(), "rows": rows}


def render(doc: dict) -> str:
    env = doc["environment"]
    head = ["model", "per-user AUC, full prompts", "per-user AUC, shared prefix", "full − prefix (95% CI, by user)",
            "mean / max \\|ΔP(yes)\\|"]
    body = [[r["name"], f"{r['auc_full']:.3f}", f"{r['auc_prefix']:.3f}",
             f"{r['diff']:+.3f} [{r['diff_ci'][0]:+.3f}, {r['diff_ci'][1]:+.3f}]",
             f"{r['mean_abs_dp']:.3f} / {r['max_abs_dp']:.3f}"] for r in doc["rows"]]
    return "\n".join([
        banner(f"{COMMAND} --render-only", [RESULTS]), "",
        f"`{doc['spec']}`, {doc['users']} users, 1 held-out item + {doc['negatives']} sampled negatives each, prompts "
        f"capped at {doc['max_prompt_tokens']} tokens with one history per user; {env['base_model']} "
        f"({env['quantization']}, {env['backend']}, {env['device']}), adaptrec {env['adaptrec']}; "
        + (f"machine: {doc['machine']}." if doc.get("machine") else "the stored run records no machine (cores, "
           "threads)."), "",
        *table(head, "lrrrr", body),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=scripts.positive_int, default=50)
    ap.add_argument("--negatives", type=scripts.positive_int, default=19)
    ap.add_argument("--adapter", default="office-lora")
    ap.add_argument("--max-prompt-tokens", type=scripts.positive_int, default=320)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("ADAPTREC_HOME", str(HERE / "home"))
    if not args.render_only:
        write_results(RESULTS, run(args.users, args.negatives, args.adapter, args.max_prompt_tokens))
    render_region(RESULTS, DOC, REGION, render)


if __name__ == "__main__":
    scripts.run(main)
