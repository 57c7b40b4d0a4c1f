"""Resumable training checkpoints in safetensors + JSON (no pickle): adapter, optimizer, scheduler, RNG."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_dir

_PREFIX = "step_"


@dataclass
class Checkpoint:
    path: Path
    step: int


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


def save_checkpoint(
    run_dir: Path,
    step: int,
    adapter: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    tuner_state: dict[str, torch.Tensor],
    trainer_state: dict,
    keep: int = 2,
) -> Path:
    """Write `checkpoints/step_N` atomically, then drop all but the newest `keep`."""
    root = run_dir / "checkpoints"
    final = root / f"{_PREFIX}{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    with atomic_dir(final) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, tmp / "adapter.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file({k: v.detach().cpu().contiguous() for k, v in tuner_state.items()}, tmp / "tuner.safetensors")
        save_file(rng, tmp / "rng.safetensors")
        meta = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "trainer": trainer_state}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    for old in sorted(root.glob(f"{_PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint (incomplete ones never get their final name)."""
    found = sorted(p for p in (run_dir / "checkpoints").glob(f"{_PREFIX}*") if (p / "state.json").is_file())
    return Checkpoint(found[-1], int(found[-1].name[len(_PREFIX) :])) if found else None


def load_checkpoint(ckpt: Checkpoint, optimizer: torch.optim.Optimizer, scheduler) -> tuple[dict, dict, dict]:
    """Restore optimizer, scheduler and RNG; return (adapter tensors, tuner tensors, trainer state)."""
    meta = json.loads((ckpt.path / "state.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(load_file(ckpt.path / "optimizer.safetensors"), meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    rng = load_file(ckpt.path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return load_file(ckpt.path / "adapter.safetensors"), load_file(ckpt.path / "tuner.safetensors"), meta["trainer"]
