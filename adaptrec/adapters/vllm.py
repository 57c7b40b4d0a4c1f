"""LoRA folders that vLLM's LoRA loader accepts: a checker of its rules and the export that writes one.

vLLM is not a dependency: `check_vllm_lora` encodes, from vLLM's source, what its loader applies to a folder
named by `--lora-modules NAME=PATH` (or a `LoRARequest`):

- `vllm/lora/peft_helper.py`, `PEFTHelper.from_dict`: `r`, `lora_alpha` and `target_modules` are required and
  every other key it does not know is dropped silently; `__post_init__`: `r` > 0, one scaling for the whole
  adapter, `lora_alpha / r` (`/ sqrt(r)` with `use_rslora`); `_validate_features`: `modules_to_save` must be
  empty and `use_dora` false; `validate_legal`: `r` <= `max_lora_rank` and `bias == "none"`. Newer versions
  of the same file also refuse `lora_bias`, `layer_replication` and PiSSA/OLoRA/CorDA/LoftQ initialisations
  (they change the base weights peft loads), and read `rank_pattern`/`alpha_pattern`; `alora_invocation_tokens`,
  `use_qalora` and `use_bdlora` change what the adapter computes, and a release that does not know them drops them
  (refused here either way); releases whose
  `PEFTHelper` has no such fields drop the patterns and scale every module by `lora_alpha / r`, so a folder
  with patterns means different things to different vLLM versions and is refused here.
- `vllm/config/lora.py`, `LoRAConfig.max_lora_rank`: one of `MaxLoRARanks` (1, 8, 16, ..., 512), default 16.
- `vllm/lora/lora_model.py` (`vllm/lora/models.py` in older releases), `LoRAModel.from_local_checkpoint`:
  reads `adapter_model.safetensors`, else `torch.load`s `adapter_model.bin`/`.pt` (pickle formats, which
  adaptrec never ships); `check_unexpected_modules` refuses a tensor whose module's last name part is not an
  expected LoRA module; `from_lora_tensors` builds every module from `LoRALayerWeights.from_config(module,
  peft_helper)`, i.e. the config's one rank and scaling. `peft_type` is never read: an AdaLoRA folder fails on
  its `lora_E` tensors.
- `vllm/lora/utils.py`, `parse_fine_tuned_lora_name`: tensor names `base_model.model.<module>.lora_A.weight` /
  `.lora_B.weight` (or `lora_embedding_A/B`); anything else is "unsupported LoRA weight".
  `get_supported_lora_modules`: the last name part of every linear layer; `vllm/lora/worker_manager.py`
  (`WorkerLoRAManager`) expands packed layers through the model's `packed_modules_mapping` (Llama's
  `qkv_proj` -> q/k/v_proj, `gate_up_proj` -> gate/up_proj, `vllm/model_executor/models/llama.py`).

`export_vllm_lora` writes `adapter_config.json` + `adapter_model.safetensors`: a plain LoRA as is, an AdaLoRA
adapter through its exact LoRA export (`export.adalora_to_lora`), and per-module ranks or alphas
(`rank_pattern`/`alpha_pattern`) folded into one rank: lower-rank modules are padded with zero ranks and their
own scale is moved into lora_B, which computes the same function.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from adaptrec.atomic import atomic_dir
from adaptrec.errors import AdaptrecError, IntegrityError, option
from adaptrec.userfiles import check_output_file

from .check import changes_base_weights, pattern_value, read_config, tensor_shapes
from .export import adalora_to_lora, config_defaults
from .files import CONFIG_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE

# `MaxLoRARanks` of vllm/config/lora.py: the values `--max-lora-rank` takes
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# LoRA-capable linear layers of vLLM's Llama-family models (SmolLM2, Llama, Qwen2, Gemma), packed layers expanded
LLAMA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")
_REFUSED = {
    "prefix": "a prefix-tuning adapter: vLLM loads LoRA adapters only (lora_A/lora_B tensors); prefix tuning's "
              "virtual key/values have no vLLM loader",
    "collab": "a collaborative adapter: its item tokens and their projector wrap the backbone's input embedding, "
              "which vLLM cannot load; the LoRA part alone would score prompts without item tokens",
    "mix": "a score-level mix: it has no weights; export its sources and mix their scores",
}


@dataclass(frozen=True)
class VllmExport:
    """A folder written for vLLM and the smallest `--max-lora-rank` that loads it; `prompt`: the template and
    length the adapter was trained with, which requests to vLLM should render (`data.prompts.render_prompt`)."""

    path: Path
    rank: int
    prompt: dict = field(default_factory=dict)

    @property
    def max_lora_rank(self) -> int:
        return vllm_max_lora_rank(self.rank)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` value vLLM accepts that holds `rank` (AdaptrecError above the largest)."""
    for allowed in VLLM_MAX_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise AdaptrecError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {VLLM_MAX_LORA_RANKS[-1]}")


