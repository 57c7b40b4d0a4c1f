"""Leave-one-out ranking of an encoder: the target's rank among sampled candidates and in the full catalogue."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from adaptrec.data.candidates import CandidateList
from adaptrec.metrics.ranking import ranks

from .base import Encoder


def sampled_ranks(encoder: Encoder, lists: Sequence[CandidateList], histories: Mapping[str, Sequence[str]]) -> np.ndarray:
    """1-based rank of each list's target among its candidates (ties against the target)."""
    users = [c.user_id for c in lists]
    rows = encoder.score_lists(users, [histories[u] for u in users], [c.candidates for c in lists])
    return ranks(rows, np.array([c.target_index for c in lists]))


def full_ranks(encoder: Encoder, users: Sequence[str], targets: Sequence[str], histories: Mapping[str, Sequence[str]],
               seen: Mapping[str, set[str]]) -> np.ndarray:
    """1-based rank of each user's target among every catalogue item the user has not interacted with before
    (`seen`: the user's earlier items, excluded as RecBole's full sort does); ties count against the target."""
    scores = encoder.score_catalogue(users, [histories[u] for u in users]).astype(np.float64)
    index = encoder.item_index
    out = np.empty(len(users), dtype=np.int64)
    for n, (user, target) in enumerate(zip(users, targets)):
        row = scores[n].copy()
        row[[index[i] for i in seen.get(user, ()) if i in index and i != target]] = -np.inf
        out[n] = int((row >= row[index[target]]).sum()) if target in index else len(row)
    return out
