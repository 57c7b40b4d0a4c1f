"""What a trained adapter's registry lineage says beyond its method: the collaborative encoder it was built on."""

from __future__ import annotations

from pathlib import Path

from ..adapters.collab import encoder_of
from ..registry import Registry


def with_encoder(lineage: dict | None, adapter_dir: Path, registry: Registry) -> dict | None:
    """`lineage`, naming the collaborative encoder a collab adapter was built on: its kind, data, settings and
    data fingerprint, the registered encoders (`adaptrec train-cf`) that are that very fit, and the item titles'
    text model when its item vectors carry them."""
    encoder = encoder_of(adapter_dir)
    if encoder is None:
        return lineage
    registered = registry.matching_encoders(encoder["kind"], encoder["ratings"], encoder["settings"])
    named = {"kind": encoder["kind"], "data": encoder["data"], "settings": encoder["settings"],
             "data_fingerprint": encoder["ratings"], "registered": registered,
             **({"content": encoder["content"]} if "content" in encoder else {})}
    return {**(lineage or {}), "encoder": named}
