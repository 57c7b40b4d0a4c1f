"""LoRA: a trainable low-rank update B·A (scaled by alpha/r) beside each targeted frozen linear layer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import AdapterSettings, Tuner

TALLREC_TARGETS = ("q_proj", "v_proj")


class LoraSettings(AdapterSettings):
    type: Literal["lora"] = "lora"
    r: int = Field(8, ge=1)  # rank: higher = more capacity, r·(d_in+d_out) parameters per module
    alpha: float = Field(16, gt=0)  # update scale alpha/r: higher = bigger effective step, same parameter count
    dropout: float = Field(0.05, ge=0, lt=1)  # dropout on the adapter input: more = more regularisation, noisier loss
    target_modules: list[str] = Field(default_factory=lambda: list(TALLREC_TARGETS), min_length=1)  # TALLRec's q/v; adding k/o/MLP: more capacity, more memory


class LoraTuner(Tuner):
    name = "lora"
    settings_cls = LoraSettings
    peft_type = "LORA"

    def peft_config(self, cfg: LoraSettings, total_steps: int):
        from peft import LoraConfig

        return LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            bias="none",
        )


TUNER = LoraTuner()
