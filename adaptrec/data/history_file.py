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

from pathlib import Path
from typing import Sequence, Union

from ..errors import DataFormatError
from ..userfiles import check_keys, parse_json, read_user_text
from .records import Case, HistoryItem, default_noun

HistoryEntry = Union[str, dict, HistoryItem]
_ITEM_KEYS = {"title", "liked", "domain", "item_id"}
_FILE_KEYS = {"user_id", "noun", "history"}


def parse_history(entries: Sequence[HistoryEntry], domain: str, where: str = "history") -> tuple[HistoryItem, ...]:
    """History items from titles (liked), `{"title", "liked", "domain", "item_id"}` objects or HistoryItems, oldest
    first."""
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise DataFormatError(f"{where}: expected a list of items, got {type(entries).__name__}")
    items = []
    for i, entry in enumerate(entries):
        if isinstance(entry, HistoryItem):
            items.append(entry)
            continue
        entry = {"title": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("title"), str):
            raise DataFormatError(f'{where}[{i}]: expected {{"title": str, "liked": bool}}')
        check_keys(entry, _ITEM_KEYS, f"{where}[{i}]", DataFormatError)  # a typo ("like": false) would leave the item liked
        liked = entry.get("liked", True)
        if not isinstance(liked, bool):
            raise DataFormatError(f"{where}[{i}].liked: expected true or false, got {liked!r}")
        item_domain = entry.get("domain", domain)
        if not isinstance(item_domain, str) or not item_domain:
            raise DataFormatError(f"{where}[{i}].domain: expected a domain name, got {item_domain!r}")
        item_id = entry.get("item_id")
        if item_id is not None and (not isinstance(item_id, str) or not item_id):
            raise DataFormatError(f"{where}[{i}].item_id: expected a catalogue id string, got {item_id!r}")
        items.append(HistoryItem(text=f'"{entry["title"]}"', liked=liked, item_id=item_id, domain=item_domain))
    return tuple(items)


def read_history_file(path: Path, item: str, domain: str, item_id: str | None = None) -> Case:
    """A one-target Case for `item` (catalogue id `item_id`, if given) from the history file at `path`."""
    obj = parse_json(read_user_text(path, "history file", DataFormatError), str(path), DataFormatError)
    if not isinstance(obj, dict) or not isinstance(obj.get("history"), list):
        raise DataFormatError(f'{path}: expected an object with a "history" list')
    check_keys(obj, _FILE_KEYS, str(path), DataFormatError)
    items = parse_history(obj["history"], domain, f"{path}: history")
    noun = obj.get("noun", default_noun(domain))
    if not isinstance(noun, str) or not noun.strip():
        raise DataFormatError(f"{path}: noun: expected the item kind as text (e.g. \"movie\"), got {noun!r}")
    return Case(user_id=str(obj.get("user_id", "anonymous")), domain=domain, noun=noun, history=items,
                target=f'"{item}"', target_id=item_id)
