"""The training loop on the tiny model: it learns, stops early, checkpoints, resumes exactly, runs multi-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic import synthetic_cases
from train_worker import tiny_recipe

from adaptrec.errors import ConfigError
from adaptrec.metrics import log_loss
from adaptrec.registry import Registry
from adaptrec.scoring.core import Scorer
from adaptrec.train.checkpoint import latest_checkpoint
from adaptrec.train.loop import micro_batches, train

WORKER = Path(__file__).resolve().parents[1] / "helpers" / "train_worker.py"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_log_loss(model, tokenizer, cases) -> float:
    scores = Scorer(model, tokenizer, "k", progress=False).score(cases)
    return log_loss(np.array([c.label for c in cases]), scores)


def test_loop_learns_and_keeps_the_backbone_frozen(tiny_backbone, tmp_path):
    before = {k: v.clone() for k, v in tiny_backbone.model.state_dict().items()}
    # every training label Yes: a working loop must move P(yes) towards 1 on these prompts
    cases = [replace(c, label=1) for c in synthetic_cases(16)]
    loss_before = _train_log_loss(tiny_backbone.model, tiny_backbone.tokenizer, cases)
    recipe = tiny_recipe(str(tiny_backbone.source), 40, eval_every=20, lr=2e-2)
    result = train(recipe, tiny_backbone, cases, synthetic_cases(8, seed=1), tmp_path / "run")
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, 41)) and result.steps == 40
    assert _train_log_loss(result.model, tiny_backbone.tokenizer, cases) < 0.5 * loss_before
    assert [r["step"] for r in rows if "val_auc" in r] == [20, 40]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not list(result.adapter_dir.glob("*.bin"))
    with result.model.disable_adapter():
        after = {k.replace(".base_layer", ""): v for k, v in result.model.get_base_model().state_dict().items()
                 if "lora_" not in k}
    assert after.keys() == before.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key].to(value.device), value, rtol=0, atol=0)  # train() may move it to CUDA


def test_a_run_restarted_before_its_first_checkpoint_logs_each_step_once(tiny_backbone, tmp_path):
    """An attempt killed before its first checkpoint left metric rows; the new run starts at step 1 again."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    recipe = tiny_recipe(str(tiny_backbone.source), 2, eval_every=2)
    train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), run)
    assert [r["step"] for r in _metrics(run)] == [1, 2] and all(r["loss"] != 9.0 for r in _metrics(run))


@pytest.mark.parametrize("bad", ["{not json", json.dumps({"loss": 1.0}), json.dumps([1, 2])])
def test_an_unreadable_metrics_line_before_the_last_is_one_line(tiny_backbone, tmp_path, bad):
    """Only a last line a crash cut short is dropped; another bad line was a JSONDecodeError or KeyError traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(f"{bad}\n" + json.dumps({"step": 1, "loss": 9.0}) + "\n")
    with pytest.raises(ConfigError, match=r"metrics.jsonl line 1: not a metrics row with a step") as e:
        train(tiny_recipe(str(tiny_backbone.source), 2), tiny_backbone, synthetic_cases(8), synthetic_cases(8), run)
    assert "\n" not in str(e.value)


def test_the_logged_learning_rate_is_the_one_the_step_used(tiny_backbone, tmp_path):
    """Read after the scheduler stepped, step 1 of a warm-up was logged at the full rate (it trained at 0)."""
    recipe = tiny_recipe(str(tiny_backbone.source), 3, scheduler="linear", warmup_steps=2, lr=4e-3, eval_every=3)
    train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")
    assert [r["lr"] for r in _metrics(tmp_path / "run")] == pytest.approx([0.0, 2e-3, 4e-3])


def test_a_second_run_in_the_same_folder_is_refused_while_one_runs(tiny_model_dir, tmp_path):
    """Both appended to one metrics file, raced on best/ and registered two versions; `--restart` deleted the other
    run's folder (and a lock kept inside it)."""
    import fcntl

    from train_worker import tiny_recipe_file

    from adaptrec.config import load_recipe
    from adaptrec.registry import Registry
    from adaptrec.train.recipe import run_dir_for, run_recipe

    recipe, text = load_recipe(str(tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 8, "valid": 4,
                                                                                       "test": 4})))
    run_dir = run_dir_for(recipe)
    run_dir.mkdir(parents=True)
    (run_dir / "theirs").write_text("the other run's files")
    with open(run_dir.with_name(run_dir.name + ".lock"), "a") as held:  # as the other run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another run is using this folder now"):
            run_recipe(recipe, text, restart=True)
    assert (run_dir / "theirs").exists() and Registry().list() == []
    assert run_recipe(recipe, text, restart=True).record.ref == "tiny:1"  # released: it runs


