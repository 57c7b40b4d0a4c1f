"""Recipes select each training method; method keys are validated with one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adaptrec.config import RECIPES_DIR, load_recipe
from adaptrec.errors import ConfigError

METHOD_RECIPES = {"movie-joint": "joint", "office-joint": "joint", "movie-blend": "blend",
                  "office-distill": "distill", "arts-office-multitask": "multitask"}


@pytest.mark.parametrize("name,kind", METHOD_RECIPES.items())
def test_each_method_recipe_selects_its_method(name, kind):
    recipe, text = load_recipe(name)
    assert recipe.method.type == kind and text.startswith("#") and f"adaptrec train {name}" in text


def test_recipes_without_a_method_train_plainly():
    assert load_recipe("movie-lora")[0].method.type == "plain"


def test_method_keys_can_be_overridden():
    recipe, _ = load_recipe("movie-joint", ["method.text_weight=0.5", "method.rec_loss=pairwise"])
    assert recipe.method.text_weight == 0.5 and recipe.method.rec_loss == "pairwise"


def _write(tmp_path: Path, base: str, method: dict) -> Path:
    raw = yaml.safe_load((RECIPES_DIR / f"{base}.yaml").read_text())
    raw["method"] = method
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("method,key", [
    ({"type": "joint", "lambda": 0.1}, "method.lambda"),  # unknown key (the knob is text_weight)
    ({"type": "joint", "text_weight": -1}, "method.text_weight"),
    ({"type": "joint", "rec_loss": "hinge"}, "method.rec_loss"),
    ({"type": "distill", "teacher": "office-lora"}, "method.teacher_data"),  # missing
    ({"type": "distill", "teacher": "t", "teacher_data": "x", "temperature": 0}, "method.temperature"),
    ({"type": "distill", "teacher": "t", "teacher_data": "x", "teacher_backbone": ""}, "method.teacher_backbone"),
    ({"type": "multitask", "extra_train": []}, "method.extra_train"),
    ({"type": "multitask", "extra_train": ["x"], "ratios": {"arts": 0}}, "method.ratios.arts"),
    ({"type": "blend", "features": ["age"]}, "method.features.0"),
    ({"type": "dpo"}, "method"),
])
def test_bad_method_keys_name_file_and_key(tmp_path, method, key):
    path = _write(tmp_path, "movie-lora", method)
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {key}:"), msg


def test_a_ranking_loss_ranks_each_query_not_all_of_a_users_cases():
    """A user with two training positions has two queries (histories): their candidates form separate groups, a
    micro-batch of one query holds that query's candidates only, and partners complete only the shots' queries."""
    from adaptrec.config import JointSettings
    from adaptrec.data.records import Case, HistoryItem
    from adaptrec.train.methods.joint import JointMethod, query_key

    def query(history: str, target: str) -> list[Case]:
        h = (HistoryItem(f'"{history}"'),)
        return [Case("u", "office", "office product", h, f'"{target}"', 1),
                Case("u", "office", "office product", h, '"other"', 0, meta={"negative_of": target})]

    first, second = query("a", "p1"), query("b", "p2")
    method = JointMethod(JointSettings(type="joint", rec_loss="pairwise"), [], partners=second[1:])
    for index in range(4):
        batch = method.batch(first + second[:1], 1, seed=0, index=index)
        assert len({query_key(c) for c in batch}) == 1 and len(batch) == 2  # one query, both its candidates
    # a query of one label forms no pair: it is never batched (its forward would teach nothing)
    lonely = [Case("v", "office", "office product", (HistoryItem('"c"'),), '"p3"', 1)]
    for index in range(4):
        assert "v" not in {c.user_id for c in method.batch(first + second[:1] + lonely, 1, seed=0, index=index)}
    # the partners are trained on too: their logged events go into the lineage beside the shots'
    from dataclasses import replace

    from adaptrec.train.lineage import with_events

    logged = JointMethod(method.cfg, [], partners=[replace(second[1], meta={"event": "r1/1"})])
    assert with_events(None, logged.own_cases()) == {"events": ["r1/1"]}
