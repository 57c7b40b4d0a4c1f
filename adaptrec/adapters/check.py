"""Static checks of an adapter folder from elsewhere (a Hub pull): its config against its tensors, and both
against the base model's architecture, reading only safetensors headers and the base config (no weights).

peft would otherwise find a mismatch late (a shape error mid-forward) or never (LoRA tensors for modules the
config does not target are silently ignored, so the adapter scores as something it is not).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from safetensors import SafetensorError, safe_open

from adaptrec.errors import IntegrityError
from adaptrec.userfiles import parse_json

from .files import CONFIG_FILE, WEIGHTS_FILE

PEFT_TYPES = {"lora": "LORA", "collab": "LORA", "adalora": "ADALORA", "prefix": "PREFIX_TUNING"}
# a LoRA weight (`….lora_A.weight`, `….lora_A.<adapter>.weight`) or AdaLoRA's parameter (`….lora_A`)
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.(?!bias$)[^.]+)?(?:\.weight)?$")  # not lora_bias


BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")  # peft rewrites the base weights as it loads these


def changes_base_weights(config: dict) -> bool:
    """Whether loading an adapter of this config rewrites the base model's weights (PiSSA, OLoRA, CorDA, LoftQ
    initialisation): detaching it leaves them rewritten, and every other row would score on a changed base."""
    init = config.get("init_lora_weights", True)
    return isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INITS)


def base_change(config: dict, folder: Path | None = None) -> str | None:
    """Why loading an adapter of this peft config (and, given its `folder`, these weights) changes the base model for
    good (detaching it does not undo it, and every row scored after it, the untuned one included, reads a changed
    base), or None."""
    if changes_base_weights(config):
        return (f"init_lora_weights {config['init_lora_weights']!r} makes peft rewrite the base model's weights "
                "whenever the adapter loads; convert it to a plain LoRA first (peft's "
                "path_initial_model_for_weight_conversion)")
    if config.get("modules_to_save"):
        return (f"modules_to_save {config['modules_to_save']!r} swaps the adapter's own copies of those modules into "
                "the base model; retrain it without them")
    if config.get("bias") not in (None, "none"):
        return (f"bias {config['bias']!r} writes the adapter's trained biases into the base model's layers; retrain "
                "it with bias 'none'")
    if config.get("layer_replication"):
        return "layer_replication adds layers to the base model; retrain it without them"
    weights = Path(folder) / WEIGHTS_FILE if folder is not None else None
    saved = sorted(k for k in tensor_shapes(weights, str(folder)) if ".base_layer." in k) if weights and \
        weights.is_file() else []
    if saved:
        return (f"{WEIGHTS_FILE} holds the base model's own weights ({saved[0]}: peft saves an embedding layer it "
                "targets whole), which every load writes into the base model; save it with "
                "save_embedding_layers=False")
    return None


def pattern_value(pattern: dict, module: str, default):
    """peft's `get_pattern_key` rule: the first key that matches the module name's end at a '.' boundary."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


PATTERN_MATCH_S = 5.0  # peft's matches of every pattern against every module name, all together
# How peft matches each config field that holds regular expressions against module names (peft 0.21
# `get_pattern_key`, `check_target_module_exists`): (re function, the regex around one pattern `p`).
_PEFT_MATCHES = {"rank_pattern": ("match", r"(.*\.)?({p})$"), "alpha_pattern": ("match", r"(.*\.)?({p})$"),
                 "target_modules": ("fullmatch", "{p}"), "exclude_modules": ("fullmatch", "{p}"),
                 "modules_to_save": ("match", r"(^|.*\.){p}($|\..*)"),
                 "layers_pattern": ("match", r"(?:^|.*?\.){p}\.(?P<idx>\d+)\.")}
# Run in a child (isolated, no site packages: nothing of the caller's folder shadows `re`), since no timeout
# reaches inside `re`'s C loop off the main thread; a line when ready, then one per pattern finished.
_MATCH_ALL = """import json, re, sys
print(flush=True)
job = json.load(sys.stdin)
for how, regex in job["patterns"]:
    match = getattr(re, how)
    for name in job["names"]:
        match(regex, name)
    print(flush=True)
"""


