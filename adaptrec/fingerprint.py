"""A base model's identity: an exact fingerprint (weights + quantization) and a family one (shapes + tokenizer)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Match = Literal["exact", "family", "none"]


@dataclass(frozen=True)
class Fingerprint:
    """`exact` changes with any weight or the quantization; `family` only with architecture, shapes or tokenizer."""

    exact: str
    family: str
    base_model: str  # the Hub id or path the weights came from, for model cards and messages

    def match(self, other: "Fingerprint") -> Match:
        """"exact": the same weights, quantization and family; "family": another build of the same family; else
        "none" (the same weights under another vocabulary or architecture are another model)."""
        if self.family != other.family:
            return "none"
        return "exact" if self.exact == other.exact else "family"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        return cls(exact=d["exact"], family=d["family"], base_model=d.get("base_model", ""))


def digest(obj: object) -> str:
    """sha256 of a JSON-serialisable object in canonical form."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def text_digest(text: str) -> str:
    """sha256 of a text (UTF-8), e.g. a recipe's exact YAML."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stat_identity(path: Path) -> tuple[int, ...]:
    """What a remembered hash of `path` is keyed by: its device, inode, size, mtime and ctime. ctime too: a rewrite
    that restores mtime and size (`cp -p`, `touch -r`) still moves it."""
    stat = Path(path).stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
