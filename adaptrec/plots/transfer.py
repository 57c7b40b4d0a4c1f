"""The cross-domain matrix as a heat map: per direction (source → target), every row of the experiment (untuned,
baselines, source, few-shot target, compositions, cold slice) by ranking metric, coloured by its difference from the
untuned backbone, from experiments/cross_domain.py's JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .inputs import ResultFileError, fields_of, load_json, metric_value
from .style import new_figure, save_png, styled

METRICS = ("auc", "hit@1", "hit@5", "hit@10", "ndcg@10")
WHAT = "cross-domain result"


def read_transfer(path: Path, metrics: Sequence[str] = METRICS) -> tuple[list[dict], dict]:
    """(directions, {"negatives", "scoring_version"}): each direction's source, target, spec, users and rows
    ({"group", "role", "metrics": {name: value and CI}}); a file without a scoring version predates version 2."""
    doc = load_json(path, WHAT)
    with fields_of(path, WHAT):
        directions = [{"source": str(d["source"]), "target": str(d["target"]), "spec": str(d["spec"]),
                       "users": int(d["users"]),
                       "rows": [{"group": str(r["group"]), "role": str(r["role"]),
                                 "metrics": {m: metric_value(r["metrics"][m]) for m in metrics}} for r in d["rows"]]}
                      for d in doc["directions"]]
        info = {"negatives": int(doc["protocol"]["negatives"]),
                "scoring_version": int(doc["protocol"].get("scoring_version", 1))}
    for d in directions:
        if not any(r["role"] == "untuned" for r in d["rows"]):
            raise ResultFileError(f"{path}: {d['source']}→{d['target']} has no `untuned` row to compare against")
    if not directions:
        raise ResultFileError(f"{path}: the {WHAT} holds no directions")
    return directions, info


def row_label(row: Mapping) -> str:
    """`target adapter, 32 shots (d)` for role `target:32` of group d."""
    head, _, tail = row["role"].partition(":")
    names = {"untuned": "untuned backbone", "baseline": f"{tail} (no LLM)", "source": "source adapter",
             "target": f"target adapter, {tail} shots", "composed": f"composed: {tail}", "cold": f"cold users: {tail}"}
    return f"{names.get(head, row['role'])} ({row['group']})"


def _differences(direction: Mapping, metrics: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(each row's value minus the untuned backbone's, per metric; +1/-1 where the CIs lie wholly above/below)."""
    base = next(r for r in direction["rows"] if r["role"] == "untuned")["metrics"]
    pairs = [[(r["metrics"][m], base[m]) for m in metrics] for r in direction["rows"]]
    diff = np.array([[v["value"] - b["value"] for v, b in row] for row in pairs])
    apart = np.array([[(v["ci_low"] > b["ci_high"]) - (v["ci_high"] < b["ci_low"]) for v, b in row] for row in pairs])
    return diff, apart


def _panel(ax: Axes, direction: Mapping, metrics: Sequence[str], limit: float, labels: bool):
    diff, apart = _differences(direction, metrics)
    image = ax.imshow(diff, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), d in np.ndenumerate(diff):
        value = direction["rows"][i]["metrics"][metrics[j]]["value"]
        ax.text(j, i, f"{value:.2f}" + ("*" if apart[i, j] else ""), ha="center", va="center", fontsize=7,
                color="white" if abs(d) > 0.6 * limit else "black")
    ax.set_xticks(range(len(metrics)), metrics, fontsize=7.5)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(diff)), [row_label(r) for r in direction["rows"]] if labels else [])
    ax.tick_params(length=0)
    ax.grid(False)
    ax.set_title(f"{direction['source']} → {direction['target']}\n{direction['users']} users of {direction['spec']}",
                 fontsize=8.5)
    return image


@styled
def plot_transfer(directions: Sequence[Mapping], out: Path, *, metrics: Sequence[str] = METRICS,
                  title: str | None = None, subtitle: str = "", warning: str = "") -> Figure:
    """A heat map per direction: rows × metrics, cells print the value (* where its 95% CI and the untuned
    backbone's do not overlap) and are coloured by the value minus the untuned backbone's."""
    limit = max(float(np.nanmax(np.abs(_differences(d, metrics)[0]), initial=0.0)) for d in directions)
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0  # all missing, or all equal: any scale
    rows = max(len(d["rows"]) for d in directions)
    fig, axes = new_figure(
        2.6 + 0.26 * rows, 1, len(directions), title=title or "Cross-domain transfer: every row by metric",
        subtitle=subtitle, warning=warning,
        caption="Cells: the metric's value; * its 95% bootstrap CI over users and the untuned backbone's do not "
                "overlap. Colour: value minus the untuned backbone's (same direction and metric): blue above, "
                "red below.")
    same_rows = len({tuple(r["role"] for r in d["rows"]) for d in directions}) == 1
    images = [_panel(ax, d, metrics, limit, labels=i == 0 or not same_rows)
              for i, (ax, d) in enumerate(zip(axes[0], directions))]
    fig.colorbar(images[0], ax=list(axes.flat), location="bottom", label="value − untuned backbone's (same metric)",
                 shrink=0.5, aspect=40)
    save_png(fig, out)
    return fig


def from_files(sources: Sequence[Path], out: Path, *, current_scoring_version: int | None = None,
               title: str | None = None) -> Path:
    """The heat map of one cross-domain JSON into the PNG `out`; scores cached under a scoring version older than
    `current_scoring_version` get a warning line."""
    if len(sources) != 1:
        raise ResultFileError(f"give one {WHAT} file, not {len(sources)}")
    directions, info = read_transfer(sources[0])
    version = info["scoring_version"]
    warning = (f"Stale: these scores were cached under scoring version {version}; this checkout scores with "
               f"version {current_scoring_version}. Re-run the experiment to replace them."
               if current_scoring_version is not None and version < current_scoring_version else "")
    subtitle = (f"Each user ranks 1 held-out target-domain item against {info['negatives']} sampled negatives; "
                "AUC is per user, averaged; hit@K and NDCG@10 count ties against the held-out item")
    plot_transfer(directions, out, title=title, subtitle=subtitle, warning=warning)
    return out
