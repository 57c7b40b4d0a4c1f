"""Metrics against hand-computed values (arithmetic in comments) and scikit-learn as an oracle."""

from __future__ import annotations

import math
import re
import socket

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from adaptrec.metrics import (
    MetricValue,
    accuracy,
    auc,
    bootstrap_ci,
    compute_classification,
    compute_ranking,
    hit_at_k,
    log_loss,
    mrr_at_k,
    ndcg_at_k,
    paired_difference,
    parse_metric_name,
    ranks,
)

# ----------------------------------------------------------------------------- classification


def test_auc_hand_computed_with_tie():
    # positives: 0.9, 0.4 ; negatives: 0.1, 0.4
    # pairs: (0.9>0.1)=1, (0.9>0.4)=1, (0.4>0.1)=1, (0.4 tie 0.4)=0.5 -> 3.5 / 4 = 0.875
    assert auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)


def test_auc_extremes_and_constant_scorer():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.0)
    # every pair is a tie -> half credit each -> 0.5
    assert auc([1, 0, 1, 0, 0], [0.7] * 5) == pytest.approx(0.5)
    # booleans are labels too
    assert auc(np.array([True, False]), [0.2, 0.1]) == pytest.approx(1.0)


def test_auc_single_class_raises_clear_error():
    with pytest.raises(ValueError, match="only one class"):
        auc([1, 1, 1], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="only one class"):
        auc([0, 0], [0.1, 0.5])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auc_matches_sklearn_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 400
    y = rng.integers(0, 2, size=n)
    # rounding to 1 decimal creates many ties; the signal makes AUC far from 0.5
    s = np.round(rng.normal(size=n) + 0.8 * y, 1)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_accuracy_threshold_is_inclusive():
    # preds (s >= 0.5): [1, 0, 0, 1] vs labels [1, 0, 1, 0] -> correct T,T,F,F -> 0.5
    assert accuracy([1, 0, 1, 0], [0.5, 0.49, 0.2, 0.8]) == pytest.approx(0.5)
    # threshold 0.1: preds [1, 1, 1, 1] -> correct only where label 1 -> 2/4
    assert accuracy([1, 0, 1, 0], [0.5, 0.49, 0.2, 0.8], threshold=0.1) == pytest.approx(0.5)
    # threshold 0.9: preds all 0 -> correct where label 0 -> 2/4; with labels [0,0,0,1] -> 3/4
    assert accuracy([0, 0, 0, 1], [0.5, 0.49, 0.2, 0.8], threshold=0.9) == pytest.approx(0.75)


def test_accuracy_refuses_logits():
    """A logit's threshold is 0: [2, -3, 0.3, -0.1] scored 0.75 against the 0.5 threshold (1.0 as probabilities)."""
    with pytest.raises(ValueError, match="accuracy needs probabilities in \\[0, 1\\]"):
        accuracy([1, 0, 1, 0], [2, -3, 0.3, -0.1])