# peft settings that change what the adapter computes beyond r, alpha and A·B (PEFTHelper drops keys it does not know)
_CHANGES_THE_FUNCTION = {"alora_invocation_tokens": "activated LoRA applies only after its invocation tokens",
                         "use_qalora": "QA-LoRA pools the input before lora_A",
                         "use_bdlora": "BD-LoRA's A and B are block-diagonal"}


def _config_problems(config: dict, max_lora_rank: int) -> list[str]:
    """What PEFTHelper (from_dict, __post_init__, _validate_features, validate_legal) refuses in the config."""
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type: {config.get('peft_type')!r}; vLLM reads LoRA folders only")
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in config]
    if missing:
        problems.append(f"missing fields: {', '.join(missing)} (PEFTHelper requires r, lora_alpha, target_modules)")
    r = config.get("r")
    if "r" in config and (not isinstance(r, int) or isinstance(r, bool) or r <= 0):
        problems.append(f"r: {r!r}; the rank must be a positive integer")
    elif isinstance(r, int) and r > max_lora_rank:
        problems.append(f"r: LoRA rank {r} is greater than max_lora_rank {max_lora_rank}")
    init = config.get("init_lora_weights", True)
    checks = [
        ("modules_to_save", bool(config.get("modules_to_save")), "vLLM only supports modules_to_save being None"),
        ("use_dora", bool(config.get("use_dora")), "vLLM does not support DoRA"),
        ("bias", config.get("bias", "none") != "none", f"{config.get('bias')!r}; adapter bias is not supported"),
        ("lora_bias", bool(config.get("lora_bias")), "vLLM does not support LoRA bias"),
        ("layer_replication", bool(config.get("layer_replication")), "vLLM does not support layer_replication"),
        ("init_lora_weights", changes_base_weights(config),
         f"{init!r} changes the base weights when peft loads the adapter; vLLM serves the base as is"),
        *((key, bool(config.get(key)), f"{why}; a PEFTHelper without the field drops it and serves another function")
          for key, why in _CHANGES_THE_FUNCTION.items()),
    ]
    problems += [f"{name}: {why}" for name, bad, why in checks if bad]
    for name in ("rank_pattern", "alpha_pattern"):
        if config.get(name):
            problems.append(f"{name}: per-module ranks or alphas; vLLM releases whose PEFTHelper lacks the field scale "
                            "every module by lora_alpha/r (`adaptrec export --to vllm` folds them into one rank)")
    return problems


def _tensor_problems(shapes: dict[str, tuple[int, ...]], r, modules: Collection[str]) -> list[str]:
    """What parse_fine_tuned_lora_name, check_unexpected_modules and one rank per adapter refuse in the tensors."""
    if not shapes:
        return [f"tensors: {WEIGHTS_FILE} holds no tensors"]
    problems, sides = [], {}
    for key, shape in sorted(shapes.items()):
        m = _KEY.match(key)
        if m is None:
            problems.append(f"tensor name: {key} is not a LoRA weight vLLM parses (base_model.model.<module>."
                            "lora_A.weight / lora_B.weight)")
            continue
        sides.setdefault(m["module"], {})[m["side"]] = shape
    for module, pair in sorted(sides.items()):
        if module.rsplit(".", 1)[-1] not in modules:
            problems.append(f"target module: {module} is not a LoRA-capable layer ({', '.join(sorted(modules))})")
        if set(pair) != {"A", "B"}:
            problems.append(f"tensor pair: {module} has only lora_{''.join(pair)}")
        elif len(pair["A"]) != 2 or len(pair["B"]) != 2 or pair["A"][0] != pair["B"][1] or pair["A"][0] != r:
            problems.append(f"rank: {module} has lora_A {list(pair['A'])} and lora_B {list(pair['B'])}; vLLM "
                            f"gives every module the config's r={r}")
    return problems


