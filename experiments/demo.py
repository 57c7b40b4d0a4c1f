"""The README's quickstart table: `make demo`'s job (`adaptrec demo --limit 200`: train movie-lora on 64 shots,
evaluate it on the seeded 200-case test subset beside the untuned backbone and the baselines, register and promote
it) in a fresh, empty $ADAPTREC_HOME, timed end to end (the one-time backbone conversion included).

    python experiments/demo.py                  # run the demo's job, write the JSON and README.md's region
    python experiments/demo.py --render-only    # re-render README.md's region from the JSON
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from report import ROOT, banner, machine, region_main

from adaptrec import scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "demo.json"
DOC = ROOT / "README.md"
REGION = "demo"
LIMIT = 200  # the Makefile's DEMO_LIMIT


def run() -> dict:
    """The demo's job in an empty home (deleted after): its report's AUC rows, what it ran on, how long it took."""
    import adaptrec

    with tempfile.TemporaryDirectory(prefix="adaptrec-demo-") as home:
        os.environ["ADAPTREC_HOME"] = home
        start = time.perf_counter()
        result = adaptrec.train("movie-lora", [f"evaluation.limit={LIMIT}"], restart=True, promote=True)
        seconds = time.perf_counter() - start
    report = result.report
    rows = [{"name": r.name, "auc": {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}}
            for r in report.rows if (m := r.metrics.get("auc")) is not None]
    return {"command": f"adaptrec demo --limit {LIMIT}", "spec": report.spec, "cases": report.n,
            "users": report.users, "seed": report.seed, "registered": result.record.ref, "rows": rows,
            "seconds": round(seconds, 1), "environment": report.environment, "machine": machine()}


def render(doc: dict) -> str:
    env = doc["environment"]
    lines = [banner("python experiments/demo.py --render-only", [RESULTS]), "",
             f"`{doc['command']}` in an empty `$ADAPTREC_HOME` took {doc['seconds'] / 60:.1f} minutes on "
             f"{doc['machine']} ({env.get('backend', 'backend not recorded')} backend, {env.get('device', '?')}, "
             f"{env.get('dtype', '?')}; the one-time backbone conversion included). Its AUC rows on the seeded "
             f"{doc['cases']}-case subset of `{doc['spec']}` (95% CIs):", "",
             "| model | auc |", "|---|---:|"]
    for r in doc["rows"]:
        a = r["auc"]
        ci = f" [{a['ci_low']:.3f}, {a['ci_high']:.3f}]" if a["ci_low"] is not None else ""
        lines.append(f"| {r['name']} | {a['value']:.3f}{ci} |")
    return "\n".join(lines)


def main() -> None:
    region_main(__doc__, RESULTS, DOC, REGION, render, run)


if __name__ == "__main__":
    scripts.run(main)
