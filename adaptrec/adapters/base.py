"""The shared interface of the adapter types: one module per type (lora, adalora, prefix), like peft's tuners.

A type module defines a pydantic settings model (`type: Literal[...]` discriminator, `extra="forbid"`) and a
`Tuner` subclass, and exposes one instance as `TUNER`. This module collects them (`TUNERS`, the discriminated
union `AdapterConfig`) and builds peft models. Adding a type: write its module and add its name to
`_TYPE_MODULES` below; nothing else changes.

Training-loop contract (what the trainer does with a `Tuner`):

    peft_model = build_peft_model(backbone.model, settings, total_steps, backbone.tokenizer)
    # total_steps = optimizer steps; build_peft_model calls tuner.initialise(peft_model, settings, tokenizer)
    tuner = tuner_for(peft_model)
    for step in range(1, total_steps + 1):                                 # steps count from 1
        loss = rec_loss(...)                                               # weighed by its micro-batch's cases
        extra = tuner.extra_loss(peft_model)                               # None for most types; counts alike
        (loss + extra if extra is not None else loss).backward()           # in every micro-batch
        tuner.before_optimizer_step(peft_model)                            # gradients whole, not yet clipped
        optimizer.step()
        tuner.after_optimizer_step(peft_model, step)                       # before zero_grad()
        optimizer.zero_grad()
        tuner.before_validation(peft_model)                                # before each validation
    checkpoint: trainable parameters + optimizer state + tuner.state_tensors(peft_model) (safetensors)
    adapter folder: peft's save_pretrained + tuner.save_extra(peft_model, folder); read back with tuner.load_extra
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

import torch
from pydantic import Field, ValidationError

from adaptrec.errors import AdaptrecError, ConfigError
from adaptrec.userfiles import UserSettings

if TYPE_CHECKING:  # peft is imported lazily: `import adaptrec.adapters` stays cheap
    from peft import PeftConfig, PeftModel

# The adapter type modules, in the order they are listed in errors and docs.
_TYPE_MODULES: tuple[str, ...] = ("lora", "adalora", "prefix", "collab")


class AdapterSettings(UserSettings):
    """Base of every type's settings: unknown keys are errors, and each type has a `type` discriminator."""

    type: str


