"""Exact AdaLoRA -> LoRA conversion, so a trained AdaLoRA adapter serves through the plain LoRA path.

peft's AdaLoRA layer (`SVDLinear.forward`, peft 0.21) adds

    dropout(x) @ (A * E).T @ B.T * scaling / (ranknum + 1e-5)

with A (r, d_in), E (r, 1), B (d_out, r), scaling = lora_alpha and ranknum = init_r (fixed at
creation; pruning masks E and never changes it). A LoRA layer adds dropout(x) @ A'.T @ B'.T * alpha/r,
so A' = A * E, B' = B * scaling / (ranknum + 1e-5) with alpha = r (scaling 1) is the same function.
Ranks whose singular value E is exactly zero (pruned) contribute nothing and are dropped, per module
through `rank_pattern`/`alpha_pattern`; a module with every rank pruned is left out. Unlike peft's
`convert_to_lora` (an SVD, approximate in general) this is exact up to float rounding.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from adaptrec.atomic import atomic_dir
from adaptrec.errors import AdaptrecError, IntegrityError

from .check import read_config

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."


def config_defaults(config_class) -> dict[str, Any]:
    """What peft builds an adapter of `config_class` (`LoraConfig`, `AdaLoraConfig`) with when its config file leaves
    a key out."""
    return {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}


def _from_model(peft_model) -> tuple[dict[str, tuple], dict[str, Any]]:
    from peft.tuners.adalora import AdaLoraLayer
    from peft.tuners.adalora.layer import SVDConv2d

    adapter = peft_model.active_adapter
    config = peft_model.peft_config[adapter]
    if getattr(config.peft_type, "value", config.peft_type) != "ADALORA":
        raise AdaptrecError(f"adalora_to_lora needs an AdaLoRA adapter, not {config.peft_type}")
    modules = {}
    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, AdaLoraLayer) and adapter in module.lora_A:
            if isinstance(module, SVDConv2d):
                raise AdaptrecError(f"{name}: exporting AdaLoRA on Conv2d layers is not supported")
            factor = module.scaling[adapter] / (module.ranknum[adapter] + 1e-5)
            modules[name] = (module.lora_A[adapter], module.lora_E[adapter], module.lora_B[adapter], factor)
    return modules, config.to_dict()


def _from_dir(folder: Path) -> tuple[dict[str, tuple], dict[str, Any]]:
    from safetensors.torch import load_file

    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        raise IntegrityError(f"{folder}: an AdaLoRA adapter folder needs {WEIGHTS} and {CONFIG} (pickle weights are never read)")
    config = read_config(folder, str(folder))
    if config.get("peft_type") != "ADALORA":
        raise AdaptrecError(f"{folder}: adalora_to_lora needs an AdaLoRA adapter, not {config.get('peft_type')}")
    from peft import AdaLoraConfig

    defaults = config_defaults(AdaLoraConfig)  # what peft builds the layers with when a key is unset
    init_r, alpha = (config.get(key, defaults[key]) for key in ("init_r", "lora_alpha"))
    if not (isinstance(init_r, int) and not isinstance(init_r, bool) and init_r > 0 and
            isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and math.isfinite(alpha)):
        raise IntegrityError(f"{folder}: {CONFIG} has init_r {init_r!r} and lora_alpha {alpha!r}; expected a rank "
                             ">= 1 and a finite number")
    # ranknum is not saved: peft sets it to init_r when it builds the layer and keeps it on resize.
    factor = (alpha if alpha > 0 else float(init_r)) / (torch.tensor(float(init_r)) + 1e-5)
    parts: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, t in load_file(str(folder / WEIGHTS)).items():
        stem, _, part = key.rpartition(".")
        if part not in ("lora_A", "lora_B", "lora_E"):
            raise AdaptrecError(f"{folder}: unexpected tensor {key!r} (biases and extra modules are not exported)")
        parts[stem.removeprefix(_PREFIX)][part] = t
    modules = {name: (p["lora_A"], p["lora_E"], p["lora_B"], factor) for name, p in parts.items()}
    return modules, config


def adalora_to_lora(peft_model_or_dir, out_dir: str | os.PathLike) -> Path:
    """Write the exact plain-LoRA equivalent of an AdaLoRA adapter to `out_dir` (safetensors + adapter_config.json).

    `peft_model_or_dir` is a peft model whose active adapter is AdaLoRA, or a folder written by its
    `save_pretrained`. `out_dir` must not exist; it is written atomically. Returns `out_dir`.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    if isinstance(peft_model_or_dir, (str, os.PathLike)):
        modules, source = _from_dir(Path(peft_model_or_dir))
    else:
        modules, source = _from_model(peft_model_or_dir)
    if source.get("bias", "none") != "none" or source.get("modules_to_save"):
        raise AdaptrecError("adalora_to_lora exports the low-rank updates only; this adapter also trains biases or whole modules")

    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    with torch.no_grad():
        for name, (A, E, B, factor) in sorted(modules.items()):
            keep = E.detach().view(-1) != 0
            k = int(keep.sum())
            if k == 0:
                continue  # every rank pruned: the module adds nothing
            ranks[name] = k
            tensors[f"{_PREFIX}{name}.lora_A.weight"] = (A * E)[keep].detach().contiguous().cpu()
            tensors[f"{_PREFIX}{name}.lora_B.weight"] = (B * factor)[:, keep].detach().contiguous().cpu()
    if not ranks:
        raise AdaptrecError("every rank of this AdaLoRA adapter is zero (untrained?); there is nothing to export")

    r = max(ranks.values())
    pattern = {name: k for name, k in ranks.items() if k != r}
    config = LoraConfig(
        task_type=source.get("task_type") or "CAUSAL_LM",
        r=r,
        lora_alpha=r,  # scaling alpha/r = 1: the AdaLoRA scale is folded into B
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        target_modules=sorted(ranks),
        lora_dropout=source.get("lora_dropout", 0.0),
        fan_in_fan_out=source.get("fan_in_fan_out", False),
        bias="none",
        base_model_name_or_path=source.get("base_model_name_or_path"),
        revision=source.get("revision"),
        inference_mode=True,
    )
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
    return out