def _checkpointed_then_resumed(model_dir, run_dir, train_cases: int = 8):
    """A tiny run's step-0 checkpoint, and a second trainer over `train_cases` cases set up to resume it."""
    from router_helpers import fresh_backbone

    from adaptrec.train.loop import Trainer

    recipe = tiny_recipe(str(model_dir), 2, eval_every=2)
    first = Trainer(recipe, fresh_backbone(model_dir), synthetic_cases(8), synthetic_cases(8), run_dir)
    first.setup()
    first.checkpoint()
    second = Trainer(recipe, fresh_backbone(model_dir), synthetic_cases(train_cases), synthetic_cases(8), run_dir)
    second.setup(resume=True)
    return second


def test_a_resume_puts_back_the_best_adapter_its_checkpoint_knows(tiny_model_dir, tmp_path, monkeypatch):
    """A new best saved after the newest checkpoint by an attempt that then died stayed in `best/` (was): where
    steps do not repeat bit for bit (CUDA), the resumed run could end with those weights under another best step."""
    from router_helpers import fresh_backbone

    import adaptrec.train.loop as loop

    recipe = tiny_recipe(str(tiny_model_dir), 4, eval_every=1, checkpoint_every=2)
    aucs = iter([0.5, 0.6, 0.9, 0.1])
    monkeypatch.setattr(loop, "validate", lambda *args: next(aucs))
    first = loop.Trainer(recipe, fresh_backbone(tiny_model_dir), synthetic_cases(8), synthetic_cases(8), tmp_path)
    first.setup()
    best, saved = tmp_path / "best" / "adapter_model.safetensors", []
    for _ in range(3):  # a checkpoint at step 2 (its best: step 2), a new best at step 3, then the attempt dies
        first.validate_and_checkpoint(first.step())
        saved.append(load_file(best))
    assert any(not torch.equal(saved[1][k], saved[2][k]) for k in saved[1])
    second = loop.Trainer(recipe, fresh_backbone(tiny_model_dir), synthetic_cases(8), synthetic_cases(8), tmp_path)
    second.setup(resume=True)
    second.resume()
    assert (second.global_step, second.stopper.best_step) == (2, 2)
    assert all(torch.equal(load_file(best)[k], saved[1][k]) for k in saved[1])  # step 2's, as its stopper says


@pytest.mark.parametrize("rank", [0, 1])
def test_a_short_micro_batch_weighs_every_case_alike_on_every_rank(tiny_model_dir, tmp_path, monkeypatch, rank):
    """11 cases, 2 processes, batch 4, 2 micro-batches: 8 cases, then 3 split 2 + 1. Each rank's weights divided by
    its own cases (6 and 5), so after averaging the ranks a case weighed 1/12 on one and 1/10 on the other; now 1/11
    on both (a case's weight: its micro-batch's scale / its cases / grad_accum / processes)."""
    from accelerate import Accelerator
    from router_helpers import fresh_backbone

    from adaptrec.train.loop import Trainer

    recipe = tiny_recipe(str(tiny_model_dir), 1, batch_size=4, grad_accum=2)
    trainer = Trainer(recipe, fresh_backbone(tiny_model_dir), synthetic_cases(11), synthetic_cases(8), tmp_path / "r")
    trainer.setup()
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    monkeypatch.setattr(Accelerator, "process_index", property(lambda self: rank))
    monkeypatch.setattr(trainer.method, "loss", lambda *args: torch.tensor(1.0))  # backward then gets the scale
    scales, sizes = [], []
    monkeypatch.setattr(Accelerator, "backward", lambda self, loss: scales.append(float(loss)))
    share = trainer.method.share
    monkeypatch.setattr(trainer.method, "share", lambda batch, r, w: sizes.append(len(share(batch, r, w))) or
                        share(batch, r, w))
    trainer.step()
    mine = sizes[:2]  # this rank's shares of the two micro-batches, then every rank's
    assert mine == ([4, 2] if rank == 0 else [4, 1])
    assert [s / n / 2 / 2 for s, n in zip(scales, mine)] == pytest.approx([1 / 11, 1 / 11])


