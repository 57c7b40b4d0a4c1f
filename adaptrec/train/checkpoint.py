"""Resumable training checkpoints in safetensors + JSON (no pickle): adapter, optimizer, scheduler, RNG.

The RNG file holds every rank's generator states (`gathered_rng`), so each rank of a data-parallel run resumes its
own dropout stream.

`checkpoints/step_N` folders are written whole (`atomic_dir`: files and folder fsynced before the rename)
and ordered by N as a number. Resuming reads the newest one completely before applying anything; an
unreadable one (a crash, a truncated file) is skipped with one line naming it, and the next older one is used.

A sharded optimizer (DeepSpeed, FSDP) has no whole state dict on any one process: its checkpoints hold
Accelerate's `save_state` folder (each rank's shards, in Accelerate's format) in place of the adapter,
optimizer and RNG files, written whole in the same way.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_dir, fsync_dir, fsync_tree
from ..errors import AdaptrecError

_PREFIX = "step_"
ACCELERATE_STATE = "accelerate"  # the subfolder `Accelerator.save_state` writes, and the `format` in its state.json
BEST = "best"  # the subfolder holding a copy of the run's best adapter as of the checkpoint's step
SHARDED = (DistributedType.DEEPSPEED, DistributedType.FSDP)  # optimizer state split across ranks


@dataclass
class Checkpoint:
    path: Path
    step: int


@dataclass
class CheckpointData:
    """Everything a checkpoint holds, read and parsed (nothing applied yet)."""

    ckpt: Checkpoint
    adapter: dict[str, torch.Tensor]
    tuner: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    rng: dict[str, torch.Tensor]
    meta: dict
    state_dir: Path | None = None  # Accelerate's save_state folder (sharded optimizers; adapter/optimizer/rng empty)
    best: Path | None = None  # the run's best adapter as of this step (None: none saved yet, or an older format)


class CheckpointError(AdaptrecError):
    """A checkpoint folder that cannot be read back whole."""


def _step_of(path: Path) -> int:
    return int(path.name[len(_PREFIX):])


def checkpoints(run_dir: Path) -> list[Checkpoint]:
    """The run's checkpoints with a `state.json`, newest (highest step) first."""
    found = [p for p in (run_dir / "checkpoints").glob(f"{_PREFIX}*")
             if p.name[len(_PREFIX):].isdigit() and (p / "state.json").is_file()]
    return [Checkpoint(p, _step_of(p)) for p in sorted(found, key=_step_of, reverse=True)]


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, slots in state["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{slot}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{slot}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, slot = key.split(".", 1)
        state.setdefault(int(idx), {})[slot] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rank_suffix(rank: int) -> str:
    """The suffix of rank `rank`'s keys in the RNG file: none for rank 0 (and a single process), `.rankN` else."""
    return "" if rank == 0 else f".rank{rank}"


def rng_state(rank: int = 0) -> dict[str, torch.Tensor]:
    """This process's torch (and CUDA) generator states, keyed as rank `rank`'s in the RNG file."""
    suffix = _rank_suffix(rank)
    rng = {f"torch{suffix}": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng[f"cuda{suffix}"] = torch.cuda.get_rng_state()
    return rng


def gathered_rng(accelerator: Accelerator) -> dict[str, torch.Tensor]:
    """Every rank's generator states in one dict (a collective: call it on every rank)."""
    if accelerator.num_processes == 1:
        return rng_state()
    return {k: v for part in gather_object([rng_state(accelerator.process_index)]) for k, v in part.items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    adapter: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    tuner_state: dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 2,
    rng: dict[str, torch.Tensor] | None = None,
    best: Path | None = None,
) -> Path:
    """Write `checkpoints/step_N` atomically, then drop all but the newest `keep`. `rng`: every rank's generator
    states (`gathered_rng`); default this process's. `best`: the run's best adapter folder, copied in."""
    final = _step_dir(run_dir, step)
    if final.exists():
        _discard(final)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng = rng_state() if rng is None else rng
    with atomic_dir(final) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, tmp / "adapter.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in tuner_state.items()}, tmp / "tuner.safetensors")
        save_file(rng, tmp / "rng.safetensors")
        meta = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "trainer": trainer_state}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        _copy_best(best, tmp)
    _prune(run_dir, keep, step)
    return final


def sharded(accelerator: Accelerator) -> bool:
    """Whether `accelerator` splits the optimizer state across ranks, so checkpoints go through `save_state`."""
    return accelerator.distributed_type in SHARDED


def save_accelerate_checkpoint(
    accelerator: Accelerator,
    run_dir: Path,
    step: int,
    scheduler,
    tuner_state: dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 2,
    best: Path | None = None,
) -> Path:
    """`save_checkpoint` for sharded optimizers, called on every rank: each writes its shards with
    `accelerator.save_state` into one hidden `.step_N.tmp` folder; the main process adds the tuner, scheduler and
    trainer state and the best adapter, fsyncs it all, renames it to `checkpoints/step_N` and prunes."""
    final = _step_dir(run_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")  # one name that every rank knows
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # a save a kill interrupted
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / ACCELERATE_STATE))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in tuner_state.items()}, tmp / "tuner.safetensors")
        meta = {"step": step, "format": ACCELERATE_STATE, "scheduler": scheduler.state_dict(), "trainer": trainer_state}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        _copy_best(best, tmp)
        fsync_tree(tmp)
        if final.exists():
            _discard(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        _prune(run_dir, keep, step)
    accelerator.wait_for_everyone()
    return final


def _copy_best(best: Path | None, checkpoint: Path) -> None:
    """The best adapter into a checkpoint being written: a resumed run then starts from the best its checkpoint's
    early stopping knows, not one an abandoned attempt saved after it."""
    if best is not None:
        shutil.copytree(best, checkpoint / BEST)


def _step_dir(run_dir: Path, step: int) -> Path:
    """The folder of step `step`'s checkpoint."""
    return run_dir / "checkpoints" / f"{_PREFIX}{step:06d}"


def _prune(run_dir: Path, keep: int, step: int) -> None:
    """After saving `step`: drop every checkpoint past it (from an attempt this run did not resume from, so
    unreadable or stale), all but the newest `keep` others, and what a kill left of an earlier deletion."""
    found = checkpoints(run_dir)
    past = [c for c in found if c.step > step]
    for old in past + [c for c in found if c.step <= step][keep:]:
        _discard(old.path)
    for leftover in (run_dir / "checkpoints").glob(".*.deleting"):
        shutil.rmtree(leftover, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder without ever leaving part of it under its real name: rename it to a hidden
    `.step_N.deleting` first (atomic), then remove that."""
    trash = folder.with_name(f".{folder.name}.deleting")
    shutil.rmtree(trash, ignore_errors=True)
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint (incomplete ones never get their final name)."""
    found = checkpoints(run_dir)
    return found[0] if found else None


def read_checkpoint(ckpt: Checkpoint) -> CheckpointData:
    """Read every file of `ckpt`; CheckpointError (naming the folder and the file) if any is missing or corrupt."""
    def read(name: str, reader):
        try:
            return reader(ckpt.path / name)
        except (OSError, ValueError, SafetensorError) as e:  # JSON and UTF-8 errors are ValueErrors
            raise CheckpointError(f"{ckpt.path}: {name} is unreadable ({str(e).splitlines()[0][:120]})") from None

    meta = read("state.json", lambda p: json.loads(p.read_text()))
    accelerate = isinstance(meta, dict) and meta.get("format") == ACCELERATE_STATE
    needed = {"scheduler", "trainer"} if accelerate else {"optimizer", "scheduler", "trainer"}
    if not isinstance(meta, dict) or not needed <= meta.keys():
        raise CheckpointError(f"{ckpt.path}: state.json lacks the optimizer, scheduler or trainer state")
    if not all(isinstance(meta[k], dict) for k in needed) or not isinstance(meta["trainer"].get("early_stopping"),
                                                                          dict):  # (was: read on, a traceback)
        raise CheckpointError(f"{ckpt.path}: state.json holds another shape than a save writes")
    best = ckpt.path / BEST if (ckpt.path / BEST).is_dir() else None
    if accelerate:
        state_dir = ckpt.path / ACCELERATE_STATE
        if not state_dir.is_dir() or not any(state_dir.iterdir()):
            raise CheckpointError(f"{ckpt.path}: {ACCELERATE_STATE}/ is missing or empty")
        return CheckpointData(ckpt, {}, read("tuner.safetensors", load_file), {}, {}, meta, state_dir, best)
    t = {k: read(f"{k}.safetensors", load_file) for k in ("adapter", "tuner", "optimizer", "rng")}
    return CheckpointData(ckpt, t["adapter"], t["tuner"], t["optimizer"], t["rng"], meta, best=best)


def newest_readable(run_dir: Path, log=print) -> CheckpointData | None:
    """The newest checkpoint that reads back whole; each unreadable newer one is named in one `log` line."""
    for ckpt in checkpoints(run_dir):
        try:
            return read_checkpoint(ckpt)
        except CheckpointError as e:
            log(f"skipping checkpoint: {e}")
    return None


def apply_checkpoint(data: CheckpointData, optimizer: torch.optim.Optimizer, scheduler, rank: int = 0) -> None:
    """Restore optimizer, scheduler and rank `rank`'s RNG from what `read_checkpoint` read (rank 0's where the
    checkpoint has none for `rank`: it was written by fewer processes)."""
    optimizer.load_state_dict(_unflatten_optimizer(data.optimizer, data.meta["optimizer"]))
    scheduler.load_state_dict(data.meta["scheduler"])
    suffix = _rank_suffix(rank)
    torch.set_rng_state(data.rng.get(f"torch{suffix}", data.rng["torch"]))
    cuda = data.rng.get(f"cuda{suffix}", data.rng.get("cuda"))
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)
