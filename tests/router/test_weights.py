"""Weight search: finds known optima, respects its budget, is seeded; the ΔW objective is what gets registered."""

from __future__ import annotations

import numpy as np
import pytest
from router_helpers import fresh_backbone, register_random
from synthetic import synthetic_cases

from adaptrec.adapters.merge import Composition, CompositionError, compose
from adaptrec.metrics.classification import log_loss
from adaptrec.registry import Registry
from adaptrec.router.weights import mix_loss, search_composition, search_weights
from adaptrec.scoring.variants import component_scores


def test_search_finds_a_known_optimum_within_budget():
    target = np.array([0.4, -0.8])
    result = search_weights(lambda w: float(((w - target) ** 2).sum()), 2, budget=60, l1=0.0, seed=0)
    assert result.evaluations == 60
    np.testing.assert_allclose(result.weights, target, atol=0.1)


def test_search_is_seeded_and_stops_at_the_budget():
    loss = lambda w: float(np.sin(3 * w).sum() + (w ** 2).sum())  # noqa: E731
    a, b, c = (search_weights(loss, 2, budget=20, seed=s) for s in (0, 0, 1))
    assert a.evaluations == b.evaluations == c.evaluations == 20
    assert a.trace == b.trace and a.trace != c.trace
    assert all(-1.5 <= x <= 1.5 for w, _ in a.trace for x in w)


def test_l1_penalty_zeroes_a_useless_weight():
    result = search_weights(lambda w: float((w[0] - 1) ** 2), 2, budget=60, l1=0.05, seed=0)
    assert abs(result.weights[1]) < 0.05 and abs(result.weights[0] - 0.975) < 0.05  # 1 - l1/2


def test_mix_search_puts_the_weight_on_the_right_adapter():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 32)
    right = np.where(labels == 1, 0.85, 0.15) + rng.normal(0, 0.05, 32)
    wrong = 1 - right
    noise = rng.uniform(0.3, 0.7, 32)
    scores = np.stack([wrong, right, noise])
    result = search_weights(mix_loss(scores, labels), 3, budget=20, seed=0, bounds=(0.0, 1.0))
    w = np.array(result.weights) / sum(result.weights)
    assert w[1] > 0.85, w
    assert result.loss < log_loss(labels, scores.mean(0)) - 0.2


def test_a_mix_search_is_not_charged_for_the_weights_scale(monkeypatch):
    """A mix's scores depend on the weights' ratios only: the search keeps the best loss it saw and stores shares."""
    from adaptrec.router import weights

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 32)
    a = np.clip(np.where(labels == 1, 0.6, 0.4) + rng.normal(0, 0.15, 32), 0.01, 0.99)
    b = np.clip(0.5 + rng.normal(0, 0.15, 32), 0.01, 0.99)
    monkeypatch.setattr(weights, "component_scores", lambda *args, **kwargs: np.stack([a, b]))
    cases = [c.__class__(**{**vars(c), "label": int(y)}) for c, y in zip(synthetic_cases(32), labels)]
    comp, result = search_composition(None, None, ["a", "b"], "mix", cases, budget=20, seed=4)
    assert result.loss == min(loss for _, loss in result.trace)  # no penalty: the objective is the loss
    assert result.loss <= mix_loss(np.stack([a, b]), labels)(np.array([0.5, 0.5]))
    assert sum(comp.weights) == pytest.approx(1.0) and comp.extra["search"]["l1"] == 0.0


def test_merge_search_objective_is_the_registered_composition(tiny_model_dir):
    registry = Registry()
    register_random(tiny_model_dir, registry, "a", {"type": "lora", "r": 4}, seed=1, std=0.6)
    register_random(tiny_model_dir, registry, "b", {"type": "lora", "r": 2}, seed=2, std=0.6)
    cases = synthetic_cases(8)
    comp, result = search_composition(fresh_backbone(tiny_model_dir), registry, ["a", "b"], "cat", cases,
                                      budget=6, seed=0, data="synthetic")
    assert result.evaluations == 6 and len({w for w, _ in result.trace}) == 6
    assert comp.extra["search"]["shots"] == 8 and comp.weights == pytest.approx(result.weights, abs=1e-6)
    record = compose(fresh_backbone(tiny_model_dir), registry, comp, name="a+b", domain="movie")
    assert record.lineage["search"]["budget"] == 6
    scores = component_scores(fresh_backbone(tiny_model_dir), registry, [record.ref], cases, progress=False)[0]
    assert log_loss([c.label for c in cases], scores) == pytest.approx(result.loss, abs=1e-4)