def test_a_checkpoint_resumes_only_under_as_many_processes(tiny_model_dir, tmp_path, monkeypatch):
    """Micro-batches are batch_size x processes: resumed in one process, a two-process run halved its batch."""
    from accelerate import Accelerator

    second = _checkpointed_then_resumed(tiny_model_dir, tmp_path / "run")
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    with pytest.raises(ConfigError, match="written by a run of 1 processes, this one has 2"):
        second.resume()


def test_a_checkpoint_resumes_only_over_the_same_cases(tiny_model_dir, tmp_path):
    """(was: resumed over whatever the SPEC held now, e.g. a feedback log that grew meanwhile: the remaining steps
    read other batches, mixing two data sets, unlike the uninterrupted run it claims to equal)"""
    _checkpointed_then_resumed(tiny_model_dir, tmp_path / "same").resume()
    grown = _checkpointed_then_resumed(tiny_model_dir, tmp_path / "grown", train_cases=9)
    with pytest.raises(ConfigError, match="other training or validation cases .* pass restart=True$"):
        grown.resume()
    extra = _checkpointed_then_resumed(tiny_model_dir, tmp_path / "extra")
    extra.method.own_cases = lambda: synthetic_cases(3)  # e.g. a multi-task run's other domain, logged meanwhile
    with pytest.raises(ConfigError, match="other training or validation cases"):
        extra.resume()


def test_a_checkpoint_resumes_only_on_the_same_backbone_precision_and_teacher(tiny_model_dir, tmp_path, monkeypatch):
    """(was: resumed on other backbone weights in the same folder, under another mixed precision or int8 kernel, or
    with a newer version of the teacher, without a word: half the steps trained one thing, half another)"""
    other = _checkpointed_then_resumed(tiny_model_dir, tmp_path / "weights")
    other.backbone.fingerprint = replace(other.backbone.fingerprint, exact="0" * 64)
    with pytest.raises(ConfigError, match="another backbone \\(.* pass restart=True$"):
        other.resume()
    kernel = _checkpointed_then_resumed(tiny_model_dir, tmp_path / "kernel")
    kernel.backbone.backend = "bf16"
    with pytest.raises(ConfigError, match="another backend "):
        kernel.resume()
    precision = _checkpointed_then_resumed(tiny_model_dir, tmp_path / "precision")
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "mixed_precision", property(lambda self: "bf16"))
    with pytest.raises(ConfigError, match="another mixed_precision "):
        precision.resume()
    monkeypatch.undo()
    teacher = _checkpointed_then_resumed(tiny_model_dir, tmp_path / "teacher")
    teacher.method.identity = lambda: {"teacher": "teacher:2's key", "teacher_cases": "digest"}
    with pytest.raises(ConfigError, match="another teacher, teacher_cases "):
        teacher.resume()


def test_the_fp16_loss_scale_resumes_where_it_was(tiny_model_dir, tmp_path):
    """Reset to its initial scale, a resumed fp16 run would skip steps the uninterrupted one took."""
    from router_helpers import fresh_backbone

    from adaptrec.train.loop import Trainer

    def trainer(init_scale: float) -> Trainer:
        recipe = tiny_recipe(str(tiny_model_dir), 2, eval_every=2)
        made = Trainer(recipe, fresh_backbone(tiny_model_dir), synthetic_cases(8), synthetic_cases(8, seed=1),
                       tmp_path / "run")
        made.setup(resume=True)
        made.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)  # as fp16 on CUDA has one
        return made

    first = trainer(512.0)
    first.checkpoint()
    second = trainer(65536.0)
    second.resume()
    assert second.accelerator.scaler.get_scale() == 512.0


def test_a_step_the_fp16_scaler_skipped_moves_neither_the_schedule_nor_the_tuner(tiny_backbone, tmp_path, monkeypatch):
    from accelerate import Accelerator

    from adaptrec.train.loop import Trainer

    recipe = tiny_recipe(str(tiny_backbone.source), 2, eval_every=2, adapter={"type": "adalora", "init_r": 4,
                                                                              "target_r": 2})
    trainer = Trainer(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")
    trainer.setup()
    tuner_steps: list[int] = []
    monkeypatch.setattr(trainer.tuner, "after_optimizer_step", lambda model, step: tuner_steps.append(step))
    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(lambda self: True))  # inf gradients
    before = trainer.scheduler.last_epoch
    trainer.step()
    assert trainer.scheduler.last_epoch == before and tuner_steps == []


