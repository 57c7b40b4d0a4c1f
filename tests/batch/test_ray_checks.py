"""The Ray engine's driver checks everything it can before Ray starts, pins the adapter version its actors load,
and turns an actor's adaptrec error into its one line (no Ray cluster is started here)."""

from __future__ import annotations

import pytest
import torch
from batch_helpers import data_file, engine_options
from router_helpers import register_random

import adaptrec
from adaptrec.batch import ray_engine
from adaptrec.errors import AdaptrecError, command_line, option
from adaptrec.registry import Registry

ray = pytest.importorskip("ray")
LORA = {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture
def no_ray_start(monkeypatch):
    """Fail the test if the driver gets as far as starting Ray."""
    monkeypatch.setattr(ray_engine, "_init_ray", lambda ray: pytest.fail("Ray started before the checks failed"))


@pytest.mark.parametrize("bad, match", [({"template": "tallrecc"}, "template='tallrecc'"),
                                        ({"backbone": "no/such-model"}, "no/such-model"),
                                        ({"quantization": "3bit"}, "quantization='3bit'")])
def test_bad_options_fail_before_ray_starts(tiny_model_dir, tmp_path, no_ray_start, bad, match):
    options = {**engine_options(tiny_model_dir), **bad}
    with pytest.raises(AdaptrecError, match=match):
        adaptrec.write_predictions(None, data=data_file(tmp_path), out=tmp_path / "p.jsonl", engine="ray", **options)


def test_an_adapter_with_changed_files_fails_before_ray_starts(tiny_model_dir, tmp_path, no_ray_start):
    record = register_random(tiny_model_dir, Registry(), "movie-lora", LORA, seed=3, domain="movie")
    (record.path / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(AdaptrecError, match="sha256"):
        adaptrec.write_predictions("movie-lora", data=data_file(tmp_path), out=tmp_path / "p.jsonl", engine="ray",
                                   **engine_options(tiny_model_dir))


def test_actors_load_the_version_the_driver_resolved(monkeypatch, tiny_model_dir, tmp_path):
    """A bare name is pinned once: an actor started after `update` registered v3 still loads v2."""
    for seed in (1, 2):
        register_random(tiny_model_dir, Registry(), "movie-lora", LORA, seed=seed, domain="movie")
    handed = {}

    class Plan:  # stands in for the Ray Dataset: records what each actor would be built with
        def map_batches(self, fn, **kwargs):
            handed.update(kwargs["fn_constructor_kwargs"])
            return self

        def iter_batches(self, **kwargs):
            return iter(())

    monkeypatch.setattr(ray_engine, "_init_ray", lambda ray: False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1})
    monkeypatch.setattr(ray.data, "from_items", lambda items, **kwargs: Plan())
    adaptrec.write_predictions("movie-lora", data=data_file(tmp_path), out=tmp_path / "p.jsonl", engine="ray",
                               **engine_options(tiny_model_dir))
    assert handed["adapter"] == "movie-lora:2" and handed["flags"] is False
    with command_line():  # `adaptrec score --engine ray`: the actors' messages name flags too
        adaptrec.write_predictions("movie-lora", data=data_file(tmp_path), out=tmp_path / "p.jsonl", engine="ray",
                                   **engine_options(tiny_model_dir))
    assert handed["flags"] is True


def test_an_actor_sends_its_error_back_as_its_one_line(monkeypatch, tiny_model_dir, tmp_path):
    """Raised inside an actor, it reached the driver as Ray's ActorDiedError / RayTaskError with a remote traceback."""
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    try:
        actor = ray_engine.ScoreActor(str(tiny_model_dir), "none", str(tmp_path / "home"), "gone-lora:1", False,
                                      {"template": "tallrec", "batch_size": 8})
    finally:
        torch.set_num_threads(threads)
    table = actor(ray_engine.pa.table({"chunk": [b"never unpickled"]}))
    with pytest.raises(AdaptrecError, match="gone-lora") as e:
        ray_engine.checked_rows(table)
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("flags, spelled", [(False, "quantization='none'"), (True, "--quantization none")])
def test_an_actor_spells_options_as_its_driver(monkeypatch, tmp_path, flags, spelled):
    """An actor is another process: under `adaptrec score --engine ray` its messages named Python keywords."""
    def refuse(*args, **kwargs):
        raise AdaptrecError(f"load the backbone with {option('quantization', 'none')}")

    monkeypatch.setattr(ray_engine, "load_backbone", refuse)
    threads = torch.get_num_threads()
    try:
        actor = ray_engine.ScoreActor("bb", "8bit", str(tmp_path), None, False, {}, flags=flags)
    finally:
        torch.set_num_threads(threads)
    assert actor.failure == f"load the backbone with {spelled}"


def test_an_actor_refuses_a_backbone_other_than_the_one_the_driver_checked(monkeypatch, tiny_model_dir, tmp_path):
    """Each actor loads the backbone by name again: a Hub id's newer revision, or a relative folder read against the
    actor's own working folder, scored on another build with nothing checking it."""
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    try:
        actor = ray_engine.ScoreActor(str(tiny_model_dir), "none", str(tmp_path / "home"), None, False,
                                      {"template": "tallrec", "batch_size": 8}, expected="0" * 64)
    finally:
        torch.set_num_threads(threads)
    assert "a Ray actor loaded" in actor.failure and "another build than the one the driver checked" in actor.failure
