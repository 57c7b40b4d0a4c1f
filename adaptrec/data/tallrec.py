"""TALLRec's benchmark files (`{"instruction", "input", "output"}` JSON arrays) parsed into Cases.

The parser is exact: `render_input(parse_record(r)) == r["input"]` and
`instruction(case.noun) == r["instruction"]` for every record of the shipped files
(tested), so nothing is lost between the files and the prompts we render.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..errors import DataFormatError, DataSpecError
from ..home import data_root
from ..userfiles import LONE_SURROGATE, has_lone_surrogate, parse_json, read_user_text
from .prompts import ANSWERS, instruction
from .records import LIKED_FIRST, Case, HistoryItem

DOMAINS = ("movie", "book")
SPLITS = ("train", "valid", "test")

_INPUT = re.compile(
    r"User Preference: (?P<liked>[^\n]*)\n"
    r"User Unpreference: (?P<disliked>[^\n]*)\n"
    r"Whether the user will like the target (?P<noun>[^\n]+?) (?P<target>\"[^\n]*)\?",
)
_NOUN = re.compile(r"the target (.+?) by answering")
_LABELS = {text: label for label, text in ANSWERS.items()}


def tallrec_path(domain: str, split: str) -> Path:
    return data_root() / "tallrec" / domain / f"{split}.json"


def _is_item(text: str) -> bool:
    """A whole list item: `"Title"` (movies) or `"Title" written by Author` (books)."""
    return text.startswith('"') and (text.endswith('"') or '" written by ' in text)


def split_items(text: str) -> list[str]:
    """Split a `", "`-joined item list; titles may themselves contain `, ` and quotes.

    Items are cut at `, "` (the next item's opening quote); a piece that is not yet a whole
    item (see `_is_item`) is glued back to the next one.
    """
    if not text:
        return []
    pieces = text.split(', "')
    items = [pieces[0]]
    for piece in pieces[1:]:
        if _is_item(items[-1]):
            items.append('"' + piece)
        else:
            items[-1] += ', "' + piece
    bad = [item for item in items if not _is_item(item)]
    if bad:
        raise DataFormatError(f"cannot split item list at {bad[0][:60]!r}: items must start with a quote")
    return items


def parse_record(record: dict, *, domain: str, user_id: str) -> Case:
    """One TALLRec record as a Case.

    TALLRec writes all liked items, then all disliked ones, and does not record how the two
    lists interleaved in time; the history therefore holds the preferences then the
    unpreferences, each in file order (which `render_input` reproduces exactly).
    `target` is kept verbatim (book targets carry an extra pair of quotes).
    """
    if not isinstance(record, dict):
        raise DataFormatError(f"record {user_id}: expected an object with input, output and instruction, got "
                              f"{type(record).__name__}")
    try:
        text, answer, instr = record["input"], record["output"], record["instruction"]
    except KeyError as exc:
        raise DataFormatError(f"record {user_id}: missing key {exc}") from None
    for key, value in (("input", text), ("output", answer), ("instruction", instr)):
        if not isinstance(value, str):
            raise DataFormatError(f"record {user_id}: {key!r} is {type(value).__name__}, expected text")
        if has_lone_surrogate(value):
            raise DataFormatError(f"record {user_id}: {key!r} {LONE_SURROGATE}")
    m = _INPUT.fullmatch(text)
    if m is None:
        raise DataFormatError(f"record {user_id}: 'input' is not TALLRec's three-line form")
    noun = m["noun"]
    if instr != instruction(noun):
        raise DataFormatError(f"record {user_id}: 'instruction' does not match TALLRec's for {noun!r}")
    if answer not in _LABELS:
        raise DataFormatError(f"record {user_id}: 'output' is {answer!r}, expected 'Yes.' or 'No.'")
    history = [HistoryItem(text=t, liked=True, domain=domain) for t in split_items(m["liked"])]
    history += [HistoryItem(text=t, liked=False, domain=domain) for t in split_items(m["disliked"])]
    return Case(user_id=user_id, domain=domain, noun=noun, history=tuple(history),
                target=m["target"], label=_LABELS[answer], meta={LIKED_FIRST: True})


def read_tallrec_json(path: Path, *, domain: str | None = None, prefix: str | None = None) -> list[Case]:
    """Parse a TALLRec-style JSON file. The files carry no user ids: record i gets
    `user_id = f"{prefix}-{i}"` (a pseudo-user per record; default prefix: `{domain}-{file stem}`).
    `domain` defaults to the noun in the first record's instruction.
    """
    path = Path(path)
    records = parse_json(read_user_text(path, "TALLRec file", DataSpecError), str(path), DataFormatError)
    if not isinstance(records, list) or not records:
        raise DataFormatError(f"{path}: expected a non-empty JSON array of TALLRec records")
    if domain is None:
        m = _NOUN.search(str(records[0].get("instruction", ""))) if isinstance(records[0], dict) else None
        if m is None:
            raise DataFormatError(f"{path}: record 0: 'instruction' does not name the target item kind")
        domain = m[1]
    prefix = prefix or f"{domain}-{path.stem}"
    cases = []
    for i, record in enumerate(records):
        try:
            cases.append(parse_record(record, domain=domain, user_id=f"{prefix}-{i}"))
        except DataFormatError as exc:
            raise DataFormatError(f"{path}: {exc}") from None
    return cases


def load_tallrec(domain: str, split: str) -> list[Case]:
    """TALLRec's `movie` or `book` split from `data_root()/tallrec/`; user ids `{domain}-{split}-{i}`."""
    if domain not in DOMAINS or split not in SPLITS:
        raise DataSpecError(f"TALLRec has domains {DOMAINS} and splits {SPLITS}; got {domain!r}, {split!r}")
    path = tallrec_path(domain, split)
    if not path.is_file():
        hint = (" TALLRec's book train set is not shipped (see tallrec/PROVENANCE.md); "
                "use book:valid or book:test, or train on movie." if (domain, split) == ("book", "train")
                else " Set $ADAPTREC_DATA to the folder holding tallrec/.")
        raise DataSpecError(f"missing TALLRec file {path}.{hint}")
    return read_tallrec_json(path, domain=domain, prefix=f"{domain}-{split}")


def item_popularity(cases: Iterable[Case], targets: bool = True) -> dict[str, float]:
    """How often each item occurs (as history item or, with `targets`, as target), keyed like `Case.target`."""
    counts: Counter[str] = Counter()
    for case in cases:
        wrapped = case.target.startswith('""')
        if targets:
            counts[case.target] += 1
        counts.update(f'"{h.text}"' if wrapped else h.text for h in case.history)
    return {key: float(n) for key, n in counts.items()}
