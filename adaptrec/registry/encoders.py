"""Registered collaborative encoders: one row per (name, version) in the `encoders` table and a folder of
safetensors under `<home>/encoders/<name>/<version>/`, its files' sha256 recorded and checked on load."""

from __future__ import annotations

import json
import sqlite3
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IntegrityError


@dataclass(frozen=True)
class EncoderRecord:
    name: str
    version: int
    kind: str  # mf-bias, bpr, als, lightgcn, sasrec, popularity
    data: str  # the interaction source it learned from (cf/fit.py SOURCES)
    data_fingerprint: str  # digest of those training interactions
    window: str  # which interactions of the source, in words
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # measured on the source's validation part
    files: dict = field(default_factory=dict)  # file name -> sha256
    created_at: str = ""
    path: Path | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        return {"ref": self.ref, "kind": self.kind, "data": self.data, "data_fingerprint": self.data_fingerprint,
                "window": self.window, "settings": self.settings, "metrics": self.metrics,
                "created_at": self.created_at}


def _ratings_now(source: str, memo: dict[str, str]) -> str:
    """The digest of `source`'s training interactions as its files hold them now (read once per `memo`)."""
    from ..cf.fit import source_ratings

    if source not in memo:
        memo[source] = source_ratings(source).fingerprint
    return memo[source]


class StaleEncoderWarning(UserWarning):
    """A registered encoder left out of a report: its source no longer holds the interactions it learned."""


def current_encoders(records: list[EncoderRecord]) -> list[EncoderRecord]:
    """The `records` whose source still holds the interactions they learned; the others are left out with a
    `StaleEncoderWarning` (a report's automatic encoder rows: one stale encoder must not stop every run)."""
    memo: dict[str, str] = {}
    current = [r for r in records if _ratings_now(r.data, memo) == r.data_fingerprint]
    stale = [r.ref for r in records if r not in current]
    if stale:
        warnings.warn(StaleEncoderWarning(f"left out {', '.join(stale)}: their sources hold other training "
                                          "interactions than they learned (fit them again with `adaptrec train-cf`)"),
                      stacklevel=2)
    return current


def check_same_ratings(source: str, ratings: str, what: str, memo: dict[str, str] | None = None,
                       remedy: str = "fit it again (`adaptrec train-cf`)") -> None:
    """IntegrityError unless `source`'s training interactions are still those `what` learned from (their digest
    `ratings`): a source whose files changed since the fit may hold out pairs the encoder learned. `memo`: digests
    already read, shared by the checks of one command (each source read once); `remedy`: what to do about it."""
    now = _ratings_now(source, {} if memo is None else memo)
    if now != ratings:
        raise IntegrityError(f"{what} learned from {source} when it held other training interactions ({ratings[:12]}; "
                             f"now {now[:12]}): pairs held out now may be among them; {remedy}")


COLUMNS = ("name", "version", "kind", "data", "data_fingerprint", "window", "settings", "metrics", "files",
           "created_at")
_JSON = ("settings", "metrics", "files")


def insert(conn: sqlite3.Connection, record: EncoderRecord) -> None:
    values = [json.dumps(getattr(record, c)) if c in _JSON else getattr(record, c) for c in COLUMNS]
    conn.execute(f"INSERT INTO encoders ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", values)


def rows(conn: sqlite3.Connection, name: str | None = None, version: int | None = None,
         damaged: list[str] | None = None) -> list[dict]:
    """Matching rows as dicts (JSON columns parsed), newest version first. A row whose JSON no longer parses or is
    not a JSON object (edited by hand, a damaged page) is an IntegrityError naming it, or with `damaged` a line
    appended there instead."""
    where, args = [], []
    for column, value in (("name", name), ("version", version)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    sql = f"SELECT {', '.join(COLUMNS)} FROM encoders" + (f" WHERE {' AND '.join(where)}" if where else "")
    out = []
    for row in conn.execute(sql + " ORDER BY name, version DESC", args).fetchall():
        d = dict(zip(COLUMNS, row))
        try:
            parsed = {k: json.loads(v) if k in _JSON else v for k, v in d.items()}
            if not all(isinstance(parsed[k], dict) for k in _JSON):  # (was: `[1]`, an AttributeError traceback)
                raise ValueError("not a JSON object")
            out.append(parsed)
        except (TypeError, ValueError):  # was: JSONDecodeError's traceback from every command reading encoders
            problem = (f"the registry row of encoder {d['name']}:{d['version']} has an unreadable column; restore "
                       "registry.db from a copy")
            if damaged is None:
                raise IntegrityError(problem) from None
            damaged.append(problem)
    return out
