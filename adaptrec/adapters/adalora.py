"""AdaLoRA: SVD-shaped low-rank updates P·diag(E)·Q whose rank budget is pruned during training.

peft's quirks, handled here (peft 0.21, `peft/tuners/adalora/{model,layer}.py`):
- `total_step` is in *optimizer* steps, and `update_and_allocate(step)` must run after every
  `optimizer.step()` and before `zero_grad()`: it reads the gradients to update the importance
  EMAs, then masks singular values (E) to the scheduled budget. Steps count from 1: the budget is
  fixed (`force_mask`) at step `total_step - tfinal`, which a 0-based loop never reaches when tfinal=0.
- Schedule: steps 1..tinit keep all init_r ranks; then the total budget falls cubically to
  target_r × (number of modules), masking every deltaT steps; from step total_step - tfinal on,
  the final rank pattern is re-applied after each step. Pruned ranks are masked (E = 0), not
  removed, until `save_pretrained`, which drops them (and rewrites the live config's
  rank_pattern keys without the adapter name).
- The orthogonal regulariser is only added by peft inside `forward` when `labels` are passed;
  our Yes/No loss passes none, so `extra_loss` computes it (same formula: orth_reg_weight ×
  mean over lora_A/lora_B of the Frobenius norm ||P Pᵀ - I||_F, *not* squared).
- The RankAllocator's EMAs (`ipt`, `exp_avg_ipt`, `exp_avg_unc`) and the current rank_pattern are
  training state outside the parameters: `state_tensors` / `load_state_tensors` carry them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from adaptrec.errors import AdaptrecError, ConfigError, IntegrityError

from .base import AdapterSettings, Tuner
from .lora import TALLREC_TARGETS

_EMA_KINDS = ("ipt", "exp_avg_ipt", "exp_avg_unc")
_RANK_PATTERN = "rank_pattern"


class AdaLoraSettings(AdapterSettings):
    type: Literal["adalora"] = "adalora"
    init_r: int = Field(12, ge=1)  # starting rank per module, the pool pruning chooses from: more = better choice, more early compute
    target_r: int = Field(8, ge=1)  # average final rank (total budget target_r × modules): like LoRA's r, but spent where it matters
    alpha: float = Field(24, gt=0)  # update scale alpha/init_r (peft divides by the initial rank): 24/12 matches LoRA's 16/8
    dropout: float = Field(0.05, ge=0, lt=1)  # dropout on the adapter input: more = more regularisation
    target_modules: list[str] = Field(default_factory=lambda: list(TALLREC_TARGETS), min_length=1)  # modules that get an update
    tinit: float = Field(0.1, ge=0)  # warm-up before pruning (<1: fraction of total steps, >=1: steps): longer = better importance estimates
    tfinal: float = Field(0.2, ge=0)  # final training at the fixed budget (<1: fraction, >=1: steps): longer = more recovery after pruning
    deltaT: float = Field(1, gt=0)  # steps between budget re-allocations (<1: fraction): smaller = smoother pruning
    beta1: float = Field(0.85, gt=0, lt=1)  # EMA of weight sensitivity: higher = smoother, slower to react
    beta2: float = Field(0.85, gt=0, lt=1)  # EMA of its uncertainty: higher = smoother
    orth_reg_weight: float = Field(0.5, ge=0)  # keeps P and Q near-orthogonal so E acts as singular values; 0 turns it off

    @model_validator(mode="after")
    def _check(self) -> "AdaLoraSettings":
        if self.target_r >= self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must be below init_r ({self.init_r}); with nothing to prune use type: lora")
        for key in ("tinit", "tfinal", "deltaT"):
            value = getattr(self, key)
            if value >= 1 and not float(value).is_integer():
                raise ValueError(f"{key}={value}: below 1 it is a fraction of the total steps, from 1 on a whole number of steps")
        return self


def schedule_steps(cfg: AdaLoraSettings, total_steps: int) -> dict[str, int]:
    """tinit, tfinal and deltaT in optimizer steps for a run of `total_steps`."""

    def steps(value: float) -> int:
        return int(round(value * total_steps)) if value < 1 else int(value)

    out = {"tinit": steps(cfg.tinit), "tfinal": steps(cfg.tfinal), "deltaT": max(1, steps(cfg.deltaT))}
    if out["tinit"] + out["tfinal"] >= total_steps:
        raise ConfigError(
            f"AdaLoRA schedule leaves no pruning phase: tinit ({out['tinit']} steps) + tfinal ({out['tfinal']} steps) "
            f"must be below the total optimizer steps ({total_steps}); lower tinit/tfinal or train longer"
        )
    return out


def _adalora_model(model):
    ada = getattr(model, "base_model", model)
    if not hasattr(ada, "rankallocator"):
        raise AdaptrecError(
            "this AdaLoRA model has no trainable adapter (loaded for inference?); "
            "build it with build_peft_model to train or resume"
        )
    return ada


def _lora_params(ada, *kinds: str) -> list[tuple[str, torch.nn.Parameter]]:
    name = ada.trainable_adapter_name
    return [(n, p) for n, p in ada.model.named_parameters() if any(k in n for k in kinds) and name in n]


class AdaLoraTuner(Tuner):
    name = "adalora"
    settings_cls = AdaLoraSettings
    peft_type = "ADALORA"

    def peft_config(self, cfg: AdaLoraSettings, total_steps: int):
        from peft import AdaLoraConfig

        try:
            return AdaLoraConfig(
                task_type="CAUSAL_LM",
                init_r=cfg.init_r,
                target_r=cfg.target_r,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                target_modules=list(cfg.target_modules),
                beta1=cfg.beta1,
                beta2=cfg.beta2,
                orth_reg_weight=cfg.orth_reg_weight,
                total_step=total_steps,
                **schedule_steps(cfg, total_steps),
            )
        except ValueError as e:
            raise ConfigError(f"adalora: {e}") from e

    def after_optimizer_step(self, model, step: int) -> None:
        ada = _adalora_model(model)
        cfg = ada.peft_config[ada.trainable_adapter_name]
        if step < 1:
            raise ValueError(f"AdaLoRA steps count from 1 (the number of optimizer steps taken), got {step}")
        if step < cfg.total_step - cfg.tfinal:  # peft reads the gradients in this phase
            grads = [p.grad for _, p in _lora_params(ada, "lora_")]
            if any(g is None for g in grads) or not any(bool(g.any()) for g in grads):
                raise RuntimeError(
                    "AdaLoRA's update_and_allocate needs the adapter gradients: call after_optimizer_step "
                    "after optimizer.step() and before optimizer.zero_grad()"
                )
        final = cfg.total_step - cfg.tfinal
        if step > final and ada.rankallocator.ipt:  # fp16 skipped step `final`: its one-time budget cut never ran
            ada.update_and_allocate(final)  # (it empties the importance scores; the budget phase keeps filling them)
        ada.update_and_allocate(step)

    def before_validation(self, model) -> None:
        """Zero the ranks the allocation pruned: between its masks (every `deltaT` steps) AdamW moves them off zero,
        and a save drops them (peft resizes by the rank pattern), so the best adapter validated was not the one kept
        (was: up to 7e-4 apart in P(yes) with `deltaT` 3)."""
        ada = _adalora_model(model)
        pattern = ada.peft_config[ada.trainable_adapter_name].rank_pattern
        if pattern:
            ada.rankallocator.mask_using_rank_pattern(ada.model, pattern)

    def extra_loss(self, model) -> torch.Tensor | None:
        # peft's AdaLoraModel.forward, which only runs it when the model computes a loss from labels
        ada = _adalora_model(model)
        weight = ada.peft_config[ada.trainable_adapter_name].orth_reg_weight
        if weight == 0:
            return None
        regu_loss, num_param = 0, 0
        for n, p in _lora_params(ada, "lora_A", "lora_B"):
            para_cov = p @ p.T if "lora_A" in n else p.T @ p
            eye = torch.eye(*para_cov.size(), out=torch.empty_like(para_cov))
            eye.requires_grad = False
            num_param += 1
            regu_loss += torch.norm(para_cov - eye, p="fro")
        if num_param == 0:
            return None
        return weight * (regu_loss / num_param)

    def saved_to_fresh(self, saved: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A saved AdaLoRA adapter keeps only its unpruned ranks (peft resizes by `rank_pattern`); a fresh one has
        `init_r`. Each saved A (r, d_in), E (r, 1), B (d_out, r) goes into the leading ranks of the fresh one, the
        rest zero: E = 0 is exactly what pruning leaves, and `ranknum` stays `init_r` in both (adapters/export.py),
        so the warm-started layer computes the saved adapter's function. The padded ranks (A, E, B all zero) get
        zero gradients, so an update keeps or prunes ranks but never revives a pruned one."""
        out = {}
        for key, tensor in saved.items():
            target = fresh.get(key)
            if target is not None and target.shape != tensor.shape and tensor.dim() == target.dim() == 2 \
                    and all(s <= t for s, t in zip(tensor.shape, target.shape)):
                padded = torch.zeros_like(target)
                padded[: tensor.shape[0], : tensor.shape[1]] = tensor
                tensor = padded
            out[key] = tensor
        return out

    def state_tensors(self, model) -> dict[str, torch.Tensor]:
        ada = _adalora_model(model)
        alloc = ada.rankallocator
        out = {f"{kind}/{n}": t.detach().clone().contiguous() for kind in _EMA_KINDS for n, t in getattr(alloc, kind).items()}
        pattern = ada.peft_config[ada.trainable_adapter_name].rank_pattern
        for n, mask in (pattern or {}).items():
            out[f"{_RANK_PATTERN}/{n}"] = torch.as_tensor(mask, dtype=torch.bool).view(-1).clone()
        return out

    def load_state_tensors(self, model, tensors: dict[str, torch.Tensor]) -> None:
        ada = _adalora_model(model)
        params = dict(_lora_params(ada, "lora_"))
        emas: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in _EMA_KINDS}
        pattern: dict[str, list[bool]] = {}
        for key, t in tensors.items():
            kind, _, name = key.partition("/")
            if kind == _RANK_PATTERN:
                pattern[name] = [bool(v) for v in t.view(-1).tolist()]
            elif kind in emas and name in params and params[name].shape == t.shape:
                emas[kind][name] = t.to(params[name].device, params[name].dtype).clone()
            else:
                raise IntegrityError(
                    f"checkpoint state tensor {key!r} does not fit this AdaLoRA adapter "
                    "(another adapter type or settings?); resume with the recipe that wrote it"
                )
        alloc = ada.rankallocator
        alloc.ipt, alloc.exp_avg_ipt, alloc.exp_avg_unc = (emas[k] for k in _EMA_KINDS)
        ada.peft_config[ada.trainable_adapter_name].rank_pattern = pattern or None


TUNER = AdaLoraTuner()
