"""The history JSON that `adaptrec predict --history` reads.

    {"user_id": "u1",                      # optional
     "noun": "movie",                      # optional; default: the domain's (`records.default_noun`)
     "history": [{"title": "Heat (1995)", "liked": true}, {"title": "Jumanji (1995)", "liked": false}]}

Items are oldest first; `liked` defaults to true (implicit feedback); an item may name its `"domain"`
(default: the target's), which cross-domain routing uses, and its catalogue `"item_id"`, which a
collaborative adapter embeds (an id its encoder does not know leaves the item to its title). Any other key is
refused, at the top or in an item: a typo such as `"like": false` would leave the item liked.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, MappingView, Set
from pathlib import Path
from typing import Union

from ..errors import DataFormatError
from ..userfiles import LONE_SURROGATE, check_keys, has_lone_surrogate, parse_json, read_user_text
from .records import ANONYMOUS, Case, HistoryItem, default_noun

HistoryEntry = Union[str, dict, HistoryItem]
Item = Union[str, dict]  # an item to score: a title, or {"title": ..., "item_id": ...}
_ITEM_KEYS = {"title", "liked", "domain", "item_id"}
_TARGET_KEYS = {"title", "item_id"}
_FILE_KEYS = {"user_id", "noun", "history"}


def checked_text(value, where: str, what: str) -> str:
    """`value` if it is non-blank text a tokenizer and the score cache can take (no lone UTF-16 surrogate)."""
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: expected {what}, got {value!r}")
    if has_lone_surrogate(value):
        raise DataFormatError(f"{where}: {value!r} {LONE_SURROGATE}")
    return value


def _check_listed(items, where: str) -> None:
    """One line unless `items` is an ordered collection of items: not a lone string (its letters), a single object,
    or a set or mapping view (an order of their own, where a history's order says which items are oldest)."""
    if isinstance(items, (str, bytes, Mapping, Set, MappingView)) or not isinstance(items, Iterable):
        raise DataFormatError(f"{where}: expected a list of items, got {type(items).__name__}")


def parse_history(entries: Iterable[HistoryEntry], domain: str, where: str = "history") -> tuple[HistoryItem, ...]:
    """History items from titles (liked), `{"title", "liked", "domain", "item_id"}` objects or HistoryItems, oldest
    first: a list, tuple, array or generator of them (`_check_listed`), as `parse_items` takes items."""
    _check_listed(entries, where)
    items = []
    for i, entry in enumerate(entries):
        if isinstance(entry, HistoryItem):
            items.append(entry)
            continue
        entry = {"title": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            raise DataFormatError(f'{where}[{i}]: expected {{"title": str, "liked": bool}}')
        check_keys(entry, _ITEM_KEYS, f"{where}[{i}]", DataFormatError)  # "like": false would leave the item liked
        title = checked_text(entry.get("title"), f"{where}[{i}].title", "the item's title")
        liked = entry.get("liked", True)
        if not isinstance(liked, bool):
            raise DataFormatError(f"{where}[{i}].liked: expected true or false, got {liked!r}")
        item_domain = checked_text(entry.get("domain", domain), f"{where}[{i}].domain", "a domain name")
        item_id = entry.get("item_id")
        if item_id is not None:
            item_id = id_text(item_id, f"{where}[{i}].item_id", "a catalogue id (text or an integer)")
        items.append(HistoryItem(text=f'"{title}"', liked=liked, item_id=item_id, domain=item_domain))
    return tuple(items)


def parse_items(items: Iterable[Item], where: str = "items") -> list[tuple[str, str | None]]:
    """(title, item id or None) of each item to score: a title, or `{"title", "item_id"}`, in a list, tuple, array
    or generator (`_check_listed`)."""
    _check_listed(items, where)
    out = []
    for i, item in enumerate(items):
        item = {"title": item} if isinstance(item, str) else item
        if not isinstance(item, dict):
            raise DataFormatError(f'{where}[{i}]: expected a title or {{"title": str, "item_id": str}}, got {item!r}')
        check_keys(item, _TARGET_KEYS, f"{where}[{i}]", DataFormatError)  # "id" for "item_id" would drop the id
        title = checked_text(item.get("title"), f"{where}[{i}].title", "the item's title")
        item_id = item.get("item_id")
        out.append((title, None if item_id is None else
                    id_text(item_id, f"{where}[{i}].item_id", "a catalogue id (text or an integer)")))
    return out


def id_as_text(value):
    """An id given as an integer (`6`, as catalogues number their items; numpy's integers too) as its digits; any
    other value as it is (for the caller's check)."""
    return str(int(value)) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def id_text(value, where: str, what: str) -> str:
    """An item id as text: an integer read as its digits, as history files read it; empty text refused."""
    return checked_text(id_as_text(value), where, what)


def read_history_file(path: Path, item: str, domain: str, item_id: str | None = None) -> Case:
    """A one-target Case for `item` (catalogue id `item_id`, if given) from the history file at `path`."""
    obj = parse_json(read_user_text(path, "history file", DataFormatError), str(path), DataFormatError)
    if not isinstance(obj, dict) or not isinstance(obj.get("history"), list):
        raise DataFormatError(f'{path}: expected an object with a "history" list')
    check_keys(obj, _FILE_KEYS, str(path), DataFormatError)
    items = parse_history(obj["history"], domain, f"{path}: history")
    noun = checked_text(obj.get("noun", default_noun(domain)), f"{path}: noun", 'the item kind as text (e.g. "movie")')
    user = id_text(obj.get("user_id", ANONYMOUS), f"{path}: user_id", "a user id (text or an integer)")
    return Case(user_id=user, domain=domain, noun=noun, history=items, target=f'"{item}"', target_id=item_id)
