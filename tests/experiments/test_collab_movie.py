"""experiments/collab_movie.py: the stacked row."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from experiment_modules import collab_movie


def test_a_certain_p_yes_stacks_as_a_large_finite_logit(monkeypatch):
    """(was: P(yes) exactly 0 or 1, a margin above ~37 logits in float64, gave an infinite logit, and the
    regression refused the stack)"""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    monkeypatch.setattr(collab_movie, "feature_matrix", lambda cases, stats: rng.normal(size=(len(cases), 3)))
    llm = np.where(labels == 1, 1.0, 0.0)
    scores = collab_movie.stacked(SimpleNamespace(stats=None), llm, llm[:10], list(range(40)), list(range(10)), labels)
    assert np.isfinite(scores).all() and (scores[labels[:10] == 1] > 0.5).all()
