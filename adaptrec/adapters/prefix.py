"""Prefix tuning: learned key/value vectors prepended to every layer's attention cache.

Quirks: the virtual key/values arrive as `past_key_values`, so
- an `attention_mask` must be passed (peft prepends ones for the virtual tokens); without it a
  left-padded batch attends to its padding;
- peft >= 0.19 shifts `position_ids` by `num_virtual_tokens`, so `scoring.tokenize`'s padding-free
  position ids keep a prompt's score independent of its batch-mates (tested); peft < 0.19 drops
  them with a warning, and scores then shift with the batch's padding;
- any `past_key_values` the caller passes is overwritten, so KV-cache prefix reuse in serving
  cannot be combined with a prefix adapter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import AdapterSettings, Tuner


class PrefixSettings(AdapterSettings):
    type: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(10, ge=1)  # virtual key/values per layer: more = more capacity, longer attention span per token
    prefix_projection: bool = False  # train through an MLP reparameterisation: often stabler, many more trainable params (saved size unchanged)
    encoder_hidden_size: int | None = Field(None, ge=1)  # that MLP's width (None: the model's kv width); only with prefix_projection

    @model_validator(mode="after")
    def _width_needs_projection(self) -> "PrefixSettings":
        if self.encoder_hidden_size is not None and not self.prefix_projection:
            raise ValueError("encoder_hidden_size only applies with prefix_projection: true")
        return self


class PrefixTuner(Tuner):
    name = "prefix"
    settings_cls = PrefixSettings
    peft_type = "PREFIX_TUNING"

    def peft_config(self, cfg: PrefixSettings, total_steps: int):
        from peft import PrefixTuningConfig

        kwargs = {"encoder_hidden_size": cfg.encoder_hidden_size} if cfg.encoder_hidden_size else {}
        return PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg.num_virtual_tokens,
            prefix_projection=cfg.prefix_projection,
            **kwargs,
        )


TUNER = PrefixTuner()
