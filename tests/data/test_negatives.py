import random

import pytest

from adaptrec.data.negatives import case_rng, sample_negatives
from adaptrec.errors import DataSpecError

CATALOGUE = [str(i) for i in range(200)]


@pytest.mark.parametrize("n", [5, 150])  # sparse (rejection) and dense (explicit pool) draws
def test_never_returns_a_users_item_and_draws_distinct(n):
    user = {str(i) for i in range(0, 100, 2)}
    for seed in range(50):
        got = sample_negatives(user, CATALOGUE, n, random.Random(seed))
        assert len(got) == n == len(set(got))
        assert not set(got) & user
        assert set(got) <= set(CATALOGUE)


def test_deterministic_per_seed():
    draw = lambda seed: sample_negatives({"1"}, CATALOGUE, 10, random.Random(seed))  # noqa: E731
    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert case_rng(0, "auc", "u", "t").random() == case_rng(0, "auc", "u", "t").random()
    assert case_rng(0, "auc", "u", "t").random() != case_rng(1, "auc", "u", "t").random()


def test_roughly_uniform():
    counts = {i: 0 for i in "abcd"}
    rng = random.Random(0)
    for _ in range(4000):
        counts[sample_negatives({"e"}, list("abcde"), 1, rng)[0]] += 1
    assert all(800 < c < 1200 for c in counts.values())


def test_catalogue_too_small_is_a_clear_error():
    with pytest.raises(DataSpecError, match="cannot draw 3 negatives.*only 2 items"):
        sample_negatives({"a"}, ["a", "b", "c"], 3, random.Random(0))


def test_ids_holding_a_colon_draw_apart_and_others_keep_their_draws():
    """User `shop:42` with target `7` and user `shop` with target `42:7` were keyed alike, so drew the same
    negatives; ids without a ':' keep the key every recorded draw was made with."""
    import random

    assert case_rng(0, "auc", "shop:42", "7").random() != case_rng(0, "auc", "shop", "42:7").random()
    assert case_rng(3, "loo", "u1", "i9").random() == random.Random("loo:3:u1:i9").random()
