"""Adapter names, refs and records, and how a record maps to an `adapters` row; no database or file access."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from adaptrec.errors import IntegrityError, RegistryError
from adaptrec.fingerprint import Fingerprint, text_digest
from adaptrec.names import check_name

KINDS = ("trained", "composed", "pulled")
EXPORT_METHODS = ("adalora_to_lora",)  # lineage methods of a `composed` row that re-expresses one adapter exactly
MAX_VERSION = 2**63 - 1  # the largest SQLite INTEGER


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`name` / `name:latest` → (name, None); `name:3` → (name, 3)."""
    if not isinstance(ref, str) or not ref:
        raise RegistryError(f"bad adapter ref {ref!r}: write name, name:latest or name:<version>, e.g. 'movies-lora:2'")
    name, sep, version = ref.partition(":")
    check_name(name)
    if not sep or version == "latest":
        return name, None
    # not '²', a digit int() refuses; nor past SQLite's integers, which the lookup could not bind
    if not (version.isascii() and version.isdigit()) or not 1 <= int(version) <= MAX_VERSION:
        raise RegistryError(f"bad adapter ref {ref!r}: the version must be a number from 1 to {MAX_VERSION} or "
                            f"'latest', e.g. '{name}:1'")
    return name, int(version)


@dataclass(frozen=True)
class AdapterRecord:
    """One registered adapter version (a row of the `adapters` table) and where its folder is."""

    name: str
    version: int
    domain: str
    kind: str
    adapter_type: str
    adapter_config: dict
    base_exact: str
    base_family: str
    base_model: str
    recipe_text: str | None
    recipe_hash: str | None
    metrics: dict
    lineage: dict | None
    origin: dict | None
    file_hash: str
    created: str
    path: Path
    claimed_metrics: dict | None = None  # a pulled adapter's metrics as its publisher stated them (not measured here)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(exact=self.base_exact, family=self.base_family, base_model=self.base_model)

    @property
    def is_composition(self) -> bool:
        """A `composed` row that combines adapters (not an exact export of one, which is also kind `composed`)."""
        return self.kind == "composed" and (self.lineage or {}).get("method") not in EXPORT_METHODS

    def pulled_backbone(self, default: str) -> tuple[str, str] | None:
        """For a pulled adapter (or one exported from it: its lineage carries `checked_on`), the backbone (`default`
        where unrecorded) and quantization its pull was checked against, which later commands load it on: its
        recipe's `backbone` is the publisher's word, which a command must not download and run. None otherwise."""
        checked = self.checked_on
        return None if checked is None else (checked.get("backbone", default), checked.get("quantization", "8bit"))

    @property
    def checked_on(self) -> dict | None:
        """What `pulled_backbone` reads (the pull's record of its backbone; {} before pulls recorded it), passed on
        to what is derived from this version; None for an adapter neither pulled nor derived from a pulled one."""
        if self.kind == "pulled":
            return (self.origin or {}).get("checked_on") or {}
        return (self.lineage or {}).get("checked_on")

    @property
    def trained_events(self) -> set[str]:
        """The logged feedback events (`Case.meta["event"]`) this version, and every version it was updated from,
        was trained on: its lineage's cumulative `events`."""
        return set((self.lineage or {}).get("events", []))

    @property
    def validated_events(self) -> set[str]:
        """The logged feedback events this version's checkpoints, and those of every version it was updated from,
        were chosen on (early stopping's validation cases): its lineage's cumulative `valid_events`."""
        return set((self.lineage or {}).get("valid_events", []))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["ref"] = self.ref
        return d


_JSON_COLUMNS = ("adapter_config", "metrics", "lineage", "origin", "claimed_metrics")
_NULLABLE = ("metrics", "lineage", "origin", "claimed_metrics")  # JSON objects all, these also null (metrics: {})
_ROW_FIELDS = tuple(f.name for f in fields(AdapterRecord) if f.name != "path")