def _field_patterns(config: dict, label: str) -> list[tuple[str, str]]:
    """(field, pattern) of every regular expression in the config that peft matches against module names: the
    keys of `rank_pattern`/`alpha_pattern`, `target_modules`/`exclude_modules` given as one string, each
    `modules_to_save` entry and `layers_pattern`."""
    out = []
    for field in ("rank_pattern", "alpha_pattern"):
        value = config.get(field) or {}
        if not isinstance(value, dict):
            raise IntegrityError(f"{label}: {CONFIG_FILE} {field} must be a mapping of module patterns to ranks")
        out += [(f"{field} key", key) for key in value]
    for field in ("target_modules", "exclude_modules"):
        if isinstance(config.get(field), str):  # a list names modules; one string is a regular expression
            out.append((field, config[field]))
    for field in ("modules_to_save", "layers_pattern"):
        value = config.get(field) or []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise IntegrityError(f"{label}: {CONFIG_FILE} {field} must be a string or a list of strings")
        out += [(field, item) for item in items]
    return out


def _check_patterns(config: dict, label: str, modules: list[str]) -> None:
    """IntegrityError unless every regular expression of the config (`_field_patterns`) compiles, and peft's
    matches of them against `modules` (as at every load) end within PATTERN_MATCH_S: Python's backtracking `re`
    can take hours on a pattern like `(\\w+\\.?)+x`, and a pull must not hang on what it checks."""
    patterns = []
    for field, pattern in _field_patterns(config, label):
        how, around = _PEFT_MATCHES[field.removesuffix(" key")]
        regex = around.replace("{p}", pattern)
        try:
            re.compile(regex)
        except (re.error, RecursionError) as e:
            raise IntegrityError(f"{label}: {CONFIG_FILE} {field} {pattern[:80]!r} is not a regular expression "
                                 f"({str(e) or type(e).__name__})") from None
        patterns.append((field, pattern, how, regex))
    if not patterns:
        return
    job = json.dumps({"patterns": [(how, regex) for _, _, how, regex in patterns], "names": modules})
    try:
        subprocess.run([sys.executable, "-I", "-S", "-c", _MATCH_ALL], input=job, capture_output=True, text=True,
                       check=True, timeout=PATTERN_MATCH_S)
    except subprocess.TimeoutExpired as e:
        done = len((e.stdout or b"").splitlines()) - 1  # the first line says the child is ready
        if done < 0:
            raise IntegrityError(f"{label}: could not check {CONFIG_FILE}'s module patterns: the checking process "
                                 f"did not start within {PATTERN_MATCH_S:g} s") from None
        field, pattern = patterns[min(done, len(patterns) - 1)][:2]
        raise IntegrityError(f"{label}: {CONFIG_FILE} {field} {pattern[:80]!r} takes peft's match over "
                             f"{PATTERN_MATCH_S:g} s on this model's module names (a backtracking pattern)") from None
    except subprocess.CalledProcessError as e:
        why = (e.stderr or "").strip().splitlines()[-1:] or [f"exit status {e.returncode}"]
        raise IntegrityError(f"{label}: could not check {CONFIG_FILE}'s module patterns ({why[0][:200]})") from None
    except OSError as e:
        raise IntegrityError(f"{label}: could not check {CONFIG_FILE}'s module patterns ({e})") from None


def targets_module(targets: list[str], module: str) -> bool:
    """peft's rule for a list of target_modules: a key equal to the module name or ending it at a '.' boundary."""
    return any(module == t or module.endswith(f".{t}") for t in targets)


