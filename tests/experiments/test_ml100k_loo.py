"""experiments/ml100k_loo.py: re-ranking the encoder's top K and the verdict lines."""

from __future__ import annotations

import numpy as np
import pytest
from experiment_modules import ml100k_loo


def test_reranking_reorders_the_top_k_and_keeps_the_rest():
    base = [np.array([5.0, 4.0, 3.0, 2.0, 1.0])] * 3
    tops = ml100k_loo.rerank(base, [0, 1, 2], 3)
    assert tops[0] == [0, 1, 2]
    new = [np.array([0.1, 0.2, 0.9])] * 3  # the LLM prefers the encoder's third item
    ranks = ml100k_loo.reranked_ranks(base, new, tops, [2, 0, 4])
    assert ranks.tolist() == [1, 3, 5]  # moved up, moved down, outside the top 3: the encoder's rank


def test_a_target_tied_across_the_cut_keeps_the_encoder_s_rank_wherever_it_is_listed():
    """(was: the stable top k took the target in when it was listed before its ties, and re-ranking then lifted a
    case the encoder ranks below the cut, in the re-ranker's favour)"""
    for target in (0, 2):
        base = [np.array([1.0, 1.0, 1.0, 0.0])]
        tops = ml100k_loo.rerank(base, [0], 2)
        assert ml100k_loo.reranked_ranks(base, [np.array([0.5, 0.5])], tops, [target]).tolist() == [3]
    base = [np.array([2.0, 1.0, 1.0, 0.0])]  # its tie is inside the top 3 too: re-ranked
    tops = ml100k_loo.rerank(base, [0], 3)
    assert ml100k_loo.reranked_ranks(base, [np.array([0.1, 0.2, 0.9])], tops, [2]).tolist() == [1]


def test_verdicts_name_the_side_of_zero():
    doc = {"protocol": {"best": "als"}, "rows": [
        {"kind": "encoder", "name": "bpr"},
        {"kind": "llm", "name": "up", "users": 9, "vs_best": {"value": 0.05, "ci_low": 0.01, "ci_high": 0.09}},
        {"kind": "llm", "name": "flat", "users": 9, "vs_best": {"value": 0.0, "ci_low": -0.02, "ci_high": 0.02}}]}
    lines = ml100k_loo.verdicts(doc)
    assert "above, CI above 0" in lines[0] and "not resolved" in lines[1] and len(lines) == 2


def test_the_stack_leans_on_the_score_that_finds_the_target_on_validation():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, size=40)
    v_llm = [np.where(np.arange(5) == t, 0.9, 0.1) + rng.uniform(0, 0.05, 5) for t in targets]  # finds the target
    v_enc = [rng.normal(size=5) for _ in targets]  # noise
    tops = [np.arange(5)] * len(targets)
    t_enc, t_llm = [np.array([3.0, 2.0, 1.0])], [np.array([0.1, 0.2, 0.9])]
    scores, weights = ml100k_loo.stack_scores(v_enc, v_llm, tops, list(targets), t_enc, t_llm)
    assert weights[1] > abs(weights[0]) and len(scores) == 1 and int(np.argmax(scores[0])) == 2
    # no validation target in any top k: nothing to fit
    assert ml100k_loo.stack_scores(v_enc, v_llm, tops, [7] * len(targets), t_enc, t_llm) is None


def test_user_groups_read_in_bucket_order_whatever_order_the_json_keeps():
    names = ["cold", "cold − warm", "history 5-19", "history <5", "history >=20", "warm"]
    assert ml100k_loo.group_order(names) == ["history <5", "history 5-19", "history >=20", "cold", "warm",
                                             "cold − warm"]
    assert ml100k_loo.group_order(["history 50-149", "history <50", "history >=150"]) == [
        "history <50", "history 50-149", "history >=150"]


def _row(variant: str, auc: float, users: int, negatives: str = "random", stacked: bool = False,
         final: bool = False) -> dict:
    name = (f"sasrec + collab adapter ({variant}), stacked on validation" if stacked
            else f"collab adapter ({variant}) re-ranks sasrec's top 20")
    diff = {"value": -0.1 * users, "ci_low": -0.2, "ci_high": -0.05}
    return {"kind": "llm", "name": name, "negatives": negatives, "best_val_auc": auc, "users": users,
            "vs_best": diff, "best_on_same_users": {"value": 0.4}, "metrics": {"sampled_ndcg@10": {"value": 0.3}},
            **({"final": True} if final else {})}