def test_search_refuses_too_many_or_unlabelled_shots(tiny_model_dir):
    registry = Registry()
    with pytest.raises(CompositionError, match="1..32"):
        search_composition(None, registry, ["a", "b"], "cat", synthetic_cases(33))
    with pytest.raises(CompositionError, match="two adapters"):
        search_weights(lambda w: 0.0, 1)
    with pytest.raises(CompositionError):
        Composition(("a", "b"), "mix", (0.5, -0.5))


@pytest.mark.parametrize("spec", ["amazon:office:test", "amazon:office:test:cold", "tallrec:movie:test[0:50]",
                                  "../shared/data/tallrec/movie/test.json", "~/data/test.json[0:32]"])
def test_weights_are_never_searched_on_a_test_split(spec):
    """(was: searched and only recorded in the lineage)"""
    from adaptrec.router.weights import search_and_compose

    registry = Registry()
    with pytest.raises(CompositionError, match="keep the test split for the evaluation"):
        search_and_compose(None, registry, [], "cat", name="x", domain="office", search_data=spec)


def test_a_log_named_test_is_no_test_split_but_its_test_part_is():
    """(was: `logs/test.jsonl:loo:train`, training data, refused for its file name)"""
    from adaptrec.router.weights import _names_a_test_split

    assert not _names_a_test_split("logs/test.jsonl:loo:train") and not _names_a_test_split("x/test.parquet:loo:valid")
    assert _names_a_test_split("logs/test.jsonl:loo:test") and _names_a_test_split("x/test.json[0:8]")


def test_a_test_split_behind_two_slices_is_refused_too():
    """`amazon:office:test[:][0:32]` passed the guard, which looked past one slice only (was: searched on test)."""
    from adaptrec.errors import DataSpecError
    from adaptrec.router.weights import search_and_compose

    with pytest.raises(DataSpecError, match="one \\[start:stop\\] slice per SPEC"):
        search_and_compose(None, Registry(), [], "cat", name="x", domain="office",
                           search_data="amazon:office:test[:][0:32]")


def test_a_composition_is_searched_in_the_prompt_its_sources_trained_with_and_records_it(tiny_model_dir, tmp_path,
                                                                                          monkeypatch):
    """(was: the search scored `tallrec` prompts of 1024 tokens whatever the sources trained with, and a ΔW
    composition, with no recipe of its own, was loaded, routed and gated that way too)"""
    from synthetic import write_tallrec_files

    from adaptrec.config import load_recipe
    from adaptrec.errors import AdaptrecError
    from adaptrec.router import weights
    from adaptrec.scoring.variants import trained_prompt

    registry = Registry()
    sets = {"a": ("movie-lora", ["data.max_prompt_tokens=320"]), "b": ("movie-lora", []),
            "s": ("movie-lora", ["data.template=tallrec-stats"]), "c": ("movie-collab", [])}
    for seed, (name, (recipe, overrides)) in enumerate(sets.items()):
        register_random(tiny_model_dir, registry, name, {"type": "lora", "r": 4}, seed=seed,
                        recipe_text=load_recipe(recipe, overrides)[1])
    seen = {}

    def scores(backbone, registry, refs, cases, **options):
        seen.update(options)
        return np.full((len(refs), len(cases)), 0.5)
    monkeypatch.setattr(weights, "component_scores", scores)
    train = write_tallrec_files(tmp_path / "data", {"train": 8})["train"]
    result = weights.search_and_compose(lambda: fresh_backbone(tiny_model_dir), registry, ["a", "b"], "mix",
                                        name="ab", search_data=str(train), shots=4, budget=2)
    assert (seen["template"], seen["max_prompt_tokens"]) == ("tallrec", 320)
    merged = weights.search_and_compose(lambda: fresh_backbone(tiny_model_dir), registry, ["a", "b"], "cat",
                                        name="ab-cat", weights="0.5,0.5")
    for record in (result.record, merged.record):
        assert trained_prompt(record) == {"template": "tallrec", "max_prompt_tokens": 320}
    with pytest.raises(AdaptrecError, match="different prompt templates .*compose adapters of one template"):
        weights.search_and_compose(lambda: pytest.fail("the backbone loaded"), registry, ["a", "s"], "mix",
                                   name="as", weights="0.5,0.5")
    with_items = weights.search_and_compose(lambda: fresh_backbone(tiny_model_dir), registry, ["c", "b"], "mix",
                                            name="cb", weights="0.5,0.5")  # each row reads its own form of tallrec
    assert trained_prompt(with_items.record)["template"] == "tallrec"
