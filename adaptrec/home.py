"""Where adaptrec keeps its state ($ADAPTREC_HOME) and where it finds the shared data sets."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def adaptrec_home() -> Path:
    """`$ADAPTREC_HOME`, default `~/.cache/adaptrec`; created on first use."""
    home = Path(os.environ.get("ADAPTREC_HOME") or Path.home() / ".cache" / "adaptrec").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # the file system's refusal, as the CLI shows it (exit 1)
        if os.environ.get("ADAPTREC_HOME"):
            raise NotADirectoryError(f"$ADAPTREC_HOME {home}: a file is in the way (the home is a folder); point "
                                     "it at a folder") from None
        raise NotADirectoryError(f"adaptrec's home {home}: a file is in the way (the home is a folder); move the "
                                 "file, or set $ADAPTREC_HOME to a folder") from None
    return home


def data_root() -> Path:
    """`$ADAPTREC_DATA`, else the `shared/data` folder beside the repository checkout."""
    env = os.environ.get("ADAPTREC_DATA")
    if env:
        return Path(env).expanduser()
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "data"
