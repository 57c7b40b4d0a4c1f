"""Reading the result files the figures draw: JSON and JSONL documents, with every defect as one-line error."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..data.interaction_log import read_jsonl
from ..errors import AdaptrecError
from ..userfiles import parse_json, read_user_text


class ResultFileError(AdaptrecError):
    """A result file to plot is missing, unreadable, or lacks what its figure needs."""


def load_json(path: Path, what: str) -> Any:
    """The JSON document in `path` (`what` names the file in errors); read its fields under `fields_of`."""
    return parse_json(read_user_text(path, what, ResultFileError), f"{path}: the {what}", ResultFileError)


def load_jsonl(path: Path, what: str) -> list[dict]:
    """The JSON objects of `path`, one a line (blank lines skipped); an empty file is an error."""
    rows = [obj for _, obj in read_jsonl(path)]
    if not rows:
        raise ResultFileError(f"{path}: the {what} has no rows yet")
    return rows


@contextmanager
def fields_of(path: Path | str, what: str) -> Iterator[None]:
    """Turn a missing key or a value of the wrong type, met while reading `path`'s data (or the data of the files
    `path` names), into one ResultFileError."""
    where = f"{path}: the {what}"
    try:
        yield
    except KeyError as e:
        raise ResultFileError(f"{where} lacks the field {e.args[0]!r}") from None
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise ResultFileError(f"{where} has a field of the wrong type or shape ({e})") from None


def metric_value(m: dict) -> dict[str, float]:
    """A stored metric (`value`, `ci_low`, `ci_high`, …) as floats; a CI not computed (one user) is NaN, which draws
    no bar and lies apart from nothing (as its value alone it read as a certain one)."""
    bounds = {k: math.nan if m.get(k) is None else float(m[k]) for k in ("ci_low", "ci_high")}
    return {"value": float(m["value"]), **bounds}
