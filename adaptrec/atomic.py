"""Atomic file and folder writes (write to a temporary sibling, fsync, then rename into place), locked work folders,
and the write-ahead-log mode of the SQLite stores."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process's umask: read from /proc where there is one, since setting it to read it races other threads."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old file or the new one, never half, and the new one
    survives a power loss once this returns. The file gets the replaced one's mode, or a new file's under the umask
    (not the temporary file's owner-only mode)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # owns the descriptor from here: closed on any error below
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def fsync_dir(path: Path) -> None:
    """fsync a folder's entry list, so a rename into it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder, deepest first."""
    folders = [folder]
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            folders.append(p)
    for d in reversed(folders):
        fsync_dir(d)


def temp_dir_in(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new temporary folder in `parent`, made first if missing, and again if another process removed it (empty)
    between the two steps."""
    tries = 3
    while True:
        Path(parent).mkdir(parents=True, exist_ok=True)
        try:
            return Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
        except FileNotFoundError:
            tries -= 1
            if not tries:
                raise


@contextmanager
def atomic_dir(final: Path, *, locked: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success fsync its contents and rename it to `final` (which must not exist
    yet), then fsync the parent: once this returns, the folder is complete on disk. It gets a new folder's mode
    under the umask, so a shared home or mirror stays readable to whom the umask lets read it. `locked`: the
    temporary folder is a `work_dir`, so `dead_work` tells a killed writer's from a live one's."""
    final = Path(final)
    with ExitStack() as stack:
        prefix = f".{final.name}."
        tmp = (stack.enter_context(work_dir(final.parent, prefix, keep_parent=True)) if locked else
               temp_dir_in(final.parent, prefix, ".tmp"))
        try:
            os.chmod(tmp, 0o777 & ~umask())
            yield tmp
            fsync_tree(tmp)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


LOCK_SUFFIX = ".lock"  # beside a `work_dir` folder: held by the process working in it


@contextmanager
def work_dir(parent: Path, prefix: str, keep_parent: bool = False) -> Iterator[Path]:
    """A new folder in `parent` for in-flight work, removed on exit (and `parent` with it when left empty, unless
    `keep_parent`), with `<folder>.lock` beside it held (`flock`) until then: the kernel releases a killed process's
    lock, so `abandoned` tells its folder from a live one's. The lock file is locked under a temporary name first and
    renamed into place, so it never appears unheld."""
    folder = temp_dir_in(parent, prefix)
    lock_path = folder.with_name(folder.name + LOCK_SUFFIX)
    fd, pending = tempfile.mkstemp(dir=parent, prefix=f".{folder.name}.", suffix=".lock.tmp")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(pending, lock_path)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for path in (pending, lock_path):
            with suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)
        if not keep_parent:
            with suppress(OSError):  # other work's folders are in it
                Path(parent).rmdir()


def abandoned(folder: Path) -> bool | None:
    """Whether `work_dir` `folder`'s process is gone: True (its lock is free), False (held), None (no lock file, or
    one this process may not open: a folder made otherwise, by a process that has yet to lock it or has just
    finished, or another user's)."""
    lock_path = folder.with_name(folder.name + LOCK_SUFFIX)
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except (FileNotFoundError, PermissionError):
        return None
    try:  # shared: a read-only descriptor may take it on NFS too (an exclusive one needs write access there)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:  # free: its owner died, or unlinked the file after this opened it (work done; the path names no file now)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        return True if same else None
    finally:
        os.close(fd)


def dead_work(parent: Path, *, named: Callable[[str], object] = bool, stale_s: float | None = None) -> list[Path]:
    """The work a killed process left in `parent` (among the entries whose name `named` accepts): `work_dir` folders
    whose lock is free (`abandoned`), lock files whose folder is gone and whose lock is free, and, given `stale_s`,
    folders without a lock file (made otherwise, or a file) untouched that many seconds. A live process's work is
    never listed."""
    try:
        entries = sorted(e for e in Path(parent).iterdir() if named(e.name))
    except FileNotFoundError:
        return []
    now = time.time()
    dead: list[Path] = []
    for entry in entries:
        with suppress(OSError):  # its own work just removed it
            if entry.name.endswith(LOCK_SUFFIX):  # a work folder's lock: it goes with its folder
                folder = entry.with_name(entry.name.removesuffix(LOCK_SUFFIX))
                if not folder.exists() and abandoned(folder):  # its process died once the folder had moved
                    dead.append(entry)
            else:
                gone = abandoned(entry)  # its lock free: the process is gone; no lock: told by the folder's age
                if gone or (gone is None and stale_s is not None and now - entry.lstat().st_mtime > stale_s):
                    dead.append(entry)
    return dead


def remove_work(path: Path) -> None:
    """Delete a folder (and the `work_dir` lock file beside it, if any) or a file."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        path = path.with_name(path.name + LOCK_SUFFIX)
    path.unlink(missing_ok=True)


def use_wal(db: sqlite3.Connection, timeout_s: float) -> None:
    """Put `db`'s file in write-ahead-log mode (a file already in it is left as is), retrying "database is locked" up
    to `timeout_s`: when several processes open a new file together SQLite can refuse the switch at once, without
    waiting out its busy timeout (it would deadlock), so all but one were refused within milliseconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
