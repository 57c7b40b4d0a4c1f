"""Experiment tracking (`training.report_to`) and precision (`training.mixed_precision`) from the recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from accelerate.state import AcceleratorState
from synthetic import synthetic_cases
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from train_worker import tiny_recipe

from adaptrec.backbone import load_backbone
from adaptrec.config import load_recipe
from adaptrec.errors import ConfigError, MissingOptionalPackage
from adaptrec.train import loop


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs per tag, as TensorBoard shows them (a resumed log's purged steps left out)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _hparams(folder: Path) -> dict:
    """The hyperparameters of the first hparams event file below `folder`."""
    log = next(p.parent for p in sorted(folder.rglob("events.out.tfevents.*")) if p.parent != folder)
    events = EventAccumulator(str(log))
    events.Reload()
    info = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.session_start_info.hparams.items()}


def _assert_logged_like_metrics(logged: dict, rows: list[dict]) -> None:
    for key in ("loss", "lr", "val_auc"):
        expected = [(r["step"], r[key]) for r in rows if key in r]
        assert [step for step, _ in logged[key]] == [step for step, _ in expected], key
        for (_, got), (_, want) in zip(logged[key], expected):
            assert got == pytest.approx(want, rel=1e-6, abs=1e-9), key  # TensorBoard stores float32


def test_tensorboard_logs_the_metrics_jsonl_numbers_and_the_settings(tiny_backbone, tmp_path):
    recipe = tiny_recipe(str(tiny_backbone.source), 4, eval_every=2, report_to="tensorboard")
    train = synthetic_cases(8)
    loop.train(recipe, tiny_backbone, train, synthetic_cases(8, seed=1), tmp_path / "run")
    _assert_logged_like_metrics(_scalars(tmp_path / "run" / "tiny"), _metrics(tmp_path / "run"))
    hparams = _hparams(tmp_path / "run" / "tiny")
    settings = loop._flat_settings(recipe.model_dump(mode="json"))
    assert settings["training.lr"] == 5e-3 and settings["adapter.r"] == 4 and "report_to" not in str(settings)
    assert hparams == {k: v for k, v in settings.items() if v is not None}  # TensorBoard keeps no nulls


def test_a_resumed_run_logs_each_step_once(tiny_model_dir, tmp_path):
    """The steps after the checkpoint a run resumes from are logged again; TensorBoard shows only the new ones,
    as metrics.jsonl keeps only the new lines."""
    recipe = tiny_recipe(str(tiny_model_dir), 4, eval_every=2, report_to="tensorboard")
    run_dir, cases = tmp_path / "run", synthetic_cases(8)
    loop.train(recipe, load_backbone(str(tiny_model_dir), "none", device="cpu"), cases, cases, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "step_000004")  # as if killed after step 4's metrics, before its checkpoint
    loop.train(recipe, load_backbone(str(tiny_model_dir), "none", device="cpu"), cases, cases, run_dir, resume=True)
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    _assert_logged_like_metrics(_scalars(run_dir / "tiny"), rows)


def test_a_missing_tracker_package_stops_before_training(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "get_available_trackers", list)
    recipe = tiny_recipe(str(tiny_backbone.source), 2, report_to="wandb")
    with pytest.raises(MissingOptionalPackage, match=r"^recipe: training.report_to: wandb is not installed") as e:
        loop.train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["tb", "all"])
def test_an_unknown_tracker_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", [f"training.report_to={value}"])
    message = str(e.value)
    assert "\n" not in message and "training.report_to: " in message and "tensorboard" in message


def test_tracking_and_an_unset_precision_leave_the_settings_digest_alone():
    plain = load_recipe("movie-lora")[0].model_dump(mode="json")
    assert load_recipe("movie-lora", ["training.report_to=tensorboard"])[0].model_dump(mode="json") == plain
    assert load_recipe("movie-lora", ["training.mixed_precision=null"])[0].model_dump(mode="json") == plain
    assert load_recipe("movie-lora", ["training.mixed_precision=bf16"])[0].model_dump(mode="json") != plain


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one precision per process: start from none, and leave none for the next test."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("env, setting, expected", [
    ("bf16", None, "bf16"),  # null: the accelerate config or environment decides
    (None, None, "no"),
    ("bf16", "no", "no"),  # a recipe value wins
    (None, "bf16", "bf16"),
])
def test_mixed_precision_comes_from_the_recipe_or_accelerate(env, setting, expected, monkeypatch, tmp_path,
                                                            fresh_accelerate_state):
    if env is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", env)
    recipe = tiny_recipe("unused", 2, mixed_precision=setting)
    accelerator = loop._build_accelerator(recipe, tmp_path)
    assert accelerator.mixed_precision == expected
    # DDP does not send the frozen int8 weights (buffers) from rank 0 at every forward: they are alike on every rank
    assert accelerator.ddp_handler.to_kwargs() == {"broadcast_buffers": False}


def test_a_precision_accelerate_refuses_is_one_line_naming_the_key(fresh_accelerate_state, tmp_path, monkeypatch,
                                                                  tiny_model_dir):
    """Accelerate's ValueError (bf16 on a GPU without it; a second precision in one process) was a traceback."""
    loop._build_accelerator(tiny_recipe(str(tiny_model_dir), 2, mixed_precision="no"), tmp_path)
    with pytest.raises(ConfigError) as e:  # this process's accelerate state already holds "no"
        loop._build_accelerator(tiny_recipe(str(tiny_model_dir), 2, mixed_precision="bf16"), tmp_path)
    assert "\n" not in str(e.value) and str(e.value).startswith(
        "recipe: accelerate refused this run's setup (training.mixed_precision bf16): ")


