"""The promotion gate on feedback the champion chose to show: how often it promotes a challenger that is no better,
with and without the inverse-probability weights exploration makes possible (simulated, no LLM).

Each replicate: 200 users × 3 requests of 20 candidates; a candidate's label is drawn from its latent relevance z
(P(like) = sigmoid(2z)); the champion scores z + N(0, 1), the challenger z + N(0, σ) (σ = 1: equally good; σ = 0.8:
better); the champion serves k = 3 slots through `serve.explore.epsilon_greedy` and every shown item gets its label
as feedback. The gate's own `decide` then compares the two on that feedback, unweighted or weighted by the inverse of
each item's logged probability of being shown (`shown_probabilities`); "all candidates" is the AUC difference on
every candidate of every request, the quantity the weights aim at.

    python experiments/gate_selection.py                  # simulate (a few minutes), write the region
    python experiments/gate_selection.py --render-only
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
from report import ROOT, banner, region_main, table

from adaptrec import scripts
from adaptrec.metrics import auc
from adaptrec.online.gate import MARGIN, decide
from adaptrec.serve.explore import epsilon_greedy

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "gate_selection.json"
DOC = ROOT / "docs" / "online.md"
REGION = "gate-selection"
COMMAND = "python experiments/gate_selection.py"
USERS, REQUESTS, CANDIDATES, K, REPLICATES = 200, 3, 20, 3, 60
SETTINGS = [(1.0, 0.0), (1.0, 0.1), (1.0, 0.3), (0.8, 0.0), (0.8, 0.1), (0.8, 0.3)]  # (challenger noise σ, ε)
MARGINS = (0.0, MARGIN)  # superiority, the gate's default non-inferiority


def replicate(sigma: float, eps: float, seed: int) -> dict:
    """One simulated window: each gate decision (unweighted, and weighted when exploration was on)."""
    rng = np.random.default_rng(seed)
    shown_rows, every = [], []
    for u in range(USERS):
        for _ in range(REQUESTS):
            z = rng.normal(size=CANDIDATES)
            labels = (rng.random(CANDIDATES) < 1 / (1 + np.exp(-2 * z))).astype(int)
            champion, challenger = z + rng.normal(size=CANDIDATES), z + rng.normal(scale=sigma, size=CANDIDATES)
            every.append((labels, challenger, champion))
            slate = epsilon_greedy(champion, K, eps, rng)
            shown_rows += [(labels[i], challenger[i], champion[i], f"u{u}", 1 / p) for i, p in zip(slate.order,
                                                                                               slate.shown)]
    y, a, b, users, w = zip(*shown_rows)
    y, a, b, w = np.array(y), np.array(a), np.array(b), np.array(w)
    ally, alla, allb = (np.concatenate(x) for x in zip(*every))
    out = {"all_candidates_diff": auc(ally, alla) - auc(ally, allb), "cases": len(y)}
    for name, weights in {"unweighted": None, **({"weighted": w} if eps > 0 else {})}.items():
        for margin in MARGINS:
            d = decide(y, list(users), a, b, margin, seed=seed, weights=weights)
            out[f"{name}@{margin:g}"] = {"diff": d["diff"], "ci_low": d["ci_low"], "promote": d["promote"]}
    return out


def run() -> dict:
    from tqdm import tqdm

    settings = []
    for sigma, eps in tqdm(SETTINGS, desc="settings"):
        reps = [replicate(sigma, eps, seed) for seed in range(REPLICATES)]
        settings.append({"sigma": sigma, "epsilon": eps, "replicates": reps})
    import adaptrec

    return {"protocol": {"users": USERS, "requests": REQUESTS, "candidates": CANDIDATES, "k": K,
                         "replicates": REPLICATES, "margins": list(MARGINS)},
            "environment": {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                            "numpy": np.__version__, "adaptrec": adaptrec.__version__, "backend": "numpy (no model)",
                            "dtype": "float64", "device": "cpu"},
            "settings": settings}


def render(doc: dict) -> str:
    p, env = doc["protocol"], doc["environment"]
    rows = []
    for s in doc["settings"]:
        reps = s["replicates"]
        truth = np.mean([r["all_candidates_diff"] for r in reps])
        for name in ("unweighted", "weighted"):
            if f"{name}@0" not in reps[0]:
                continue
            rate = {m: sum(r[f"{name}@{m:g}"]["promote"] for r in reps) for m in p["margins"]}
            diffs = [r[f"{name}@0"]["diff"] for r in reps]
            who = "equally good" if s["sigma"] == 1.0 else f"better (noise σ {s['sigma']:g})"
            spread = f"{np.mean(diffs):+.3f} ± {np.std(diffs):.3f}"
            rows.append([who, f"{s['epsilon']:g}", name, f"{truth:+.3f}", spread,
                         *(f"{rate[m]}/{len(reps)}" for m in p["margins"])])
    return "\n".join([
        banner(f"{COMMAND} --render-only", [RESULTS]), "",
        f"Simulated: {p['users']} users × {p['requests']} requests of {p['candidates']} candidates, the champion "
        f"serving k = {p['k']} slots, {p['replicates']} replicates per row (seeds 0–{p['replicates'] - 1}); the gate's "
        f"own `decide` (1000 user-clustered resamples); {env['backend']}, {env['dtype']}, {env['device']} "
        f"({env['machine']}, {env['cores']} cores), numpy {env['numpy']}, adaptrec {env['adaptrec']}.", "",
        *table(["challenger", "ε", "gate's AUCs", "AUC diff., all candidates", "AUC diff. on the feedback (mean ± sd)",
                "promoted, superiority", *(f"promoted, margin {m:g}" for m in p["margins"][1:])], "lrlrrrr", rows),
    ])


def main() -> None:
    region_main(__doc__, RESULTS, DOC, REGION, render, run)


if __name__ == "__main__":
    scripts.run(main)
