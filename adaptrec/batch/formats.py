"""Prediction files, JSONL or Parquet (by the `.parquet` suffix), written chunk by chunk to a temporary sibling
and renamed into place when complete: a crash never leaves a half file under the final name. The sibling is locked
while a run writes it, so a second run with the same output is refused instead of mixing its rows in."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import fsync_dir, write_json
from ..errors import AdaptrecError, ConfigError, option

SCHEMA = pa.schema([("case", pa.int64()), ("user_id", pa.string()), ("domain", pa.string()), ("target", pa.string()),
                    ("label", pa.int64()), ("p_yes", pa.float64()), ("tallrec_score", pa.float64())])
FIELDS = tuple(SCHEMA.names)  # the keys of every prediction row, in file order


def meta_path(path: Path) -> Path:
    """Where a prediction file's provenance goes: `<file>.meta.json` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def is_parquet(path: Path) -> bool:
    return Path(path).suffix.lower() == ".parquet"


FORMATS = (".jsonl", ".ndjson", ".json", ".parquet")  # the rows as JSON lines, or Parquet


def check_format(path: Path, what: str) -> None:
    """A one-line error unless `path` names a format the rows are written in (was: `.csv` got JSON lines)."""
    if Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(f"{what}: predictions are written as JSON lines or Parquet; name the file .jsonl or "
                          ".parquet (or .ndjson, .json)")


def partial_path(path: Path) -> Path:
    """Where rows go until the file is complete (a rerun overwrites what a crashed run left there)."""
    return path.with_name(f".{path.name}.partial")


class PredictionWriter:
    """`with PredictionWriter(path) as w: w.write(rows)`: rows appended (and flushed) per call; on a clean exit
    the file is fsynced and renamed onto `path`, on an exception the partial file is removed. `meta`: what produced
    the rows (adapter, data, settings), written with the row count to `meta_path(path)` once the file is in place;
    an older run's is removed first, so it never describes the new rows."""

    def __init__(self, path: Path, meta: dict | None = None):
        self.path = Path(path)
        self.meta = meta
        self.n = 0
        self._tmp = partial_path(self.path)
        self._file = None
        self._parquet: pq.ParquetWriter | None = None

    def __enter__(self) -> PredictionWriter:
        if self.path.is_dir():  # refused now, not at the rename after every case is scored
            raise AdaptrecError(f"{self.path}: is a folder; {option('out')} names the prediction file to write")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = os.fdopen(os.open(self._tmp, os.O_WRONLY | os.O_CREAT, 0o644), "wb")  # no O_TRUNC before the lock
        try:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when a crashed writer's process ends
                current = os.stat(self._tmp).st_ino
            except (BlockingIOError, FileNotFoundError):
                current = None
            if current != os.fstat(self._file.fileno()).st_ino:  # locked, or renamed away by its writer meanwhile
                raise AdaptrecError(f"{self.path}: another run is writing this output now; give each run its own "
                                    f"output file ({option('out')})")
            self._file.truncate(0)  # what a crashed run left
            if is_parquet(self.path):
                self._parquet = pq.ParquetWriter(self._file, SCHEMA)
        except BaseException:
            self._file.close()
            raise
        return self

    def write(self, rows: Sequence[dict]) -> None:
        """Append rows (dicts with the `FIELDS` keys); Parquet: one row group per call."""
        if self._parquet is not None:
            self._parquet.write_table(pa.Table.from_pylist(list(rows), schema=SCHEMA))
        else:
            self._file.write("".join(json.dumps({k: r[k] for k in FIELDS}) + "\n" for r in rows).encode())
        self._file.flush()
        self.n += len(rows)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        renamed = False
        try:  # renamed or removed while still locked: no second run can take the file in between
            if self._parquet is not None:
                self._parquet.close()
            if kind is None:
                os.fsync(self._file.fileno())
                meta_path(self.path).unlink(missing_ok=True)
                os.replace(self._tmp, self.path)
                renamed = True
        finally:
            if not renamed:  # an error in the rows, or in closing and renaming them: no partial file is left
                self._tmp.unlink(missing_ok=True)
            self._file.close()
        if kind is None:
            fsync_dir(self.path.parent)
            if self.meta is not None:
                write_json(meta_path(self.path), {**self.meta, "rows": self.n})


def read_predictions(path: Path) -> list[dict]:
    """The rows of a prediction file (JSONL or Parquet), in file order."""
    path = Path(path)
    if is_parquet(path):
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
