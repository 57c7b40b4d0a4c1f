"""Which adapters a command names: refs or domains (their promoted adapter), resolved on the registry alone, so a
wrong name is refused before peft and transformers are imported."""

from __future__ import annotations

from collections.abc import Iterable

from adaptrec.adapters.files import MIX_TYPE
from adaptrec.errors import AdaptrecError, CompositionError, RegistryError


class RouteError(AdaptrecError):
    """No adapter can serve the request (none promoted, or made for another base model)."""


def named_sources(items: str | Iterable[str]) -> tuple[str, ...]:
    """The adapter refs or domains `items` names (comma-separated, or a list); one line when it names none."""
    named = tuple(r.strip() for r in (items.split(",") if isinstance(items, str) else items) if r.strip())
    if not named:
        shown = repr(items) if isinstance(items, str) else ", ".join(map(repr, items)) or "nothing"
        raise CompositionError(f"{shown} names no adapter: give an adapter ref or a domain, or several "
                               "comma-separated, e.g. arts-lora,office-lora")
    return named


def resolve_sources(registry, items: str | Iterable[str]) -> tuple[str, ...]:
    """`"arts,office-lora:2"` -> refs: each item is an adapter ref, else a domain (its promoted adapter)."""
    refs = []
    for item in named_sources(items):
        try:
            refs.append(registry.resolve(item).ref)
        except RegistryError:
            promoted = registry.promoted(item)
            if promoted is None:
                raise CompositionError(f"{item!r} is neither a registered adapter nor a domain with a promoted adapter; "
                                       "see `adaptrec registry list`") from None
            refs.append(promoted.ref)
    return tuple(refs)


def one_source(registry, ref: str | None) -> str | None:
    """The one adapter `ref` names (NAME[:VERSION], or a domain: its promoted adapter); None for none. Several,
    comma-separated, are refused: a Recommender scores with one adapter (a mix is composed first)."""
    refs = list(resolve_sources(registry, ref)) if ref is not None else []  # "" is a mistake, not the backbone
    if len(refs) > 1:
        raise RouteError(f"{ref!r} names {len(refs)} adapters; a Recommender scores with one: merge them first "
                         "(adaptrec compose --method cat) and load the composition")
    if refs and registry.resolve(refs[0]).adapter_type == MIX_TYPE:
        raise RouteError(f"{refs[0]} is a score-level mix; a Recommender scores with one adapter: merge LoRA or "
                         "AdaLoRA sources (adaptrec compose --method cat) and load that, or score the mix with eval, "
                         "route or serve, which expand it")
    return refs[0] if refs else None
