"""What a trained adapter's registry lineage says beyond its method: the collaborative encoder it was built on and
the logged feedback events it was trained and validated on."""

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
             **{key: encoder[key] for key in ("content", "item_bias") if key in encoder}}
    return {**(lineage or {}), "encoder": named}


def with_workdir(lineage: dict | None) -> dict:
    """`lineage`, naming the working directory the run read its data from: relative data paths in its recipe and
    lineage resolve against it, wherever the gate that checks them later runs."""
    return {**(lineage or {}), "workdir": str(Path.cwd())}


def event_keys(cases: Sequence[Case]) -> list[str]:
    """The logged (request, item) pairs among `cases` (`meta["event"]` of `feedback:` cases), sorted, once each."""
    return sorted({c.meta["event"] for c in cases if "event" in c.meta})


def with_events(lineage: dict | None, cases: Sequence[Case], parent: AdapterRecord | None = None,
                valid: Sequence[Case] = ()) -> dict | None:
    """`lineage`, listing the logged feedback events among the training `cases`, those it lists already and those
    the `parent` it was updated from had seen (when there are any), so the gate and later updates can tell them
    apart from events the adapter never saw; likewise `valid_events`, those among the `valid` cases its checkpoint
    was chosen on (and its parent's). The lists are cumulative: they survive the removal of an earlier version.
    A parent registered before lineages listed events passes on its time window instead (`earlier_windows`)."""
    lineage = dict(lineage or {})
    events = set(event_keys(cases)) | set(lineage.get("events", []))
    validated = set(event_keys(valid)) | set(lineage.get("valid_events", []))
    if parent is not None:
        events |= parent.trained_events
        validated |= parent.validated_events
        earlier = list((parent.lineage or {}).get("earlier_windows", []))
        window = (parent.lineage or {}).get("window", {})
        if not parent.trained_events and "until" in window:
            earlier.append(window)
        if earlier:
            lineage["earlier_windows"] = earlier
    for key, found in (("events", events), ("valid_events", validated)):
        lineage.pop(key, None)
        if found:
            lineage[key] = sorted(found)
    return lineage or None



def registered_lineage(lineage: dict | None, cases: Sequence[Case], adapter_dir: Path, registry: Registry,
                       parent: AdapterRecord | None = None, valid: Sequence[Case] = (), setup: dict | None = None
                       ) -> dict:
    """The lineage a trained (or updated: `parent`) adapter is registered with: the method's own, with the working
    directory, the logged events among its training `cases` and its `valid`ation cases, its collaborative encoder,
    and the `setup` it trained under that its recipe does not say (`TrainResult.setup`: the int8 kernel, the mixed
    precision an environment chose, the number of processes, which multiplies the batch)."""
    lineage = {**(lineage or {}), **({"setup": setup} if setup else {})}
    return with_encoder(with_events(with_workdir(lineage), cases, parent, valid), adapter_dir, registry)
