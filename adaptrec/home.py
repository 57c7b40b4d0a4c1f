"""Where adaptrec keeps its state ($ADAPTREC_HOME) and where it finds the shared data sets."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout's root, or site-packages when installed


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
    """`$ADAPTREC_DATA`; else, in a repository checkout, the `shared/data` folder beside it; else (an installed
    wheel) `$ADAPTREC_HOME/data`. Never a folder found from the working directory."""
    env = os.environ.get("ADAPTREC_DATA")
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "adaptrec").is_dir():
        return REPO_ROOT.parent / "shared" / "data"
    return adaptrec_home() / "data"
