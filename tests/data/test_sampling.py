import numpy as np
import pytest

from adaptrec.data.records import Case
from adaptrec.data.sampling import few_shot, stratified_subset
from adaptrec.errors import DataSpecError


def cases(n=1000, yes_every=3):
    return [Case(user_id=str(i), domain="movie", noun="movie", history=(), target=f'"{i}"',
                 label=int(i % yes_every == 0)) for i in range(n)]


def test_stratified_subset_keeps_share_order_and_seed():
    data = cases()  # 334 Yes of 1000
    sub = stratified_subset(data, 100, seed=0)
    assert len(sub) == 100 and sum(c.label for c in sub) == 33
    idx = [int(c.user_id) for c in sub]
    assert idx == sorted(idx)
    assert sub == stratified_subset(data, 100, seed=0) != stratified_subset(data, 100, seed=1)
    assert stratified_subset(data, 5000, seed=0) == data
    odd = stratified_subset(data, 7, seed=0)
    assert len(odd) == 7 and sum(c.label for c in odd) == 2  # 7 * 0.334 = 2.3


def test_few_shot_matches_tallrecs_datasets_draw():
    data = cases(500)
    got = [int(c.user_id) for c in few_shot(data, 16, seed=42)]
    # datasets' Dataset.shuffle(seed) is np.random.default_rng(seed).permutation; upstream shuffles,
    # selects the first `shots`, then shuffles again with the same seed
    first = np.random.default_rng(42).permutation(500)[:16]
    assert got == [int(i) for i in first[np.random.default_rng(42).permutation(16)]]
    assert len(few_shot(data, -1, seed=0)) == 500
    with pytest.raises(DataSpecError, match="501 shots"):
        few_shot(data, 501, seed=0)
