"""What `$ADAPTREC_HOME` holds, and clearing its caches: the score cache, the encoder fits kept for reuse and the
catalogue title embeddings are rebuilt on demand, so clearing one costs only recomputation. Run folders
(checkpoints, learning curves), the request log and converted backbones hold what nothing recomputes: they are
listed, never cleared; the registry is neither (`registry list`, `registry remove`, `registry gc`). Own code:
huggingface_hub's cache commands know the Hub's download cache, not these stores."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import AdaptrecError, option
from .home import adaptrec_home

CACHES = ("scores", "encoders", "embeddings")
STORES = (*CACHES, "runs", "backbones", "requests")  # in the order `stores` lists them


@dataclass(frozen=True)
class Store:
    """One store under the home: what it is, where, how many entries and bytes."""

    name: str
    path: Path
    entries: int  # score rows, kept fits, embedding files, run folders, converted backbone versions, …
    bytes: int
    clearable: bool  # a cache (`clear` rebuilds nothing; its users recompute what they miss)
    unread: int = 0  # score rows of earlier key formats: never read again, cleared with `earlier_only`

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "entries": self.entries, "bytes": self.bytes,
                "clearable": self.clearable, "unread": self.unread}


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links not followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_symlink() or p.is_file()) if path.is_dir() else 0


def _entries(folder: Path) -> list[Path]:
    """A folder's finished entries: not the dot-named temporaries of a write in flight (`atomic`)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _with_wal(db: Path) -> list[Path]:
    """An SQLite file in WAL mode with the files beside it."""
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def _path(name: str) -> Path:
    """Where store `name` lives."""
    from .cf.cache import fits_folder
    from .data.online_log import default_log_path
    from .score_cache import FILE_NAME
    from .text_encoder import embeddings_folder

    home = adaptrec_home()
    return {"scores": home / FILE_NAME, "encoders": fits_folder(), "embeddings": embeddings_folder(),
            "runs": home / "runs", "backbones": home / "backbones", "requests": default_log_path()}[name]


def _store(name: str) -> Store:
    """Store `name` (one of `STORES`) as it is now; one not made yet has 0 entries."""
    path = _path(name)
    if name == "requests":
        return Store(name, path, int(path.is_file()), sum(map(_size, _with_wal(path))), False)
    if name == "scores":
        from .score_cache import ScoreCache

        rows = unread = 0
        if path.is_file():  # opening would create it
            cache = ScoreCache(path)
            try:
                rows, unread = len(cache), cache.earlier_rows()
            finally:
                cache.close()
        return Store(name, path, rows, sum(map(_size, _with_wal(path))), True, unread)
    entries = [p for p in _entries(path) if name != "runs" or p.is_dir()]
    return Store(name, path, len(entries), _size(path), name in CACHES)


def stores() -> list[Store]:
    """Every store of the home, caches first."""
    return [_store(name) for name in STORES]


def clear(name: str, earlier_only: bool = False) -> tuple[int, int]:
    """Clear cache `name` (one of `CACHES`); `earlier_only`: the score rows no version reads. Returns (entries
    removed, bytes freed)."""
    if name not in CACHES:
        why = dict.fromkeys(STORES[len(CACHES):], f"{name} holds what nothing recomputes; it is listed, not cleared")
        why["registry"] = "registered versions go with `registry remove`, unreferenced folders with `registry gc`"
        said = f" ({why[name]})" if name in why else ""
        raise AdaptrecError(f"cache {name!r}: expected one of {', '.join(CACHES)}{said}")
    if earlier_only and name != "scores":
        raise AdaptrecError(f"{option('earlier_only', True)}: only the score cache keeps rows of earlier formats")
    before = _store(name)
    if name == "scores":
        from .score_cache import ScoreCache

        if not before.path.is_file():
            return 0, 0
        cache = ScoreCache(before.path)
        try:
            removed = cache.clear(earlier_only)
        finally:
            cache.close()
    else:
        entries = _entries(before.path)
        for entry in entries:  # a reader that finds it gone computes it again (`cached_fit`, `catalogue_embeddings`)
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed = len(entries)
    after = _store(name)
    return removed, max(before.bytes - after.bytes, 0)