def test_a_mixed_precision_run_caches_its_report_rows_at_the_precision_their_keys_name(tiny_model_dir, tmp_path,
                                                                                       fresh_accelerate_state):
    """accelerate wraps the prepared model's forward in autocast: the report after training scored the untuned and
    the trained rows in bf16 and cached them under the float32 keys a later `eval` reads (was: 6e-4 off a logit)."""
    from train_worker import tiny_recipe_file

    from adaptrec.data.tallrec import read_tallrec_json
    from adaptrec.score_cache import ScoreCache
    from adaptrec.scoring.core import backbone_scorer
    from adaptrec.train.recipe import run_recipe

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 8, "valid": 4, "test": 8},
                            mixed_precision="bf16")
    run_recipe(*load_recipe(str(path)))
    cases = read_tallrec_json(tmp_path / "data" / "test.json")
    backbone = load_backbone(str(tiny_model_dir), "none", device="cpu")
    options = {"max_prompt_tokens": 256, "batch_size": 4, "progress": False}
    cached = backbone_scorer(backbone, cache=ScoreCache.default(), **options)
    from_cache = cached.logits_for_prompts(cached.prompts(cases))
    assert (cached.cached, cached.fresh) == (len(cases), 0)
    fresh = backbone_scorer(backbone, **options)
    np.testing.assert_allclose(from_cache, fresh.logits_for_prompts(fresh.prompts(cases)), atol=1e-6)


def test_a_method_prepares_outside_the_runs_autocast(tiny_model_dir, tmp_path, fresh_accelerate_state):
    """A distillation teacher scored in `prepare` caches its rows under float32 keys too (was: under autocast)."""
    import torch
    from accelerate import Accelerator

    from adaptrec.train.methods import Method

    class Spy(Method):
        def prepare(self, model, ctx, train_cases):
            self.own_forward = "forward" not in vars(model) or vars(model)["forward"] == vars(model)["_original_forward"]

    spy = Spy()
    backbone = load_backbone(str(tiny_model_dir), "none", device="cpu")
    loop.train(tiny_recipe(str(tiny_model_dir), 1, mixed_precision="bf16"), backbone, synthetic_cases(4),
               synthetic_cases(4, seed=1), tmp_path / "run", method=spy)
    assert spy.own_forward

    backbone = load_backbone(str(tiny_model_dir), "none", device="cpu")
    ids = backbone.tokenizer(["a film"], return_tensors="pt").input_ids
    with torch.no_grad():
        plain = backbone.model(ids).logits
        model = Accelerator(cpu=True, mixed_precision="bf16").prepare(backbone.model)
        wrapped = model.forward
        with loop.own_forward(model):
            np.testing.assert_allclose(model(ids).logits, plain, atol=1e-6)
        assert model.forward == wrapped and not torch.allclose(model(ids).logits, plain, atol=1e-6)
