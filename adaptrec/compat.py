"""Switches for differences between the library versions pyproject allows, in one place."""

from __future__ import annotations

from transformers.modeling_outputs import CausalLMOutputWithPast

# transformers 5.24 renamed the KV cache `past_key_values` -> `cache` (forward kwarg and output field).
CACHE_KEY = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
