"""Collaborative encoders and feature models, user-clustered bootstrap, MovieLens ids and leakage rules."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from data_markers import needs_ml100k

from adaptrec.cf.features import PRIOR, ItemStats, feature_matrix, fit_feature_model
from adaptrec.cf.mf import MFSettings, train_mf_bias
from adaptrec.data.records import Case, HistoryItem
from adaptrec.metrics import auc, bootstrap_ci, compute_classification


def test_clustered_bootstrap_resamples_whole_users():
    labels, scores = np.array([0, 1, 0, 1, 1, 0]), np.array([0.1, 0.9, 0.2, 0.4, 0.8, 0.6])
    with pytest.raises(ValueError, match="at least 2 clusters"):  # every resample would be the same user
        bootstrap_ci(auc, labels, scores, clusters=["u"] * 6)
    two_users = bootstrap_ci(auc, labels, scores, clusters=["u", "u", "u", "v", "v", "v"])
    assert two_users.low <= auc(labels, scores) <= two_users.high
    by_case = bootstrap_ci(auc, labels, scores)
    assert by_case.high - by_case.low > 0
    with pytest.raises(ValueError, match="one label per row"):
        bootstrap_ci(auc, labels, scores, clusters=["u"])


def test_few_users_give_wider_intervals_than_cases():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(8), 50)
    user_effect = rng.normal(size=8)[users]  # scores share a per-user shift: cases of one user are not independent
    labels = (rng.random(400) < 0.5).astype(int)
    scores = labels * 0.3 + user_effect + rng.normal(scale=0.5, size=400)
    clustered = compute_classification(["auc"], labels, scores, clusters=list(users))["auc"]
    cases = compute_classification(["auc"], labels, scores)["auc"]
    assert clustered.ci_high - clustered.ci_low > cases.ci_high - cases.ci_low


def test_mf_bias_learns_a_planted_preference_and_scores_unknown_ids():
    rng = np.random.default_rng(0)
    taste, kind = rng.integers(0, 2, 60), rng.integers(0, 2, 40)  # users like items of their kind
    pairs = [(u, i) for u in range(60) for i in range(40) if rng.random() < 0.5]
    pairs = [pairs[k] for k in rng.permutation(len(pairs))]  # every user and item in both parts
    train, test = pairs[: int(len(pairs) * 0.8)], pairs[int(len(pairs) * 0.8):]
    label = {p: int(taste[p[0]] == kind[p[1]]) for p in pairs}
    model = train_mf_bias([str(u) for u, _ in train], [str(i) for _, i in train], [label[p] for p in train],
                          MFSettings(dim=8, epochs=200, lr=0.05))
    scores = model.score([str(u) for u, _ in test], [str(i) for _, i in test])
    assert auc(np.array([label[p] for p in test]), scores) > 0.9
    unknown = model.score(["nobody", "nobody"], ["0", "1"])
    assert np.isfinite(unknown).all() and unknown[0] != unknown[1]  # item biases still apply


def _case(user: str, target: str, label: int, liked: list[bool]) -> Case:
    history = tuple(HistoryItem(f'"h{i}"', liked=x) for i, x in enumerate(liked))
    return Case(user, "movie", "movie", history, f'"{target}"', label=label, target_id=target)


def test_feature_model_leaves_each_case_out_of_its_own_item_statistics():
    stats = ItemStats.of([("u1", "a", True), ("u2", "b", False), ("u3", "b", True)])
    own = _case("u1", "a", 1, [True, False])
    (ratio, rate, pop), = feature_matrix([own], stats, leave_one_out=True)
    assert ratio == 0.5 and rate == pytest.approx(stats.global_rate) and pop == 0.0  # 'a' has no other rating
    (_, rate_in, _), = feature_matrix([own], stats)
    assert rate_in == pytest.approx((1 + PRIOR * stats.global_rate) / (1 + PRIOR))
    other = _case("u9", "b", 1, [True])  # not a rating in the statistics: nothing to leave out
    np.testing.assert_allclose(feature_matrix([other], stats, leave_one_out=True), feature_matrix([other], stats))


def test_feature_model_ranks_by_item_like_rate():
    ratings = [(f"u{k}", "good", True) for k in range(20)] + [(f"u{k}", "bad", k < 3) for k in range(20)]
    stats = ItemStats.of(ratings)
    train = [_case(f"u{k}", "good", 1, [True, False]) for k in range(20)] + \
            [_case(f"u{k}", "bad", int(k < 3), [True, False]) for k in range(20)]
    model = fit_feature_model(train, stats)
    good, bad = model.score([_case("new", "good", 1, [True]), _case("new", "bad", 0, [True])])
    assert good > bad


@needs_ml100k
def test_movielens_cases_carry_item_ids_and_encoders_never_see_held_out_pairs():
    from adaptrec.data.movielens import load_item_ids, load_movielens, training_ratings

    test, valid = load_movielens("test"), load_movielens("valid")
    assert all(c.target_id and all(h.item_id for h in c.history) for c in test)
    assert len({c.user_id for c in test}) == 16
    seen = {(f"ml100k-{r.user}", r.item) for r in training_ratings()}
    held_out = {(c.user_id, c.target_id) for c in test + valid}
    shown = {(c.user_id, h.item_id) for c in test + valid for h in c.history}
    assert not held_out & seen and not shown & seen
    assert 90_000 < len(seen) < 100_000 and len(load_item_ids()) == 1682


HELD_OUT_SPECS = {"movielens:100k": ["movielens:100k:valid", "movielens:100k:test"],
                  "movielens:100k:loo": ["movielens:100k:loo:valid", "movielens:100k:loo:test"],
                  "amazon": [f"amazon:{d}:{p}" for d in ("arts", "office") for p in ("valid", "test")]}


@pytest.mark.parametrize("source", list(HELD_OUT_SPECS))
def test_no_held_out_pair_reaches_the_data_every_encoder_is_fitted_on(source):
    """At the one entry point every encoder is fitted through (`fit_encoder` reads `source_ratings`): no (user,
    item) pair of the source's valid or test cases, held-out item or sampled negative, is among its rows."""
    from adaptrec.cf.fit import HELD_OUT, SOURCES, scores_spec, source_ratings
    from adaptrec.data.spec import load_spec
    from adaptrec.home import data_root

    if source == "amazon" and not (data_root() / "amazon_arts_office").is_dir():
        pytest.skip(f"no Amazon Arts-Office data under {data_root()}")
    if source.startswith("movielens") and importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole (MovieLens-100K) not installed")
    assert set(HELD_OUT_SPECS) == set(SOURCES) and all(scores_spec(source, s) for s in HELD_OUT_SPECS[source])
    rows = {(user, item) for user, item, _ in source_ratings(source).rows}
    held_out = {(c.user_id, c.target_id) for spec in HELD_OUT_SPECS[source] for c in load_spec(spec).cases}
    assert rows and held_out and not rows & held_out, HELD_OUT[source]


def test_an_encoders_validation_counts_users_and_their_lists_apart():
    """(was: "users" counted candidate lists, so a user with two held-out items counted twice)"""
    import numpy as np

    from adaptrec.cf.evaluate import _ranked
    from adaptrec.data.candidates import CandidateList

    class Stub:
        def score_lists(self, users, histories, candidates):
            return [np.arange(len(c), dtype=float)[::-1] for c in candidates]  # the first candidate scores highest

    lists = [CandidateList("u1", "arts", "a", ("a", "b")), CandidateList("u1", "arts", "c", ("d", "c")),
             CandidateList("u2", "arts", "e", ("e", "f"))]
    out = _ranked(Stub(), lists, {"u1": [], "u2": []}, "")
    assert out["users"] == 2 and out["lists"] == 3 and out["hr@10"] == 1.0
