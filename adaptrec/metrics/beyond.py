"""Beyond-accuracy metrics of top-K lists, named and defined as RecBole's (`recbole.evaluator.metrics`), plus
intra-list diversity and accuracy per user group.

RecBole's own classes need its config and data objects (and its logging dependencies, which `make install`
leaves out), so the formulas are restated here on plain arrays; tests pin them on hand-computed cases.
`top_items` holds each user's recommended item ids, best first (a (users, K) array, or lists of up to K items).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from . import MetricValue


TopItems = Sequence[Sequence[str]]


def _check_lists(top_items: TopItems, what: str) -> None:
    """ValueError when there are no lists or one is empty (a mean over it is NaN)."""
    if not len(top_items) or any(len(row) == 0 for row in top_items):
        raise ValueError(f"{what} needs at least one list and no empty one")


def itemcoverage(top_items: TopItems, num_items: int) -> float:
    """RecBole ItemCoverage@K: distinct recommended items / catalogue size."""
    return _distinct(top_items, num_items) / num_items


def _distinct(top_items: TopItems, num_items: int) -> int:
    """How many distinct items the lists recommend; ValueError if more than the catalogue holds."""
    _check_lists(top_items, "item coverage and the Gini index")
    n = len({i for row in top_items for i in row})
    if n > num_items:
        raise ValueError(f"the lists recommend {n} distinct items, more than the catalogue's {num_items}")
    return n


def averagepopularity(top_items: TopItems, counts: Mapping[str, float]) -> float:
    """RecBole AveragePopularity@K: mean over users of the mean training interaction count of their K items."""
    _check_lists(top_items, "average popularity")
    return float(np.mean([np.mean([counts.get(i, 0.0) for i in row]) for row in top_items]))


def giniindex(top_items: TopItems, num_items: int) -> float:
    """RecBole GiniIndex@K of item exposure across all lists (items never recommended count as zero); 0 = even."""
    _distinct(top_items, num_items)
    exposure = np.sort(np.array(list(Counter(i for row in top_items for i in row).values()), dtype=float))
    rank = np.arange(num_items - len(exposure) + 1, num_items + 1)
    return float(np.sum((2 * rank - num_items - 1) * exposure) / exposure.sum() / num_items)


def diversity(top_items: TopItems, embeddings: Mapping[str, np.ndarray]) -> float:
    """Intra-list distance: mean pairwise cosine distance (1 - cos) of each list's item embeddings, averaged
    over users (Ziegler et al. 2005). Lists shorter than 2 items are skipped; ValueError when all are, or an item
    has no embedding."""
    missing = next((i for row in top_items for i in row if i not in embeddings), None)
    if missing is not None:
        raise ValueError(f"diversity: item {missing!r} has no embedding")
    values = []
    for row in top_items:
        if len(row) < 2:
            continue
        vecs = np.stack([embeddings[i] for i in row]).astype(float)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        if not norms.all():
            raise ValueError(f"diversity: an item of {list(row)[:5]} has a zero-length embedding (no direction)")
        vecs /= norms
        sim = vecs @ vecs.T
        k = len(vecs)
        values.append(1.0 - (sim.sum() - k) / (k * (k - 1)))
    if not values:
        raise ValueError("diversity needs a list of at least 2 items")
    return float(np.mean(values))


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


def group_means(per_case: np.ndarray, groups: Mapping[str, np.ndarray], clusters=None, seed: int = 0,
                n_resamples: int = 1000) -> dict[str, "MetricValue"]:
    """Mean of a per-case metric within each group (boolean masks), with bootstrap CIs over `clusters` (users);
    groups without cases are left out."""
    from . import estimate

    values = np.asarray(per_case, dtype=float)
    out = {}
    for name, mask in groups.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            out[name] = estimate(values[mask].mean(), np.mean, values[mask], seed=seed, n_resamples=n_resamples,
                                 clusters=None if clusters is None else np.asarray(clusters)[mask])
    return out


def group_gap(per_case: np.ndarray, first: np.ndarray, second: np.ndarray, clusters=None, seed: int = 0,
              n_resamples: int = 1000) -> "MetricValue | None":
    """mean(first) − mean(second) of a per-case metric (e.g. cold − warm), with a bootstrap CI resampling clusters;
    None unless both groups have cases."""
    from . import estimate

    values, a, b = np.asarray(per_case, dtype=float), np.asarray(first, bool), np.asarray(second, bool)
    if not a.any() or not b.any():
        return None

    def gap(v, a_, b_):
        if not a_.any() or not b_.any():
            raise ValueError("a resample without one of the groups")
        return v[a_].mean() - v[b_].mean()

    # resamples missing a group are skipped: `ci_skipped` counts them, and a report's table names them
    return estimate(values[a].mean() - values[b].mean(), gap, values, a, b, seed=seed, n_resamples=n_resamples,
                    clusters=clusters)