def test_a_short_micro_batch_weighs_its_cases_like_a_full_ones(tiny_backbone, tmp_path, monkeypatch):
    """6 shots in micro-batches of 4: each epoch ends on a batch of 2. Over an accumulation window of (4, 2) each
    micro-batch's mean loss enters in proportion to its cases, so every case counts the same."""
    from accelerate import Accelerator

    from adaptrec.train.loop import Trainer

    recipe = tiny_recipe(str(tiny_backbone.source), 1, batch_size=4, grad_accum=2, eval_every=1)
    trainer = Trainer(recipe, tiny_backbone, synthetic_cases(6), synthetic_cases(8, seed=1), tmp_path / "run")
    trainer.setup()
    sizes, means, given = [], [], []
    real_loss, real_backward = trainer.method.loss, Accelerator.backward

    def loss(model, cases, ctx, index):
        value = real_loss(model, cases, ctx, index)
        sizes.append(len(cases))
        means.append(value.item())
        return value

    monkeypatch.setattr(trainer.method, "loss", loss)
    monkeypatch.setattr(Accelerator, "backward", lambda self, x, **kw: given.append(x.item()) or real_backward(self, x))
    row = trainer.step()
    assert sizes == [4, 2]
    assert given == pytest.approx([means[0] * 4 * 2 / 6, means[1] * 2 * 2 / 6], rel=1e-6)
    assert row["loss"] == pytest.approx((means[0] * 4 + means[1] * 2) / 6, rel=1e-6)  # the mean over the 6 cases


def test_terms_apart_from_the_cases_count_alike_in_a_short_micro_batch(tiny_backbone, tmp_path, monkeypatch):
    """A text loss or regulariser was scaled with the case loss: over a (4, 2) window it weighed 2/3 and 1/3; now each
    micro-batch's counts alike, logged apart from the case loss; and the tuner readies the adapter to validate."""
    from accelerate import Accelerator

    from adaptrec.train.loop import Trainer

    recipe = tiny_recipe(str(tiny_backbone.source), 1, batch_size=4, grad_accum=2, eval_every=1)
    trainer = Trainer(recipe, tiny_backbone, synthetic_cases(6), synthetic_cases(8, seed=1), tmp_path / "run")
    trainer.setup()
    given, calls = [], []
    monkeypatch.setattr(trainer.method, "loss", lambda *args: torch.tensor(0.0))
    monkeypatch.setattr(trainer.method, "aux_loss", lambda *args: torch.tensor(1.0))
    monkeypatch.setattr(trainer.tuner, "extra_loss", lambda model: torch.tensor(0.5))
    monkeypatch.setattr(Accelerator, "backward", lambda self, x, **kw: given.append(x.item()))
    row = trainer.step()
    assert given == pytest.approx([1.5, 1.5]) and row["aux_loss"] == pytest.approx(1.5) and row["loss"] == 0.0
    monkeypatch.setattr(trainer.tuner, "before_validation", lambda model: calls.append(model))
    trainer.validate_and_checkpoint(row)
    assert calls == [trainer.unwrapped] and "val_auc" in row


def test_validation_picks_the_best_adapter_on_the_score_the_recipe_reports(tiny_backbone, tmp_path, monkeypatch):
    from adaptrec.train import loop

    recipe = tiny_recipe(str(tiny_backbone.source), 1, eval_every=1)
    recipe = recipe.model_copy(update={"evaluation": recipe.evaluation.model_copy(update={"score": "tallrec"})})
    trainer = loop.Trainer(recipe, tiny_backbone, synthetic_cases(4), synthetic_cases(8, seed=1), tmp_path / "run")
    trainer.setup()
    modes, real = [], loop.to_scores
    monkeypatch.setattr(loop, "to_scores", lambda logits, mode="pyes": modes.append(mode) or real(logits, mode))
    trainer.validate_and_checkpoint(trainer.step())
    assert modes == ["tallrec"]


