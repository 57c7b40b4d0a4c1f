"""What is derived from a registered version without training: the exact plain-LoRA export of an AdaLoRA adapter
(registered), and a folder vLLM loads (written outside the registry)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..adapters.export import adalora_to_lora
from ..adapters.vllm import VllmExport, export_vllm_lora
from ..errors import AdaptrecError
from .records import EXPORT_METHODS
from .validation import verified_files


def register_lora_export(registry, ref: str, name: str | None = None):
    """Convert AdaLoRA adapter `ref` (its files re-hashed first) to an exactly equivalent plain LoRA; register it as
    `name` (default NAME-lora)."""
    record = registry.resolve(ref)
    if record.adapter_type != "adalora":
        raise AdaptrecError(f"LoRA export: {record.ref} is a {record.adapter_type} adapter, not adalora")
    verified_files(record)
    with tempfile.TemporaryDirectory() as tmp:
        adalora_to_lora(record.path, Path(tmp) / "lora")
        return registry.register(
            Path(tmp) / "lora", name=name or f"{record.name}-lora", domain=record.domain, kind="composed",
            adapter_type="lora", adapter_config=None, fingerprint=record.fingerprint, recipe_text=record.recipe_text,
            metrics=record.metrics, lineage={"parents": [record.ref], "method": EXPORT_METHODS[0], "weights": [1.0],
                                             **({} if record.checked_on is None else {"checked_on": record.checked_on})},
        )


def write_vllm_export(registry, ref: str, out: str | Path) -> VllmExport:
    """Write registered adapter `ref` (its files re-hashed first) to folder `out` as a LoRA folder vLLM loads."""
    record = registry.resolve(ref)
    verified_files(record)
    return export_vllm_lora(record.path, record.adapter_type, out, label=record.ref)
