"""Checkpoints of sharded optimizers (DeepSpeed, FSDP) go through Accelerate's save_state/load_state.

Neither DeepSpeed nor a GPU is here: the dispatch is tested with stub accelerators, and the save_state path end to
end with a real single-process Accelerator that reports DeepSpeed (so save_state/load_state do real work, in their
single-process layout)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from synthetic import synthetic_cases
from train_worker import tiny_recipe

from adaptrec import atomic
from adaptrec.backbone import load_backbone
from adaptrec.errors import ConfigError
from adaptrec.train import checkpoint as ck
from adaptrec.train import loop
from adaptrec.train.early_stopping import EarlyStopping
from adaptrec.train.methods.base import Method


class _StubTuner:
    def state_tensors(self, model) -> dict[str, torch.Tensor]:
        return {}


class _StubAccelerator:
    """What `Trainer.checkpoint` and `save_accelerate_checkpoint` use of an Accelerator; save_state writes one file."""

    scaler = None  # no fp16 loss scaling
    num_processes, process_index = 1, 0  # gathering the RNG states needs no collective
    mixed_precision = "no"

    def __init__(self, kind: DistributedType, main: bool = True) -> None:
        self.distributed_type, self.is_main_process = kind, main

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, output_dir: str) -> None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "optimizer.bin").write_bytes(b"shard")


def _scheduler() -> torch.optim.lr_scheduler.LRScheduler:
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters())
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


@pytest.mark.parametrize("kind, main, writer", [
    (DistributedType.NO, True, "safetensors"),
    (DistributedType.MULTI_CPU, True, "safetensors"),
    (DistributedType.MULTI_GPU, True, "safetensors"),
    (DistributedType.MULTI_GPU, False, None),  # DDP: the main process writes the replicated state alone
    (DistributedType.DEEPSPEED, True, "accelerate"),
    (DistributedType.DEEPSPEED, False, "accelerate"),  # every rank saves its shard
    (DistributedType.FSDP, True, "accelerate"),
    (DistributedType.FSDP, False, "accelerate"),
])
def test_the_checkpoint_writer_follows_the_distributed_type(kind, main, writer, monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a, **k: calls.append("safetensors"))
    monkeypatch.setattr(loop, "save_accelerate_checkpoint", lambda *a, **k: calls.append("accelerate"))
    backbone = SimpleNamespace(fingerprint=SimpleNamespace(exact="e" * 64), backend="fp32")  # the checkpoint names it
    trainer = loop.Trainer(tiny_recipe("unused", 2), backbone, [], [], tmp_path)
    trainer.accelerator, trainer.tuner = _StubAccelerator(kind, main), _StubTuner()
    trainer.unwrapped = torch.nn.Linear(2, 1)
    trainer.scheduler = _scheduler()
    trainer.optimizer = trainer.scheduler.optimizer
    trainer.stopper = EarlyStopping(None)
    trainer.method = Method()  # the plain method: its own cases (none) go into the checkpoint's digest
    trainer.checkpoint()
    assert calls == ([writer] if writer else [])


def _record_fsyncs(monkeypatch) -> list[str]:
    """The paths fsynced from now on, in order."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    return synced


def test_an_accelerate_checkpoint_is_written_whole_and_reads_back(tmp_path, monkeypatch):
    synced = _record_fsyncs(monkeypatch)
    stub, trainer_state = _StubAccelerator(DistributedType.DEEPSPEED), {"early_stopping": {"best": 0.5}}
    path = ck.save_accelerate_checkpoint(stub, tmp_path, 3, _scheduler(), {"ema": torch.ones(2)}, trainer_state)
    assert {"optimizer.bin", "tuner.safetensors", "state.json"} <= {os.path.basename(p) for p in synced}
    assert str(path.parent) in synced  # the rename itself is made durable
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000003"]
    data = ck.read_checkpoint(ck.latest_checkpoint(tmp_path))
    assert data.state_dir == path / ck.ACCELERATE_STATE and data.meta["trainer"] == trainer_state
    torch.testing.assert_close(data.tuner["ema"], torch.ones(2))


def test_an_interrupted_accelerate_save_leaves_no_checkpoint_and_the_next_save_works(tmp_path):
    class Killed(_StubAccelerator):
        def save_state(self, output_dir: str) -> None:
            super().save_state(output_dir)
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        ck.save_accelerate_checkpoint(Killed(DistributedType.FSDP), tmp_path, 2, _scheduler(), {}, {})
    assert ck.checkpoints(tmp_path) == []
    ck.save_accelerate_checkpoint(_StubAccelerator(DistributedType.FSDP), tmp_path, 2, _scheduler(), {}, {})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000002"]  # the stale temp folder cleared