def test_early_stopping_keeps_the_best_adapter(tiny_backbone, tmp_path, monkeypatch):
    """Validation AUC scripted 0.6, 0.9, 0.7, 0.5 at steps 2, 4, 6, 8, the weights moving at a real learning rate:
    patience 2 stops at step 8, and best/ holds the weights validated at step 4, not the last ones."""
    from peft import get_peft_model_state_dict

    from adaptrec.train import loop

    aucs, validated = iter([0.6, 0.9, 0.7, 0.5]), []

    def scripted(scorer, cases, mode="pyes", rank=0, world=1):
        validated.append({k: v.detach().clone() for k, v in get_peft_model_state_dict(scorer.model).items()})
        return next(aucs)

    monkeypatch.setattr(loop, "validate", scripted)
    recipe = tiny_recipe(str(tiny_backbone.source), 40, eval_every=2, patience=2)
    result = train(recipe, tiny_backbone, synthetic_cases(16), synthetic_cases(8, seed=1), tmp_path / "run")
    assert result.stopped_early and result.steps == 8 and result.best_step == 4 and result.best_val_auc == 0.9
    best = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert best.keys() == validated[1].keys()
    assert all(torch.equal(best[k], validated[1][k]) for k in best)
    assert not all(torch.equal(best[k], validated[3][k]) for k in best)  # the weights moved after step 4


def test_what_a_method_draws_while_it_prepares_moves_no_training_draw(tiny_model_dir, tmp_path):
    """A distillation teacher's layers are made (drawing from the RNG) only when its scores are not cached (was: the
    dropout stream, so the trained adapter, depended on the score cache's state)."""
    from router_helpers import fresh_backbone

    from adaptrec.train.methods import Method

    class Drawing(Method):
        def prepare(self, model, ctx, train_cases):
            torch.rand(1000)

    def trained(method, name):
        recipe = tiny_recipe(str(tiny_model_dir), 2, eval_every=2)
        result = train(recipe, fresh_backbone(tiny_model_dir), synthetic_cases(8), synthetic_cases(8, seed=1),
                       tmp_path / name, method=method)
        return load_file(result.adapter_dir / "adapter_model.safetensors")

    plain, drawn = trained(Method(), "plain"), trained(Drawing(), "drawn")
    assert all(torch.equal(plain[k], drawn[k]) for k in plain)


def test_a_diverged_run_stops_in_one_line_naming_the_step(tiny_backbone, tmp_path, monkeypatch):
    """(was: `ValueError: scores contain NaN` from the AUC, a traceback)"""
    from adaptrec.scoring.core import Scorer

    monkeypatch.setattr(Scorer, "logits_for_prompts", lambda self, prompts: np.full((len(prompts), 3), np.nan))
    recipe = tiny_recipe(str(tiny_backbone.source), 4, eval_every=2)
    recipe._source = "recipes/tiny.yaml"
    with pytest.raises(ConfigError, match="^recipes/tiny.yaml: step 2: the adapter's validation scores are not "
                                          "finite: training diverged .*lower training.lr$"):
        train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")