class Tuner:
    """What the rest of adaptrec needs from one adapter type. Subclasses set the class attributes."""

    name: ClassVar[str]  # the `type` value in recipes ("lora")
    settings_cls: ClassVar[type[AdapterSettings]]
    peft_type: ClassVar[str]  # peft's PeftType value ("LORA")

    def peft_config(self, cfg: AdapterSettings, total_steps: int) -> "PeftConfig":
        """The peft config (task_type CAUSAL_LM) for `cfg` on a run of `total_steps` optimizer steps."""
        raise NotImplementedError

    def check_installed(self, cfg: AdapterSettings) -> None:
        """A one-line `MissingOptionalPackage` when a package the start of `cfg` needs beyond the backbone is not
        installed (default: none needed), found before any model loads (`train --dry-run` too)."""

    def initialise(self, model: "PeftModel", cfg: AdapterSettings, tokenizer) -> None:
        """Set the fresh adapter's starting weights where peft's own initialisation does not suit (default: keep it)."""

    def before_optimizer_step(self, model: "PeftModel") -> None:
        """Called once the step's gradients are whole (accumulated and, across processes, all-reduced), before they
        are clipped and the optimizer steps (default: nothing). Under fp16 they are still loss-scaled there."""

    def after_optimizer_step(self, model: "PeftModel", step: int) -> None:
        """Called after `optimizer.step()` and before `zero_grad()`, with the 1-based optimizer step."""

    def extra_loss(self, model: "PeftModel") -> torch.Tensor | None:
        """A regulariser to add to the training loss (None: nothing to add)."""
        return None

    def before_validation(self, model: "PeftModel") -> None:
        """Called before each validation, so that the adapter validated is the one a save would write (default:
        nothing)."""

    def save_extra(self, model: "PeftModel", folder: Path) -> None:
        """Write what peft's `save_pretrained` leaves out into the adapter folder (default: nothing)."""

    def load_extra(self, model: "PeftModel", folder: Path, tokenizer) -> None:
        """Restore what `save_extra` wrote, after peft loaded the adapter from `folder` (default: nothing)."""

    def saved_to_fresh(self, saved: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A saved adapter's tensors in the shapes of a freshly built one of the same settings (`fresh`: its peft state
        dict), for a warm start (default: as saved)."""
        return saved

    def state_tensors(self, model: "PeftModel") -> dict[str, torch.Tensor]:
        """Non-parameter training state needed for an exact resume (saved as safetensors by the trainer)."""
        return {}

    def load_state_tensors(self, model: "PeftModel", tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state_tensors` returned."""
        if tensors:
            raise ConfigError(
                f"a {self.name} adapter keeps no training state, but the checkpoint holds {len(tensors)} state "
                f"tensors (e.g. {next(iter(tensors))!r}); it was written for another adapter type"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_registry: tuple[dict[str, Tuner], Any] | None = None


def _types() -> tuple[dict[str, Tuner], Any]:
    """(TUNERS, AdapterConfig), built on first use so the type modules (which import this one) load in any order."""
    global _registry
    if _registry is None:
        tuners: dict[str, Tuner] = {}
        for mod in _TYPE_MODULES:
            tuner = importlib.import_module(f"{__package__}.{mod}").TUNER
            tuners[tuner.name] = tuner
        union = Union[tuple(t.settings_cls for t in tuners.values())]  # noqa: UP007 (built at run time)
        _registry = (tuners, Annotated[union, Field(discriminator="type")])
    return _registry


def __getattr__(name: str) -> Any:
    # `TUNERS: dict[str, Tuner]` and `AdapterConfig` (the discriminated union of the settings models)
    if name == "TUNERS":
        return _types()[0]
    if name == "AdapterConfig":
        return _types()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _friendly(e: ValidationError, where: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}")
    return "; ".join(parts)


def parse_adapter_settings(data: Any, where: str = "adapter") -> AdapterSettings:
    """Validate a recipe's adapter section (a dict with `type`) into that type's settings; ConfigError if bad."""
    if isinstance(data, AdapterSettings):
        return data
    tuners = _types()[0]
    if not isinstance(data, dict) or data.get("type") not in tuners:
        got = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{where}.type: {got!r} is not an adapter type; expected one of {', '.join(tuners)}")
    try:
        return tuners[data["type"]].settings_cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_friendly(e, where)) from None


def check_installed(cfg: AdapterSettings | dict) -> None:
    """`Tuner.check_installed` of `cfg`'s type: what its start needs is installed."""
    settings = parse_adapter_settings(cfg)
    _types()[0][settings.type].check_installed(settings)


