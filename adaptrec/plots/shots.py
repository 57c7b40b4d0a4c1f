"""Test AUC against the number of few-shot training cases, a line per adapter type with every run's 95% CI, from
the TALLRec grid's JSONL (experiments/tallrec_grid.py: a row per domain, adapter type, shots and seed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .inputs import ResultFileError, fields_of, load_jsonl, metric_value
from .style import COLORS, NEUTRAL, ci_yerr, legend_below, new_figure, save_png, styled

UNTAGGED = ("bitsandbytes", 24)  # backend and step budget of the rows written before either was recorded
KIND_STEP, SEED_STEP = 0.16, 0.04  # horizontal offsets that keep the types and seeds at one shot count apart
BASELINES = (("backbone", "untuned backbone (band: 95% CI)", "-"), ("like_ratio", "like-ratio baseline (no LLM)", "--"),
             ("popularity", "popularity baseline (no LLM)", ":"))


def adapter_kind(row: Mapping) -> str:
    """The adapter type as the grid's tables name it: prefix tuning without `init: text` started from random values."""
    return "prefix (random init)" if row["type"] == "prefix" and row.get("init") != "text" else str(row["type"])


def read_grid(path: Path, *, backend: str | None = None, budget: int | None = None) -> tuple[list[dict], dict]:
    """(runs, {"backend", "budget"}): the rows of one backend and step budget, by default the most common pair,
    each as {"domain", "kind", "shots", "seed", "spec", "limit", "auc", "baselines"}."""
    with fields_of(path, "grid result"):
        runs = [{"domain": str(r["domain"]), "kind": adapter_kind(r), "shots": int(r["shots"]), "seed": int(r["seed"]),
                 "spec": str(r["spec"]), "limit": int(r["limit"]), "auc": metric_value(r["auc"]),
                 "baselines": {name: metric_value(m) for name, m in r["baselines"].items()},
                 "backend": str(r.get("backend", UNTAGGED[0])), "budget": int(r.get("budget", UNTAGGED[1]))}
                for r in load_jsonl(path, "grid result")]
    if bad := sorted({r["shots"] for r in runs if r["shots"] < 1}):
        raise ResultFileError(f"{path}: shots must be at least 1 (the axis is logarithmic); got {bad[0]}")
    pairs = Counter((r["backend"], r["budget"]) for r in runs
                    if backend in (None, r["backend"]) and budget in (None, r["budget"]))
    if not pairs:
        held = ", ".join(f"{b} {n} steps" for b, n in sorted(Counter((r["backend"], r["budget"]) for r in runs)))
        raise ResultFileError(f"{path}: no runs on backend {backend or 'any'} with budget {budget or 'any'} "
                              f"(it holds: {held})")
    chosen = pairs.most_common(1)[0][0]
    return [r for r in runs if (r["backend"], r["budget"]) == chosen], dict(zip(("backend", "budget"), chosen))


def _panel(ax: Axes, runs: Sequence[Mapping], kinds: Sequence[str], reference: Mapping[int, float]) -> None:
    """One domain: each run's AUC and CI beside its type's mean over seeds, the baselines, the published points."""
    shots = sorted({r["shots"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    at = {s: float(np.log2(s)) for s in shots}  # a log axis: 16, 32 and 256 shots are not evenly spaced
    gap = min(np.diff(list(at.values())), default=1.0)  # the offsets of types and seeds, in the closest pair's units
    for i, kind in enumerate(kinds):
        mine = [r for r in runs if r["kind"] == kind]
        centre = {s: at[s] + (i - (len(kinds) - 1) / 2) * KIND_STEP * gap for s in shots}
        x = [centre[r["shots"]] + (seeds.index(r["seed"]) - (len(seeds) - 1) / 2) * SEED_STEP * gap for r in mine]
        auc = np.array([[r["auc"]["value"], r["auc"]["ci_low"], r["auc"]["ci_high"]] for r in mine]).reshape(-1, 3)
        color = COLORS[i % len(COLORS)]
        ax.errorbar(x, auc[:, 0], yerr=ci_yerr(auc[:, 0], auc[:, 1], auc[:, 2]), fmt="o", ms=3, color=color,
                    elinewidth=0.9, alpha=0.8)
        means = [(centre[s], np.mean([r["auc"]["value"] for r in mine if r["shots"] == s])) for s in shots
                 if any(r["shots"] == s for r in mine)]
        ax.plot(*zip(*means), color=color, lw=1.8, label=kind)
    base = runs[0]["baselines"]
    if "backbone" in base and np.isfinite(base["backbone"]["ci_low"] + base["backbone"]["ci_high"]):
        ax.axhspan(base["backbone"]["ci_low"], base["backbone"]["ci_high"], color=NEUTRAL, alpha=0.15, lw=0)
    for name, text, style in BASELINES:
        if name in base:
            ax.axhline(base[name]["value"], color=NEUTRAL if name == "backbone" else "black", lw=1, ls=style,
                       label=text)
    if reference:
        points = [(at[s], auc) for s, auc in sorted(reference.items()) if s in shots]
        ax.plot(*zip(*points), ls="none", marker="x", ms=7, mew=1.8, color="black",
                label="TALLRec LLaMA-7B (published)")
    ax.set_xticks(list(at.values()), [str(s) for s in shots])
    ax.set_xlim(at[shots[0]] - gap / 2, at[shots[-1]] + gap / 2)
    ax.set_xlabel("few-shot training cases (log scale)")
    ax.set_title(f"{runs[0]['domain']}: {runs[0]['spec']}, {runs[0]['limit']} cases")


@styled
def plot_shots(runs: Sequence[Mapping], out: Path, *, reference: Mapping[str, Mapping[int, float]] | None = None,
               title: str | None = None, subtitle: str = "") -> Figure:
    """A panel per domain: test AUC against shots, a colour per adapter type (dots: runs with their 95% CIs;
    line: mean over seeds), the untuned backbone's CI band and the baselines; `reference`: domain -> shots -> AUC
    published elsewhere, drawn as crosses."""
    domains = list(dict.fromkeys(r["domain"] for r in runs))
    kinds = sorted({r["kind"] for r in runs})
    fig, axes = new_figure(
        4.9, 1, len(domains), sharey=True, title=title or "Test AUC by number of shots and adapter type",
        subtitle=subtitle, caption="Dots: single runs (one per seed) with their 95% bootstrap CIs over the test cases; "
        "lines: the mean over seeds. Grey band: the untuned backbone's 95% CI on the same cases.")
    for ax, domain in zip(axes[0], domains):
        _panel(ax, [r for r in runs if r["domain"] == domain], kinds, (reference or {}).get(domain, {}))
    axes[0][0].set_ylabel("test AUC")
    legend_below(axes)
    save_png(fig, out)
    return fig


def from_files(sources: Sequence[Path], out: Path, *, backend: str | None = None, budget: int | None = None,
               reference: Mapping[str, Mapping[int, float]] | None = None, title: str | None = None) -> Path:
    """AUC against shots from one grid JSONL into the PNG `out` (the rows of one backend and budget: `read_grid`)."""
    if len(sources) != 1:
        raise ResultFileError(f"give one grid result file, not {len(sources)}")
    runs, chosen = read_grid(sources[0], backend=backend, budget=budget)
    seeds = sorted({r["seed"] for r in runs})
    subtitle = (f"{len(runs)} runs of {chosen['budget']} optimizer steps on the {chosen['backend']} int8 backend, "
                f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; AUC of P(yes) on a seeded, "
                "label-stratified test subset, the same cases for every run of a domain")
    plot_shots(runs, out, reference=reference, title=title, subtitle=subtitle)
    return out