def test_the_goals_read_the_picked_variant_on_every_user_when_the_results_have_it():
    import collab_goals

    rows = [_row("random negatives", 0.66, 3), _row("random negatives", 0.66, 3, stacked=True),
            _row("hard negatives", 0.9, 3, negatives="hard"), _row("hard negatives", 0.9, 3, "hard", stacked=True),
            _row("match token", 0.70, 3), _row("match token", 0.70, 3, stacked=True)]
    # hard negatives validate on harder pairs: their AUC is not compared
    assert collab_goals.picked_reranker(rows)["name"] == "collab adapter (match token) re-ranks sasrec's top 20"
    doc = {"protocol": {"negatives": 99, "best": "sasrec"}, "rows": rows}
    assert collab_goals._ml100k(doc)[0][0][0].startswith("MovieLens-100K leave-one-out, 3 test users")
    final = [_row("match token", 0.99, 9, final=True), _row("match token", 0.99, 9, stacked=True, final=True)]
    doc["rows"] = rows + final
    cells, diff, *_ = collab_goals._ml100k(doc)[0]
    assert cells[0].startswith("MovieLens-100K leave-one-out, 9 test users") and diff is final[0]["vs_best"]
    assert collab_goals.picked_reranker(doc["rows"]) is rows[4]  # the final rows never pick
    assert collab_goals._stacked(doc, {"blocks": []}) == [("MovieLens-100K", final[1]["vs_best"])]
    assert [r["name"] for r in collab_goals._rerankers(doc)[1]] == [rows[0]["name"], rows[2]["name"]]
    rows[4]["best_val_auc"] = None  # never validated: never picked
    assert collab_goals.picked_reranker(rows) is rows[0]


def test_a_second_score_stacks_as_it_is_when_it_is_no_probability():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 5, size=40)
    v_second = [np.where(np.arange(5) == t, 0.5, -0.5) + rng.uniform(0, 0.05, 5) for t in targets]  # cosines
    v_enc = [rng.normal(size=5) for _ in targets]
    tops = [np.arange(5)] * len(targets)
    scores, weights = ml100k_loo.stack_scores(v_enc, v_second, tops, list(targets), [np.array([3.0, 2.0, 1.0])],
                                              [np.array([-0.5, -0.4, 0.5])], logit=False)
    assert np.isfinite(scores[0]).all() and weights[1] > abs(weights[0]) and int(np.argmax(scores[0])) == 2


def test_every_encoder_row_counts_coverage_over_the_whole_catalogue(monkeypatch):
    """An encoder's catalogue leaves out the movies no training interaction touched: its coverage and Gini were
    over its own items while popularity's were over every movie, and its full ranking left those movies out."""
    from types import SimpleNamespace

    from adaptrec.cf.base import Interactions, PopularityEncoder
    from adaptrec.data.candidates import CandidateList

    monkeypatch.setattr(ml100k_loo, "movie_vectors", lambda: None)
    movies = {f"m{i}": f"movie {i}" for i in range(12)}
    pairs = [(f"u{u}", f"m{i}") for u in range(4) for i in range(u, u + 6)]  # m9-m11 never touched
    lists = [CandidateList(f"u{u}", "movie", "m10", ("m10", "m0", "m1")) for u in range(4)]
    arena = SimpleNamespace(texts=movies, users=[f"u{u}" for u in range(4)], lists=lists,
                            histories={f"u{u}": [f"m{i}" for i in range(u, u + 6)] for u in range(4)})
    seen_only = PopularityEncoder(Interactions.of(pairs))
    whole = PopularityEncoder(Interactions.of(pairs, items=list(movies)))
    rows = [ml100k_loo.encoder_row(name, e, arena, {"m0": 1.0}, 0)
            for name, e in (("seen", seen_only), ("whole", whole))]
    assert rows[0]["beyond_full"]["coverage@10"] == 9 / 12  # m0-m8 in some top 10 (was: 9 / 9)
    # the untouched target m10 ranks 6th for u0 in both, tied with m9 and m11 below m6-m8 (was: 4th for "seen")
    assert rows[0]["metrics"]["full_ndcg@10"]["value"] == rows[1]["metrics"]["full_ndcg@10"]["value"] == \
        pytest.approx(1 / np.log2(7))  # every user's target 6th