def test_weights_that_turn_nan_stop_the_run_at_that_step_before_any_checkpoint(tiny_backbone, tmp_path, monkeypatch):
    """(was: a NaN loss went through clipping into the weights, and a checkpoint of them was written before the next
    validation stopped the run)"""
    from adaptrec.adapters.lora import LoraTuner

    monkeypatch.setattr(LoraTuner, "extra_loss", lambda self, model: float("nan") * sum(
        p.sum() for p in model.parameters() if p.requires_grad))
    recipe = tiny_recipe(str(tiny_backbone.source), 4, eval_every=2, checkpoint_every=1)
    recipe._source = "recipes/tiny.yaml"
    with pytest.raises(ConfigError, match="^recipes/tiny.yaml: step 1: the adapter's weights are not finite after "
                                          "this optimizer step: training diverged; lower training.lr$"):
        train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_adapter_settings_the_backbone_refutes_name_the_recipe(tiny_backbone, tmp_path):
    recipe = tiny_recipe(str(tiny_backbone.source), 2, adapter={"type": "prefix", "init_text": "movie"})
    recipe._source = "recipes/tiny.yaml"
    with pytest.raises(ConfigError, match=r"^recipes/tiny.yaml: adapter.init_text: 1 tokens, fewer than adapter.num_virtual_tokens \(10\)$"):
        train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_existing_checkpoints_need_resume(tiny_backbone, tmp_path):
    recipe = tiny_recipe(str(tiny_backbone.source), 2)
    train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")
    with pytest.raises(ConfigError, match="pass resume=True to continue it, or pass restart=True$"):
        train(recipe, tiny_backbone, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")


def test_micro_batches_cover_each_epoch_once():
    cases = synthetic_cases(10)
    epoch = [c.user_id for i in range(3) for c in micro_batches(cases, 4, seed=0, index=i)]
    assert sorted(epoch) == sorted(c.user_id for c in cases)
    assert micro_batches(cases, 4, 0, 5) == micro_batches(cases, 4, 0, 5)


def _run_worker(tiny_model_dir, run_dir, steps, *flags, env=None):
    return subprocess.Popen([sys.executable, str(WORKER), str(tiny_model_dir), str(run_dir), str(steps), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    steps = 12
    straight = _run_worker(tiny_model_dir, tmp_path / "straight", steps)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    victim = _run_worker(tiny_model_dir, tmp_path / "killed", steps, "--slow")
    deadline = time.time() + 300
    while latest_checkpoint(tmp_path / "killed") is None or latest_checkpoint(tmp_path / "killed").step < 4:
        assert victim.poll() is None and time.time() < deadline, "worker ended before it could be killed"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = latest_checkpoint(tmp_path / "killed").step
    assert killed_at < steps

    resumed = _run_worker(tiny_model_dir, tmp_path / "killed", steps, "--resume")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "resuming" in out and f"DONE steps={steps} " in out

    a = load_file(latest_checkpoint(tmp_path / "straight").path / "adapter.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "killed").path / "adapter.safetensors")
    assert latest_checkpoint(tmp_path / "killed").step == latest_checkpoint(tmp_path / "straight").step == steps
    # Equal up to float summation order: BLAS kernels may pick other code paths for other memory
    # alignments in a new process (~1e-6 here). A resume that lost optimizer, scheduler or RNG state
    # differs by ~1e-3 (a few Adam steps of lr 5e-3), far outside this tolerance.
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    final_a = load_file(tmp_path / "straight" / "best" / "adapter_model.safetensors")
    final_b = load_file(tmp_path / "killed" / "best" / "adapter_model.safetensors")
    for key in final_a:
        torch.testing.assert_close(final_a[key], final_b[key], rtol=1e-4, atol=1e-5)
    assert [r["step"] for r in _metrics(tmp_path / "killed")] == list(range(1, steps + 1))


def _launch_two_cpu_ranks(tiny_model_dir, run_dir, steps, *flags) -> str:
    """`accelerate launch` of the worker on two data-parallel CPU processes (gloo); their stdout. accelerate 1.x's
    `--cpu` flag picks its single-process launcher whatever --num_processes says; `--multi_gpu` on a machine
    without CUDA starts real CPU ranks."""
    proc = _launch(tiny_model_dir, run_dir, steps, *flags)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _launch(tiny_model_dir, run_dir, steps, *flags) -> subprocess.CompletedProcess:
    launcher = Path(sys.executable).with_name("accelerate")
    return subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(WORKER), str(tiny_model_dir), str(run_dir), str(steps), *flags],
        capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )


def test_a_recipe_under_accelerate_launch_registers_one_version_from_the_main_process(tiny_model_dir, tmp_path):
    """(was: on a host without CUDA every rank took itself for the main one, and the second stopped on the run
    folder's lock; where ranks knew their place, each evaluated and registered its own version)"""
    out = _launch_two_cpu_ranks(tiny_model_dir, tmp_path, 2, "--recipe")
    assert sorted(line for line in out.splitlines() if line.startswith("REGISTERED")) == [
        "REGISTERED tiny:1 reported=False", "REGISTERED tiny:1 reported=True"]
    assert [r.ref for r in Registry(tmp_path / "home").list()] == ["tiny:1"]
    out = _launch_two_cpu_ranks(tiny_model_dir, tmp_path, 2, "--recipe", "--restart")  # (was: both ranks deleted the
    assert "REGISTERED tiny:2 reported=True" in out  # run folder at once, one failing with FileNotFoundError)


def test_a_launch_on_a_run_folder_another_run_holds_stops_every_rank_and_deletes_nothing(tiny_model_dir, tmp_path,
                                                                                         monkeypatch):
    """(was: only the main process checked the lock; the other rank went on, and a --restart deleted the live run's
    folder before the launcher stopped it)"""
    import fcntl

    from train_worker import tiny_recipe_file

    from adaptrec.config import load_recipe
    from adaptrec.train.recipe import run_dir_for

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))  # as the worker's recipe job sets it
    recipe, _ = load_recipe(str(tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8},
                                                 eval_every=2)))
    run_dir = run_dir_for(recipe)
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("{}\n")  # the live run's
    with open(run_dir.with_name(run_dir.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = _launch(tiny_model_dir, tmp_path, 2, "--recipe", "--restart")
    assert proc.returncode != 0 and "another run is using this folder now" in proc.stderr, proc.stderr[-3000:]
    assert (run_dir / "metrics.jsonl").read_text() == "{}\n"


def test_accelerate_launch_two_cpu_processes_and_resume_each_ranks_rng(tiny_model_dir, tmp_path):
    """Two ranks train 4 steps straight; two more stop after step 2's checkpoint and resume: the same adapter, which
    needs each rank's own dropout stream back (rank 0's on both ranks drifts ~1e-3)."""
    out = _launch_two_cpu_ranks(tiny_model_dir, tmp_path / "ddp", 4, "--check-validation")
    assert out.count("DONE steps=4 world=2") == 2  # both ranks took the same number of optimizer steps
    checks = [line.split() for line in out.splitlines() if line.startswith("VALIDATION")]
    assert len(checks) == 2 and all(shared[7:] == whole[6:] for _, shared, whole in checks)  # each rank scores half
    assert (tmp_path / "ddp" / "best" / "adapter_model.safetensors").is_file()
    assert [r["step"] for r in _metrics(tmp_path / "ddp")] == [1, 2, 3, 4]  # only rank 0 writes

    assert _launch_two_cpu_ranks(tiny_model_dir, tmp_path / "cut", 4, "--stop-at", "2").count("STOPPED") == 2
    assert latest_checkpoint(tmp_path / "cut").step == 2
    out = _launch_two_cpu_ranks(tiny_model_dir, tmp_path / "cut", 4, "--resume")
    assert out.count("DONE steps=4 world=2") == 2
    assert "from step 2" in out  # resumed (the main process says so), not restarted: a seeded restart ends alike
    a = load_file(latest_checkpoint(tmp_path / "ddp").path / "adapter.safetensors")
    b = load_file(latest_checkpoint(tmp_path / "cut").path / "adapter.safetensors")
    for key in a:  # the tolerance of the single-process resume test
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_ranks_whose_validation_aucs_differ_stop_together_on_the_main_process_s(tiny_model_dir, tmp_path):
    """(was: each rank's early stopping read its own AUC: one whose AUC differed in the last bit stopped alone, the
    others waiting for it in the next step's all-reduce until the process group's timeout)"""
    out = _launch_two_cpu_ranks(tiny_model_dir, tmp_path / "run", 6, "--skewed-validation")
    assert out.count("DONE steps=2 world=2") == 2  # rank 0's AUC fell at step 2: both stopped there


def test_a_collab_adapter_trains_under_a_launch_when_a_micro_batch_uses_no_projector(tiny_model_dir, tmp_path):
    """(was: DDP expected every trainable parameter in every backward; a rank whose micro-batch held no item token
    left the projector out, and the next step failed "Expected to have finished reduction in the prior iteration")"""
    out = _launch_two_cpu_ranks(tiny_model_dir, tmp_path / "run", 3, "--collab")
    assert out.count("DONE steps=3 world=2") == 2


def test_an_adapter_on_the_embedding_layer_saves_its_lora_matrices_only_and_registers(tiny_model_dir, tmp_path):
    """peft saves a targeted embedding layer's frozen base weights whole unless told not to, and the registry refuses
    weights a load would write into the base (was: trained, then refused at registration)."""
    from router_helpers import fresh_backbone
    from safetensors import safe_open

    from adaptrec.adapters.base import build_peft_model
    from adaptrec.train.loop import _save_adapter

    backbone = fresh_backbone(tiny_model_dir)
    model = build_peft_model(backbone.model, {"type": "lora", "r": 4, "target_modules": ["q_proj", "embed_tokens"]},
                             1)
    _save_adapter(model, tmp_path / "best")
    with safe_open(str(tmp_path / "best" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("embed_tokens.lora_embedding_A" in k for k in keys) and not any(".base_layer." in k for k in keys)
    record = Registry(tmp_path / "home").register(tmp_path / "best", name="emb", domain="movie", kind="trained",
                                                  adapter_type="lora", adapter_config=None,
                                                  fingerprint=backbone.fingerprint)
    assert record.ref == "emb:1"
