"""What a user hands adaptrec: a file they named (recipe, history, interaction log, candidates: a regular file,
UTF-8 text, JSON), and the settings base of recipe sections and adapter types (`UserSettings`).

A directory, FIFO, device or socket would block or fail deep inside a parser; bytes that are not UTF-8
would raise a UnicodeDecodeError; JSON that `json` cannot take raises a ValueError or RecursionError. Each
becomes one-line errors of the caller's kind, naming the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

from .errors import AdaptrecError


def read_user_text(path: Path | str, what: str, error: type[AdaptrecError] = AdaptrecError) -> str:
    """The UTF-8 text of the regular file `path` (`what` names it in errors: "recipe", "history file" …), without
    the byte-order mark some editors write first."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None
    except ValueError:  # os.stat's refusal of an embedded NUL byte, or of text it cannot encode; repr shows either
        why = "a path cannot hold a NUL byte" if "\0" in str(path) else "not a path the file system can take"
        raise error(f"{str(path)!r}: no such {what} ({why})") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a pipe, device or socket)"
        raise error(f"{path}: the {what} is {kind}; give a regular file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{path}: the {what} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})") from None


def finite_number(x: Any) -> bool:
    """A real number (not a bool) that is finite as a float: a 400-digit int overflows one."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _takes_number_not_bool(annotation: Any) -> bool:
    """Whether a field typed `annotation` takes an int or float (alone or in a union) and no bool."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    options = [typing.get_args(o)[0] if typing.get_origin(o) is typing.Annotated else o for o in options]
    return bool not in options and any(o in (int, float) for o in options)


def _bool_for_a_number(value: Any, annotation: Any) -> bool:
    """Whether `value` puts a bool where `annotation` takes a number: itself, or a value of a dict or an item of a
    list of numbers (`method.weights: {movie: yes}`)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(_bool_for_a_number(v, args[1]) for v in value.values())
    if origin is list and isinstance(value, list) and args:
        return any(_bool_for_a_number(v, args[0]) for v in value)
    return isinstance(value, bool) and _takes_number_not_bool(annotation)


NEW_SETTINGS = "new"  # validation context key: settings a user writes now, not a stored text read back
MAX_SEED = 2**32 - 1  # the largest seed every generator takes (numpy's RandomState, which `implicit` seeds, the least)


class UserSettings(BaseModel):
    """Settings a user writes (recipe sections, adapter settings): unknown keys and inf/nan are errors; so is a
    boolean where a number goes, in new settings (validated with context `{NEW_SETTINGS: True}`): pydantic's lax
    mode reads `lr: yes` as 1.0 and `seed: no` as 0. Stored texts that relied on that still read."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and (info.context or {}).get(NEW_SETTINGS):
            keys = [k for k, field in cls.model_fields.items() if _bool_for_a_number(data.get(k), field.annotation)]
            if keys:
                raise ValueError(f"{', '.join(keys)}: {'numbers' if len(keys) > 1 else 'a number'} expected, not "
                                 "true/false (YAML reads yes/no and on/off as booleans too)")
        return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is past the float range")
    return value


def parse_json(text: str, where: str, error: type[AdaptrecError] = AdaptrecError) -> Any:
    """`json.loads(text)`; invalid JSON, NaN or Infinity (written so, or a number past the float range such as 1e999),
    a number past Python's digit limit and nesting past the recursion limit are each one `error` line naming
    `where`."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise error(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # json.JSONDecodeError is one
        reason = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e).splitlines()[0][:120]
        raise error(f"{where}: not valid JSON ({reason})") from None


def check_keys(obj: dict, allowed: set[str], where: str, error: type[AdaptrecError] = AdaptrecError) -> None:
    """One `error` line naming the first key of `obj` outside `allowed`: in a user's file, usually a typo."""
    unknown = sorted(set(obj) - allowed, key=str)
    if unknown:
        raise error(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


LONE_SURROGATE = "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate (JSON's "\\ud800"), which no tokenizer or database takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_output_file(path: Path | str, named: str, error: type[AdaptrecError] = AdaptrecError,
                      inputs: Iterable[Path | str | None] = ()) -> None:
    """One `error` line starting with `named` (how the caller gave `path`, e.g. `--out p.json`), before any work,
    unless `path` can be written as a file: not a folder, none of the run's `inputs` (it would replace the data it
    was made from), and no part of the way to it an existing file (its missing folders are made when it is
    written)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{named}: a folder; name the file to write")
    if path.exists():
        same = next((s for s in inputs if s is not None and Path(s).exists() and os.path.samefile(path, s)), None)
        if same is not None:
            raise error(f"{named}: the input {same} itself; write the output to another file")
    _check_way(path, named, error)


def check_output_folder(path: Path | str, named: str, error: type[AdaptrecError] = AdaptrecError) -> None:
    """`check_output_file` for a folder a run writes into (made if missing): not a file, no file on the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{named}: is a file; name a folder (made if missing)")
    _check_way(path, named, error)


def _check_way(path: Path, named: str, error: type[AdaptrecError]) -> None:
    """`error` when a folder on the way to `path` exists as a file (no folder can be made there)."""
    blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise error(f"{named}: {blocked} is a file, so no folder can be made there")
