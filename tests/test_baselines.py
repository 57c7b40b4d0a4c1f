"""Non-LLM baselines on hand-made Cases."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from adaptrec.baselines import BASELINES, like_ratio_scores, popularity_scores
from adaptrec.data.records import Case, HistoryItem
from adaptrec.metrics import auc


def _case(history_likes, target="X", label=None):
    hist = tuple(HistoryItem(text=f'"item{i}"', liked=liked) for i, liked in enumerate(history_likes))
    return Case(user_id="u", domain="movie", noun="movie", history=hist, target=target, label=label)


def test_like_ratio_scores_hand_computed():
    cases = [
        _case([True, True, False]),  # 2 liked of 3 -> 0.6667
        _case([]),  # empty history -> 0.5
        _case([False, False]),  # 0 of 2 -> 0.0
        _case([True]),  # 1 of 1 -> 1.0
    ]
    assert like_ratio_scores(cases, {}).tolist() == pytest.approx([2 / 3, 0.5, 0.0, 1.0])
    # the popularity argument is optional for this baseline
    assert like_ratio_scores(cases).tolist() == pytest.approx([2 / 3, 0.5, 0.0, 1.0])


def test_popularity_scores_look_up_target_string_and_default_to_zero():
    pop = {'"Heat"': 3.0, "Up": 1.0}
    cases = [_case([True], target='"Heat"'), _case([True], target="Up"), _case([True], target="Unknown")]
    assert popularity_scores(cases, pop).tolist() == [3.0, 1.0, 0.0]
    # the key is the target exactly as written: the unquoted title is a different item
    assert popularity_scores([_case([True], target="Heat")], pop).tolist() == [0.0]


def test_popularity_requires_a_mapping():
    with pytest.raises(ValueError, match="item_popularity"):
        popularity_scores([_case([True])], None)


def test_baselines_mapping_shares_one_signature():
    assert set(BASELINES) == {"like_ratio", "popularity"}
    cases = [_case([True, False], target="Up"), _case([], target="Down")]
    pop = {"Up": 2.0}
    for name, fn in BASELINES.items():
        params = list(inspect.signature(fn).parameters)
        assert params[:2] == ["cases", "item_popularity"], name
        scores = fn(cases, pop)
        assert isinstance(scores, np.ndarray) and scores.shape == (2,), name
    assert BASELINES["popularity"](cases, pop).tolist() == [2.0, 0.0]
    assert BASELINES["like_ratio"](cases, pop).tolist() == [0.5, 0.5]


def test_like_ratio_feeds_auc():
    # positives have like ratios 1.0 and 0.5 ; negatives 0.0 and 0.5
    # pairs: 1>0 (1), 1>0.5 (1), 0.5>0 (1), 0.5 tie 0.5 (0.5) -> 3.5/4 = 0.875
    cases = [
        _case([True, True], label=1),
        _case([True, False], label=1),
        _case([False, False], label=0),
        _case([], label=0),
    ]
    labels = [c.label for c in cases]
    assert auc(labels, like_ratio_scores(cases, {})) == pytest.approx(0.875)
