"""The in-process Recommender: what `score` and `rank` take, and what `rank` gives back."""

from __future__ import annotations

import numpy as np
import pytest
from router_helpers import fresh_backbone, register_random

from adaptrec.errors import DataFormatError
from adaptrec.registry import Registry
from adaptrec.router.recommender import Recommender

HISTORY = ["Heat (1995)", {"title": "Fargo (1996)", "liked": False}]


@pytest.fixture
def recommender(tiny_model_dir):
    registry = Registry()
    register_random(tiny_model_dir, registry, "a", {"type": "lora", "r": 4}, seed=1, domain="movie")
    return Recommender(fresh_backbone(tiny_model_dir), registry, "a")


def test_rank_gives_back_each_candidate_as_given(recommender):
    """Two catalogue items may share a title: their ids tell them apart (was: (title, score) only, ids lost)."""
    twins = [{"title": "Heat (1995)", "item_id": "i1"}, {"title": "Heat (1995)", "item_id": "i2"}]
    candidates = [*twins, "Babe (1995)"]
    ranked = recommender.rank(HISTORY, candidates, k=3)
    assert sorted(map(str, (item for item, _ in ranked))) == sorted(map(str, candidates))
    scores = dict(zip(map(str, candidates), recommender.score(HISTORY, candidates)))
    assert [score for _, score in ranked] == pytest.approx([scores[str(item)] for item, _ in ranked], abs=1e-4)
    assert [item for item, _ in recommender.rank(HISTORY, iter(candidates), k=1)] == [ranked[0][0]]  # any iterable


def test_items_that_would_be_misread_are_refused_in_one_line(recommender):
    """A lone title was read letter by letter; {"id": ...} lost its id; k below 1 cut the list silently; a numpy
    array of candidates made `rank` raise numpy's truth-value error."""
    with pytest.raises(DataFormatError, match="items: expected a list of items, got str"):
        recommender.score(HISTORY, "Casino (1995)")
    with pytest.raises(DataFormatError, match=r"items\[0\]: unknown key 'id'"):
        recommender.rank(HISTORY, [{"title": "Casino (1995)", "id": "x"}])
    with pytest.raises(DataFormatError, match=r"items\[1\]\.item_id: expected a catalogue id \(text or an integer\), "
                                              "got 7.5"):
        recommender.score(HISTORY, ["Babe (1995)", {"title": "Ran (1985)", "item_id": 7.5}])
    for k in (0, -1, 2.0, True):
        with pytest.raises(DataFormatError, match=f"^k={k!r}: expected an integer >= 1"):
            recommender.rank(HISTORY, ["Babe (1995)"], k=k)
    array = np.array(["Babe (1995)", "Ran (1985)"])
    assert sorted(str(item) for item, _ in recommender.rank(HISTORY, array, k=np.int64(2))) == list(array)
    assert recommender.rank(HISTORY, []) == []
    titles = ["Heat (1995)", "Fargo (1996)"]  # a history takes what items take (was: a numpy array refused)
    np.testing.assert_allclose(recommender.score(np.array(titles), array), recommender.score(titles, array))
    for odd in (5, None):  # was: TypeError from list()
        with pytest.raises(DataFormatError, match="items: expected a list of items"):
            recommender.rank(HISTORY, odd)