def _injected(model: torch.nn.Module, settings: AdapterSettings, peft_config) -> "PeftModel":
    """`model` with peft's layers for `peft_config` injected; a ConfigError naming the mismatch if the settings do
    not fit it (target modules it lacks, nothing left to train)."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, peft_config)
    except ValueError as e:  # e.g. target modules not found in the model
        raise ConfigError(f"adapter ({settings.type}) does not fit this backbone: {str(e).splitlines()[0]}") from e
    if not any(p.requires_grad for p in peft_model.parameters()):
        if not peft_config.is_prompt_learning:
            peft_model.base_model.unload()
        raise ConfigError(f"adapter ({settings.type}) has no trainable parameters on this backbone; check "
                          "target_modules")
    unmatched = _unmatched_targets(peft_model, peft_config)
    if unmatched:  # peft refuses a list only when no entry matches, so a misspelled one beside a right one went unseen
        peft_model.base_model.unload()
        leaves = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if not list(module.children())})
        hints = [f"{t!r}" + (f" (did you mean {close[0]!r}?)" if (close := get_close_matches(t, leaves, 1)) else "")
                 for t in unmatched]
        raise ConfigError(f"adapter ({settings.type}).target_modules: {', '.join(hints)} matches no module of this "
                          "backbone")
    return peft_model


def _unmatched_targets(peft_model: "PeftModel", peft_config) -> list[str]:
    """The entries of a list of `target_modules` that name no module peft targeted (a regex string or `all-linear`
    is peft's to read): peft's rule for a list, an entry equal to a module's name or ending it at a '.'."""
    targets = getattr(peft_config, "target_modules", None)
    if peft_config.is_prompt_learning or not isinstance(targets, (list, set, tuple)):
        return []
    targeted = peft_model.targeted_module_names
    return sorted(t for t in targets if not any(name == t or name.endswith(f".{t}") for name in targeted))


def check_fits(cfg: AdapterSettings | dict, config, total_steps: int) -> None:
    """What `build_peft_model` refuses for a backbone of transformers `config` (target modules it lacks, nothing to
    train), found on a weightless copy (meta device: no memory, no weights read), for `train --dry-run`."""
    from transformers import AutoModelForCausalLM

    settings = parse_adapter_settings(cfg)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    skeleton.requires_grad_(False)
    _injected(skeleton, settings, _types()[0][settings.type].peft_config(settings, total_steps))


def build_peft_model(model: torch.nn.Module, cfg: AdapterSettings | dict, total_steps: int, tokenizer=None) -> "PeftModel":
    """Wrap a frozen backbone (`load_backbone(...).model`) with a fresh trainable adapter.

    `tokenizer` (the backbone's) is needed by types that start from the backbone's activations (prefix, `init: text`).

    peft injects the adapter layers into `model` in place: one backbone object carries one such call
    (load further adapters with `PeftModel.load_adapter`); a start that fails (the tuner's `initialise`) takes the
    injected layers back out, so the backbone stays usable (a collab start that failed after adding its item tokens
    leaves them in the tokenizer, which refuses another collab adapter). Only adapter parameters are trainable.
    For a bitsandbytes 8-bit backbone nothing else is needed: gradients reach the adapters through
    the int8 layers (bitsandbytes' backward w.r.t. the input), `load_backbone` keeps the
    non-quantized parameters fp32, and gradient checkpointing stays off (it slows CPU training),
    so peft's `prepare_model_for_kbit_training` (freeze, fp32 upcast, input-grad hook for
    checkpointing) would change nothing and is not called.
    """
    from peft import PeftModel

    settings = parse_adapter_settings(cfg)
    if isinstance(model, PeftModel) or getattr(model, "peft_config", None):
        raise AdaptrecError("this backbone already carries adapters; load a fresh backbone to train a new adapter")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total_steps must be a positive number of optimizer steps, got {total_steps!r}")
    tuner = _types()[0][settings.type]
    peft_config = tuner.peft_config(settings, total_steps)
    model.requires_grad_(False)
    peft_model = _injected(model, settings, peft_config)
    try:
        tuner.initialise(peft_model, settings, tokenizer)
    except BaseException:  # e.g. a missing wheel: leave the backbone without the injected layers, reusable
        if not peft_config.is_prompt_learning:  # prompt learning injects no layers
            peft_model.base_model.unload()
        raise
    peft_model.adaptrec_tuner = tuner.name  # several types share a peft type (collab is LoRA to peft)
    return peft_model


def tuner_for(peft_model: "PeftModel") -> Tuner:
    """The Tuner of the active adapter of a peft model."""
    named = getattr(peft_model, "adaptrec_tuner", None)
    if named is not None:
        return _types()[0][named]
    config = peft_model.peft_config[peft_model.active_adapter]
    ptype = getattr(config.peft_type, "value", config.peft_type)
    for tuner in _types()[0].values():
        if tuner.peft_type == ptype:
            return tuner
    raise ConfigError(f"peft adapter type {ptype} is not supported by adaptrec; expected one of {', '.join(_types()[0])}")


def warm_start(peft_model: "PeftModel", folder: Path, tokenizer) -> None:
    """Start the trainable adapter of `peft_model` from the weights saved in `folder` (same type and settings):
    peft's own state-dict loader for its tensors, the tuner's `load_extra` for the rest."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(Path(folder) / "adapter_model.safetensors"))
    saved = tuner_for(peft_model).saved_to_fresh(saved, get_peft_model_state_dict(peft_model))
    try:
        result = set_peft_model_state_dict(peft_model, saved)
    except RuntimeError as e:  # a tensor of another shape
        why = str(e).strip().splitlines()[-1].strip()
        if getattr(peft_model.peft_config[peft_model.active_adapter], "prefix_projection", False):
            why += "; prefix tuning with prefix_projection saves only the projected prefix, not the MLP it trains"
        raise ConfigError(f"{folder}: its weights do not fit the adapter its recipe builds ({why})") from None
    missing = [k for k in result.missing_keys if "lora_" in k or "prompt_encoder" in k]
    if result.unexpected_keys or missing:
        raise ConfigError(f"{folder}: its weights do not fit the adapter its recipe builds "
                          f"(e.g. {(result.unexpected_keys or missing)[0]!r})")
    tuner_for(peft_model).load_extra(peft_model, Path(folder), tokenizer)
