"""Drift between two windows as a figure: each window's reliability curve (mean score vs like rate per score bin,
marker area by cases) and the adapter's AUC beside the baseline rows, from `adaptrec drift --json`'s report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from .inputs import ResultFileError, fields_of, load_json
from .style import COLORS, NEUTRAL, ci_yerr, legend_below, new_figure, save_png, styled

WHAT = "drift report"


@styled
def plot_drift(report: dict, out: Path) -> Figure:
    c = report["change"]
    fig, axes = new_figure(
        3.3, 1, 2, title=f"Drift of {report['domain']} under {report['adapter']}",
        subtitle=f"PSI {c['psi']:.3f} (p {c['psi_p']:.3g}), KS {c['ks']:.3f} (p {c['ks_p']:.3g}; both over cases), "
                 f"ECE change {c['ece_change']:+.3f}, AUC change {c['auc_change']:+.3f}",
        caption="Left: like rate against mean score per score bin (marker area: cases, relative to the fullest "
                "bin); on the diagonal a score is calibrated. Right: AUC per window with user-clustered 95% CIs; "
                "dotted: chance. Popularity counts the before window's histories, so it is transductive in that "
                "window.")
    rel, auc_ax = axes[0][0], axes[0][1]
    rel.plot([0, 1], [0, 1], color=NEUTRAL, lw=0.8, ls=":")
    windows = ("before", "after")
    largest = max((n for name in windows for n in report[name]["reliability"]["count"]), default=1) or 1
    for color, name in zip(COLORS, windows):
        r = report[name]["reliability"]
        rel.plot(r["mean_score"], r["like_rate"], color=color, lw=1.2, label=f"{name} (ECE {r['ece']:.3f})")
        # area relative to the fullest bin (was: 2 points² a case, inch-wide blobs over a window of thousands)
        rel.scatter(r["mean_score"], r["like_rate"], s=[8 + 120 * n / largest for n in r["count"]], color=color,
                    alpha=0.6)
    rel.set_xlabel("mean score in bin")
    rel.set_ylabel("like rate in bin")
    rows = list(report["before"]["auc"])
    for i, row in enumerate(rows):
        m = [report[w]["auc"][row] for w in windows]
        xs = [k + (i - len(rows) / 2) * 0.08 for k in range(len(windows))]
        auc_ax.errorbar(xs, [v["value"] for v in m],
                        yerr=ci_yerr(*([v[k] for v in m] for k in ("value", "ci_low", "ci_high"))),
                        color=COLORS[2 + i] if row == "adapter" else NEUTRAL, marker="osD"[i % 3], capsize=2,
                        ls="-" if row == "adapter" else "--", label=row)
    auc_ax.axhline(0.5, color=NEUTRAL, lw=0.8, ls=":")
    auc_ax.set_xticks(range(len(windows)), windows)
    auc_ax.set_ylabel("AUC")
    legend_below(axes, ncols=5)
    save_png(fig, out)
    return fig


def from_files(sources: Sequence[Path], out: Path) -> Path:
    """The figure of one `adaptrec drift --json` report file."""
    if len(sources) != 1:
        raise ResultFileError(f"a drift figure draws one {WHAT}, got {len(sources)} files")
    report = load_json(sources[0], WHAT)
    with fields_of(sources[0], WHAT):
        plot_drift(report, out)
    return out