def read_config(folder: Path, label: str) -> dict:
    """adapter_config.json as a dict; IntegrityError naming `label` otherwise."""
    try:
        text = (Path(folder) / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{label}: {CONFIG_FILE} is not readable JSON ({str(e).splitlines()[0]})") from None
    config = parse_json(text, f"{label}: {CONFIG_FILE}", IntegrityError)
    if not isinstance(config, dict):
        raise IntegrityError(f"{label}: {CONFIG_FILE} is not a JSON object")
    return config


def tensor_shapes(path: Path, label: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (OSError, SafetensorError) as e:
        raise IntegrityError(f"{label}: {path.name} is not a readable safetensors file ({str(e).splitlines()[0]})") from None


def base_modules(base_config) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Every module name of the base architecture (built on the meta device: no weights), and (in_features,
    out_features) of each linear layer by name: `nn.Linear`, and GPT-2's `Conv1D` (weight in × out), which peft
    adapts alike."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(base_config)
    named = [(name, m) for name, m in skeleton.named_modules() if name]
    linears = {name: (m.in_features, m.out_features) for name, m in named if isinstance(m, torch.nn.Linear)}
    linears |= {name: tuple(m.weight.shape) for name, m in named if isinstance(m, Conv1D)}
    return [name for name, _ in named], linears


def peft_type_problem(config: dict, adapter_type: str) -> str | None:
    """Why a folder of this config is not an adapter of `adapter_type` (its peft_type is another's), or None."""
    expected = PEFT_TYPES.get(adapter_type)
    if expected is not None and config.get("peft_type") != expected:
        return (f"{CONFIG_FILE} says peft_type {config.get('peft_type')!r}, but the adapter is registered as "
                f"{adapter_type} ({expected})")
    return None


def check_adapter_folder(folder: Path, adapter_type: str, label: str, base_config=None) -> None:
    """IntegrityError (one line naming `label` and the first mismatch) unless the folder's config, tensors and
    the base architecture (`base_config`, a transformers config; None: skip that part) agree."""
    config = read_config(folder, label)
    problem = peft_type_problem(config, adapter_type)
    if problem is not None:
        raise IntegrityError(f"{label}: {problem}")
    expected = PEFT_TYPES.get(adapter_type)
    if expected not in ("LORA", "ADALORA"):
        return
    if adapter_type == "collab":  # its item table and projector beside the LoRA part (collab imports torch: here)
        from .collab import read_saved

        read_saved(folder)
    shapes = tensor_shapes(Path(folder) / WEIGHTS_FILE, label)
    modules = _lora_modules(shapes, label)
    targets = config.get("target_modules")
    names, linears = base_modules(base_config) if base_config is not None else ([], None)
    _check_patterns(config, label, sorted(set(modules) | set(names)))
    for module, (a, b) in sorted(modules.items()):
        if isinstance(targets, list) and not targets_module(targets, module):
            raise IntegrityError(f"{label}: {WEIGHTS_FILE} holds LoRA tensors for {module}, which target_modules "
                                 f"{targets} does not name")
        rank = a[0]
        if expected == "LORA":
            want = pattern_value(config.get("rank_pattern") or {}, module, config.get("r"))
            if isinstance(want, int) and want != rank:
                raise IntegrityError(f"{label}: {module} has rank {rank} in {WEIGHTS_FILE}, {CONFIG_FILE} says r={want}")
        if b[1] != rank:
            raise IntegrityError(f"{label}: {module}'s lora_A and lora_B ranks differ ({rank} vs {b[1]})")
        if linears is not None:
            if module not in linears:
                raise IntegrityError(f"{label}: {module} is not a linear layer of the base model")
            if (a[1], b[0]) != linears[module]:
                raise IntegrityError(f"{label}: {module} is {linears[module][0]}→{linears[module][1]} in the base model "
                                     f"but {a[1]}→{b[0]} in {WEIGHTS_FILE}")
    if linears is not None and targets not in (None, "all-linear"):  # all-linear: peft names the layers itself
        bare = sorted(m for m in linears if _peft_targets(config, m) and m not in modules)
        if bare:  # peft would give these layers fresh (with init_lora_weights false: random) weights at every load
            raise IntegrityError(f"{label}: target_modules {targets} names {bare[0]}, but {WEIGHTS_FILE} holds no "
                                 f"tensors for it ({len(bare)} such layer(s))")


def _peft_targets(config: dict, module: str) -> bool:
    """Whether peft puts a LoRA layer on the base model's `module` under this config: its own rule
    (`check_target_module_exists`: a list or a regex, `exclude_modules`, `layers_to_transform`, `layers_pattern`).
    Called after `_check_patterns` timed every pattern on these names."""
    from types import SimpleNamespace

    from peft.tuners.tuners_utils import check_target_module_exists

    keys = ("target_modules", "exclude_modules", "modules_to_save", "target_parameters", "layers_to_transform",
            "layers_pattern")
    return bool(check_target_module_exists(SimpleNamespace(**{k: config.get(k) for k in keys}), module))


def _lora_modules(shapes: dict[str, tuple[int, ...]], label: str) -> dict[str, tuple[tuple, tuple]]:
    """module -> (lora_A shape, lora_B shape); IntegrityError for a half pair or a tensor that is not 2-D."""
    sides: dict[str, dict[str, tuple]] = {}
    for key, shape in shapes.items():
        m = _LORA_KEY.match(key)
        if m:
            if len(shape) != 2:
                raise IntegrityError(f"{label}: {key} has shape {list(shape)}; LoRA matrices are 2-D")
            sides.setdefault(m["module"], {})[m["side"]] = shape
    half = sorted(mod for mod, s in sides.items() if len(s) != 2)
    if half:
        raise IntegrityError(f"{label}: {half[0]} has only one of lora_A and lora_B in {WEIGHTS_FILE}")
    if not sides:
        raise IntegrityError(f"{label}: {WEIGHTS_FILE} holds no LoRA tensors")
    return {mod: (s["A"], s["B"]) for mod, s in sides.items()}