def test_an_empty_accelerate_folder_is_skipped_with_one_line(tmp_path):
    stub = _StubAccelerator(DistributedType.DEEPSPEED)
    for step in (2, 4):
        ck.save_accelerate_checkpoint(stub, tmp_path, step, _scheduler(), {}, {"early_stopping": {}})
    shutil.rmtree(tmp_path / "checkpoints" / "step_000004" / ck.ACCELERATE_STATE)
    lines: list[str] = []
    assert ck.newest_readable(tmp_path, log=lines.append).ckpt.step == 2
    assert len(lines) == 1 and "step_000004" in lines[0] and "accelerate/" in lines[0]


class _ReportsDeepSpeed:
    """A real single-process Accelerator that says it is DeepSpeed, so the loop takes the sharded path."""

    distributed_type = DistributedType.DEEPSPEED

    def __init__(self, accelerator: Accelerator) -> None:
        self._accelerator = accelerator

    def __getattr__(self, name: str):
        return getattr(self._accelerator, name)


def _adapter(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_sharded_run_resumes_through_load_state(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "Accelerator", lambda **kw: _ReportsDeepSpeed(Accelerator(**kw)))
    recipe, run_dir, cases = tiny_recipe(str(tiny_model_dir), 4), tmp_path / "run", synthetic_cases(16)
    straight = loop.train(recipe, load_backbone(str(tiny_model_dir), "none", device="cpu"), cases, cases, run_dir)
    expected = _adapter(straight.model)
    step_4 = run_dir / "checkpoints" / "step_000004"
    assert sorted(p.name for p in step_4.iterdir()) == ["accelerate", "best", "state.json", "tuner.safetensors"]
    assert (step_4 / "accelerate" / "optimizer.bin").is_file()  # Accelerate's own layout

    shutil.rmtree(step_4)  # resume from step 2: model, optimizer and RNG from load_state, the scheduler from state.json
    loaded = []
    monkeypatch.setattr(Accelerator, "load_state", lambda self, path, _real=Accelerator.load_state, **kw:
                        (loaded.append(path), _real(self, path, **kw))[1])
    capsys.readouterr()
    resumed = loop.train(recipe, load_backbone(str(tiny_model_dir), "none", device="cpu"), cases, cases, run_dir,
                         resume=True)
    assert resumed.steps == 4 and f"from step 2" in capsys.readouterr().out  # resumed, not restarted from 0
    assert loaded == [str(run_dir / "checkpoints" / "step_000002" / "accelerate")]
    # A resume that lost the optimizer or RNG state differs by ~1e-3 (see test_loop's SIGKILL test).
    for name, value in _adapter(resumed.model).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5)

    monkeypatch.undo()  # the same run folder under an unsharded accelerator
    with pytest.raises(ConfigError, match=r"step_000004: written by a sharded \(DeepSpeed, FSDP\) run"):
        loop.train(recipe, load_backbone(str(tiny_model_dir), "none", device="cpu"), cases, cases, run_dir,
                   resume=True)


class _StubDeepSpeedPlugin:
    """What `fit_deepspeed` uses of accelerate's DeepSpeedPlugin: its config and which values are `auto`."""

    def __init__(self, **config) -> None:
        self.deepspeed_config = config

    def is_auto(self, key: str) -> bool:
        return self.deepspeed_config.get(key) == "auto"


def test_a_deepspeed_launch_gets_the_recipe_s_micro_batch_and_refuses_adalora(tiny_model_dir):
    """(was: accelerate's `prepare` refused an `auto` micro-batch with a raw ValueError, the loop passing no
    dataloader; AdaLoRA failed at its first step, DeepSpeed having zeroed the gradients it reads) No DeepSpeed here:
    a stub plugin."""
    recipe = tiny_recipe(str(tiny_model_dir), 4)
    plugin = _StubDeepSpeedPlugin(train_micro_batch_size_per_gpu="auto")
    loop.fit_deepspeed(recipe, plugin)
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == recipe.training.batch_size
    fixed = _StubDeepSpeedPlugin(train_micro_batch_size_per_gpu=3)
    loop.fit_deepspeed(recipe, fixed)
    assert fixed.deepspeed_config["train_micro_batch_size_per_gpu"] == 3  # the config's own value stands
    adalora = tiny_recipe(str(tiny_model_dir), 4, adapter={"type": "adalora"})
    with pytest.raises(ConfigError, match="adalora under DeepSpeed"):
        loop.fit_deepspeed(adalora, _StubDeepSpeedPlugin(train_micro_batch_size_per_gpu="auto"))
    staged = tiny_recipe(str(tiny_model_dir), 4, adapter={"type": "collab", "projector_steps": 2},
                         template="tallrec-items")
    with pytest.raises(ConfigError, match="projector_steps under DeepSpeed"):
        loop.fit_deepspeed(staged, _StubDeepSpeedPlugin(train_micro_batch_size_per_gpu="auto"))
