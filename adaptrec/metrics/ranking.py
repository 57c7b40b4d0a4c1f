"""Ranking metrics for one relevant item among scored candidates: HR@K, NDCG@K, MRR@K.

Input shape: `score_rows` is a 2-D array (n_cases, n_candidates) or a list of 1-D score
sequences (candidate lists may differ in length); `target_idx[i]` is the index of the true
item inside row i. Higher score = ranked higher.

Ties are PESSIMISTIC: every other candidate whose score equals the target's is ranked ahead
of it, so rank = 1 + #(score > target) + #(score == target, other candidates). Optimistic
tie-breaking would hand a constant scorer a perfect HR@1; with pessimistic ties it gets the
worst rank instead. (No random tie-breaking, so results are deterministic.) `random_tie_per_case` gives a
per-case metric's expected value when ties are broken at random instead (as in RecBole's sampled lists, where the
target's place is random): for rows whose scores tie often (integer counts) the two differ.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "ranks",
    "hit_at_k",
    "ndcg_at_k",
    "mrr_at_k",
    "hit_per_case",
    "ndcg_per_case",
    "mrr_per_case",
    "user_auc",
    "random_tie_per_case",
]


def _as_matrix(score_rows) -> np.ndarray:
    """Stack rows into a float matrix, padding ragged rows with NaN (NaN never compares >= )."""
    if isinstance(score_rows, np.ndarray):
        mat = score_rows.astype(np.float64, copy=False)
        if mat.ndim != 2:
            raise ValueError(f"score_rows must be 2-D (cases x candidates), got shape {mat.shape}")
        if np.isnan(mat).any():
            raise ValueError("score_rows contain NaN")
        return mat
    rows = [np.asarray(r, dtype=np.float64) for r in score_rows]
    if not rows:
        raise ValueError("no cases: score_rows is empty")
    for i, r in enumerate(rows):
        if r.ndim != 1 or r.shape[0] == 0:
            raise ValueError(f"score row {i} must be a non-empty 1-D sequence, got shape {r.shape}")
        if np.isnan(r).any():
            raise ValueError(f"score row {i} contains NaN")
    width = max(r.shape[0] for r in rows)
    mat = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        mat[i, : r.shape[0]] = r
    return mat


def _matrix_and_targets(score_rows, target_idx) -> tuple[np.ndarray, np.ndarray]:
    """The score matrix (`_as_matrix`) and the checked integer target indices, one inside each row."""
    mat = _as_matrix(score_rows)
    tgt = np.asarray(target_idx)
    if tgt.ndim != 1 or tgt.shape[0] != mat.shape[0]:
        raise ValueError(
            f"target_idx must be 1-D with one entry per score row ({mat.shape[0]}), got shape {tgt.shape}"
        )
    if mat.shape[0] == 0:
        raise ValueError("no cases: score_rows is empty")
    odd = next((t for t in tgt.tolist() if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real)), None)
    if odd is not None:  # booleans read as indices 0 and 1; an object array of ints is fine
        raise ValueError(f"target_idx must hold integer indices, got {odd!r}")
    if not np.issubdtype(tgt.dtype, np.integer):
        if not np.all(np.mod(tgt, 1) == 0):
            raise ValueError("target_idx must hold integer indices")
        tgt = tgt.astype(np.int64)
    row_len = (~np.isnan(mat)).sum(axis=1)
    bad = (tgt < 0) | (tgt >= row_len)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"target_idx[{i}] = {int(tgt[i])} is outside row {i} of length {int(row_len[i])}")
    return mat, tgt


def _standing(score_rows, target_idx) -> tuple[np.ndarray, np.ndarray]:
    """Per case: the candidates scored above the target, and the other candidates scored level with it (NaN
    padding compares neither way)."""
    mat, tgt = _matrix_and_targets(score_rows, target_idx)
    target_scores = mat[np.arange(mat.shape[0]), tgt][:, None]
    return (mat > target_scores).sum(axis=1), (mat == target_scores).sum(axis=1) - 1


def ranks(score_rows, target_idx) -> np.ndarray:
    """1-based rank of each target among its candidates, ties counted against the target."""
    above, tied = _standing(score_rows, target_idx)
    return (above + tied + 1).astype(np.int64)


def random_tie_per_case(metric, score_rows, target_idx, k: int) -> np.ndarray:
    """`metric` (`hit_per_case`, `ndcg_per_case`, `mrr_per_case`) of each case averaged over every rank its target
    could take among the candidates scored level with it: the metric's expected value under a random tie order."""
    above, tied = _standing(score_rows, target_idx)
    total = np.zeros(len(above))
    for offset in range(int(tied.max()) + 1):
        total += np.where(offset <= tied, metric(above + 1 + np.minimum(offset, tied), k), 0.0)
    return total / (tied + 1)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def hit_per_case(rank: np.ndarray, k: int) -> np.ndarray:
    """1.0 where rank <= k else 0.0."""
    k = _check_k(k)
    return (np.asarray(rank) <= k).astype(np.float64)


def ndcg_per_case(rank: np.ndarray, k: int) -> np.ndarray:
    """1 / log2(rank + 1) where rank <= k else 0 (single relevant item, so IDCG = 1)."""
    k = _check_k(k)
    r = np.asarray(rank, dtype=np.float64)
    return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def mrr_per_case(rank: np.ndarray, k: int) -> np.ndarray:
    """1 / rank where rank <= k else 0."""
    k = _check_k(k)
    r = np.asarray(rank, dtype=np.float64)
    return np.where(r <= k, 1.0 / r, 0.0)


def hit_at_k(score_rows, target_idx, k: int) -> float:
    """Hit rate @K: share of cases whose target ranks in the top K."""
    return float(hit_per_case(ranks(score_rows, target_idx), k).mean())


def ndcg_at_k(score_rows, target_idx, k: int) -> float:
    """Mean NDCG@K with one relevant item per case."""
    return float(ndcg_per_case(ranks(score_rows, target_idx), k).mean())


def mrr_at_k(score_rows, target_idx, k: int) -> float:
    """Mean reciprocal rank truncated at K."""
    return float(mrr_per_case(ranks(score_rows, target_idx), k).mean())


def user_auc(score_rows: np.ndarray, target_idx) -> np.ndarray:
    """Per-row AUC of the target against the other candidates: share of them scored below it, ties counted half.

    Unlike the rank metrics, ties split evenly here (AUC's usual convention), so a constant scorer gets 0.5."""
    rows, idx = _matrix_and_targets(score_rows, target_idx)
    pos = rows[np.arange(len(rows)), idx][:, None]
    mask = ~np.isnan(rows)  # a shorter row's NaN padding is no candidate
    mask[np.arange(len(rows)), idx] = False
    if not mask.any(axis=1).all():
        raise ValueError(f"row {int(np.flatnonzero(~mask.any(axis=1))[0])} holds the target alone: no AUC")
    below = ((rows < pos) + 0.5 * (rows == pos)) * mask
    return below.sum(axis=1) / mask.sum(axis=1)
