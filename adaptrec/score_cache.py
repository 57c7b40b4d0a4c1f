"""A resumable SQLite cache of answer logits, so interrupted or split evaluations never recompute.

Keyed by sha256(model key, prompt): the model key (built by `scoring.core.Scorer`) holds everything that
changes a score — the backbone's exact fingerprint, config, kernels, device, dtype, tokenizer and library versions
(`backbone.base_score_key`), the adapter's weights and config (`adapters.attach.adapter_key`), the scoring
path (full prompts or shared prefix) and the scoring code's version — and the prompt text holds what the
data spec, template and truncation put in it. A row, once written, is never replaced. Rows of the earlier
format (table `answer_logits`, keyed by fingerprint + weights hash only) are left in the file and never read.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .atomic import use_wal
from .errors import AdaptrecError
from .home import adaptrec_home

FILE_NAME = "score_cache.db"
TIMEOUT_S = 60  # how long a statement waits for another process's lock
TABLE = "logits_v2"  # the key format of this module; earlier tables stay unread
EARLIER_TABLES = ("answer_logits",)  # the tables earlier key formats wrote, which no version reads


def _remedy(error: str) -> str:
    """What to do about a database error: deleting a file another process writes loses its rows and breaks it."""
    if "locked" in error:
        return f"another process held it over {TIMEOUT_S} s: retry once it is done"
    if "full" in error:
        return "free disk space under $ADAPTREC_HOME"
    return ("while no adaptrec process uses it, delete it with its -wal and -shm files (scores are recomputed), or "
            "check its permissions")


class ScoreCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._one_line():
            # a Ray actor runs its calls on another thread than its constructor; one call at a time (was: refused)
            self._db = sqlite3.connect(path, timeout=TIMEOUT_S, isolation_level=None, check_same_thread=False)
            use_wal(self._db, TIMEOUT_S)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, yes REAL, no REAL, lse REAL)")

    @contextmanager
    def _one_line(self) -> Iterator[None]:
        """A database error (a damaged page found only now, a lock held past the timeout) as one line naming the
        file."""
        try:
            yield
        except sqlite3.Error as e:
            raise AdaptrecError(f"cannot use the score cache {self.path} ({e}); {_remedy(str(e))}") from None

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
            with self._one_line():
                rows = self._db.execute(
                    f"SELECT key, yes, no, lse FROM {TABLE} WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
            found.update({k: v for k, *values in rows if None not in values
                          and np.all(np.isfinite(v := np.array(values, dtype=float)))})
        # a row without a finite number (SQLite stores NaN as NULL; older versions wrote NaN and inf) is recomputed
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        """One transaction per batch: a run killed mid-way keeps every finished batch. Existing rows win. Rows that
        are not finite are not kept: a broken run's NaN would answer every rerun."""
        with self._one_line(), self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR IGNORE INTO {TABLE} VALUES (?, ?, ?, ?)",
                [(k, float(v[0]), float(v[1]), float(v[2])) for k, v in items.items()
                 if np.all(np.isfinite(np.asarray(v, dtype=float)))],
            )

    def earlier_rows(self) -> int:
        """Rows of the tables earlier key formats wrote, which no version reads."""
        with self._one_line():
            return sum(self._db.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in self._earlier())

    def clear(self, earlier_only: bool = False) -> int:
        """Delete every row (`earlier_only`: the earlier formats' tables), give the space back to the file system
        (VACUUM), and return how many rows went. Another process's batch waits for it, or it for them, up to the
        lock timeout; a row deleted under a run that read it is recomputed at that run's next read."""
        with self._one_line():
            removed = self.earlier_rows()
            for name in self._earlier():
                self._db.execute(f'DROP TABLE "{name}"')
            if not earlier_only:
                removed += len(self)
                self._db.execute(f"DELETE FROM {TABLE}")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # in WAL mode the vacuumed pages land in -wal first
        return removed

    def _earlier(self) -> list[str]:
        """The tables of EARLIER_TABLES this file holds (was: every other table, a newer version's too)."""
        return [name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if name in EARLIER_TABLES]

    def __len__(self) -> int:
        with self._one_line():
            return self._db.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]

    def close(self) -> None:
        self._db.close()
