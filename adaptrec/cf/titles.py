"""The item titles of an encoder source's catalogue: what a collaborative adapter's title part embeds. Apart from
`fit.py`, whose source is part of every kept fit's cache key (`cache.py`): titles do not change a fit."""

from __future__ import annotations

from adaptrec.errors import ConfigError

from .fit import SOURCES


def source_titles(source: str) -> dict[str, str]:
    """`item_id -> prompt text` (the quoted title) of every item of `source`'s catalogue."""
    from adaptrec.data import amazon, movielens

    if source == "amazon":
        return {i: t for domain in amazon.DOMAINS for i, t in amazon.amazon_items(domain).items()}
    if source not in SOURCES:
        raise ConfigError(f"unknown encoder data {source!r}; known: {', '.join(SOURCES)}")
    return movielens.item_texts()
