"""The look every figure shares (page width, fonts, colours, title and caption) and the PNG writer: Agg, atomic."""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic import write_bytes

WIDTH = 7.0  # inches: the docs' page width
DPI = 100
COLORS = ("#1b6ca8", "#d1495b", "#e09f3e", "#2a9d8f", "#6a4c93", "#8c564b", "#3d405b", "#7f7f7f")
NEUTRAL = "#6b6b6b"
WARNING = "#b00020"
RC = {
    "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 7.5, "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "axes.axisbelow": True,
}
CAPTION_CHARS = 105  # characters of a heading or caption line at 7 in and 8 pt

P = ParamSpec("P")
R = TypeVar("R")


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Run a drawing function under the shared rcParams (artists read them when they are made), over matplotlib's
    own defaults: a user's matplotlibrc (a serif font, locale decimal commas, usetex, a transparent save) would
    otherwise change the figures, which the same data must draw to the same bytes anywhere."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.style.context(["default", RC]):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(height: float, rows: int = 1, cols: int = 1, *, title: str, subtitle: str = "", warning: str = "",
               caption: str = "", **subplots: Any) -> tuple[Figure, Any]:
    """A page-wide Figure on the Agg canvas (no pyplot state) and its axes as a rows x cols array.

    `title` (bold) names the data; `subtitle` the protocol; `warning` (red) what makes the numbers doubtful;
    `caption` (below, grey) how to read the marks. Each heading line is a subfigure's title, so the
    constrained layout leaves room for all of them."""
    fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=10, fontweight="bold")
    host: Any = fig
    for text, color in ((subtitle, "#222222"), (warning and f"⚠ {warning}", WARNING)):
        if text:
            host = host.subfigures(1, 1)
            host.suptitle(wrap(text), fontsize=8, color=color)
    if caption:
        fig.supxlabel(wrap(caption), fontsize=7.5, color=NEUTRAL, x=0.01, ha="left", multialignment="left")
    return fig, host.subplots(rows, cols, squeeze=False, **subplots)


def legend_below(axes: Any, ncols: int = 4) -> None:
    """One legend for all `axes` (each label once), below them and above the caption."""
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    if handles:
        axes.flat[0].get_figure(root=False).legend(handles.values(), handles.keys(), loc="outside lower center",
                                                   ncols=min(ncols, len(handles)))


def ci_yerr(values, lows, highs) -> list:
    """errorbar's `yerr` for point estimates and their CI bounds; a bound on the wrong side of its estimate (a
    percentile bootstrap can give one) draws no bar there rather than making matplotlib refuse the figure."""
    values = np.asarray(values, dtype=float)
    return [np.clip(values - np.asarray(lows, dtype=float), 0, None),
            np.clip(np.asarray(highs, dtype=float) - values, 0, None)]


def wrap(text: str) -> str:
    """`text` broken into lines that fit the page width at caption size."""
    return "\n".join(textwrap.wrap(text, CAPTION_CHARS))


def save_png(fig: Figure, out: Path) -> None:
    """Write `fig` to `out` as a PNG, atomically; without a timestamp or version, the same data gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    write_bytes(Path(out), buf.getvalue())
