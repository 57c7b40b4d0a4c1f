"""Binary-classification metrics over (label, score) pairs: AUC, accuracy, log-loss.

numpy only. Labels are 0/1 (bools accepted); scores are any real numbers for AUC and
probabilities in [0, 1] for accuracy (thresholded) and log-loss.
"""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "accuracy", "log_loss"]


def _validate(labels, scores, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and {what} must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and {what} differ in length: {y.shape[0]} vs {s.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("no examples: labels and scores are empty")
    if y.dtype == bool:
        y = y.astype(np.int64)
    try:
        y_num = y.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError("labels must be 0/1 (or booleans)") from None
    if not np.all((y_num == 0) | (y_num == 1)):
        bad = sorted(set(np.unique(y_num[(y_num != 0) & (y_num != 1)]).tolist()))[:5]
        raise ValueError(f"labels must be 0/1 (or booleans); found {bad}")
    if np.isnan(s).any():
        raise ValueError(f"{what} contain NaN")
    return y_num.astype(np.int64), s


def probabilities(labels, probs, what: str = "calibration") -> tuple[np.ndarray, np.ndarray]:
    """Validated 0/1 labels and probabilities in [0, 1] (ValueError naming `what` otherwise: P(yes), not logits)."""
    y, p = _validate(labels, probs, what="probs")
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"{what} needs probabilities in [0, 1]; got min {p.min():.4g}, max {p.max():.4g}")
    return y, p


def auc(labels, scores, weights=None) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg)).

    A positive-negative pair scores 1 when the positive has the higher score and 1/2 on a tie,
    so a constant scorer gets exactly 0.5. Raises ValueError when only one class is present
    (AUC is undefined then). `weights` (positive, one per example, e.g. inverse propensities): each pair counts
    with the product of its two weights (sklearn's `roc_auc_score(sample_weight=...)`).
    """
    y, s = _validate(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "positive (1)" if n_neg == 0 else "negative (0)"
        raise ValueError(
            f"AUC is undefined when only one class is present: all {y.shape[0]} labels are {only}"
        )
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != y.shape or not (np.isfinite(w) & (w > 0)).all():
            raise ValueError(f"weights must be {y.shape[0]} positive finite numbers, one per example")
        pos = np.bincount(inverse, weights=w * y)  # per distinct score, ascending
        neg = np.bincount(inverse, weights=w * (1 - y))
        below = np.cumsum(neg) - neg  # negative weight scored strictly lower
        return float((pos * (below + neg / 2)).sum() / (pos.sum() * neg.sum()))
    # Average (mid) ranks, 1-based: a tied group occupying positions a+1..a+c gets a + (c+1)/2.
    before = np.cumsum(counts) - counts
    mid_rank = before + (counts + 1) / 2.0
    rank_sum_pos = mid_rank[inverse][y == 1].sum()
    u = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def accuracy(labels, scores, threshold: float = 0.5) -> float:
    """Share of examples where (P(yes) >= threshold) equals the label; probabilities in [0, 1] (ValueError
    otherwise: a logit's threshold is 0, not 0.5)."""
    y, s = probabilities(labels, scores, "accuracy")
    return float(np.mean((s >= threshold).astype(np.int64) == y))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy (natural log); probabilities are clipped to [eps, 1 - eps].

    Probabilities outside [0, 1] raise ValueError (pass P(yes), not logits).
    """
    y, p = probabilities(labels, probs, "log_loss")
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
