"""Evaluation metrics, named like RecBole's: `auc`, `accuracy`, `log_loss`, `hit@K`, `ndcg@K`, `mrr@K`.

    >>> from adaptrec.metrics import compute_classification
    >>> res = compute_classification(["auc", "log_loss"], labels, probs, seed=0)
    >>> res["auc"].format()
    '0.731 [0.700, 0.760]'

Classification metrics take 0/1 labels and P(yes) scores. Ranking metrics take one row of
candidate scores per case plus the index of the true item; ties count against the target
(see `ranking`). Confidence intervals are 95% percentile bootstraps over cases
(`n_resamples` resamples, deterministic per `seed`; every metric of one call sees the same
resamples). The `evaluate`-library wrappers live in `adaptrec.metrics.evaluate_modules`
(not imported here: importing `evaluate` costs seconds, and it is the optional extra `metrics`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .bootstrap import BootstrapCI, bootstrap_ci, class_holders, class_units, resampling_units
from .classification import accuracy, auc, log_loss
from .ranking import (
    hit_at_k,
    hit_per_case,
    mrr_at_k,
    mrr_per_case,
    ndcg_at_k,
    ndcg_per_case,
    ranks,
)

__all__ = [
    "MetricValue",
    "VALID_METRIC_FORMS",
    "parse_metric_name",
    "compute_classification",
    "compute_ranking",
    "paired_difference",
    "auc",
    "accuracy",
    "log_loss",
    "ranks",
    "hit_at_k",
    "ndcg_at_k",
    "mrr_at_k",
    "hit_per_case",
    "ndcg_per_case",
    "mrr_per_case",
    "bootstrap_ci",
    "BootstrapCI",
    "class_holders",
    "class_units",
    "estimate",
]

CLASSIFICATION_METRICS = {"auc": auc, "accuracy": accuracy, "log_loss": log_loss}
RANKING_METRICS = {"hit": hit_per_case, "ndcg": ndcg_per_case, "mrr": mrr_per_case}
VALID_METRIC_FORMS = ("auc", "accuracy", "log_loss", "hit@K", "ndcg@K", "mrr@K")

_RANKING_RE = re.compile(r"^(hit|ndcg|mrr)@([0-9]+)$")


@dataclass(frozen=True)
class MetricValue:
    """A metric's point estimate, its bootstrap CI (None when not computed) and the case count."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    ci_skipped: int = 0  # bootstrap resamples on which the metric was undefined

    def format(self, digits: int = 3) -> str:
        """`0.731 [0.700, 0.760]`, or just `0.731` without a CI."""
        text = f"{self.value:.{digits}f}"
        if self.ci_low is not None and self.ci_high is not None:
            text += f" [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"
        return text

    def __str__(self) -> str:
        return self.format()


def estimate(value: float, metric_fn, *arrays, ci: bool = True, clusters=None, **bootstrap) -> MetricValue:
    """`value` with the bootstrap CI of `metric_fn` over `arrays` (`bootstrap`: `seed`, `n_resamples`, `alpha`).

    No CI without `ci`, or with fewer than 2 clusters (users; rows without clusters): one resamples to
    itself, so its interval would have zero width and read as certainty.
    """
    n = len(arrays[0])
    if clusters is not None and len(clusters) != n:  # else the CI would be dropped (or wrong) without a word
        raise ValueError(f"clusters: {len(clusters)} labels for {n} rows; give one per row")
    if not ci or resampling_units(n, clusters) < 2:
        return MetricValue(float(value), n=n)
    lo_hi = bootstrap_ci(metric_fn, *arrays, clusters=clusters, **bootstrap)
    return MetricValue(float(value), lo_hi.low, lo_hi.high, n=n, ci_skipped=lo_hi.skipped)


def _invalid(name) -> ValueError:
    return ValueError(
        f"unknown metric {name!r}; valid forms: {', '.join(VALID_METRIC_FORMS)} "
        "(K a positive integer, e.g. 'ndcg@10')"
    )


def parse_metric_name(name: str) -> tuple[str, int | None]:
    """`'NDCG@10'` -> `('ndcg', 10)`, `'auc'` -> `('auc', None)`; case-insensitive.

    Raises ValueError listing the valid forms for anything else.
    """
    if not isinstance(name, str):
        raise _invalid(name)
    key = name.strip().lower()
    if key in CLASSIFICATION_METRICS:
        return key, None
    m = _RANKING_RE.match(key)
    if m and int(m.group(2)) >= 1:
        return m.group(1), int(m.group(2))
    raise _invalid(name)