def dumps(obj: Any) -> str | None:
    """A JSON column's text (keys sorted), or None for None."""
    return None if obj is None else json.dumps(obj, sort_keys=True)


def row_values(record: AdapterRecord) -> dict[str, Any]:
    """The `adapters` row of `record`: every field but `path`, JSON columns as text."""
    return {f: dumps(getattr(record, f)) if f in _JSON_COLUMNS else getattr(record, f) for f in _ROW_FIELDS}


def row_ref(row: sqlite3.Row | dict) -> str:
    """The `name:version` of an `adapters` row, read or not (`AdapterRecord.ref` of a parsed one)."""
    return f"{row['name']}:{row['version']}"


_UNREADABLE = object()  # a JSON column that does not parse


def row_fields(row: sqlite3.Row) -> dict[str, Any]:
    """The `AdapterRecord` fields but `path` of an `adapters` row (a column a later migration adds needs a field
    to show up); `IntegrityError` naming the row when a JSON column does not parse or is not a JSON object (or
    null, where the column may be)."""
    d = {f: row[f] for f in _ROW_FIELDS}
    for col in _JSON_COLUMNS:
        try:
            d[col] = json.loads(d[col]) if d[col] is not None else None
        except (TypeError, ValueError):  # edited by hand, or a damaged page (was: JSONDecodeError's traceback)
            d[col] = _UNREADABLE
        if not isinstance(d[col], dict) and not (d[col] is None and col in _NULLABLE):  # JSON of another shape
            ref = row_ref(d)  # (was: `[1]` read as metrics, an AttributeError traceback in `registry list`)
            raise IntegrityError(f"the registry row of {ref} has an unreadable {col} column; restore registry.db from "
                                 f"a copy, or remove the version with `adaptrec registry remove {ref}`")
    d["metrics"] = d["metrics"] or {}
    return d


@dataclass(frozen=True)
class Registration:
    """A registration's checked input: what a version's `adaptrec.json` and row hold besides the version, the
    written files and the time."""

    name: str
    domain: str
    kind: str
    adapter_type: str
    adapter_config: dict | None  # None: the written folder's adapter_config.json
    fingerprint: Fingerprint
    recipe_text: str | None
    metrics: dict
    claimed_metrics: dict | None
    lineage: dict | None
    origin: dict | None

    @property
    def recipe_hash(self) -> str | None:
        return text_digest(self.recipe_text) if self.recipe_text is not None else None

    def metadata(self, version: int, created: str) -> dict:
        """The `adaptrec.json` content of `version` (`write_adapter_dir` adds `format` and `files`)."""
        return {
            "name": self.name,
            "version": version,
            "domain": self.domain,
            "kind": self.kind,
            "adapter_type": self.adapter_type,
            "base": self.fingerprint.to_dict(),
            "recipe": self.recipe_text,
            "recipe_hash": self.recipe_hash,
            "metrics": self.metrics,
            "claimed_metrics": self.claimed_metrics,
            "lineage": self.lineage,
            "origin": self.origin,
            "created": created,
        }

    def record(self, version: int, created: str, adapter_config: dict, file_hash: str, path: Path) -> AdapterRecord:
        """The record of `version`, written at `path` with `adaptrec.json` hashing to `file_hash`."""
        fp = self.fingerprint
        return AdapterRecord(
            name=self.name,
            version=version,
            domain=self.domain,
            kind=self.kind,
            adapter_type=self.adapter_type,
            adapter_config=adapter_config,
            base_exact=fp.exact,
            base_family=fp.family,
            base_model=fp.base_model,
            recipe_text=self.recipe_text,
            recipe_hash=self.recipe_hash,
            metrics=self.metrics,
            lineage=self.lineage,
            origin=self.origin,
            file_hash=file_hash,
            created=created,
            path=path,
            claimed_metrics=self.claimed_metrics,
        )
