"""Which candidates `/v1/recommend` shows: the top k, or ε-greedy exploration with each slot's propensity and each
shown item's probability of being shown at all logged, so feedback also reaches items the model does not already rank
first and a later comparison can weight it by how likely it was to be seen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slate:
    """The items shown, best slot first: candidate indices, whether exploration picked each, its propensity given the
    earlier slots, and its probability of being shown in any slot."""

    order: list[int]
    explored: list[bool]
    propensity: list[float]
    shown: list[float]


def greedy(scores: np.ndarray, k: int) -> Slate:
    order = [int(i) for i in np.argsort(-scores, kind="stable")[:k]]
    return Slate(order, [False] * len(order), [1.0] * len(order), [1.0] * len(order))


def shown_probabilities(scores: np.ndarray, k: int, epsilon: float, items: Sequence[int] | None = None) -> np.ndarray:
    """The exact probability that `epsilon_greedy` shows each of `items` (candidate indices; default: all) in any of
    its `k` slots.

    What a per-item inverse-propensity weight needs (a slot's propensity is conditional on the earlier slots). For
    the candidate ranked r-th the state is how many of the r ranked above it are still unplaced (a): a greedy slot
    takes the best of those, or it when none is left; an explored slot takes it with probability 1/(remaining), one
    above with a/(remaining), one below otherwise. O(k · items · m).
    """
    m = len(scores)
    if m == 0 or (items is not None and len(items) == 0):
        return np.zeros(0)
    rank = np.empty(m, dtype=int)
    rank[np.argsort(-scores, kind="stable")] = np.arange(m)
    ranks = rank if items is None else rank[np.asarray(items, dtype=int)]
    above = np.arange(ranks.max() + 1)
    state = (above == ranks[:, None]).astype(float)  # state[i, a]: P(item i is unplaced, a of those above it too)
    shown = np.zeros(len(ranks))
    for step in range(min(k, m)):
        remaining = m - step
        shown += (1 - epsilon) * state[:, 0] + epsilon * state.sum(axis=1) / remaining
        moved = state * ((1 - epsilon) * (above > 0) + epsilon * above / remaining)  # one above it placed
        stays = state * (epsilon * np.maximum(remaining - 1 - above, 0) / remaining)  # one below it placed
        state = stays + np.pad(moved[:, 1:], ((0, 0), (0, 1)))
    return np.minimum(shown, 1.0)


def epsilon_greedy(scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator) -> Slate:
    """Fill each of `k` slots with the best remaining candidate, or with probability `epsilon` a uniformly drawn
    remaining one; the propensity is the probability the logging policy put that item in that slot given the items
    already placed (a slate's probability is their product)."""
    if epsilon <= 0:
        return greedy(scores, k)
    remaining = [int(i) for i in np.argsort(-scores, kind="stable")]
    order, explored, propensity = [], [], []
    for _ in range(min(k, len(remaining))):
        m, best = len(remaining), remaining[0]
        pick = remaining[int(rng.integers(m))] if rng.random() < epsilon else best
        order.append(pick)
        explored.append(pick != best)
        propensity.append((1 - epsilon) + epsilon / m if pick == best else epsilon / m)
        remaining.remove(pick)
    return Slate(order, explored, propensity, shown_probabilities(scores, k, epsilon, order).tolist())