def check_vllm_lora(folder: str | os.PathLike, *, max_lora_rank: int = VLLM_MAX_LORA_RANKS[-1],
                    modules: Collection[str] = LLAMA_MODULES) -> list[str]:
    """The problems vLLM's LoRA loader would find in `folder` (empty: it loads), each `"<name>: <why>"`.

    `max_lora_rank`: the server's `--max-lora-rank` (default the largest vLLM accepts); `modules`: the base
    model's LoRA-capable layer names (default Llama-family). Other files (adaptrec.json, README.md) are ignored,
    as vLLM ignores them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"missing folder: {folder}"]
    problems = [f"pickle weights: {p.name} is a pickle-format file; ship {WEIGHTS_FILE} only"
                for p in sorted(folder.iterdir()) if p.suffix.lower() in PICKLE_SUFFIXES]
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    problems += [f"missing file: {name}" for name in missing]
    if missing:
        return problems
    try:
        config = read_config(folder, str(folder))
        shapes = tensor_shapes(folder / WEIGHTS_FILE, str(folder))
    except IntegrityError as e:
        return [*problems, f"unreadable: {e}"]
    return problems + _config_problems(config, max_lora_rank) + _tensor_problems(shapes, config.get("r"), modules)


def _positive(value, what: str, module: re.Match, src: Path) -> float:
    """`value` (a module's rank or alpha), or an `IntegrityError` naming it unless it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise IntegrityError(f"{src}: {CONFIG_FILE} gives {module['module']} the {what} {value!r}; expected a positive "
                             "number")
    return value


def _fold_patterns(src: Path, dst: Path) -> None:
    """Write `src` (a LoRA folder with rank_pattern/alpha_pattern) to `dst` with one rank and scaling 1: each
    module's lora_B takes its own peft scaling, and lower ranks get zero rows in lora_A and zero columns in lora_B."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    config = {**config_defaults(LoraConfig), **json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))}
    tensors = load_file(str(src / WEIGHTS_FILE))
    rank = max((t.shape[0] for k, t in tensors.items() if k.endswith(".lora_A.weight")), default=0)
    out = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise AdaptrecError(f"{src}: {key} is not a LoRA weight; only lora_A/lora_B tensors are exported")
        k = t.shape[0] if m["side"] == "A" else t.shape[1]
        if m["side"] == "A":
            out[key] = torch.cat([t, t.new_zeros(rank - k, t.shape[1])])
            continue
        r = _positive(pattern_value(config.get("rank_pattern") or {}, m["module"], config["r"]), "rank", m, src)
        alpha = _positive(pattern_value(config.get("alpha_pattern") or {}, m["module"], config["lora_alpha"]), "alpha",
                          m, src)
        scale = alpha / (r ** 0.5 if config.get("use_rslora") else r)
        out[key] = torch.cat([t * scale, t.new_zeros(t.shape[0], rank - k)], dim=1).contiguous()
    config.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={})
    save_file(out, str(dst / WEIGHTS_FILE), metadata={"format": "pt"})
    (dst / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_lora(src: Path, dst: Path) -> None:
    """Copy a LoRA folder's two peft files to `dst`, folding per-module ranks and alphas into one rank."""
    config = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        _fold_patterns(src, dst)
        return
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(src / name, dst / name)


def export_vllm_lora(folder: str | os.PathLike, adapter_type: str, out: str | os.PathLike,
                     label: str | None = None) -> VllmExport:
    """Write the adapter at `folder` (of `adapter_type`) to `out` (must not exist) as a LoRA folder vLLM loads.

    AdaLoRA goes through its exact LoRA export; prefix-tuning, collaborative and mix adapters are refused with
    one line saying why. The result is checked with `check_vllm_lora`; on a problem nothing is left at `out`.
    """
    folder, out, label = Path(folder), Path(out), label or str(folder)
    if adapter_type in _REFUSED:
        raise AdaptrecError(f"vLLM export: {label} is {_REFUSED[adapter_type]}")
    if adapter_type not in ("lora", "adalora"):
        raise AdaptrecError(f"vLLM export: {label} is a {adapter_type} adapter; vLLM loads LoRA (and AdaLoRA "
                            "through its LoRA export) only")
    if out.exists():
        raise AdaptrecError(f"{out} already exists; remove it or choose another folder")
    check_output_file(out, option("out", out))  # no file on the way (was: errno 17)
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="adaptrec-vllm-") as work:
        src = folder
        if adapter_type == "adalora":
            src = adalora_to_lora(folder, Path(work) / "lora")
        _write_lora(src, tmp)
        problems = check_vllm_lora(tmp)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise AdaptrecError(f"vLLM export: vLLM would not load {label}: {problems[0]}{more}")
        rank = read_config(tmp, label)["r"]
    return VllmExport(out, rank)
