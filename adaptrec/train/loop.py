"""The training loop: Accelerate (devices, precision, gradient accumulation, experiment trackers), Yes/No loss,
validation, early stopping on validation AUC, resumable checkpoints, metrics.jsonl and a progress bar."""

from __future__ import annotations

import fcntl
import json
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.tracking import get_available_trackers
from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, broadcast_object_list, gather_object
from tqdm.auto import tqdm
from transformers import get_scheduler

from adaptrec.scoring.core import Scorer
from adaptrec.scoring.logits import ScoreMode, to_scores

from ..adapters.base import Tuner, build_peft_model, tuner_for, warm_start
from ..atomic import atomic_dir, write_text
from ..config import Recipe
from ..data.records import Case
from ..errors import AdaptrecError, ConfigError, MissingOptionalPackage, option
from ..metrics.classification import auc
from .checkpoint import (
    CheckpointData,
    apply_checkpoint,
    gathered_rng,
    latest_checkpoint,
    newest_readable,
    save_accelerate_checkpoint,
    save_checkpoint,
    sharded,
)
from .cases import digest_cases
from .early_stopping import EarlyStopping
from .lineage import with_events
from .methods import Method, StepContext, build_method, micro_batches

__all__ = ["TrainResult", "Trainer", "micro_batches", "train", "validate"]


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
    setup: dict = field(default_factory=dict)  # what trained it beyond the recipe: `Trainer.run_setup`, processes

    def summary(self) -> dict:
        return {"run_dir": str(self.run_dir), "adapter_dir": str(self.adapter_dir), "steps": self.steps,
                "best_val_auc": self.best_val_auc, "best_step": self.best_step, "stopped_early": self.stopped_early,
                "method": self.method_info, "setup": self.setup}


def _append_jsonl(path: Path, row: dict) -> None:
    """Append `row`, a non-finite number (a diverged loss) written as null: the line stays JSON any reader takes."""
    row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
    with open(path, "a") as f:
        f.write(json.dumps(row, allow_nan=False) + "\n")


