"""A resumable SQLite cache of answer logits, so interrupted or split evaluations never recompute.

Keyed by (model key, prompt hash): the model key is the backbone's exact fingerprint plus the adapter's
file hash, and the prompt text already contains everything the data spec, template and truncation put in it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np

from .home import adaptrec_home

FILE_NAME = "score_cache.db"


class ScoreCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answer_logits (key TEXT PRIMARY KEY, yes REAL, no REAL, lse REAL)")

    @classmethod
    def default(cls) -> "ScoreCache":
        """The shared cache of this `$ADAPTREC_HOME`."""
        return cls(adaptrec_home() / FILE_NAME)

    @staticmethod
    def key(model_key: str, prompt: str) -> str:
        return hashlib.sha256(f"{model_key}\0{prompt}".encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, yes, no, lse FROM answer_logits WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update({k: np.array([y, n, l]) for k, y, n, l in rows})
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        """One transaction per batch: a run killed mid-way keeps every finished batch."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO answer_logits VALUES (?, ?, ?, ?)",
                [(k, float(v[0]), float(v[1]), float(v[2])) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answer_logits").fetchone()[0]

    def close(self) -> None:
        self._db.close()
