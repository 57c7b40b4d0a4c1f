"""What the repository's experiment and benchmark scripts share: argparse types that check counts, durations and
names before any work; `run`, their entry point, whose errors are one line as the `adaptrec` command's are; and
what their result files record about the run (`machine`, `software`, `code_version`)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import one_line_errors

OPTIONAL = ("bitsandbytes", "torchao", "ray", "accelerate")  # recorded when installed: some runs use them
RESULT_PATHS = ("bench/results", "experiments/results", "docs")  # what a run writes: never makes its code "dirty"


def positive_int(text: str) -> int:
    """argparse type of a count: an integer >= 1 (0 or fewer would time nothing, fail deep inside the run, or mean
    "every case" to `select_cases`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected at least 1")
    return value


def positive_float(text: str) -> float:
    """argparse type of a duration: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{value}: expected a finite number above 0")
    return value


def int_list(minimum: int) -> Callable[[str], list[int]]:
    """argparse type of comma-separated integers of at least `minimum` (`64,128`)."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
        if too_small := [v for v in values if v < minimum]:
            raise argparse.ArgumentTypeError(f"{too_small[0]}: expected at least {minimum}")
        return values
    return parse


def names_from(choices: Iterable[str]) -> Callable[[str], list[str]]:
    """argparse type of comma-separated names, each one of `choices`."""
    known = list(choices)

    def parse(text: str) -> list[str]:
        if unknown := [name for name in text.split(",") if name not in known]:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown))}; expected some of "
                                             f"{', '.join(known)}")
        return text.split(",")
    return parse


def run(main: Callable[[], Any]) -> None:
    """Call a script's `main` with `one_line_errors`."""
    with one_line_errors():
        main()


# ---------------------------------------------------------------- what a result file records about its run
def cpu_model() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str | None = None) -> dict:
    """The hardware a run used: CPU model, architecture, cores, torch's threads, the GPU if any, and `device`, where
    its models ran (default: where a load goes when none is named)."""
    import torch

    from .backbone import default_device  # here: a script's --help and argument errors load no torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), "cpu": cpu_model(), "arch": platform.machine(),
            "device": device or default_device()}


def software() -> dict[str, str]:
    """The versions of the packages that can change a result: those that change a score, and the optional ones
    installed."""
    from .backbone import library_versions

    optional = {}
    for package in OPTIONAL:
        try:
            optional[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {**library_versions(), **optional}


def git(root: Path, *args: str) -> str | None:
    """What `git -C root ARGS` prints, stripped; None outside a git checkout, or when git fails or is missing."""
    if not (root / ".git").exists():  # a wheel under some other repository must not record that one's commit
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(root: Path) -> dict:
    """When, and on which commit of the checkout at `root` (the script's own: another clone or worktree may share the
    installed package) and whether it had uncommitted changes, a result was measured: what tells a number from before
    a change from one after it. Changes to results and docs (`RESULT_PATHS`) do not count: a run after another has
    that one's result file to commit, not different code. Outside a git checkout (an installed wheel) the commit is
    None."""
    commit = git(root, "rev-parse", "HEAD")
    status = git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                 *(f":(exclude){path}" for path in RESULT_PATHS))
    return {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": commit,
            "git_dirty": None if status is None else bool(status)}
