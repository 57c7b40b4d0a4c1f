"""Attach registered adapters to a loaded backbone (after verifying hashes and the base fingerprint), and detach them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch
from peft import PeftModel

from ..errors import AdaptrecError, option
from ..fingerprint import digest
from .collab import TUNER as COLLAB_TUNER
from .collab import ItemEmbedding, uninstall
from .check import base_change, read_config
from .files import CARD_FILES, CONFIG_FILE, METADATA_FILE, MIX_TYPE, file_sha256

_CONFIG_LOCATIONS = ("base_model_name_or_path", "revision")
_NOT_STRUCTURE = (*_CONFIG_LOCATIONS, "peft_version")  # config keys two same-shaped LoRA adapters may differ in
COLLAB_TYPE = "collab"  # adapters/collab.py: LoRA files plus item tokens, which wrap the backbone's input embedding


def peft_name(ref: str) -> str:
    """The peft adapter name of a registry ref: `a_` + 12 hex digits of its sha256.

    Injective in practice (`movie-lora:1`, `movie_lora:1` and `movie.lora:1` get three names, so one
    adapter's weights can never answer for another's) and never holding "lora_", which peft's AdaLoRA
    missing-key check looks for."""
    return "a_" + hashlib.sha256(ref.encode()).hexdigest()[:12]


def peft_type(record) -> str:
    """The peft type of a registered adapter (LORA, ADALORA, PREFIX_TUNING, …): one peft model holds one type."""
    return str((record.adapter_config or {}).get("peft_type", record.adapter_type)).upper()


def adapter_key(adapter_dir: Path) -> str:
    """Score-cache key of an adapter: the hash of every file that computes (weights, a type's extra files) and
    its config (rank pattern, alpha, rslora … change scores as much as weights do), the same before and after
    registration."""
    folder = Path(adapter_dir)
    config = json.loads((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).is_file() else {}
    for where in _CONFIG_LOCATIONS:  # where the folder came from, not what it computes
        config.pop(where, None)
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir())
             if p.is_file() and p.name not in (CONFIG_FILE, METADATA_FILE, *CARD_FILES)}  # (was: .gitattributes in)
    return digest({"files": files, "config": config})


def load_peft(model, folder: Path | str, name: str) -> PeftModel:
    """`model` with adapter `name` loaded from `folder` (a bare model is wrapped in a new PeftModel first); an adapter
    whose load would change the base model for good (`check.base_change`: one registered before that was refused)
    is refused first."""
    changes = base_change(read_config(Path(folder), str(folder)), folder)
    if changes is not None:
        raise AdaptrecError(f"{folder}: {changes}")
    if not isinstance(model, PeftModel):
        return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
    if name not in model.peft_config:
        try:
            model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        except KeyError as e:  # peft builds on the adapters attached first (one with trainable token deltas)
            raise AdaptrecError(f"{folder}: peft cannot load it beside the adapters attached before it (it looked "
                                f"for {e} there); score it alone") from None
    return model


def lora_structure(folder: Path | str) -> str:
    """Digest of a LoRA folder's config without where it came from: equal digests mean equal layers, ranks and
    scalings, so the two adapters differ in their weights only."""
    config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    return digest({k: v for k, v in config.items() if k not in _NOT_STRUCTURE})


def _lora_weights(folder: Path | str, layers: dict):
    """The LoRA config and weights in `folder`, checked to fill exactly `layers` ({module path: LoraLayer})."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(folder))
    state = load_file(str(Path(folder) / "adapter_model.safetensors"))
    expected = {f"{path}.lora_{ab}.weight" for path in layers for ab in "AB"}
    if set(state) != expected:
        raise AdaptrecError(f"{folder}: its weights do not match the layers of its LoRA config")
    return config, state


def attach_beside(model: PeftModel, layers: dict, folder: Path | str, name: str) -> None:
    """Add the LoRA adapter in `folder` to `model` as `name`, layer by layer, beside an adapter of the same
    `lora_structure` that holds exactly `layers` ({module path: LoraLayer}). Own code, not `load_adapter`:
    peft walks every module once per target module, so its load grows with the adapters already loaded
    (bench/many_adapters.py); this touches only the adapter's own layers."""
    from peft.utils.other import get_pattern_key

    config, state = _lora_weights(folder, layers)
    for path, layer in layers.items():
        key = path.removeprefix("base_model.model.")  # the name peft's own load matches patterns against (`^…`)
        r = config.rank_pattern.get(get_pattern_key(config.rank_pattern, key), config.r)
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern, key), config.lora_alpha)
        layer.update_layer(name, r, lora_alpha=alpha, target_name=path, config=config)
        for ab in "AB":
            getattr(layer, f"lora_{ab}")[name].weight.data.copy_(state[f"{path}.lora_{ab}.weight"])
        for attr in (*layer.adapter_layer_names, *layer.other_param_names):
            modules = getattr(layer, attr, None)
            if isinstance(modules, torch.nn.ModuleDict) and name in modules:
                modules[name].eval()  # new modules start in training mode: dropout would be live
    model.peft_config[name] = config


