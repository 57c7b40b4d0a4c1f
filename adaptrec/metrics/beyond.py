"""Beyond-accuracy metrics of top-K lists, named and defined as RecBole's (`recbole.evaluator.metrics`), plus
intra-list diversity and accuracy per user group.

RecBole's own classes need its config and data objects (and its logging dependencies, which `make install`
leaves out), so the formulas are restated here on plain arrays; tests pin them on hand-computed cases.
`top_items` holds each user's recommended item ids, best first (a (users, K) array, or lists of up to K items).
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import numpy as np


TopItems = Sequence[Sequence[str]]


def itemcoverage(top_items: TopItems, num_items: int) -> float:
    """RecBole ItemCoverage@K: distinct recommended items / catalogue size."""
    return len({i for row in top_items for i in row}) / num_items


def averagepopularity(top_items: TopItems, counts: Mapping[str, float]) -> float:
    """RecBole AveragePopularity@K: mean over users of the mean training interaction count of their K items."""
    return float(np.mean([np.mean([counts.get(i, 0.0) for i in row]) for row in top_items]))


def giniindex(top_items: TopItems, num_items: int) -> float:
    """RecBole GiniIndex@K of item exposure across all lists (items never recommended count as zero); 0 = even."""
    exposure = np.sort(np.array(list(Counter(i for row in top_items for i in row).values()), dtype=float))
    rank = np.arange(num_items - len(exposure) + 1, num_items + 1)
    return float(np.sum((2 * rank - num_items - 1) * exposure) / exposure.sum() / num_items)


def diversity(top_items: TopItems, embeddings: Mapping[str, np.ndarray]) -> float:
    """Intra-list distance: mean pairwise cosine distance (1 - cos) of each list's item embeddings, averaged
    over users (Ziegler et al. 2005). Lists shorter than 2 items are skipped."""
    values = []
    for row in top_items:
        vecs = np.stack([embeddings[i] for i in row]).astype(float)
        if len(vecs) < 2:
            continue
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        sim = vecs @ vecs.T
        k = len(vecs)
        values.append(1.0 - (sim.sum() - k) / (k * (k - 1)))
    return float(np.mean(values)) if values else float("nan")


def top_k(candidates: Sequence[Sequence[str]], scores: Sequence[np.ndarray], k: int) -> list[list[str]]:
    """Each candidate list ordered by score (stable on ties), cut to `k` items."""
    return [[c[j] for j in np.argsort(-np.asarray(s), kind="stable")[:k]] for c, s in zip(candidates, scores)]


def by_group(values: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Mean of a per-user metric within each group (e.g. activity bucket, cold vs warm), in first-seen order."""
    values, groups = np.asarray(values, dtype=float), np.asarray(groups)
    return {g: float(values[groups == g].mean()) for g in dict.fromkeys(groups.tolist())}


def activity_buckets(history_lengths: Sequence[int], edges: Sequence[int] = (5, 20)) -> list[str]:
    """Users bucketed by history length: `<5`, `5-19`, `>=20` with the default edges."""
    labels = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]}"]
    return [labels[int(np.searchsorted(edges, n, side="right"))] for n in history_lengths]
