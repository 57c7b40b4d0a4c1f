"""Adapter types (one module per peft tuner) and adapter folders on disk (`files`)."""

from .base import TUNERS, AdapterConfig, AdapterSettings, Tuner, build_peft_model, parse_adapter_settings, tuner_for
from .export import adalora_to_lora

__all__ = [
    "AdapterConfig", "AdapterSettings", "TUNERS", "Tuner",
    "adalora_to_lora", "build_peft_model", "parse_adapter_settings", "tuner_for",
]
