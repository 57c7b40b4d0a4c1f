"""Comparing score distributions and calibration between windows: PSI, the two-sample KS test, reliability curves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classification import probabilities

EDGES = np.arange(11) / 10  # ten equal-width bins over [0, 1], edges exactly k/10 (linspace gives 0.30000000000000004)


def _checked(scores, what: str) -> np.ndarray:
    """`scores` as floats; ValueError when a window is empty or holds NaN (np.histogram and scipy pass NaN on)."""
    scores = np.asarray(scores, float)
    if scores.size == 0 or np.isnan(scores).any():
        raise ValueError(f"{what} needs scores in both windows, none of them NaN")
    return scores


def _within(scores: np.ndarray, edges: np.ndarray, what: str) -> None:
    """Refuse scores outside the bins: they would pile up in the end bins (logits; edges that do not span them)."""
    if scores.min() < edges[0] or scores.max() > edges[-1]:
        raise ValueError(f"{what} needs scores in [{edges[0]:g}, {edges[-1]:g}] (its bins); got min "
                         f"{scores.min():.4g}, max {scores.max():.4g}")


def _shares(scores: np.ndarray, edges: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    scores = _checked(scores, "PSI")
    _within(scores, edges, "PSI")
    counts = np.histogram(scores, bins=edges)[0].astype(float)
    shares = counts / max(counts.sum(), 1.0)
    return np.clip(shares, eps, None)  # an empty bin would make the log infinite


def psi(before, after, edges: np.ndarray = EDGES) -> float:
    """Population stability index of `after` against `before` over fixed bins: sum (a − b) · ln(a / b).
    Rules of thumb: < 0.1 stable, 0.1–0.25 a moderate shift, > 0.25 a large one."""
    b, a = _shares(before, edges), _shares(after, edges)
    return float(np.sum((a - b) * np.log(a / b)))


def psi_null(before, after, n_permutations: int = 1000, seed: int = 0,
             edges: np.ndarray = EDGES) -> tuple[float, float]:
    """What PSI reads when nothing moved, at these window sizes: both windows' scores pooled and split at random into
    windows of their sizes, `n_permutations` times. Returns the 95th percentile of those PSIs and the share at least
    as large as the observed one (a permutation p-value; over cases, as KS's). Small windows read large PSIs by chance
    alone, past the 0.25 rule of thumb."""
    b, a = _checked(before, "PSI"), _checked(after, "PSI")
    observed, pooled, rng = psi(b, a, edges), np.concatenate([b, a]), np.random.default_rng(seed)
    null = np.array([psi(*np.split(rng.permutation(pooled), [len(b)]), edges) for _ in range(n_permutations)])
    return float(np.quantile(null, 0.95)), float((1 + np.sum(null >= observed - 1e-12)) / (n_permutations + 1))


def ks(before, after) -> tuple[float, float]:
    """The two-sample Kolmogorov–Smirnov statistic and its p-value (scipy)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(_checked(before, "KS"), _checked(after, "KS"))
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class Reliability:
    """Per score bin with cases: mean score, observed like rate, case count; and the expected calibration error."""

    mean_score: list[float]
    like_rate: list[float]
    count: list[int]
    ece: float


def reliability(labels, scores, edges: np.ndarray = EDGES) -> Reliability:
    """The reliability curve over fixed bins and ECE = Σ (n_bin / n) · |like rate − mean score|; labels 0/1 and
    probabilities in [0, 1] within `edges` (scores outside would clip to the end bins and read as calibrated)."""
    y, s = probabilities(labels, scores)
    _within(s, np.asarray(edges, dtype=float), "a reliability curve")
    bins = np.clip(np.digitize(s, edges[1:-1]), 0, len(edges) - 2)
    mean, rate, count, ece = [], [], [], 0.0
    for b in range(len(edges) - 1):
        mask = bins == b
        if mask.any():
            mean.append(float(s[mask].mean()))
            rate.append(float(y[mask].mean()))
            count.append(int(mask.sum()))
            ece += mask.sum() / len(s) * abs(rate[-1] - mean[-1])
    return Reliability(mean, rate, count, float(ece))
