"""The recipe job: resuming a finished run keeps the version it registered; a restart registers the next."""

from __future__ import annotations

import json

from train_worker import tiny_recipe_file

from adaptrec.config import load_recipe
from adaptrec.registry import Registry
from adaptrec.train.checkpoint import latest_checkpoint
from adaptrec.train.recipe import run_recipe


def test_resuming_a_finished_run_registers_no_new_version(tiny_model_dir, tmp_path):
    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 1, {"train": 8, "valid": 4, "test": 4}, eval_every=1)
    parsed, text = load_recipe(str(path))
    first = run_recipe(parsed, text, resume=True).record
    again = run_recipe(parsed, text, resume=True)
    assert again.record.ref == first.ref and again.report.rows[-1].name.startswith(first.ref)
    assert [r.ref for r in Registry().list(name=first.name)] == [first.ref]
    newest = latest_checkpoint(again.train.run_dir).path / "best"  # the best a resume puts back
    for config in (again.train.adapter_dir / "adapter_config.json", newest / "adapter_config.json"):
        config.write_text(json.dumps({**json.loads(config.read_text()), "lora_alpha": 3}))  # now not the record's
    assert run_recipe(parsed, text, resume=True).record.version == first.version + 1
    assert run_recipe(parsed, text, restart=True).record.version == first.version + 2


def test_leave_one_out_runs_are_keyed_by_how_their_negatives_are_drawn():
    """A run begun when leave-one-out negatives avoided the whole timeline is neither resumed nor reused now."""
    from adaptrec.config import load_recipe, recipe_digest
    from adaptrec.train.recipe import run_dir_for

    movie, _ = load_recipe("movie-lora")
    assert run_dir_for(movie).name == f"movie-lora-{recipe_digest(movie)[:10]}"  # other data keep their folders
    loo, _ = load_recipe("movie-lora", ["data.train=movielens:100k:loo:train"])
    assert run_dir_for(loo).name != f"movie-lora-{recipe_digest(loo)[:10]}"


def test_leave_one_out_recipes_reuse_only_their_run_folders_version(monkeypatch):
    """A registered adapter with the same settings may have drawn its negatives under the earlier rule."""
    from types import SimpleNamespace

    import adaptrec.train.recipe as recipe_mod

    found = SimpleNamespace(ref="movie-lora:1")
    registry = SimpleNamespace(list=lambda name: [found])
    monkeypatch.setattr(recipe_mod, "_trained_with", lambda record, settings, fingerprint: True)
    monkeypatch.setattr(recipe_mod, "run_recipe", lambda recipe, text, resume: SimpleNamespace(record="trained"))
    assert recipe_mod.train_or_reuse(registry, None, "movie-lora", [], log=lambda line: None) is found
    loo = ["data.train=movielens:100k:loo:train"]
    assert recipe_mod.train_or_reuse(registry, None, "movie-lora", loo, log=lambda line: None) == "trained"


def test_a_protocol_the_training_spec_cannot_take_names_the_recipe_and_key():
    """(was: "bad data SPEC 'tallrec:movie:train' …" without the file or key, where --dry-run named both)"""
    import pytest

    from adaptrec.errors import ConfigError
    from adaptrec.train.recipe import run_dir_for

    loo, _ = load_recipe("movie-lora", ["data.protocol=leave_one_out"])
    with pytest.raises(ConfigError, match=r"movie-lora\.yaml: data\.train: bad data SPEC 'tallrec:movie:train'"):
        run_dir_for(loo)


def test_a_run_killed_between_registering_and_its_report_registers_no_second_version(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):
    """(was: the resume found no report.json naming the version, so it registered the same files again)"""
    import pytest

    from adaptrec.train import recipe as recipe_mod

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 1, {"train": 8, "valid": 4, "test": 4}, eval_every=1)
    parsed, text = load_recipe(str(path))
    with monkeypatch.context() as killed:
        killed.setattr(recipe_mod, "write_json", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            run_recipe(parsed, text, resume=True)
    (first,) = Registry().list(name=parsed.name)
    assert run_recipe(parsed, text, resume=True).record.ref == first.ref
    assert [r.ref for r in Registry().list(name=parsed.name)] == [first.ref]


def test_a_restart_refused_before_training_keeps_the_run_it_would_replace(tiny_model_dir, tmp_path):
    """(was: the run folder was deleted first, so a restart then refused, a data file missing, left no run at all)"""
    from pathlib import Path

    import pytest

    from adaptrec.errors import AdaptrecError
    from adaptrec.train.recipe import run_dir_for

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 1, {"train": 8, "valid": 4, "test": 4}, eval_every=1)
    parsed, text = load_recipe(str(path))
    run_recipe(parsed, text)
    kept = sorted(p.name for p in run_dir_for(parsed).iterdir())
    Path(parsed.data.valid).rename(tmp_path / "elsewhere.json")
    with pytest.raises(AdaptrecError, match="data.valid"):
        run_recipe(parsed, text, restart=True)
    assert sorted(p.name for p in run_dir_for(parsed).iterdir()) == kept and "metrics.jsonl" in kept
