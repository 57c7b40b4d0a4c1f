"""What the repository's experiment and benchmark scripts share: argparse types that check counts, durations and
names before any work, and `run`, their entry point, whose errors are one line as the `adaptrec` command's are."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from .errors import one_line_errors


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