def _names(names: str | Iterable[str]) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError(f"no metric names given; valid forms: {', '.join(VALID_METRIC_FORMS)}")
    return names


def compute_classification(
    names: str | Iterable[str],
    labels,
    scores,
    ci: bool = True,
    seed: int = 0,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    clusters=None,
) -> dict[str, MetricValue]:
    """Classification metrics of P(yes) `scores` against 0/1 `labels`, keyed by the names given.

    `accuracy` thresholds at 0.5; `log_loss` needs probabilities. Ranking names here raise
    ValueError pointing to `compute_ranking`. `clusters` (e.g. user ids): CIs resample users, not cases. AUC gets no
    CI when one class is held by a single user (`class_units`).
    """
    parsed = {name: _classification_base(name) for name in _names(names)}
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    out: dict[str, MetricValue] = {}
    for name, base in parsed.items():
        fn = CLASSIFICATION_METRICS[base]
        defined = base != "auc" or class_units(y, clusters) >= 2
        out[name] = estimate(fn(y, s), fn, y, s, ci=ci and defined, clusters=clusters, n_resamples=n_resamples,
                             alpha=alpha, seed=seed)
    return out


def _classification_base(name: str) -> str:
    """The base of a classification metric name; a ranking name is a ValueError pointing to compute_ranking."""
    base, k = parse_metric_name(name)
    if k is not None:
        raise ValueError(f"{name!r} is a ranking metric; use compute_ranking for it")
    return base


def paired_difference(name: str, labels, scores_a, scores_b, seed: int = 0, n_resamples: int = 1000,
                      alpha: float = 0.05, clusters=None, weights=None) -> MetricValue:
    """metric(a) - metric(b) on the same cases, with a paired bootstrap CI (both scored on each resample).

    Pairing removes the case-sampling noise the two rows share, so a difference can be clear while the
    rows' own CIs overlap. `clusters` (e.g. user ids): resample users, not cases. `weights` (AUC only): each case's
    weight, resampled with it. AUC gets no CI when one class is held by a single user (`class_units`), as in
    `compute_classification`.
    """
    base = _classification_base(name)
    fn = CLASSIFICATION_METRICS[base]
    y, a, b = np.asarray(labels), np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if weights is not None and base != "auc":
        raise ValueError(f"weights are supported for auc only, not {name!r}")
    w = () if weights is None else (np.asarray(weights, dtype=np.float64),)

    def diff(y_, a_, b_, *w_) -> float:
        return fn(y_, a_, *w_) - fn(y_, b_, *w_)

    value = diff(y, a, b, *w)  # first: bad input is the metric's own clear error, not the bootstrap's
    defined = base != "auc" or class_units(y, clusters) >= 2  # else every usable resample holds that one user
    return estimate(value, diff, y, a, b, *w, ci=defined, clusters=clusters, n_resamples=n_resamples, alpha=alpha,
                    seed=seed)


def parse_ranking_names(names: Iterable[str]) -> dict[str, tuple[str, int]]:
    """{name: (base, k)} for ranking metric names; a classification name is a ValueError."""
    parsed = {}
    for name in names:
        base, k = parse_metric_name(name)
        if k is None:
            raise ValueError(f"{name!r} is a classification metric (use compute_classification); ranking metrics are hit@K, ndcg@K, mrr@K")
        parsed[name] = (base, k)
    return parsed


def compute_ranking(
    names: str | Iterable[str],
    score_rows,
    target_idx,
    ci: bool = True,
    seed: int = 0,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    clusters=None,
) -> dict[str, MetricValue]:
    """`hit@K` / `ndcg@K` / `mrr@K` over candidate lists, keyed by the names given.

    `score_rows`: (n_cases, n_candidates) array or a list of (possibly ragged) score rows;
    `target_idx[i]`: index of the true item in row i. Ties count against the target. `clusters` (the lists'
    user ids): CIs resample users, not lists.
    """
    parsed = parse_ranking_names(_names(names))
    r = ranks(score_rows, target_idx)
    out: dict[str, MetricValue] = {}
    for name, (base, k) in parsed.items():
        per_case = RANKING_METRICS[base](r, k)
        out[name] = estimate(per_case.mean(), np.mean, per_case, ci=ci, clusters=clusters, n_resamples=n_resamples,
                             alpha=alpha, seed=seed)
    return out