def attach_in_place(model: PeftModel, layers: dict, folder: Path | str, old: str, name: str) -> None:
    """Put the LoRA adapter in `folder` into the tensors of evicted adapter `old` (same `lora_structure`, holding
    exactly `layers`) and call it `name`: every per-adapter entry of each layer is renamed and the weights copied
    in, nothing is created or deleted. S-LoRA's fixed pool of adapter slots, kept inside peft's layers: peft's
    own `update_layer` and `delete_adapter` walk every resident adapter, so a load-and-evict grew with the cap."""
    config, state = _lora_weights(folder, layers)
    for path, layer in layers.items():
        for ab in "AB":
            if getattr(layer, f"lora_{ab}")[old].weight.shape != state[f"{path}.lora_{ab}.weight"].shape:
                raise AdaptrecError(f"{folder}: its weights do not fit the slot of the same-shaped adapter")
    for path, layer in layers.items():
        for attr in (*layer.adapter_layer_names, *layer.other_param_names, "frozen_peft_weight_names", "lora_variant"):
            entries = getattr(layer, attr, None)
            if isinstance(entries, (dict, torch.nn.Module)) and old in entries:
                entries[name] = entries.pop(old)
        if layer._active_adapter == old:
            layer._active_adapter = name
        elif isinstance(layer._active_adapter, list):
            layer._active_adapter = [name if a == old else a for a in layer._active_adapter]
        for ab in "AB":
            getattr(layer, f"lora_{ab}")[name].weight.data.copy_(state[f"{path}.lora_{ab}.weight"])
    model.peft_config.pop(old, None)
    model.peft_config[name] = config


def attach(backbone, registry, refs: Sequence[str]) -> tuple[PeftModel, list]:
    """Load each ref (verified) into one PeftModel over `backbone.model`; returns the model and the records."""
    records = [registry.load_verified(ref, backbone.fingerprint) for ref in refs]
    for record in records:
        if record.adapter_type == MIX_TYPE:
            sources = ", ".join((record.adapter_config or {}).get("sources", []))
            raise AdaptrecError(f"{record.ref} is a score-level mix of {sources}: it has no weights to attach; "
                                "eval, route and serve score it as the weighted average of its sources")
    dora = next((r.ref for r in records if (r.adapter_config or {}).get("use_dora")), None)
    if dora is not None and getattr(backbone, "backend", None) == "torch-int8":
        raise AdaptrecError(f"{dora} is a DoRA adapter: its weight norm reads the base weights, which adaptrec's CPU "
                            "int8 kernel keeps as raw codes; load the backbone with "
                            f"{option('quantization', 'none')} (or on CUDA)")
    collab = [r.ref for r in records if r.adapter_type == COLLAB_TYPE]
    if len(collab) > 1:
        raise AdaptrecError(f"{', '.join(collab)} are collaborative adapters: their item tokens wrap the backbone's "
                            "one input embedding, so load one per backbone (one per eval run)")
    model = backbone.model
    try:
        for record in records:
            model = load_peft(model, record.path, peft_name(record.ref))
            if record.adapter_type == COLLAB_TYPE:
                COLLAB_TUNER.load_extra(model, record.path, backbone.tokenizer, peft_name(record.ref))
    except BaseException:  # the backbone as it was: no layers of a half-attached set left to score with
        restore(backbone, model)
        raise
    model.eval()
    return model, records


def restore(backbone, model) -> None:
    """The backbone as it was before loads into `model` (what `load_peft` returned last, or the bare backbone model
    when the first load failed after peft injected its layers into it)."""
    if isinstance(model, PeftModel):
        detach(model)
    else:
        _strip_tuner_layers(backbone.model)


def _strip_tuner_layers(module: torch.nn.Module) -> None:
    """Put back the base layer of every peft layer in `module`, and drop the config peft left on it."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, child in list(module.named_children()):
        if isinstance(child, BaseTunerLayer):
            setattr(module, name, child.get_base_layer())
        else:
            _strip_tuner_layers(child)
    if hasattr(module, "peft_config"):
        del module.peft_config


def bare_model(backbone) -> torch.nn.Module:
    """`backbone.model` to score untuned, refused while an adapter's layers or item tokens are still in it (an
    attach not detached, an open `Recommender`): its rows are cached as the bare backbone's."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = backbone.model
    if isinstance(model.get_input_embeddings(), ItemEmbedding) or \
            any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise AdaptrecError("the backbone still holds an adapter's layers (a Recommender not closed, or an attach "
                            "not detached): close it, or load the backbone again, to score it untuned")
    return model


def detach(model) -> None:
    """Undo `attach`: LoRA-style layers are removed from the backbone, and a collaborative adapter's item-token
    embedding; prompt-learning models leave it untouched."""
    if isinstance(model, PeftModel) and not model.peft_config[model.active_adapter].is_prompt_learning:
        uninstall(model.get_base_model())
        model.unload()
