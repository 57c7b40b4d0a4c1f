"""Each method's loss on hand-made tensors against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptrec.data.records import Case, HistoryItem
from adaptrec.train.losses import causal_lm_loss, distill_loss, listwise_loss, pairwise_loss, rec_loss
from adaptrec.train.methods.features import FeatureBlend, feature_matrix

YES, NO = 2, 0
# vocabulary of 3; rows: (No logit, -, Yes logit)
LOGITS = torch.tensor([[0.0, 5.0, 1.0], [2.0, -1.0, 0.5], [-1.0, 0.0, 1.5], [0.3, 0.0, 0.3]])
LABELS = torch.tensor([1, 0, 1, 0])


def _p_yes(row) -> float:
    return math.exp(row[YES]) / (math.exp(row[YES]) + math.exp(row[NO]))


def test_rec_loss_is_the_two_way_cross_entropy_and_weights_reweight_it():
    rows, labels = LOGITS.tolist(), LABELS.tolist()
    ce = [-math.log(_p_yes(r) if y else 1 - _p_yes(r)) for r, y in zip(rows, labels)]
    assert rec_loss(LOGITS, LABELS, YES, NO).item() == pytest.approx(sum(ce) / 4, rel=1e-6)
    w = [1.0, 3.0, 0.5, 2.0]
    got = rec_loss(LOGITS, LABELS, YES, NO, torch.tensor(w)).item()
    assert got == pytest.approx(sum(a * b for a, b in zip(w, ce)) / len(w), rel=1e-6)  # each case keeps its weight


def test_pairwise_loss_averages_bpr_over_pairs_of_the_same_user():
    scores = torch.tensor([2.0, 0.5, 1.0, -1.0, 3.0])
    labels = torch.tensor([1, 0, 0, 1, 1])
    groups = torch.tensor([0, 0, 0, 1, 2])  # user 1 and 2 have one label only: no pairs
    expected = np.mean([math.log1p(math.exp(-(2.0 - 0.5))), math.log1p(math.exp(-(2.0 - 1.0)))])
    assert pairwise_loss(scores, labels, groups).item() == pytest.approx(expected, rel=1e-6)


def test_listwise_loss_is_listnet_cross_entropy_per_user():
    scores = torch.tensor([2.0, 0.5, 1.0, 0.0, 1.0])
    labels = torch.tensor([1, 0, 1, 0, 1])
    groups = torch.tensor([0, 0, 0, 1, 1])
    log_sm0 = scores[:3] - torch.logsumexp(scores[:3], 0)
    log_sm1 = scores[3:] - torch.logsumexp(scores[3:], 0)
    expected = (-(0.5 * log_sm0[0] + 0.5 * log_sm0[2]) - log_sm1[1]) / 2
    assert listwise_loss(scores, labels, groups).item() == pytest.approx(expected.item(), rel=1e-6)


def test_ranking_losses_without_pairs_are_zero_but_keep_the_graph():
    scores = torch.tensor([1.0, 2.0], requires_grad=True)
    for fn in (pairwise_loss, listwise_loss):
        loss = fn(scores, torch.tensor([1, 0]), torch.tensor([0, 1]))
        assert loss.item() == 0.0
        loss.backward()  # would raise without a graph


def test_causal_lm_loss_skips_padding_and_the_first_token():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    ids = torch.tensor([[0, 0, 3, 1], [2, 4, 1, 3]])  # row 0 left-padded by two
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    logp = torch.log_softmax(logits, -1)
    terms = [logp[0, 2, 1], logp[1, 0, 4], logp[1, 1, 1], logp[1, 2, 3]]  # predict token t+1 where it is real
    assert causal_lm_loss(logits, ids, mask).item() == pytest.approx(-torch.stack(terms).mean().item(), rel=1e-6)


def test_distill_loss_is_t2_kl_plus_alpha_hard():
    margin = torch.tensor([1.0, -2.0, 0.0, 3.0])  # teacher Yes - No logits
    t, alpha = 2.0, 0.3
    kl = []
    for row, m in zip(LOGITS.tolist(), margin.tolist()):
        pt = 1 / (1 + math.exp(-m / t))
        ps = 1 / (1 + math.exp(-(row[YES] - row[NO]) / t))
        kl.append(pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps)))
    hard = rec_loss(LOGITS, LABELS, YES, NO).item()
    got = distill_loss(LOGITS, margin, LABELS, YES, NO, t, alpha).item()
    assert got == pytest.approx(t * t * np.mean(kl) + alpha * hard, rel=1e-5)
    # a student that already matches the teacher has zero KL: only the hard term is left
    same = torch.stack([torch.zeros(4), torch.zeros(4), margin], dim=-1)
    assert distill_loss(same, margin, LABELS, YES, NO, t, alpha).item() == pytest.approx(
        alpha * rec_loss(same, LABELS, YES, NO).item(), abs=1e-6)


def test_feature_blend_learns_the_feature_that_carries_the_label():

    rng = np.random.default_rng(0)
    cases, labels = [], []
    for i in range(80):
        y = int(i % 2)
        liked = rng.random(5) < (0.8 if y else 0.3)
        hist = tuple(HistoryItem(f'"m{j}"', liked=bool(l)) for j, l in enumerate(liked))
        cases.append(Case(f"u{i}", "movie", "movie", hist, f'"t{i % 7}"', label=y))
        labels.append(y)
    noise = rng.normal(size=80)  # an LLM score that knows nothing
    x = feature_matrix(["llm", "like_ratio", "popularity"], noise, cases, {'"t1"': 9.0})
    assert x[:, 1].tolist() == [c.like_ratio for c in cases] and x[1, 2] == pytest.approx(math.log(10))
    blend = FeatureBlend.fit(["llm", "like_ratio", "popularity"], x, np.array(labels), l2=1.0)
    assert abs(blend.coef[1]) > 3 * abs(blend.coef[0])
    direct = 1 / (1 + np.exp(-(blend.intercept + ((x - blend.mean) / blend.std) @ np.array(blend.coef))))
    np.testing.assert_allclose(blend.predict(x), direct)
    assert FeatureBlend(**blend.to_dict()) == blend


def test_blend_features_of_shots_leave_their_own_event_out_of_the_popularity():
    """A positive shot is an event the training popularity counts and a sampled negative is none: fitted as they
    are, "count 0" would mean No, which no test case (another user's target) follows."""
    hist = (HistoryItem('"m"'),)
    positive = Case("u", "office", "office product", hist, '"t"', label=1)
    negative = Case("u", "office", "office product", hist, '"t"', label=0, meta={"negative_of": "x"})
    pop = {'"t"': 3.0}
    x = feature_matrix(["popularity"], np.zeros(2), [positive, negative], pop, leave_one_out=True)
    assert x[:, 0].tolist() == pytest.approx([math.log(3), math.log(4)])
    assert feature_matrix(["popularity"], np.zeros(2), [positive, negative], pop)[:, 0].tolist() == pytest.approx(
        [math.log(4)] * 2)  # scoring test cases: the counts as they are
