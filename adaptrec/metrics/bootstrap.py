"""Percentile bootstrap confidence intervals for any metric of row-aligned arrays."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["BootstrapCI", "bootstrap_ci", "resampling_units"]


class BootstrapCI(tuple):
    """`(low, high)` that also carries how the interval was obtained.

    Unpacks like a plain pair; `skipped` counts resamples on which the metric was undefined
    (it raised ValueError or returned NaN, e.g. a one-class resample for AUC) and
    `n_resamples` the resamples drawn in total (`n_resamples - skipped` were used).
    """

    skipped: int
    n_resamples: int

    def __new__(cls, low: float, high: float, skipped: int = 0, n_resamples: int = 0):
        obj = super().__new__(cls, (float(low), float(high)))
        obj.skipped = int(skipped)
        obj.n_resamples = int(n_resamples)
        return obj

    @property
    def low(self) -> float:
        return self[0]

    @property
    def high(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        return f"BootstrapCI(low={self[0]!r}, high={self[1]!r}, skipped={self.skipped}, n_resamples={self.n_resamples})"


def _rows(a):
    """An indexable view of `a` by row: an ndarray when possible, else the original sequence."""
    if isinstance(a, np.ndarray):
        return a
    try:
        arr = np.asarray(a)
    except ValueError:  # ragged (e.g. candidate lists of different lengths)
        return list(a)
    if arr.dtype == object:
        return list(a)
    return arr


def _take(a, idx: np.ndarray):
    if isinstance(a, np.ndarray):
        return a[idx]
    return [a[i] for i in idx]


def _cluster_rows(clusters, n: int) -> list[np.ndarray] | None:
    """Row indices of each cluster (in order of first appearance); None without clusters."""
    if clusters is None:
        return None
    labels = list(clusters)
    if len(labels) != n:
        raise ValueError(f"clusters must give one label per row ({n}), got {len(labels)}")
    rows: dict = {}
    for i, c in enumerate(labels):
        rows.setdefault(c, []).append(i)
    return [np.asarray(r) for r in rows.values()]


def _cluster_draw(groups: list[np.ndarray], rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """A resample's row indices: as many clusters as there are, drawn with replacement, each cluster's rows in order
    (the concatenation of the drawn groups, built without a Python loop over them)."""
    rows = np.concatenate(groups)
    sizes = np.array([len(g) for g in groups])
    starts = np.cumsum(sizes) - sizes

    def draw() -> np.ndarray:
        chosen = rng.integers(0, len(groups), size=len(groups))
        lengths = sizes[chosen]
        return rows[np.repeat(starts[chosen] - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())]

    return draw


def resampling_units(n: int, clusters=None) -> int:
    """What a bootstrap of `n` rows resamples: the distinct clusters (users) when given, else the rows."""
    return n if clusters is None else len(set(clusters))


def class_holders(labels, clusters=None) -> dict[int, int]:
    """How many resampling units (distinct clusters, or rows without clusters) hold a case of each class of 0/1
    `labels`, {1: …, 0: …}."""
    y = np.asarray(labels)
    if clusters is not None and len(clusters) != len(y):
        raise ValueError(f"clusters: {len(clusters)} labels for {len(y)} rows; give one per row")
    units = np.arange(len(y)) if clusters is None else np.asarray(clusters, dtype=object)
    return {label: len(set(units[y == label].tolist())) for label in (1, 0)}


def class_units(labels, clusters=None) -> int:
    """The fewest resampling units that hold a case of one class (`class_holders`; 0: a class is absent). Below 2,
    every resample on which AUC is defined holds that one unit's cases of the class: its interval ignores how units
    vary, and reads narrower than the data allow."""
    return min(class_holders(labels, clusters).values())


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    clusters=None,
) -> BootstrapCI:
    """Percentile bootstrap CI of `metric_fn(*arrays)`, resampling rows of all arrays jointly.

    `clusters` (one label per row, e.g. the user): resample whole clusters with replacement instead of
    rows, so rows that share a cluster (a user's many cases) count as the one sample they are.

    Each resample draws n row indices with replacement (numpy `default_rng(seed)`, so the
    interval is a pure function of the inputs and `seed`) and evaluates
    `metric_fn(*(a[idx] for a in arrays))`. Resamples where the metric is undefined (it
    raises ValueError or returns NaN) are skipped and counted in the result's `skipped`.
    Returns the alpha/2 and 1 - alpha/2 quantiles of the remaining values. Raises ValueError
    when the arrays differ in length, are empty, hold fewer than 2 clusters (or rows, without clusters: one
    resamples to itself, a zero-width interval that would read as certainty), or the metric is undefined on
    every resample.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    if not (isinstance(n_resamples, (int, np.integer)) and n_resamples >= 1):
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    rows = [_rows(a) for a in arrays]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"arrays must have the same number of rows, got lengths {[len(r) for r in rows]}")
    n = lengths.pop()
    if n == 0:
        raise ValueError("cannot bootstrap empty arrays")

    groups = _cluster_rows(clusters, n)
    units = n if groups is None else len(groups)
    if units < 2:
        raise ValueError(f"a bootstrap CI needs at least 2 {'clusters' if groups else 'rows'} to resample, got 1: "
                         "every resample would be the same sample")
    rng = np.random.default_rng(seed)
    draw = (lambda: rng.integers(0, n, size=n)) if groups is None else _cluster_draw(groups, rng)
    values: list[float] = []
    skipped = 0
    for _ in range(int(n_resamples)):
        idx = draw()
        try:
            v = float(metric_fn(*(_take(r, idx) for r in rows)))
        except ValueError:
            skipped += 1
            continue
        if math.isnan(v):
            skipped += 1
            continue
        values.append(v)
    if not values:
        raise ValueError(f"the metric was undefined on all {n_resamples} bootstrap resamples")
    low, high = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(low, high, skipped=skipped, n_resamples=int(n_resamples))
