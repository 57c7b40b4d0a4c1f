"""Non-LLM baselines that score `Case`s, for the evaluation table.

Each returns one float per case in input order (higher = more likely "Yes"), so its output goes
straight into `adaptrec.metrics.compute_classification`. All share the signature
`(cases, item_popularity)` so `BASELINES` can be looped over; baselines that ignore
popularity accept and ignore it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from .data.records import Case

__all__ = ["like_ratio_scores", "popularity_scores", "BASELINES"]


def like_ratio_scores(cases: Iterable[Case], item_popularity: Mapping[str, float] | None = None) -> np.ndarray:
    """Share of liked items in each case's history (0.5 for an empty history).

    A user who liked most of what they saw is predicted to like the target too. Many ties
    (e.g. all-positive Amazon histories all score 1.0); AUC gives ties half credit.
    `item_popularity` is ignored (present only for the shared signature).
    """
    out = []
    for case in cases:
        ratio = case.like_ratio
        out.append(0.5 if ratio is None else float(ratio))
    return np.asarray(out, dtype=np.float64)


def popularity_scores(cases: Iterable[Case], item_popularity: Mapping[str, float]) -> np.ndarray:
    """`item_popularity[case.target]` for each case; targets not in the mapping score 0.

    The mapping is keyed exactly like `case.target` (the target string as the prompt shows it,
    quirks such as extra quotes included); build it from the training split only.
    """
    if item_popularity is None:
        raise ValueError("popularity_scores needs an item_popularity mapping (target -> popularity)")
    return np.asarray([float(item_popularity.get(case.target, 0.0)) for case in cases], dtype=np.float64)


BASELINES: dict[str, Callable[[Iterable[Case], Mapping[str, float]], np.ndarray]] = {
    "like_ratio": like_ratio_scores,
    "popularity": popularity_scores,
}
