"""Learning curves: train loss per optimizer step and the validation metric from run folders' metrics.jsonl
(`runs/<name>-<hash>/metrics.jsonl`: one line per step with `step`, `loss`, `lr`, and `val_auc` when validated)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..home import adaptrec_home
from .inputs import ResultFileError, fields_of, load_jsonl
from .style import COLORS, NEUTRAL, new_figure, save_png, styled

METRIC = "val_auc"


def run_folder(source: Path) -> Path:
    """The run folder `source` names: the folder, its metrics.jsonl, or a run name under $ADAPTREC_HOME/runs
    (`movie-lora` finds `movie-lora-<hash>` when only one run has that name)."""
    source = Path(source)
    if source.is_dir():
        return source
    if source.name == "metrics.jsonl" and source.is_file():
        return source.parent
    runs = adaptrec_home() / "runs"
    if not source.exists() and len(source.parts) == 1 and runs.is_dir():
        matches = sorted(p for p in runs.iterdir() if p.is_dir() and source.name in (p.name, p.name.rsplit("-", 1)[0]))
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ResultFileError(f"{source}: {len(matches)} runs have that name under {runs} "
                                  f"({', '.join(p.name for p in matches)}); give the folder")
    what = "is no run's metrics.jsonl" if source.exists() else "no such run"
    raise ResultFileError(f"{source}: {what} (give a run folder, its metrics.jsonl, or a run name under {runs})")


def read_run(source: Path, metric: str = METRIC) -> tuple[str, list[dict]]:
    """(the run folder's name, its steps as {"step", "loss"[, metric]}) from its metrics.jsonl."""
    path = run_folder(source) / "metrics.jsonl"
    rows = load_jsonl(path, "metrics log")
    with fields_of(path, "metrics log"):
        steps = [{"step": int(r["step"]), "loss": _number(r["loss"]),
                  **({metric: _number(r[metric])} if metric in r else {})} for r in rows]
    return path.parent.name, steps


def _number(value) -> float:
    """A logged number; null (a diverged, non-finite loss) as NaN, which the figure leaves as a gap."""
    return math.nan if value is None else float(value)


def _trailing_mean(values: Sequence[float], window: int) -> np.ndarray:
    """The mean of each value and the `window - 1` before it (fewer at the start), over the finite ones: a null
    loss leaves a gap only where a window holds nothing else."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    sums = np.cumsum(np.insert(np.where(finite, values, 0.0), 0, 0.0))
    counts = np.cumsum(np.insert(finite, 0, False))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    n = counts[ends] - counts[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[ends] - sums[starts]) / n, np.nan)


@styled
def plot_curves(runs: Mapping[str, Sequence[Mapping]], out: Path, *, metric: str = METRIC, title: str | None = None,
                subtitle: str = "") -> Figure:
    """Two panels over optimizer steps: each run's train loss (thin: per step, thick: trailing mean) and its
    validation metric (★: the best, the adapter a run keeps). `runs`: name -> metrics.jsonl rows."""
    window = max(1, max(len(rows) for rows in runs.values()) // 12)
    what = "validation AUC" if metric == METRIC else metric
    fig, axes = new_figure(
        4.8, 2, 1, sharex=True, title=title or f"Learning curves of {', '.join(runs)}", subtitle=subtitle,
        caption=f"Top: train loss of each optimizer step (thin) and its mean over the last {window} steps (thick). "
                f"Bottom: {what} at each validation; ★ the best one, whose adapter the run keeps"
                + ("; dotted: chance (AUC 0.5)." if metric.endswith("auc") else "."))
    loss_ax, val_ax = axes[0][0], axes[1][0]
    for color, (name, rows) in zip(cycle(COLORS), runs.items()):
        steps, loss = [r["step"] for r in rows], [r["loss"] for r in rows]
        loss_ax.plot(steps, loss, color=color, lw=0.7, alpha=0.35)
        loss_ax.plot(steps, _trailing_mean(loss, window), color=color, lw=1.8, label=name)
        val = [(r["step"], r[metric]) for r in rows if metric in r]
        if val:
            val_ax.plot(*zip(*val), color=color, lw=1.4, marker="o", ms=3.5, label=name)
            measured = [sv for sv in val if np.isfinite(sv[1])]  # a missing value (NaN) is never the best
            if measured:
                best = max(measured, key=lambda sv: sv[1])
                val_ax.plot(*best, marker="*", ms=12, color=color, mec="black", mew=0.6, ls="none")
    if metric.endswith("auc"):
        val_ax.axhline(0.5, color=NEUTRAL, lw=0.8, ls=":")
    loss_ax.set_ylabel("train loss")
    val_ax.set_ylabel(what)
    val_ax.set_xlabel("optimizer step")
    loss_ax.legend(loc="upper right", ncols=min(3, len(runs)))
    save_png(fig, out)
    return fig


def from_files(sources: Sequence[Path], out: Path, *, metric: str = METRIC, title: str | None = None,
               subtitle: str = "") -> Path:
    """Learning curves of the run folders `sources` into the PNG `out`."""
    runs: dict[str, list[dict]] = {}
    for source in sources:
        name, steps = read_run(source, metric)
        runs[str(run_folder(source)) if name in runs else name] = steps  # two folders of one name: both drawn
    plot_curves(runs, out, metric=metric, title=title, subtitle=subtitle)
    return out
