"""Which candidates `/v1/recommend` shows: the top k, or ε-greedy exploration with each slot's propensity logged,
so feedback also reaches items the model does not already rank first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slate:
    """The items shown, best slot first: candidate indices, whether exploration picked each, its propensity."""

    order: list[int]
    explored: list[bool]
    propensity: list[float]


def greedy(scores: np.ndarray, k: int) -> Slate:
    order = [int(i) for i in np.argsort(-scores, kind="stable")[:k]]
    return Slate(order, [False] * len(order), [1.0] * len(order))


def epsilon_greedy(scores: np.ndarray, k: int, epsilon: float, rng: np.random.Generator) -> Slate:
    """Fill each of `k` slots with the best remaining candidate, or with probability `epsilon` a uniformly drawn
    remaining one; the propensity is the probability the logging policy put that item in that slot."""
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
    return Slate(order, explored, propensity)
