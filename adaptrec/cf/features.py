"""A logistic regression on three classic features: the user's like-ratio, the target's like-rate and its
popularity among the training ratings — the strongest non-LLM row on TALLRec movie.

The item statistics come from the same interactions an encoder may learn from; a training case's own
rating is taken out of its target's statistics (leave-one-out), so the model never learns from a feature
that contains its label.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from adaptrec.data.records import Case

FEATURES = ("like_ratio", "item_like_rate", "log_popularity")
PRIOR = 2.0  # pseudo-ratings pulling a rarely rated item's like-rate to the global rate
TRAINING_CASES = {"movielens:100k": "movielens:100k:train"}  # labelled sources: the cases the regression fits on


@dataclass
class ItemStats:
    """Likes and ratings per item, and the global like rate."""

    likes: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    pairs: set = field(default_factory=set)  # the (user, item) pairs counted

    @classmethod
    def of(cls, ratings: Iterable[tuple[str, str, bool]]) -> "ItemStats":
        """From (user, item, liked) ratings, user ids spelled as the cases spell them."""
        stats = cls()
        for user, item, liked in ratings:
            stats.counts[item] += 1
            stats.likes[item] += int(liked)
            stats.pairs.add((user, item))
        return stats

    @property
    def global_rate(self) -> float:
        return sum(self.likes.values()) / max(sum(self.counts.values()), 1)

    def row(self, item: str | None, own: int | None = None) -> tuple[float, float]:
        """(smoothed like-rate, log(1 + ratings)) of `item`, its own rating `own` (0/1) left out if given."""
        likes, count = self.likes.get(item, 0), self.counts.get(item, 0)
        if own is not None and count:
            likes, count = likes - own, count - 1
        return (likes + PRIOR * self.global_rate) / (count + PRIOR), float(np.log1p(count))


def feature_matrix(cases: Sequence[Case], stats: ItemStats, leave_one_out: bool = False) -> np.ndarray:
    """(N, 3): FEATURES of each case; a case without history gets the global like rate as its ratio.
    `leave_one_out`: a case whose own (user, target) rating is in `stats` has it taken out first."""
    rows = []
    for c in cases:
        ratio = c.like_ratio if c.like_ratio is not None else stats.global_rate
        own = c.label if leave_one_out and (c.user_id, c.target_id) in stats.pairs else None
        rows.append((ratio, *stats.row(c.target_id, own)))
    return np.asarray(rows, dtype=float)


@dataclass
class FeatureModel:
    """The fitted regression and the item statistics it reads."""

    stats: ItemStats
    model: LogisticRegression

    def score(self, cases: Sequence[Case]) -> np.ndarray:
        return self.model.predict_proba(feature_matrix(cases, self.stats))[:, 1]


def fit_feature_model(train: Sequence[Case], stats: ItemStats) -> FeatureModel:
    """Fit on labelled training cases (each one's own rating left out of its target's statistics)."""
    x = feature_matrix(train, stats, leave_one_out=True)
    y = np.asarray([c.label for c in train])
    return FeatureModel(stats, LogisticRegression(C=1.0, max_iter=1000).fit(x, y))


def source_feature_model(source: str) -> FeatureModel:
    """The regression of a labelled source (`TRAINING_CASES`): item statistics from the source's training ratings
    (`cf.fit.source_ratings`: no held-out pair among them), fitted on its labelled training cases."""
    from adaptrec.data.spec import load_spec

    from .fit import source_ratings

    train = [c for c in load_spec(TRAINING_CASES[source]).cases if c.label is not None]
    return fit_feature_model(train, ItemStats.of(source_ratings(source).rows))