def test_log_loss_hand_computed_and_clipping():
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231436 + 0.5108256) / 2 = 0.3669846
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(0.3669846, abs=1e-6)
    # p = 1 for a negative is clipped to 1 - 1e-7: -ln(1e-7) = 16.1181
    assert log_loss([0], [1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert log_loss([0], [1.0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_log_loss_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=300)
    p = rng.uniform(0.01, 0.99, size=300)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-9)


def test_classification_input_validation():
    with pytest.raises(ValueError, match="probabilities"):
        log_loss([1, 0], [1.5, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        auc([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        accuracy([1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([1, 0], [np.nan, 0.2])


# ----------------------------------------------------------------------------- ranking

# Hand-made candidate lists (higher score = better), one ragged row:
#   row 0: [0.1, 0.9, 0.3], target 1 -> nothing above            -> rank 1
#   row 1: [0.5, 0.2, 0.7], target 0 -> 0.7 above                 -> rank 2
#   row 2: [0.3, 0.3, 0.3], target 2 -> two ties, pessimistic     -> rank 3
#   row 3: [0.4, 0.8, 0.4, 0.1], target 0 -> 0.8 above + 1 tie    -> rank 3
ROWS = [[0.1, 0.9, 0.3], [0.5, 0.2, 0.7], [0.3, 0.3, 0.3], [0.4, 0.8, 0.4, 0.1]]
TARGETS = [1, 0, 2, 0]


def test_ranks_pessimistic_ties_and_ragged_rows():
    assert ranks(ROWS, TARGETS).tolist() == [1, 2, 3, 3]


def test_ranks_same_for_matrix_and_list_input():
    mat = np.array(ROWS[:3])
    assert ranks(mat, TARGETS[:3]).tolist() == ranks([list(r) for r in ROWS[:3]], TARGETS[:3]).tolist() == [1, 2, 3]


def test_hit_ndcg_mrr_hand_computed():
    # ranks = [1, 2, 3, 3]
    assert hit_at_k(ROWS, TARGETS, 1) == pytest.approx(1 / 4)
    assert hit_at_k(ROWS, TARGETS, 2) == pytest.approx(2 / 4)
    assert hit_at_k(ROWS, TARGETS, 3) == pytest.approx(4 / 4)
    # ndcg@2 = (1/log2(2) + 1/log2(3) + 0 + 0) / 4 = (1 + 0.6309298) / 4 = 0.4077324
    assert ndcg_at_k(ROWS, TARGETS, 2) == pytest.approx(0.4077324, abs=1e-6)
    # ndcg@3 = (1 + 0.6309298 + 1/log2(4) + 1/log2(4)) / 4 = 2.6309298 / 4 = 0.6577324
    assert ndcg_at_k(ROWS, TARGETS, 3) == pytest.approx(0.6577324, abs=1e-6)
    # mrr@2 = (1 + 1/2 + 0 + 0) / 4 = 0.375 ; mrr@3 = (1 + 1/2 + 1/3 + 1/3) / 4 = 0.5416667
    assert mrr_at_k(ROWS, TARGETS, 2) == pytest.approx(0.375)
    assert mrr_at_k(ROWS, TARGETS, 3) == pytest.approx(0.5416667, abs=1e-6)


def test_constant_scorer_gets_worst_rank_not_best():
    # 5 candidates all scored 0: pessimistic ties put the target last (rank 5)
    rows = np.zeros((3, 5))
    assert ranks(rows, [0, 2, 4]).tolist() == [5, 5, 5]
    assert hit_at_k(rows, [0, 2, 4], 1) == 0.0
    assert ndcg_at_k(rows, [0, 2, 4], 4) == 0.0
    # at k = 5: 1/log2(6) = 0.3868528
    assert ndcg_at_k(rows, [0, 2, 4], 5) == pytest.approx(0.3868528, abs=1e-6)


def test_ranks_match_bruteforce_sort_on_random_integer_scores():
    rng = np.random.default_rng(7)
    mat = rng.integers(0, 4, size=(200, 8)).astype(float)  # small range -> many ties
    tgt = rng.integers(0, 8, size=200)
    expected = []
    for row, t in zip(mat, tgt):
        # sort by score descending; among ties put the target last (pessimistic)
        order = sorted(range(len(row)), key=lambda j: (-row[j], j == t))
        expected.append(order.index(t) + 1)
    assert ranks(mat, tgt).tolist() == expected


def test_ranking_input_validation():
    with pytest.raises(ValueError, match="outside row"):
        ranks([[0.1, 0.2]], [2])
    with pytest.raises(ValueError, match="outside row"):
        ranks([[0.1, 0.2], [0.3, 0.4, 0.5]], [0, -1])
    with pytest.raises(ValueError, match="one entry per score row"):
        ranks([[0.1, 0.2]], [0, 1])
    with pytest.raises(ValueError, match="positive integer"):
        hit_at_k(ROWS, TARGETS, 0)
    with pytest.raises(ValueError, match="NaN"):
        ranks([[np.nan, 0.2]], [1])
    with pytest.raises(ValueError, match="integer indices, got True"):  # was: read as indices 0 and 1
        ranks([[0.1, 0.2], [0.3, 0.4]], [True, False])
    with pytest.raises(ValueError, match="integer indices, got 'a'"):  # was: numpy's ufunc TypeError
        ranks([[0.1, 0.2]], ["a"])
    assert ranks([[0.1, 0.2]], np.array([1], dtype=object)).tolist() == [1]  # an object column of ints
    assert ranks([[0.1, 0.2]], np.array([np.int64(1)], dtype=object)).tolist() == [1]  # of numpy's (was: refused)
    with pytest.raises(ValueError, match="integer indices"):
        ranks([[0.1, 0.2]], np.array([np.True_], dtype=object))
    with pytest.raises(ValueError, match="1 labels for 3 rows"):  # was: the value with no CI, without a word
        compute_ranking("hit@1", [[0.1, 0.2]] * 3, [0, 1, 1], clusters=["u"])
    with pytest.raises(ValueError, match="1 labels for 3 rows"):  # AUC too (was: numpy's IndexError)
        compute_classification("auc", [0, 1, 1], [0.1, 0.2, 0.3], clusters=["u"])


# ----------------------------------------------------------------------------- bootstrap


def _signal_data(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    s = rng.normal(size=n) + y
    return y, s


def test_bootstrap_ci_contains_point_estimate():
    y, s = _signal_data(500)
    low, high = bootstrap_ci(auc, y, s, n_resamples=300)
    assert low < auc(y, s) < high
    assert 0.5 < low  # the signal is strong enough that the CI excludes chance


def test_bootstrap_is_deterministic_per_seed():
    y, s = _signal_data(200)
    a = bootstrap_ci(auc, y, s, n_resamples=200, seed=3)
    b = bootstrap_ci(auc, y, s, n_resamples=200, seed=3)
    c = bootstrap_ci(auc, y, s, n_resamples=200, seed=4)
    assert tuple(a) == tuple(b)
    assert tuple(a) != tuple(c)


def test_bootstrap_ci_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = (rng.random(100) < 0.3).astype(float)
    big = (rng.random(2000) < 0.3).astype(float)
    lo_s, hi_s = bootstrap_ci(np.mean, small, n_resamples=500)
    lo_b, hi_b = bootstrap_ci(np.mean, big, n_resamples=500)
    # width ~ 1/sqrt(n): expected ratio sqrt(20) ~ 4.5
    assert (hi_b - lo_b) < 0.5 * (hi_s - lo_s)


def test_bootstrap_width_matches_normal_theory():
    # mean of 2000 Bernoulli(0.3): sd of the mean = sqrt(0.21 / 2000) = 0.010247
    # 95% width ~ 2 * 1.96 * 0.010247 = 0.04017
    rng = np.random.default_rng(1)
    x = (rng.random(2000) < 0.3).astype(float)
    lo, hi = bootstrap_ci(np.mean, x, n_resamples=1000)
    expected = 2 * 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert (hi - lo) == pytest.approx(expected, rel=0.15)
    # a 50% interval is much narrower (z = 0.674 instead of 1.96)
    lo50, hi50 = bootstrap_ci(np.mean, x, n_resamples=1000, alpha=0.5)
    assert (hi50 - lo50) == pytest.approx(expected * 0.674 / 1.96, rel=0.2)


def test_bootstrap_resamples_rows_jointly():
    a = np.arange(50)
    b = [2 * i for i in range(50)]  # a plain list is resampled with the same indices

    def paired(x, y):
        assert list(np.asarray(y)) == [2 * v for v in x], "rows were not resampled jointly"
        return float(np.mean(x))

    bootstrap_ci(paired, a, b, n_resamples=20)


def test_bootstrap_handles_ragged_rows():
    rows = [[0.1, 0.9], [0.5, 0.2, 0.7], [0.3, 0.3, 0.3, 0.1]] * 10
    tgt = [1, 0, 2] * 10
    low, high = bootstrap_ci(lambda r, t: hit_at_k(r, t, 1), rows, tgt, n_resamples=50)
    assert 0.0 <= low <= 1 / 3 <= high <= 1.0


def test_bootstrap_skips_and_counts_undefined_resamples():
    # 1 positive in 10: P(resample has no positive) = 0.9^10 ~ 0.35 -> many AUC-undefined resamples
    y = np.array([1] + [0] * 9)
    s = np.linspace(1, 0, 10)
    res = bootstrap_ci(auc, y, s, n_resamples=200)
    assert 30 < res.skipped < 120
    assert res.n_resamples == 200
    lo, hi = res  # still unpacks as a pair
    assert lo <= hi

    def always_undefined(x):
        raise ValueError("undefined")

    with pytest.raises(ValueError, match="undefined on all"):
        bootstrap_ci(always_undefined, y, n_resamples=5)


def test_bootstrap_refuses_one_cluster_or_row_instead_of_a_zero_width_interval():
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.3])
    with pytest.raises(ValueError, match="at least 2 clusters"):
        bootstrap_ci(auc, y, s, clusters=["u1"] * 4)
    with pytest.raises(ValueError, match="at least 2 rows"):
        bootstrap_ci(np.mean, [0.5])
    assert bootstrap_ci(auc, y, s, clusters=["u1", "u1", "u2", "u2"], n_resamples=50).n_resamples == 50


def test_metrics_of_one_user_or_case_carry_no_ci():
    one_user = compute_classification(["auc"], [0, 1, 0, 1], [0.1, 0.9, 0.4, 0.3], clusters=["u1"] * 4)["auc"]
    assert one_user.value == pytest.approx(0.75) and one_user.ci_low is None and one_user.ci_high is None
    assert one_user.format() == "0.750"
    one_case = compute_ranking(["hit@1"], [[0.9, 0.1]], [0])["hit@1"]
    assert one_case.value == 1.0 and one_case.ci_low is None
    gap = paired_difference("auc", [0, 1, 0, 1], [0.1, 0.9, 0.4, 0.3], [0.9, 0.1, 0.4, 0.3], clusters=["u1"] * 4)
    assert gap.value == pytest.approx(0.75 - 0.0) and gap.ci_low is None
    two_users = compute_classification(["auc"], [0, 1, 0, 1], [0.1, 0.9, 0.4, 0.3], clusters=["u1", "u1", "u2", "u2"])
    assert two_users["auc"].ci_low is not None


def test_bootstrap_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same number of rows"):
        bootstrap_ci(auc, [0, 1, 1], [0.1, 0.2])


# ----------------------------------------------------------------------------- named metrics


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "ndcg@k", "recall@10", "precision", "hit@-1", "auc@5", ""])
def test_unknown_metric_names_list_valid_forms(bad):
    with pytest.raises(ValueError, match=re.escape("hit@K")) as info:
        parse_metric_name(bad)
    assert "auc" in str(info.value) and "ndcg@K" in str(info.value)


def test_parse_metric_name_forms():
    assert parse_metric_name("auc") == ("auc", None)
    assert parse_metric_name("NDCG@10") == ("ndcg", 10)
    assert parse_metric_name("hit@1") == ("hit", 1)
    assert parse_metric_name("mrr@250") == ("mrr", 250)


def test_metric_value_format():
    assert MetricValue(0.7314, 0.7, 0.76, n=10).format() == "0.731 [0.700, 0.760]"
    assert MetricValue(0.7314, n=10).format() == "0.731"
    assert MetricValue(0.7314, 0.7, 0.76, n=10).format(digits=2) == "0.73 [0.70, 0.76]"


def test_compute_classification_values_and_cis():
    y, s = _signal_data(300)
    res = compute_classification(["auc", "accuracy", "log_loss"], y, 1 / (1 + np.exp(-s)), n_resamples=200)
    p = 1 / (1 + np.exp(-s))
    assert res["auc"].value == pytest.approx(auc(y, p))
    assert res["accuracy"].value == pytest.approx(accuracy(y, p))
    assert res["log_loss"].value == pytest.approx(log_loss(y, p))
    for v in res.values():
        assert v.n == 300
        assert v.ci_low < v.value < v.ci_high
    assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", res["auc"].format())
    # same seed -> same intervals
    again = compute_classification("auc", y, p, n_resamples=200)
    assert again["auc"] == res["auc"]


def test_compute_without_ci():
    res = compute_classification(["auc"], [1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4], ci=False)
    assert res["auc"] == MetricValue(0.875, None, None, n=4)
    assert res["auc"].format() == "0.875"


def test_compute_ranking_matches_hand_values_and_keeps_given_names():
    res = compute_ranking(["hit@2", "NDCG@3", "mrr@3"], ROWS * 10, TARGETS * 10, n_resamples=200)
    assert set(res) == {"hit@2", "NDCG@3", "mrr@3"}
    assert res["hit@2"].value == pytest.approx(0.5)
    assert res["NDCG@3"].value == pytest.approx(0.6577324, abs=1e-6)
    assert res["mrr@3"].value == pytest.approx(0.5416667, abs=1e-6)
    assert res["hit@2"].n == 40
    for v in res.values():
        assert v.ci_low <= v.value <= v.ci_high


def test_compute_rejects_wrong_family_and_unknown_names():
    with pytest.raises(ValueError, match="compute_ranking"):
        compute_classification(["ndcg@10"], [1, 0], [0.5, 0.4])
    with pytest.raises(ValueError, match="compute_classification"):
        compute_ranking(["auc"], ROWS, TARGETS)
    with pytest.raises(ValueError, match="valid forms"):
        compute_ranking(["recall@10"], ROWS, TARGETS)


# ----------------------------------------------------------------------------- evaluate wrappers


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_evaluate_auc_module_matches_plain_function(tmp_path, no_network):
    pytest.importorskip("evaluate")  # the optional extra `metrics`
    from adaptrec.metrics.evaluate_modules import AdaptrecAUC

    y, s = _signal_data(120)
    metric = AdaptrecAUC(cache_dir=str(tmp_path))
    assert metric.compute(predictions=s.tolist(), references=y.tolist()) == {"auc": pytest.approx(auc(y, s))}
    # streaming with add_batch gives the same answer
    metric.add_batch(predictions=s[:60].tolist(), references=y[:60].tolist())
    metric.add_batch(predictions=s[60:].tolist(), references=y[60:].tolist())
    assert metric.compute()["auc"] == pytest.approx(auc(y, s))


def test_evaluate_ranking_module_matches_plain_functions(tmp_path, no_network):
    pytest.importorskip("evaluate")  # the optional extra `metrics`
    from adaptrec.metrics.evaluate_modules import AdaptrecRanking

    metric = AdaptrecRanking(cache_dir=str(tmp_path))
    out = metric.compute(predictions=ROWS, references=TARGETS, metrics=["hit@2", "ndcg@3", "mrr@3"])
    assert out == {
        "hit@2": pytest.approx(hit_at_k(ROWS, TARGETS, 2)),
        "ndcg@3": pytest.approx(ndcg_at_k(ROWS, TARGETS, 3)),
        "mrr@3": pytest.approx(mrr_at_k(ROWS, TARGETS, 3)),
    }
    assert out["ndcg@3"] == pytest.approx(0.6577324, abs=1e-6)
    default = metric.compute(predictions=ROWS, references=TARGETS)
    assert set(default) == {"hit@10", "ndcg@10", "mrr@10"}
    with pytest.raises(ValueError, match="valid forms"):
        metric.compute(predictions=ROWS, references=TARGETS, metrics=["recall@5"])


def test_paired_difference_is_the_metric_gap_with_a_paired_ci():
    from adaptrec.metrics import auc, paired_difference

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    noise = rng.normal(size=300)
    a = labels + noise  # a better scorer...
    b = labels + noise + rng.normal(scale=2.0, size=300)  # ...and the same one with much extra noise
    d = paired_difference("auc", labels, a, b)
    assert d.value == pytest.approx(auc(labels, a) - auc(labels, b))
    assert 0 < d.ci_low < d.value < d.ci_high  # clearly positive: pairing removes the shared noise
    same = paired_difference("auc", labels, a, a)
    assert same.value == same.ci_low == same.ci_high == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_weighted_auc_matches_sklearn_and_weights_resample_with_their_cases(seed):
    """Inverse-propensity weights (the gate's on explored feedback): each pair counts with its weights' product."""
    from adaptrec.metrics import auc, paired_difference

    rng = np.random.default_rng(seed)
    labels, scores = rng.integers(0, 2, 60), rng.integers(0, 6, 60).astype(float)  # ties
    weights = 1 / rng.uniform(0.02, 1.0, 60)
    assert auc(labels, scores, weights) == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights))
    assert auc(labels, scores, np.full(60, 3.0)) == pytest.approx(auc(labels, scores))
    other = scores + rng.normal(size=60)
    d = paired_difference("auc", labels, scores, other, weights=weights, clusters=[i // 3 for i in range(60)])
    assert d.value == pytest.approx(auc(labels, scores, weights) - auc(labels, other, weights))
    assert d.ci_low < d.value < d.ci_high
    with pytest.raises(ValueError, match="weights must be 60 positive finite numbers"):
        auc(labels, scores, np.zeros(60))
    with pytest.raises(ValueError, match="weights are supported for auc only"):
        paired_difference("log_loss", labels, scores / 6, other / 6, weights=weights)


def test_paired_difference_refuses_what_it_cannot_compute_in_the_metrics_own_words():
    from adaptrec.metrics import paired_difference

    with pytest.raises(ValueError, match="'hit@10' is a ranking metric"):
        paired_difference("hit@10", [0, 1], [0.1, 0.9], [0.2, 0.8])
    with pytest.raises(ValueError, match="class"):  # one class: AUC's own message, not the bootstrap's
        paired_difference("auc", [1, 1, 1], [0.1, 0.5, 0.9], [0.2, 0.4, 0.8])


def test_user_auc_of_rows_of_different_lengths_counts_only_each_rows_candidates():
    from adaptrec.metrics.ranking import user_auc

    np.testing.assert_allclose(user_auc([[0.5, 0.1], [0.5, 0.1, 0.9]], [0, 0]), [1.0, 0.5])
    with pytest.raises(ValueError, match="outside row 1"):  # the padding of a shorter row is no target
        user_auc([[0.5, 0.1, 0.9], [0.7, 0.2]], [1, 2])
    with pytest.raises(ValueError, match="target alone"):
        user_auc([[0.5], [0.5, 0.1]], [0, 0])


def test_a_clustered_resample_is_the_drawn_clusters_rows_in_order():
    """The vectorised draw gives the indices the plain one did: each drawn cluster's rows, in the order drawn."""
    from adaptrec.metrics.bootstrap import _cluster_draw, _cluster_rows

    labels = ["b", "a", "b", "c", "a", "a", "d"]
    groups = _cluster_rows(labels, len(labels))
    draw, rng = _cluster_draw(groups, np.random.default_rng(3)), np.random.default_rng(3)
    for _ in range(20):
        expected = np.concatenate([groups[g] for g in rng.integers(0, len(groups), size=len(groups))])
        np.testing.assert_array_equal(draw(), expected)


def test_random_tie_metrics_are_the_mean_over_every_tie_order():
    """The expected HR/NDCG/MRR when ties are broken at random: brute force over every order of each row's
    tied candidates (`ranks` counts every tie against the target, a lower bound for rows that tie often)."""
    import itertools

    from adaptrec.metrics.ranking import hit_per_case, mrr_per_case, ndcg_per_case, random_tie_per_case, ranks

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 3, size=(30, 6)).astype(float)  # integer scores: many ties
    target = rng.integers(0, 6, size=30)
    for metric in (hit_per_case, ndcg_per_case, mrr_per_case):
        for k in (1, 3, 10):
            expected = []
            for row, t in zip(rows, target):
                values = []
                for order in itertools.permutations(range(6)):  # a random tie order: break ties by this order
                    better = [j for j in range(6) if row[j] > row[t] or (row[j] == row[t] and order[j] < order[t])]
                    values.append(metric(np.array([len(better) + 1]), k)[0])
                expected.append(np.mean(values))
            np.testing.assert_allclose(random_tie_per_case(metric, rows, target, k), expected)
            assert (random_tie_per_case(metric, rows, target, k) >= metric(ranks(rows, target), k) - 1e-12).all()


def test_a_paired_auc_difference_has_no_ci_when_one_user_holds_a_class():
    """(was: an interval from resamples that all held that user's one liked case, as the gate's superiority test
    read when called directly)"""
    from adaptrec.metrics import paired_difference
    from adaptrec.online.gate import decide

    users = [u for u in range(12) for _ in range(5)]
    labels = np.zeros(60, dtype=int)
    labels[7] = 1
    rng = np.random.default_rng(0)
    challenger, champion = rng.random(60), rng.random(60)
    challenger[7] = 0.99
    d = paired_difference("auc", labels, challenger, champion, clusters=users)
    assert d.ci_low is None and d.ci_high is None and d.value > 0
    labels[12] = 1  # a second user likes one
    assert paired_difference("auc", labels, challenger, champion, clusters=users).ci_low is not None
    labels[12] = 0
    with pytest.raises(ValueError, match="each class held by at least 2 users, got 1"):
        decide(labels, [str(u) for u in users], challenger, champion, margin=0.0)


def test_a_reliability_curve_refuses_scores_outside_its_bins():
    """(was: clipped into the end bins, reading as calibrated; PSI refused them)"""
    from adaptrec.metrics.calibration import reliability

    with pytest.raises(ValueError, match=r"reliability curve needs scores in \[0.4, 0.6\]"):
        reliability([0, 1, 0, 1], [0.0, 1.0, 0.45, 0.55], edges=np.array([0.4, 0.5, 0.6]))
    assert reliability([0, 1], [0.45, 0.55], edges=np.array([0.4, 0.5, 0.6])).count == [1, 1]
