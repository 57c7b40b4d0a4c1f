"""The generic interaction-log format (JSONL or Parquet) and its item catalogue, turned into Cases TALLRec-style.

Log row: `{"user_id": str, "item_id": str, "domain": str}` plus optionally `label` (0/1) or
`rating` (number), and `position` (int) or `timestamp` (number). Catalogue row:
`{"item_id": str, "title": str}` plus optionally `domain`. A Parquet file has these as columns (a null cell
is a missing key). See docs/data.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..errors import DataFormatError, DataSpecError
from ..userfiles import check_keys, finite_number, has_lone_surrogate, parse_json, read_user_text
from .leave_one_out import Event
from .records import Case, HistoryItem

_ROW_KEYS = {"user_id", "item_id", "domain", "label", "rating", "position", "timestamp"}
_ITEM_KEYS = {"item_id", "title", "domain"}


@dataclass(frozen=True)
class LogRow:
    user_id: str
    item_id: str
    domain: str
    label: int | None = None
    rating: float | None = None
    position: int | None = None
    timestamp: float | None = None
    where: str = field(default="", compare=False)  # "file:line", for error messages

    @property
    def order(self) -> float | None:
        return self.position if self.position is not None else self.timestamp


@dataclass(frozen=True)
class CatalogueItem:
    title: str
    domain: str | None = None

    @property
    def text(self) -> str:
        """The item as prompts list it: its title in double quotes."""
        return f'"{self.title}"'


def read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield `("file:line", object)` for each non-blank line; bad JSON raises a one-line error."""
    path = Path(path)
    # "\n" only: str.splitlines also breaks at U+2028, U+2029 and U+0085, which JSON strings may hold raw
    lines = read_user_text(path, "file", DataSpecError).split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        obj = parse_json(line, where, DataFormatError)
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where}: expected a JSON object")
        yield where, obj


def read_parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield `("file:row N", object)` for each row of a Parquet file (read with pyarrow), null cells left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataSpecError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    n = 0
    for batch in table.to_batches():
        for obj in batch.to_pylist():
            n += 1
            yield f"{path}:row {n}", {k: v for k, v in obj.items() if v is not None}


def read_records(path: Path) -> Iterator[tuple[str, dict]]:
    """`read_parquet_rows` for a `.parquet` file, else `read_jsonl`."""
    return read_parquet_rows(path) if Path(path).suffix == ".parquet" else read_jsonl(path)


def is_id(value: Any) -> bool:
    """A non-empty string or an integer (ids are kept as strings)."""
    return (isinstance(value, str) and value != "") or (isinstance(value, int) and not isinstance(value, bool))


def get_field(obj: Mapping[str, Any], key: str, kind: str, where: str, required: bool = True) -> Any:
    """`obj[key]` checked against `kind` ("id", "str", "title", "int", "number", "label", "id_list"); ids as
    strings; a title is one line of text a tokenizer and the score cache take (no lone UTF-16 surrogate)."""
    if key not in obj:
        if required:
            raise DataFormatError(f"{where}: missing key {key!r}")
        return None
    value = obj[key]
    ok = {
        "id": lambda v: is_id(v) and not (isinstance(v, str) and has_lone_surrogate(v)),
        "str": lambda v: isinstance(v, str) and v != "" and not has_lone_surrogate(v),
        "title": lambda v: (isinstance(v, str) and v.strip() != "" and "\n" not in v and "\r" not in v
                            and not has_lone_surrogate(v)),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": finite_number,
        "label": lambda v: v in (0, 1) and not isinstance(v, bool),
        "id_list": lambda v: isinstance(v, list) and all(is_id(x) for x in v),
    }[kind](value)
    if not ok:
        want = {"id": "a non-empty string (without a lone UTF-16 surrogate) or an integer",
                "str": "a non-empty string without a lone UTF-16 surrogate",
                "title": "one non-blank line of text, without a lone UTF-16 surrogate", "int": "an integer",
                "number": "a finite number", "label": "0 or 1",
                "id_list": "a list of ids (non-empty strings or integers)"}[kind]
        raise DataFormatError(f"{where}: key {key!r} must be {want}, got {value!r}")
    if kind == "label":
        return int(value)  # a JSON 1.0 or a float Parquet column: the label 1
    return str(value) if kind == "id" else [str(x) for x in value] if kind == "id_list" else value


