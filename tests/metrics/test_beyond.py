"""Beyond-accuracy metrics on hand-computed cases (RecBole's definitions)."""

import numpy as np
import pytest

from adaptrec.metrics.beyond import (
    activity_buckets,
    averagepopularity,
    by_group,
    diversity,
    giniindex,
    group_gap,
    group_means,
    itemcoverage,
    top_k,
)

LISTS = np.array([["a", "b"], ["a", "c"]], dtype=object)


def test_itemcoverage_and_averagepopularity():
    assert itemcoverage(LISTS, 5) == pytest.approx(3 / 5)
    assert averagepopularity(LISTS, {"a": 10, "b": 2, "c": 4}) == pytest.approx((6 + 7) / 2)
    assert averagepopularity(np.array([["z", "a"]], dtype=object), {"a": 4}) == pytest.approx(2.0)  # unseen: 0


def test_giniindex_is_zero_for_even_exposure_and_maximal_for_one_item():
    assert giniindex(np.array([["a", "b", "c"]], dtype=object), 3) == pytest.approx(0.0)
    assert giniindex(np.array([["a"], ["a"]], dtype=object), 4) == pytest.approx(3 / 4)  # (n - 1) / n
    assert 0 < giniindex(LISTS, 3) < 3 / 4


def test_diversity_is_mean_pairwise_cosine_distance():
    same = {"a": np.array([1.0, 0]), "b": np.array([2.0, 0])}
    orth = {"a": np.array([1.0, 0]), "b": np.array([0, 3.0]), "c": np.array([-1.0, 0])}
    assert diversity(np.array([["a", "b"]], dtype=object), same) == pytest.approx(0.0)
    assert diversity(np.array([["a", "b"]], dtype=object), orth) == pytest.approx(1.0)
    assert diversity(np.array([["a", "b", "c"]], dtype=object), orth) == pytest.approx((1 + 2 + 1) / 3)


def test_top_k_orders_by_score_and_groups_average_per_user_values():
    assert top_k([["x", "y", "z"]], [np.array([0.1, 0.9, 0.9])], 2) == [["y", "z"]]
    assert activity_buckets([1, 5, 19, 20]) == ["<5", "5-19", "5-19", ">=20"]
    assert by_group(np.array([1.0, 0.0, 0.5]), ["cold", "warm", "cold"]) == {"cold": 0.75, "warm": 0.0}


def test_the_gap_reports_the_resamples_it_had_to_skip():
    """A resample without a cold user has no gap; the CI comes from the others, and the report says how many."""
    values = np.array([1.0] + [0.0] * 49)
    cold = np.arange(50) == 0
    gap = group_gap(values, cold, ~cold, clusters=[f"u{i}" for i in range(50)])
    assert gap.value == 1.0 and gap.ci_skipped > 100


def test_more_distinct_items_than_the_catalogue_is_refused():
    """Gini came out negative (-0.5) and coverage above 1 for lists naming more items than `num_items`."""
    with pytest.raises(ValueError, match="3 distinct items, more than the catalogue's 2"):
        giniindex([["a", "b", "c"]], 2)
    with pytest.raises(ValueError, match="more than the catalogue"):
        itemcoverage([["a", "b", "c"]], 2)


def test_a_zero_length_embedding_is_refused_not_nan():
    """One zero vector turned the whole diversity into NaN."""
    with pytest.raises(ValueError, match="zero-length embedding"):
        diversity([["a", "b"]], {"a": np.zeros(3), "b": np.ones(3)})


@pytest.mark.parametrize("call, needle", [
    (lambda: averagepopularity([[], ["a"]], {"a": 1}), "no empty one"),  # was: NaN for the whole set
    (lambda: giniindex([], 10), "at least one list"),  # was: NaN (0 / 0)
    (lambda: itemcoverage([["a"], []], 10), "no empty one"),
    (lambda: diversity([["a", "b"]], {"a": np.ones(3)}), "item 'b' has no embedding"),  # was: KeyError: 'b'
    (lambda: diversity([["a"], ["b"]], {"a": np.ones(3), "b": np.ones(3)}), "at least 2 items"),  # was: NaN
    (lambda: diversity([[]], {}), "at least 2 items")])  # was: numpy's "need at least one array to stack"
def test_empty_lists_and_missing_embeddings_are_one_error_not_nan(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()


def test_a_group_of_one_user_has_its_mean_without_a_ci():
    """One user resamples to itself: no interval rather than a zero-width one that reads as certainty."""
    values = np.array([1.0, 0.0, 1.0, 0.5])
    users = ["u1", "u1", "u2", "u3"]
    groups = {"one": np.array([True, True, False, False]), "two": np.array([False, True, True, True])}
    means = group_means(values, groups, clusters=users)
    assert means["one"].value == 0.5 and means["one"].ci_low is None and means["one"].n == 2
    assert means["two"].ci_low is not None