def _trim_metrics(path: Path, up_to_step: int, start_over: str) -> None:
    """On resume, forget metric lines written after the checkpoint we continue from, and a last line a crash
    cut short (it never held a whole row); any other unreadable line is one error naming it (and `start_over`)."""
    if path.is_file():
        lines = path.read_text(errors="replace").splitlines()
        rows = []
        for n, line in enumerate(lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:
                    break
                row = None
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ConfigError(f"{path} line {n + 1}: not a metrics row with a step; fix or remove the line, "
                                  f"or {start_over}")
            if row["step"] <= up_to_step:
                rows.append(line)
        write_text(path, "".join(r + "\n" for r in rows))


T = TypeVar("T")


def _process_state() -> PartialState:
    """This process's place in a launch, set up as the training run's `Accelerator` sets it (the state is shared by
    the whole process and fixed by its first use: without `cpu`, ranks on a host without CUDA each took themselves
    for the only one)."""
    return PartialState(cpu=not torch.cuda.is_available())


def on_main_process(work: Callable[[], T]) -> T | None:
    """`work()` on the main process only, the others waiting until it is done (evaluating and registering happen
    once per run, not once per rank); None on the others. A single process is the main one."""
    state = _process_state()
    try:
        return work() if state.is_main_process else None
    finally:
        state.wait_for_everyone()


@contextmanager
def run_folder_held(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for one run, from before `--restart` clears it to after its version is registered: the main
    process locks `<run_dir>.lock` beside the folder (so clearing the folder cannot drop the lock; the lock goes
    with the process). A one-line error if another run holds it, on every rank of a launch (the main process's
    verdict is broadcast): both runs would clear, append to one metrics file, race on `best/` and register twice."""
    state, busy = _process_state(), [False]
    with ExitStack() as held:
        if state.is_main_process:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            lock = held.enter_context(open(run_dir.with_name(run_dir.name + ".lock"), "a"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy = [True]
        if state.num_processes > 1:
            broadcast_object_list(busy)  # was: the other ranks went on, and a --restart deleted the live run's folder
        if busy[0]:
            raise ConfigError(f"{run_dir}: another run is using this folder now; wait for it to finish, or give "
                              "this one other settings")
        yield


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _recovered(dest: Path) -> bool:
    """Whether adapter folder `dest` exists, once a crash between `_save_adapter`'s two renames is undone: its `.new`
    (complete: `atomic_dir` made it) or else its `.old` takes the name back."""
    if not dest.exists():
        for done in (dest.with_name(dest.name + ".new"), dest.with_name(dest.name + ".old")):
            if done.is_dir():
                done.rename(dest)
                break
    return dest.exists()


def _save_adapter(model, dest: Path) -> None:
    """Replace `dest` with the model's current adapter (safetensors), atomically (`_replace_dir`); a targeted
    embedding layer's LoRA matrices only: the frozen base embedding, which peft would save whole (and every load
    write into the base), stays out."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        tuner_for(model).save_extra(model, tmp)

    _replace_dir(dest, write)


def _replace_dir(dest: Path, fill: Callable[[Path], None]) -> None:
    """Replace folder `dest` with what `fill` writes into an empty one, atomically; `.new`/`.old` folders a crash
    left behind are cleared first (`_recovered`)."""
    _recovered(dest)
    old, new = dest.with_name(dest.name + ".old"), dest.with_name(dest.name + ".new")
    for stale in (old, new):
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_dir(new) as tmp:
        fill(tmp)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def own_forward(model) -> Iterator[None]:
    """`model` running its own forward, without the mixed-precision wrapper (autocast, fp32 outputs) that
    `accelerator.prepare` puts on it: what it scores into the shared score cache is then at the precision the
    cache key names, not at the run's autocast one."""
    wrapped, original = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


def validate(scorer: Scorer, cases: Sequence[Case], mode: ScoreMode = "pyes", rank: int = 0, world: int = 1) -> float:
    """AUC of `cases` under the score the recipe reports (`evaluation.score`), so the adapter kept as best is
    picked on the score its evaluation shows; `ConfigError` when the adapter scores NaN (its weights diverged),
    which the training loop names with its step (read here, not through `Scorer.score`'s general refusal). Under a
    launch (`world` processes) each rank scores every `world`-th case from its `rank` and the scores are gathered:
    every rank reads the same AUC, for a `world`-th of the forwards."""
    mine = cases[rank::world]
    scores = to_scores(scorer.logits_for_prompts(scorer.prompts(mine)), mode) if mine else np.zeros(0)
    if world > 1:
        parts = gather_object([scores.tolist()])  # one list per rank, in rank order
        scores = np.array([parts[i % world][i // world] for i in range(len(cases))])
    if not np.isfinite(scores).all():
        raise ConfigError("the adapter's validation scores are not finite: training diverged (its weights hold NaN "
                          "or inf); lower training.lr")
    return auc(np.array([c.label for c in cases]), scores)


def check_tracker(recipe: Recipe) -> None:
    """A one-line error if the recipe's `report_to` tracker is not installed (accelerate would drop it silently)."""
    t = recipe.training
    if t.report_to != "none" and t.report_to not in {str(tracker) for tracker in get_available_trackers()}:
        raise MissingOptionalPackage(f"{recipe._source}: training.report_to: {t.report_to} is not installed "
                                     f"(pip install {t.report_to})")


def _build_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
    """The run's Accelerator: CPU without CUDA; the recipe's `mixed_precision`, or when null what the accelerate
    config or $ACCELERATE_MIXED_PRECISION says; the recipe's tracker logging under `run_dir`. Under DDP the buffers
    are not broadcast at every forward: they are the frozen int8 backbone's weights (the int8 kernel keeps them as
    buffers), the same on every rank, which rank 0 would otherwise send whole at each step; a collab adapter's
    parameters may go unused in a backward (a micro-batch without item tokens skips the projector), which DDP is
    told to look for."""
    t = recipe.training
    check_tracker(recipe)
    try:
        accelerator = Accelerator(gradient_accumulation_steps=t.grad_accum, cpu=not torch.cuda.is_available(),
                                  mixed_precision=t.mixed_precision, project_dir=run_dir,
                                  log_with=None if t.report_to == "none" else t.report_to,
                                  kwargs_handlers=[DistributedDataParallelKwargs(
                                      broadcast_buffers=False,  # a collab micro-batch without an item token leaves
                                      find_unused_parameters=recipe.adapter.type == "collab")])  # the projector out
    except ValueError as e:  # e.g. bf16 on a GPU without it, or another precision than this process's first run's
        raise ConfigError(f"{recipe._source}: accelerate refused this run's setup (training.mixed_precision "
                          f"{t.mixed_precision}): {str(e).splitlines()[0]}") from None
    if accelerator.state.deepspeed_plugin is not None:
        fit_deepspeed(recipe, accelerator.state.deepspeed_plugin)
    return accelerator


def fit_deepspeed(recipe: Recipe, plugin: DeepSpeedPlugin) -> None:
    """Give a DeepSpeed launch what it cannot read from a dataloader (the loop has none, so `prepare` refused an
    `auto` micro-batch): each rank's micro-batch is `training.batch_size`. AdaLoRA is refused: DeepSpeed's engine
    zeroes the gradients at its own step, before AdaLoRA's rank allocation reads them; so is a collab projector
    stage: that step comes inside the backward, before `Tuner.before_optimizer_step` could drop LoRA's gradients."""
    if recipe.adapter.type == "adalora":
        raise ConfigError(f"{recipe._source}: adapter.type adalora under DeepSpeed: its rank allocation reads the "
                          "gradients, which DeepSpeed's engine zeroes at its step; use lora, or launch without "
                          "DeepSpeed")
    if getattr(recipe.adapter, "projector_steps", 0):
        raise ConfigError(f"{recipe._source}: adapter.projector_steps under DeepSpeed: its engine steps inside the "
                          "backward, before the stage can drop LoRA's gradients; set projector_steps 0 (joint), or "
                          "launch without DeepSpeed")
    if plugin.is_auto("train_micro_batch_size_per_gpu"):
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = recipe.training.batch_size


def _flat_settings(settings: dict, prefix: str = "") -> dict[str, str | int | float | bool | None]:
    """Nested settings as `section.key` scalars, lists as JSON text: the form trackers take as hyperparameters."""
    flat: dict[str, str | int | float | bool | None] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


class Trainer:
    """One training run in phases: `setup`, `resume`, then `step` and `validate_and_checkpoint` until `done`, and
    `finish`; `run` drives the steps with a progress bar. Only the main process writes files, except that with a
    sharded optimizer every rank writes its part of each checkpoint."""

    accelerator: Accelerator
    model: torch.nn.Module  # the peft model as `accelerator.prepare` wrapped it (it runs the forward passes)
    unwrapped: torch.nn.Module  # the same peft model unwrapped (its parameters are the adapter's)
    tuner: Tuner
    params: list[torch.nn.Parameter]  # the trainable ones (gradient clipping)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scorer: Scorer
    method: Method
    ctx: StepContext

    def __init__(self, recipe: Recipe, backbone, train_cases: Sequence[Case], val_cases: Sequence[Case],
                 run_dir: Path, start_over: str | None = None) -> None:
        """`start_over`: how the caller starts a run over that cannot resume (default: the `restart` option)."""
        self.start_over = start_over or f"pass {option('restart', True)}"
        self.recipe, self.cfg, self.backbone = recipe, recipe.training, backbone
        self.train_cases, self.val_cases = train_cases, val_cases
        self.run_dir, self.metrics_path = run_dir, run_dir / "metrics.jsonl"
        self.global_step = 0  # optimizer steps taken
        self.stopper = EarlyStopping(self.cfg.patience)

    def setup(self, resume: bool = False, method: Method | None = None, init_from: Path | None = None) -> None:
        """Refuse a run folder with checkpoints unless `resume`; build the accelerator (a missing tracker package
        stops here), seed, then build the peft model (its weights from the adapter folder `init_from` when given),
        its optimizer and scheduler, the validation scorer and the method (default: the one `recipe.method` names)."""
        t, recipe = self.cfg, self.recipe
        if latest_checkpoint(self.run_dir) and not resume:
            raise ConfigError(f"{self.run_dir}: holds checkpoints of an earlier run: pass {option('resume', True)} to "
                              f"continue it, or {self.start_over}")
        self.accelerator = _build_accelerator(recipe, self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(t.seed)
        try:  # settings that only this backbone can refute (target modules, init_text's length)
            model = build_peft_model(self.backbone.model, recipe.adapter, total_steps=t.max_steps,
                                     tokenizer=self.backbone.tokenizer)
        except ConfigError as e:
            raise ConfigError(f"{recipe._source}: {e}") from None
        if init_from is not None:
            warm_start(model, init_from, self.backbone.tokenizer)
        self.tuner = tuner_for(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=t.lr, weight_decay=t.weight_decay)
        self.scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=t.warmup_steps,
                                       num_training_steps=t.max_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        self.scorer = Scorer(
            self.unwrapped, self.backbone.tokenizer, model_key="", template=recipe.data.template,
            max_prompt_tokens=recipe.data.max_prompt_tokens, batch_size=recipe.evaluation.batch_size, progress=False,
        )
        self.method = method or build_method(recipe, self.backbone, self.train_cases)
        self.ctx = StepContext(self.scorer, self.accelerator.device)
        device = self.accelerator.device
        # the method's checks of its data (a ranking loss's queries, a teacher's cases); under its own RNG, so what
        # it draws (a teacher adapter's layers) moves no training draw
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            try:
                with own_forward(self.unwrapped):  # a teacher's scores go to the shared cache
                    self.method.prepare(self.unwrapped, self.ctx, self.train_cases)
            except AdaptrecError as e:  # a teacher's files too: named with the recipe that asked for it
                raise ConfigError(f"{recipe._source}: {e}") from None

    def resume(self) -> None:
        """Continue from the newest readable checkpoint, if there is one: adapter weights, optimizer, scheduler, RNG,
        the tuner's and the early stopping's state; metric lines after it (without one: every line) are dropped."""
        data = newest_readable(self.run_dir, log=self.accelerator.print)
        if data is None:  # from step 0: rows an attempt stopped before its first checkpoint wrote are dropped
            if self.accelerator.is_main_process:  # the one writer of metrics.jsonl
                _trim_metrics(self.metrics_path, 0, self.start_over)
            return
        saved = data.meta["trainer"].get("num_processes", self.accelerator.num_processes)  # absent: older format
        if saved != self.accelerator.num_processes:  # micro-batches are batch_size x processes: another run
            raise ConfigError(f"{data.ckpt.path}: written by a run of {saved} processes, this one has "
                              f"{self.accelerator.num_processes}: resume it with as many, or {self.start_over}")
        saved = data.meta["trainer"].get("setup", self.run_setup)  # absent: older format
        verdict = [data.meta["trainer"].get("cases", self.cases_digest) == self.cases_digest,  # absent: older format
                   sorted(k for k in set(saved) | set(self.run_setup) if saved.get(k) != self.run_setup.get(k))]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(verdict)  # the main process's answer: every rank stops, or none (none waits forever)
        if not verdict[0]:
            raise ConfigError(f"{data.ckpt.path}: written by a run over other training or validation cases (has "
                              f"{self.recipe.data.train} or {self.recipe.data.valid} changed since?): the remaining "
                              f"steps would read other batches; {self.start_over}")
        if verdict[1]:
            raise ConfigError(f"{data.ckpt.path}: written by a run with another {', '.join(verdict[1])} (the "
                              "backbone's weights or kernel, the mixed precision, or a teacher or its cases changed "
                              "since): its steps and the remaining ones would train different things; "
                              f"{self.start_over}")
        if sharded(self.accelerator) != (data.state_dir is not None):
            kind = "a sharded (DeepSpeed, FSDP)" if data.state_dir else "an unsharded"
            raise ConfigError(f"{data.ckpt.path}: written by {kind} run: resume it under the same accelerate "
                              f"setup, or {self.start_over}")
        if data.state_dir is not None:
            self.accelerator.load_state(str(data.state_dir))  # model (adapter included), optimizer shards, RNG
            self.scheduler.load_state_dict(data.meta["scheduler"])
        else:
            self._load_adapter_and_optimizer(data)
            if "grad_scaler" in data.meta["trainer"] and self.accelerator.scaler is not None:
                self.accelerator.scaler.load_state_dict(data.meta["trainer"]["grad_scaler"])
        self.tuner.load_state_tensors(self.unwrapped, data.tuner)
        self.stopper = EarlyStopping(**data.meta["trainer"]["early_stopping"])
        if data.best is not None and self.accelerator.is_main_process:  # was: a best the abandoned attempt saved
            _replace_dir(self.run_dir / "best", lambda tmp: shutil.copytree(data.best, tmp, dirs_exist_ok=True))
        self.global_step = data.ckpt.step
        if self.accelerator.is_main_process:
            _trim_metrics(self.metrics_path, self.global_step, self.start_over)
        self.accelerator.print(f"resuming {self.run_dir} from step {self.global_step}")

    def _load_adapter_and_optimizer(self, data: CheckpointData) -> None:
        """Apply a safetensors checkpoint: optimizer, scheduler and RNG, then the adapter weights by name."""
        apply_checkpoint(data, self.optimizer, self.scheduler, rank=self.accelerator.process_index)
        with torch.no_grad():
            for name, p in self.unwrapped.named_parameters():
                if name in data.adapter:
                    p.copy_(data.adapter[name])

    def start_tracking(self) -> None:
        """Open the tracker run (named after the recipe, its settings as the config); a TensorBoard log hides what an
        earlier attempt logged after the step this one starts from, as metrics.jsonl drops those lines."""
        self.accelerator.init_trackers(self.recipe.name, config=_flat_settings(self.recipe.model_dump(mode="json")),
                                       init_kwargs={"tensorboard": {"purge_step": self.global_step + 1}})

    def end_tracking(self) -> None:
        """Finish the tracker runs (files flushed and closed); a second call does nothing. Unlike
        `Accelerator.end_training` this keeps the process group, so a launched process can train another adapter."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()

    @property
    def done(self) -> bool:
        return self.global_step >= self.cfg.max_steps or self.stopper.should_stop

    def step(self) -> dict:
        """One optimizer step over `grad_accum` micro-batches (each rank takes its share of each); its metrics row.
        Each micro-batch's mean loss counts in proportion to its cases, so an epoch's short last micro-batch does not
        weigh its cases more than a full one's, on any rank: the weights divide by the cases of every rank's shares
        (known here without communication), and data-parallel training averages the ranks' gradients."""
        t, acc = self.cfg, self.accelerator
        world, rank = acc.num_processes, acc.process_index
        self.model.train()
        losses, aux = [], []
        lr = self.scheduler.get_last_lr()[0]  # the rate this step trains at (after it, the scheduler has moved on)
        first = self.global_step * t.grad_accum
        batches = [self.method.batch(self.train_cases, t.batch_size * world, t.seed, index)
                   for index in range(first, first + t.grad_accum)]
        window = [self.method.share(batch, rank, world) for batch in batches]
        total = sum(map(len, window))
        every = sum(len(self.method.share(batch, r, world)) for batch in batches for r in range(world))
        for micro, cases in enumerate(window):
            index = first + micro
            with acc.accumulate(self.model):
                loss = self.method.loss(self.model, cases, self.ctx, index)
                # a micro-batch's text loss and regulariser count alike whatever its number of cases (was: scaled with
                # the case loss below, so a short last micro-batch shrank them)
                terms = [term for term in (self.method.aux_loss(self.model, self.ctx, index),
                                           self.tuner.extra_loss(self.unwrapped)) if term is not None]
                extra = sum(terms, torch.zeros((), device=loss.device))
                # accelerate divides by grad_accum
                acc.backward(loss * (len(cases) * t.grad_accum * world / every) + extra)
                if acc.sync_gradients:
                    self.tuner.before_optimizer_step(self.unwrapped)
                    if t.max_grad_norm:
                        acc.clip_grad_norm_(self.params, t.max_grad_norm)
                self.optimizer.step()
                if acc.sync_gradients and not acc.optimizer_step_was_skipped:  # fp16: inf gradients skip a step
                    self.tuner.after_optimizer_step(self.unwrapped, self.global_step + 1)  # 1-based optimizer step
                    self.scheduler.step()
                self.optimizer.zero_grad()
            losses.append(loss.item() * len(cases))
            if terms:  # (one more device sync only where there are such terms)
                aux.append(extra.item())
        self.global_step += 1
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):  # one device sync
            # whole weights on every rank (DDP, ZeRO 1-2: the setups docs/training.md supports): all ranks stop alike
            raise ConfigError(f"{self.recipe._source}: step {self.global_step}: the adapter's weights are not finite "
                              "after this optimizer step: training diverged; lower training.lr")
        row = {"step": self.global_step, "loss": sum(losses) / total, "lr": lr}
        return {**row, "aux_loss": sum(aux) / len(aux)} if aux else row

    def validate_and_checkpoint(self, row: dict) -> None:
        """Every `eval_every` steps and at the last: validation AUC into `row`, a new best adapter to run_dir/best.
        Then `row` to metrics.jsonl and, every `checkpoint_every` steps, at the last and on stopping, a checkpoint."""
        t, acc, step = self.cfg, self.accelerator, self.global_step
        if step % t.eval_every == 0 or step == t.max_steps:
            self.model.eval()
            self.tuner.before_validation(self.unwrapped)
            try:
                row["val_auc"] = validate(self.scorer, self.val_cases, self.recipe.evaluation.score,
                                          acc.process_index, acc.num_processes)
            except ConfigError as e:
                raise ConfigError(f"{self.recipe._source}: step {step}: {e}") from None
            if acc.num_processes > 1:  # the main process's AUC on every rank: a difference between ranks (their
                shared = [row["val_auc"]]  # AUC's last bit) would stop one early, the others waiting for it forever
                broadcast_object_list(shared)
                row["val_auc"] = shared[0]
            if self.stopper.update(row["val_auc"], step) and acc.is_main_process:
                _save_adapter(self.unwrapped, self.run_dir / "best")
        if acc.is_main_process:
            _append_jsonl(self.metrics_path, row)
            acc.log({k: v for k, v in row.items() if k != "step"}, step=step)
        if step % t.checkpoint_every == 0 or step == t.max_steps or self.stopper.should_stop:
            self.checkpoint()
        acc.wait_for_everyone()

    @cached_property
    def cases_digest(self) -> str:
        """sha256 of the training, validation and method's own cases (a ranking loss's partners, other domains'
        data) in order: a resumed run must step through the same batches. Read after `setup` built the method."""
        return digest_cases((*self.train_cases, *self.val_cases, *self.method.own_cases()))

    @cached_property
    def run_setup(self) -> dict:
        """What else a resumed run must share with the run it continues: the backbone's weights and kernel, the
        mixed precision, the method's own inputs (a teacher and its cases)."""
        return {"backbone": self.backbone.fingerprint.exact, "backend": self.backbone.backend,
                "mixed_precision": str(self.accelerator.mixed_precision), **self.method.identity()}

    def checkpoint(self) -> None:
        """Write checkpoints/step_N: with a sharded optimizer (DeepSpeed, FSDP) every rank saves its shards through
        Accelerate's `save_state`; otherwise the main process writes the safetensors format, with every rank's RNG."""
        acc, best = self.accelerator, self.run_dir / "best"
        best = best if acc.is_main_process and _recovered(best) else None  # the best as of this step travels along
        state = {"early_stopping": self.stopper.state(), "num_processes": acc.num_processes,
                 "cases": self.cases_digest, "setup": self.run_setup}
        if acc.scaler is not None:  # fp16: the loss scale it reached (save_state keeps it on the sharded path)
            state["grad_scaler"] = acc.scaler.state_dict()
        if sharded(acc):
            save_accelerate_checkpoint(acc, self.run_dir, self.global_step, self.scheduler,
                                       self.tuner.state_tensors(self.unwrapped), state, best=best)
        else:
            rng = gathered_rng(acc)  # every rank's, so each resumes its own dropout stream
            if acc.is_main_process:
                save_checkpoint(self.run_dir, self.global_step, _trainable_state(self.unwrapped), self.optimizer,
                                self.scheduler, self.tuner.state_tensors(self.unwrapped), state, rng=rng, best=best)

    def run(self) -> TrainResult:
        """Start tracking, step until `max_steps` or early stopping with a progress bar (main process only), then
        `finish`; the tracker runs are ended also when this fails."""
        self.start_tracking()
        try:
            bar = tqdm(total=self.cfg.max_steps, initial=self.global_step, desc=f"train {self.recipe.name}",
                       unit="step", disable=not self.accelerator.is_main_process)
            while not self.done:
                row = self.step()
                self.validate_and_checkpoint(row)
                val = {"val_auc": f"{row['val_auc']:.3f}"} if "val_auc" in row else {}
                bar.set_postfix(loss=f"{row['loss']:.4f}", **val)
                bar.update(1)
            bar.close()
            return self.finish()
        finally:
            self.end_tracking()

    def finish(self) -> TrainResult:
        """Keep the last adapter as the best if none was saved, let the method record itself (run_dir/method.json),
        end tracking."""
        acc, best = self.accelerator, self.run_dir / "best"
        if acc.is_main_process and not _recovered(best):
            _save_adapter(self.unwrapped, best)
        acc.wait_for_everyone()
        self.model.eval()
        info = self.method.finish(self.scorer, self.train_cases, self.val_cases, self.run_dir)
        if acc.is_main_process:
            write_text(self.run_dir / "method.json", json.dumps({"method": self.method.name, **info}, indent=1) + "\n")
        self.end_tracking()
        s = self.stopper
        return TrainResult(
            run_dir=self.run_dir, adapter_dir=best, steps=self.global_step,
            best_val_auc=None if s.best == float("-inf") else s.best, best_step=s.best_step,
            stopped_early=self.global_step < self.cfg.max_steps, method_info=info,
            model=self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False),  # it scores into the cache
            lineage=with_events(self.method.lineage(), self.method.own_cases()),
            setup={**self.run_setup, "num_processes": self.accelerator.num_processes},
        )


def train(
    recipe: Recipe,
    backbone,
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    run_dir: Path,
    resume: bool = False,
    method: Method | None = None,
    init_from: Path | None = None,
    start_over: str | None = None,
) -> TrainResult:
    """Train one adapter on `backbone` per `recipe`; the best adapter (validation AUC) ends in run_dir/best.

    The loss and the micro-batches come from `method` (default: the one `recipe.method` names); `init_from`: an
    adapter folder to start from (a continual update) instead of the tuner's initialisation; `start_over`: how the
    caller starts over a run that cannot resume (default: the `restart` option)."""
    trainer = Trainer(recipe, backbone, train_cases, val_cases, run_dir, start_over)
    trainer.setup(resume=resume, method=method, init_from=init_from)
    trainer.resume()
    return trainer.run()
