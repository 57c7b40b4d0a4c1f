"""Prefix tuning: learned key/value vectors prepended to every layer's attention cache.

Quirks: the virtual key/values arrive as `past_key_values`, so
- an `attention_mask` must be passed (peft prepends ones for the virtual tokens); without it a
  left-padded batch attends to its padding;
- peft >= 0.19 shifts `position_ids` by `num_virtual_tokens`, so `scoring.tokenize`'s padding-free
  position ids keep a prompt's score independent of its batch-mates (tested); peft < 0.19 drops
  them with a warning, and scores then shift with the batch's padding;
- any `past_key_values` the caller passes is overwritten, so KV-cache prefix reuse in serving
  cannot be combined with a prefix adapter.

Initialisation: peft starts the virtual key/values at N(0, 1), far from anything the frozen model
produces, so a fresh prefix perturbs every layer's attention before it has learned anything. With
`init: text` (the default) they start as the backbone's own keys/values for the first
`num_virtual_tokens` tokens of `init_text` (Li & Liang, 2021): the untrained adapter then scores a
prompt exactly as the backbone scores `init_text`'s tokens followed by the prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator

from adaptrec.errors import AdaptrecError, ConfigError

from .base import AdapterSettings, Tuner

if TYPE_CHECKING:
    from peft import PeftModel

# Long enough for 30 virtual tokens with SmolLM2's tokenizer; a recipe may set its own domain's words.
DEFAULT_INIT_TEXT = (
    "Given the user's preference and unpreference, identify whether the user will like the target item "
    'by answering "Yes." or "No.". Judge from the items the user liked and disliked before.'
)


class PrefixSettings(AdapterSettings):
    type: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(10, ge=1)  # virtual key/values per layer: more = more capacity, longer attention span per token
    prefix_projection: bool = False  # train through an MLP reparameterisation: often stabler, many more trainable params (saved size unchanged)
    encoder_hidden_size: int | None = Field(None, ge=1)  # that MLP's width (None: the model's kv width); only with prefix_projection
    init: Literal["text", "random"] = "text"  # text: the backbone's own key/values on init_text; random: peft's N(0, 1)
    init_text: str = Field(DEFAULT_INIT_TEXT, min_length=1)  # with init: text, its first num_virtual_tokens tokens

    @model_validator(mode="after")
    def _width_needs_projection(self) -> "PrefixSettings":
        if self.encoder_hidden_size is not None and not self.prefix_projection:
            raise ValueError("encoder_hidden_size only applies with prefix_projection: true")
        if self.prefix_projection and self.init == "text":
            raise ValueError("init: text sets the virtual key/values directly; with prefix_projection: true use init: random")
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

    def initialise(self, model: "PeftModel", cfg: PrefixSettings, tokenizer) -> None:
        """With `init: text`, set the virtual key/values to the backbone's own on `init_text`'s first tokens."""
        if cfg.init != "text":
            return
        from adaptrec.compat import (
            CACHE_KEY,  # imports transformers: keep validating recipes cheap
        )

        if tokenizer is None:
            raise AdaptrecError("prefix init: text needs the backbone's tokenizer (build_peft_model(..., tokenizer=...))")
        ids, n = init_text_ids(cfg, tokenizer), cfg.num_virtual_tokens
        embedding = model.prompt_encoder[model.active_adapter].embedding.weight  # (n, layers * 2 * kv width)
        base = model.get_base_model()
        was_training = base.training
        base.eval()  # no dropout in the activations we copy
        with torch.no_grad():
            out = base(input_ids=torch.tensor([ids[:n]], device=base.device), use_cache=True)
        base.train(was_training)
        layers = getattr(out, CACHE_KEY).layers
        shapes = {(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in layers}
        if len(shapes) != 1 or len(layers) * 2 * layers[0].keys[0].numel() != embedding.numel():
            raise ConfigError(f"adapter.init: text does not fit this backbone's key/value cache (shapes {sorted(shapes)}, "
                              f"prefix {tuple(embedding.shape)}); use adapter.init: random")
        # peft reads row t as (layer, key|value, kv head, head dim) and hands the model the same rotated keys
        kv = torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in layers])  # (L, 2, H, n, d)
        with torch.no_grad():
            embedding.copy_(kv.permute(3, 0, 1, 2, 4).reshape(n, -1).to(embedding))


def init_text_ids(cfg: PrefixSettings, tokenizer) -> list[int]:
    """`init_text`'s token ids (with the special tokens a prompt starts with); a one-line `ConfigError` when they are
    fewer than the virtual tokens they start (also what `train --dry-run` checks)."""
    ids = tokenizer(cfg.init_text).input_ids
    if len(ids) < cfg.num_virtual_tokens:
        raise ConfigError(f"adapter.init_text: {len(ids)} tokens, fewer than adapter.num_virtual_tokens "
                          f"({cfg.num_virtual_tokens})")
    return ids


TUNER = PrefixTuner()
