"""The leave-one-out protocol: which interaction lands in which part, and that none held out reaches an encoder."""

from __future__ import annotations

import pytest
from data_markers import needs_ml100k

from adaptrec.data import movielens
from adaptrec.data.leave_one_out import Event, loo_cases, split_timelines, train_interactions
from adaptrec.data.spec import load_spec
from adaptrec.errors import DataSpecError

TIMELINES = {"a": [Event(str(i)) for i in range(6)], "b": [Event("x"), Event("y", liked=False), Event("z")],
             "c": [Event("p"), Event("q")]}


def test_last_is_test_second_last_is_valid_the_rest_trains():
    parts = split_timelines(TIMELINES)
    assert [e.item for e in parts["train"]["a"]] == ["0", "1", "2", "3"]
    assert parts["valid"]["a"][-1].item == "4" and parts["test"]["a"][-1].item == "5"
    assert "c" not in parts["test"] and [e.item for e in parts["train"]["c"]] == ["p", "q"]  # too short to hold out
    test = {c.user_id: c for c in loo_cases(TIMELINES, "test", lambda i: f'"{i}"', "movie", history_len=3)}
    assert [h.item_id for h in test["a"].history] == ["2", "3", "4"]  # the valid target is in the test history
    assert test["a"].target_id == "5" and test["a"].label == 1 and test["b"].history[1].liked is False
    assert [h.item_id for h in test["b"].history] == ["x", "y"]  # short users get their whole past, not skipped


def test_training_cases_walk_the_training_prefix_only():
    train = loo_cases(TIMELINES, "train", str, "movie")
    assert [(c.user_id, c.target_id) for c in train] == [("a", "1"), ("a", "2"), ("a", "3"), ("c", "q")]
    with pytest.raises(ValueError, match="parts are"):
        loo_cases(TIMELINES, "dev", str, "movie")


@pytest.mark.parametrize("timelines", [TIMELINES, {"r": [Event("a"), Event("b"), Event("a"), Event("c"), Event("a")]}],
                         ids=["distinct", "repeats"])
def test_no_held_out_pair_reaches_the_encoders_or_the_shots(timelines):
    """A log with repeats: the user's earlier interactions with a held-out item are not trained on."""
    held_out = {(c.user_id, c.target_id) for part in ("valid", "test") for c in loo_cases(timelines, part, str, "m")}
    assert held_out and not held_out & {(u, i) for u, i, _ in train_interactions(timelines)}
    assert not held_out & {(c.user_id, c.target_id) for c in loo_cases(timelines, "train", str, "m")}


@needs_ml100k
def test_movielens_leave_one_out_spec_keeps_every_user_and_no_leak():
    test = load_spec("movielens:100k:loo:test", negatives_per_positive=1)
    positives = [c for c in test.cases if c.label == 1]
    assert len(positives) == 943 and len(test.cases) == 2 * 943  # every ML-100K user has >= 20 ratings
    assert all(c.target_id not in test.user_items[c.user_id] for c in test.cases if c.label == 0)
    train = {(u, i) for u, i, _ in train_interactions(movielens.loo_timelines())}
    valid = load_spec("movielens:100k:loo:valid", negatives_per_positive=1)
    for case in (c for spec in (test, valid) for c in spec.cases if c.label == 1):
        assert (case.user_id, case.target_id) not in train
    assert len(train) == 100_000 - 2 * 943
    with pytest.raises(DataSpecError, match="not recognised"):
        load_spec("movielens:100k:loo:dev")
