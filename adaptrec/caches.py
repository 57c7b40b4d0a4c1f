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


def _score_files() -> list[Path]:
    from .score_cache import FILE_NAME

    base = adaptrec_home() / FILE_NAME
    return [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]


def _folders() -> dict[str, Path]:
    from .cf.cache import fits_folder
    from .text_encoder import embeddings_folder

    home = adaptrec_home()
    return {"encoders": fits_folder(), "embeddings": embeddings_folder(), "runs": home / "runs",
            "backbones": home / "backbones"}


def stores() -> list[Store]:
    """Every store of the home, caches first; a store not made yet has 0 entries."""
    from .data.online_log import default_log_path
    from .score_cache import ScoreCache

    files, rows, unread = _score_files(), 0, 0
    if files[0].is_file():  # opening would create it
        cache = ScoreCache(files[0])
        try:
            rows, unread = len(cache), cache.earlier_rows()
        finally:
            cache.close()
    folders = _folders()
    out = [Store("scores", files[0], rows, sum(_size(f) for f in files), True, unread)]
    out += [Store(name, folders[name], len(_entries(folders[name])), _size(folders[name]), True)
            for name in ("encoders", "embeddings")]
    runs = [p for p in _entries(folders["runs"]) if p.is_dir()]
    out.append(Store("runs", folders["runs"], len(runs), _size(folders["runs"]), False))
    out.append(Store("backbones", folders["backbones"], len(_entries(folders["backbones"])),
                     _size(folders["backbones"]), False))
    log = default_log_path()
    out.append(Store("requests", log, int(log.is_file()), sum(_size(log.with_name(log.name + s))
                                                               for s in ("", "-wal", "-shm")), False))
    return out


def clear(name: str, earlier_only: bool = False) -> tuple[int, int]:
    """Clear cache `name` (one of `CACHES`); `earlier_only`: the score rows no version reads. Returns (entries
    removed, bytes freed)."""
    if name not in CACHES:
        why = dict.fromkeys(("runs", "backbones", "requests"), f"{name} holds what nothing recomputes; it is listed, "
                            "not cleared")
        why["registry"] = "registered versions go with `registry remove`, unreferenced folders with `registry gc`"
        said = f" ({why[name]})" if name in why else ""
        raise AdaptrecError(f"cache {name!r}: expected one of {', '.join(CACHES)}{said}")
    if earlier_only and name != "scores":
        raise AdaptrecError(f"{option('earlier_only', True)}: only the score cache keeps rows of earlier formats")
    before = {s.name: s for s in stores()}[name]
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
    after = {s.name: s for s in stores()}[name]
    return removed, max(before.bytes - after.bytes, 0)
