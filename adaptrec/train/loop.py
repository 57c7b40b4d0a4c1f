"""The training loop: Accelerate (devices, precision, gradient accumulation), Yes/No loss, validation,
early stopping on validation AUC, resumable checkpoints, metrics.jsonl and a progress bar."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_scheduler

from adaptrec.scoring.core import Scorer

from ..adapters.base import build_peft_model, tuner_for
from ..atomic import atomic_dir, write_text
from ..config import Recipe
from ..data.records import Case
from ..errors import ConfigError
from ..metrics.classification import auc
from .checkpoint import apply_checkpoint, latest_checkpoint, newest_readable, save_checkpoint
from .early_stopping import EarlyStopping
from .methods import Method, StepContext, build_method, micro_batches

__all__ = ["TrainResult", "micro_batches", "train", "validate"]


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path  # the best adapter (plain peft layout)
    steps: int  # optimizer steps taken
    best_val_auc: float | None
    best_step: int
    stopped_early: bool
    model: torch.nn.Module  # the peft model (adapter weights of the last step)
    method_info: dict = field(default_factory=dict)  # what the method recorded (also run_dir/method.json)
    lineage: dict | None = None  # registry lineage of the adapter (e.g. a distillation teacher)

    def summary(self) -> dict:
        return {"run_dir": str(self.run_dir), "adapter_dir": str(self.adapter_dir), "steps": self.steps,
                "best_val_auc": self.best_val_auc, "best_step": self.best_step, "stopped_early": self.stopped_early,
                "method": self.method_info}


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _trim_metrics(path: Path, up_to_step: int) -> None:
    """On resume, forget metric lines written after the checkpoint we continue from, and a last line a crash
    cut short (it never held a whole row)."""
    if path.is_file():
        lines = path.read_text(errors="replace").splitlines()
        rows = []
        for n, line in enumerate(lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:
                    break
                raise
            if row["step"] <= up_to_step:
                rows.append(line)
        write_text(path, "".join(r + "\n" for r in rows))


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_adapter(model, dest: Path) -> None:
    """Replace `dest` with the model's current adapter (safetensors), atomically; `.new`/`.old` folders a crash
    left behind are cleared first."""
    old, new = dest.with_name(dest.name + ".old"), dest.with_name(dest.name + ".new")
    for stale in (old, new):
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_dir(new) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tuner_for(model).save_extra(model, tmp)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def validate(scorer: Scorer, cases: Sequence[Case]) -> float:
    scores = scorer.score(cases)
    return auc(np.array([c.label for c in cases]), scores)


def train(
    recipe: Recipe,
    backbone,
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    run_dir: Path,
    resume: bool = False,
    method: Method | None = None,
) -> TrainResult:
    """Train one adapter on `backbone` per `recipe`; the best adapter (validation AUC) ends in run_dir/best.

    The loss and the micro-batches come from `method` (default: the one `recipe.method` names)."""
    t = recipe.training
    metrics_path = run_dir / "metrics.jsonl"
    ckpt = latest_checkpoint(run_dir)
    if ckpt and not resume:
        raise ConfigError(f"{run_dir}: holds checkpoints of an earlier run: pass --resume to continue it, or --restart")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)

    on_cuda = torch.cuda.is_available()
    accelerator = Accelerator(
        gradient_accumulation_steps=t.grad_accum,
        cpu=not on_cuda,
        mixed_precision="bf16" if on_cuda and recipe.backbone.quantization == "none" else "no",
    )
    try:  # settings that only this backbone can refute (target modules, init_text's length)
        model = build_peft_model(backbone.model, recipe.adapter, total_steps=t.max_steps, tokenizer=backbone.tokenizer)
    except ConfigError as e:
        raise ConfigError(f"{recipe._source}: {e}") from None
    tuner = tuner_for(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    tokenizer = backbone.tokenizer
    scorer = Scorer(
        unwrapped, tokenizer, model_key="", template=recipe.data.template,
        max_prompt_tokens=recipe.data.max_prompt_tokens, batch_size=recipe.evaluation.batch_size, progress=False,
    )
    method = method or build_method(recipe, backbone, train_cases)
    ctx = StepContext(scorer, accelerator.device)
    method.prepare(unwrapped, ctx, train_cases)
    stopper = EarlyStopping(recipe.training.patience)
    step = 0
    data = newest_readable(run_dir, log=accelerator.print) if ckpt else None
    if data:
        apply_checkpoint(data, optimizer, scheduler)
        with torch.no_grad():
            for name, p in unwrapped.named_parameters():
                if name in data.adapter:
                    p.copy_(data.adapter[name])
        tuner.load_state_tensors(unwrapped, data.tuner)
        stopper = EarlyStopping(**data.meta["trainer"]["early_stopping"])
        step = data.ckpt.step
        _trim_metrics(metrics_path, step)
        accelerator.print(f"resuming {run_dir} from step {step}")

    world, rank = accelerator.num_processes, accelerator.process_index
    bar = tqdm(total=t.max_steps, initial=step, desc=f"train {recipe.name}", unit="step", disable=not accelerator.is_main_process)
    while step < t.max_steps and not stopper.should_stop:
        model.train()
        losses = []
        for micro in range(t.grad_accum):
            index = step * t.grad_accum + micro
            cases = method.batch(train_cases, t.batch_size * world, t.seed, index)[rank::world]
            with accelerator.accumulate(model):
                loss = method.loss(model, cases, ctx, index)
                extra = tuner.extra_loss(unwrapped)
                if extra is not None:
                    loss = loss + extra
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm:
                    accelerator.clip_grad_norm_(params, t.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    tuner.after_optimizer_step(unwrapped, step + 1)  # 1-based optimizer step
                    scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.item())
        step += 1
        row = {"step": step, "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0]}
        if step % t.eval_every == 0 or step == t.max_steps:
            model.eval()
            row["val_auc"] = validate(scorer, val_cases)
            if stopper.update(row["val_auc"], step) and accelerator.is_main_process:
                _save_adapter(unwrapped, run_dir / "best")
        if accelerator.is_main_process:
            _append_jsonl(metrics_path, row)
            if step % t.checkpoint_every == 0 or step == t.max_steps or stopper.should_stop:
                save_checkpoint(
                    run_dir, step, _trainable_state(unwrapped), optimizer,
                    scheduler, tuner.state_tensors(unwrapped), {"early_stopping": stopper.state()},
                )
        accelerator.wait_for_everyone()
        bar.set_postfix(loss=f"{row['loss']:.4f}", **({"val_auc": f"{row['val_auc']:.3f}"} if "val_auc" in row else {}))
        bar.update(1)
    bar.close()
    if accelerator.is_main_process and not (run_dir / "best").exists():
        _save_adapter(unwrapped, run_dir / "best")
    accelerator.wait_for_everyone()
    model.eval()
    method_info = method.finish(scorer, train_cases, val_cases, run_dir)
    if accelerator.is_main_process:
        write_text(run_dir / "method.json", json.dumps({"method": method.name, **method_info}, indent=1) + "\n")
    return TrainResult(
        run_dir=run_dir, adapter_dir=run_dir / "best", steps=step,
        best_val_auc=None if stopper.best == float("-inf") else stopper.best, best_step=stopper.best_step,
        stopped_early=step < t.max_steps, model=unwrapped, method_info=method_info, lineage=method.lineage(),
    )
