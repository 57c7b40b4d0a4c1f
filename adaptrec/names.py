"""The names a user gives what the registry keeps: adapter and encoder names, and domains. The registry checks
them when it writes; a run checks its recipe's where it starts (`config.check_new_run`), so a name the registry
would refuse stops it before any data or model loads, not after its training. A list of adapters names each once
(`check_distinct`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import CompositionError, RegistryError

COLD_SUFFIX = ":cold"  # `registry promote NAME --domain office:cold` names the cold-start adapter of office
_NAME_RE = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}")
_NAME_HELP = "use 1-128 of letters, digits and . _ + - (not starting with '.', no '/' or '..'), e.g. 'movies-lora'"


def check_name(name: str, what: str = "adapter", error: type[Exception] = RegistryError) -> str:
    """Return `name` if it is a valid `what` ("adapter", "encoder") name, else raise `error`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise error(f"bad {what} name {name!r}: {_NAME_HELP}")
    return name


def check_domain(domain: str, error: type[Exception] = RegistryError) -> str:
    """`domain` if it is a short printable name, else raise `error`."""
    if not isinstance(domain, str) or not domain.strip() or len(domain) > 200 or not domain.isprintable():
        raise error(f"bad domain {domain!r}: give a short printable name such as 'movies'")
    return domain


def served_domain(alias: str) -> str:
    """The domain of the cases an alias serves: `office` for `office` and for its cold-start alias `office:cold`
    (a cold slice's cases keep their domain)."""
    return alias.removesuffix(COLD_SUFFIX)


def check_distinct(refs: Sequence[str], remedy: str = "compose distinct adapters, one weight each") -> None:
    """Refuse an adapter named twice (resolved refs): composed, its weights would add up (to nothing at w and -w),
    which no lineage says; `remedy`: what to do instead, where another command takes a list of adapters."""
    if twice := sorted({r for r in refs if list(refs).count(r) > 1}):
        raise CompositionError(f"{twice[0]} is named twice: {remedy}")