def read_log(path: Path) -> list[LogRow]:
    """Validated log rows in file order. Within one file every row uses the same feedback key
    (`label`, `rating` or none) and the same order key (`position`, `timestamp` or none); with an order key, one
    (user, item, position or timestamp) is one interaction: a repeat is refused."""
    rows: list[LogRow] = []
    kinds: tuple[str | None, str | None] | None = None
    first: dict[tuple, str] = {}  # (user, item, position or timestamp) -> the row that logged it
    for where, obj in read_records(path):
        check_keys(obj, _ROW_KEYS, where, DataFormatError)
        for a, b in (("label", "rating"), ("position", "timestamp")):
            if a in obj and b in obj:
                raise DataFormatError(f"{where}: key {b!r}: give {a!r} or {b!r}, not both")
        row = LogRow(
            user_id=get_field(obj, "user_id", "id", where), item_id=get_field(obj, "item_id", "id", where),
            domain=get_field(obj, "domain", "str", where),
            label=get_field(obj, "label", "label", where, required=False),
            rating=get_field(obj, "rating", "number", where, required=False),
            position=get_field(obj, "position", "int", where, required=False),
            timestamp=get_field(obj, "timestamp", "number", where, required=False), where=where,
        )
        row_kinds = (next((k for k in ("label", "rating") if k in obj), None),
                     next((k for k in ("position", "timestamp") if k in obj), None))
        kinds = kinds or row_kinds
        if row_kinds != kinds:
            key = next(k for k, a, b in zip(("feedback", "order"), row_kinds, kinds) if a != b)
            raise DataFormatError(f"{where}: {key} key is {row_kinds} but earlier rows use {kinds}; be consistent")
        if kinds[1] is not None:  # an event repeated (a concatenation, a retried export) would put a held-out
            event = (row.user_id, row.item_id, obj[kinds[1]])  # target into its own history
            if event in first:
                raise DataFormatError(f"{where}: the same interaction as {first[event]} (user {row.user_id!r}, item "
                                      f"{row.item_id!r}, {kinds[1]} {obj[kinds[1]]!r}); drop the repeat")
            first[event] = where
        rows.append(row)
    if not rows:
        raise DataFormatError(f"{path}: no rows")
    return rows


def read_catalogue(path: Path) -> dict[str, CatalogueItem]:
    """`item_id -> CatalogueItem` from a catalogue (JSONL or Parquet); duplicate ids are an error."""
    items: dict[str, CatalogueItem] = {}
    for where, obj in read_records(path):
        check_keys(obj, _ITEM_KEYS, where, DataFormatError)
        item_id = get_field(obj, "item_id", "id", where)
        if item_id in items:
            raise DataFormatError(f"{where}: key 'item_id': {item_id!r} appears twice")
        items[item_id] = CatalogueItem(get_field(obj, "title", "title", where),
                                       get_field(obj, "domain", "str", where, required=False))
    return items


def _liked(row: LogRow, like_threshold: float) -> int:
    if row.label is not None:
        return row.label
    if row.rating is not None:
        return int(row.rating > like_threshold)
    return 1  # implicit feedback: every interaction is a positive


def cases_from_log(rows: Iterable[LogRow], catalogue: Mapping[str, CatalogueItem],
                   history_len: int = 10, like_threshold: float = 3) -> list[Case]:
    """TALLRec-style sliding windows: for each user (in order of first appearance), rows stably
    sorted by position/timestamp (else file order), one case per position i >= `history_len`
    with the previous `history_len` rows as history. Liked = `label == 1`, else
    `rating > like_threshold`, else (implicit log) always. The target's domain is the case's
    domain and also its noun in the question, so name domains as singular nouns ("movie")."""
    cases = []
    for user, events in _per_user(rows, catalogue).items():
        for i in range(history_len, len(events)):
            history = tuple(HistoryItem(text=catalogue[r.item_id].text, liked=bool(_liked(r, like_threshold)),
                                        item_id=r.item_id, domain=r.domain) for r in events[i - history_len:i])
            target = events[i]
            cases.append(Case(user_id=user, domain=target.domain, noun=target.domain, history=history,
                              target=catalogue[target.item_id].text, label=_liked(target, like_threshold),
                              target_id=target.item_id, meta={"activity": i}))
    return cases


def log_timelines(rows: Iterable[LogRow], catalogue: Mapping[str, CatalogueItem],
                  like_threshold: float = 3) -> dict[str, tuple[Event, ...]]:
    """Each user's interactions in order as leave-one-out events (`data.leave_one_out`; liked as in
    `cases_from_log`, each event keeping its row's domain)."""
    return {user: tuple(Event(r.item_id, bool(_liked(r, like_threshold)), r.domain) for r in events)
            for user, events in _per_user(rows, catalogue).items()}


def _per_user(rows: Iterable[LogRow], catalogue: Mapping[str, CatalogueItem]) -> dict[str, list[LogRow]]:
    """Rows per user (in order of first appearance), stably sorted by position/timestamp when the log has them."""
    per_user: dict[str, list[LogRow]] = {}
    for row in rows:
        if row.item_id not in catalogue:
            raise DataFormatError(f"{row.where}: key 'item_id': {row.item_id!r} is not in the catalogue")
        listed = catalogue[row.item_id].domain
        if listed not in (None, row.domain):  # the row's domain catalogue would not hold the item
            raise DataFormatError(f"{row.where}: key 'domain': {row.domain!r}, but the catalogue lists item "
                                  f"{row.item_id!r} in domain {listed!r}")
        per_user.setdefault(row.user_id, []).append(row)
    return {user: sorted(events, key=lambda r: r.order) if events[0].order is not None else events
            for user, events in per_user.items()}


def text_counts(counts: Mapping[str, int], text: Callable[[str], str]) -> dict[str, float]:
    """Per-item-id `counts` summed per prompt text `text(item_id)`: popularity keyed like `Case.target`."""
    out: Counter[str] = Counter()
    for item, n in counts.items():
        out[text(item)] += n
    return {key: float(n) for key, n in out.items()}


def log_item_counts(rows: Iterable[LogRow], catalogue: Mapping[str, CatalogueItem]) -> Counter[str]:
    """Interaction counts per catalogued item id."""
    return Counter(r.item_id for r in rows if r.item_id in catalogue)

