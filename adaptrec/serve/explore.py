"""Which candidates `/v1/recommend` shows: the top k, or ε-greedy exploration with each slot's propensity and each
candidate's probability of being shown at all logged, so feedback also reaches items the model does not already rank
first and a later comparison can weight it by how likely it was to be seen."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slate:
    """The items shown, best slot first: candidate indices, whether exploration picked each, its propensity given the
    earlier slots; `shown`: every candidate's probability (candidate order) that the policy showed it in any slot."""

    order: list[int]
    explored: list[bool]
    propensity: list[float]
    shown: list[float]


def greedy(scores: np.ndarray, k: int) -> Slate:
    order = [int(i) for i in np.argsort(-scores, kind="stable")[:k]]
    shown = np.zeros(len(scores))
    shown[order] = 1.0
    return Slate(order, [False] * len(order), [1.0] * len(order), shown.tolist())


def shown_probabilities(scores: np.ndarray, k: int, epsilon: float) -> np.ndarray:
    """Each candidate's exact probability of being shown in any of the `k` slots `epsilon_greedy` fills.

    What a per-item inverse-propensity weight needs (a slot's propensity is conditional on the earlier slots). For
    the candidate ranked r-th the state is how many of the r ranked above it are still unplaced (a): a greedy slot
    takes the best of those, or it when none is left; an explored slot takes it with probability 1/(remaining), one
    above with a/(remaining), one below otherwise. All candidates at once: O(k·m²).
    """
    m = len(scores)
    state = np.eye(m)  # state[r, a]: P(the r-th ranked is unplaced and a of the r above it are too)
    above = np.arange(m)
    shown = np.zeros(m)
    for step in range(min(k, m)):
        remaining = m - step
        shown += (1 - epsilon) * state[:, 0] + epsilon * state.sum(axis=1) / remaining
        moved = state * ((1 - epsilon) * (above > 0) + epsilon * above / remaining)  # one above it placed
        stays = state * (epsilon * np.maximum(remaining - 1 - above, 0) / remaining)  # one below it placed
        state = stays + np.pad(moved[:, 1:], ((0, 0), (0, 1)))
    out = np.empty(m)
    out[np.argsort(-scores, kind="stable")] = np.minimum(shown, 1.0)
    return out


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
    return Slate(order, explored, propensity, shown_probabilities(scores, k, epsilon).tolist())
