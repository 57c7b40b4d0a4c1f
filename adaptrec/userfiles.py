"""Reading a file a user named (recipe, history, interaction log, candidates): a regular file, UTF-8 text.

A directory, FIFO, device or socket would block or fail deep inside a parser; bytes that are not UTF-8
would raise a UnicodeDecodeError. Both become one-line errors of the caller's kind, naming the file.
"""

from __future__ import annotations

import stat
from pathlib import Path

from .errors import AdaptrecError


def read_user_text(path: Path | str, what: str, error: type[AdaptrecError] = AdaptrecError) -> str:
    """The UTF-8 text of the regular file `path` (`what` names it in errors: "recipe", "history file" …)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a pipe, device or socket)"
        raise error(f"{path}: the {what} is {kind}; give a regular file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: the {what} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
