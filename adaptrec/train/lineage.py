"""What a trained adapter's registry lineage says beyond its method: the collaborative encoder it was built on and
the logged feedback events it was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..adapters.collab import encoder_of
from ..data.records import Case
from ..registry import AdapterRecord, Registry


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


def event_keys(cases: Sequence[Case]) -> list[str]:
    """The logged (request, item) pairs among `cases` (`meta["event"]` of `feedback:` cases), sorted, once each."""
    return sorted({c.meta["event"] for c in cases if "event" in c.meta})


def with_events(lineage: dict | None, cases: Sequence[Case], parent: AdapterRecord | None = None) -> dict | None:
    """`lineage`, listing the logged feedback events among the training `cases` and those the `parent` it was
    updated from had seen (when there are any), so the gate and later updates can tell them apart from events the
    adapter never saw. The list is cumulative: it survives the removal of an earlier version."""
    events = sorted(set(event_keys(cases)) | parent.trained_events) if parent else event_keys(cases)
    return {**(lineage or {}), "events": events} if events else lineage

