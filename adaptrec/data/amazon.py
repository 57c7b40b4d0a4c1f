"""Amazon Arts <-> Office (URLLM's cross-domain split) as positive Cases.

Upstream case rule: every `targets.jsonl` row of the split whose domain is the target domain
is one case (so the 415 users whose two targets are both Arts give two Arts cases and no
Office case). History: all the user's items in both domains except the two held-out targets
(exactly the items before the shared last position P), ordered by `positions`. That
cross-domain order is a synthetic merge (mostly Arts/Office round-robin), not time: within a
domain it is upstream's order. All feedback is implicit, so every case is a positive; sample
negatives with `candidates.py`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import DataFormatError, DataSpecError
from ..fingerprint import stat_identity
from ..home import data_root
from ..userfiles import check_keys, parse_json, read_user_text
from .interaction_log import get_field, is_id, read_catalogue, read_jsonl, text_counts
from .records import HIDDEN_HISTORY, NOUNS, Case, HistoryItem

DOMAINS = ("arts", "office")
SPLITS = ("train", "valid", "test")
HISTORY_DOMAINS = ("both", "target", "other")
FILES = ("items_arts.jsonl", "items_office.jsonl", "interactions.jsonl", "targets.jsonl", "splits.json")
_INTERACTION_KEYS = {"user_id", "domain", "items", "positions"}
_TARGET_KEYS = {"user_id", "split", "case", "domain", "item_id"}


@dataclass(frozen=True)
class _Raw:
    items: dict[str, dict[str, str]]  # domain -> item_id -> title, in file (id) order
    events: dict[str, list[tuple[int, str, str]]]  # user_id -> [(position, domain, item_id)], by position
    targets: list[dict]
    splits: dict[str, frozenset[str]]


def amazon_dir() -> Path:
    folder = data_root() / "amazon_arts_office"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise DataSpecError(f"missing Amazon Arts-Office file {folder / missing[0]}; "
                            "set $ADAPTREC_DATA to the folder holding amazon_arts_office/")
    return folder


def _load(folder: Path) -> _Raw:
    """The folder's files parsed, read again once any of them changes (the `stat_identity` the data fingerprint's
    hashes are remembered by), so cases never lag behind the fingerprint."""
    return _parse(folder, tuple(stat_identity(folder / name) for name in FILES))


@lru_cache(maxsize=2)
def _parse(folder: Path, identities: tuple[tuple[int, ...], ...]) -> _Raw:
    """`_load`'s work, remembered per folder and file identities. A repeated item id, target (user and case) or
    interaction (user, position and item) is refused: each would count twice or leave one of its copies unread."""
    items = {domain: {item: it.title for item, it in read_catalogue(folder / f"items_{domain}.jsonl").items()}
             for domain in DOMAINS}
    events: dict[str, list[tuple[int, str, str]]] = {}
    first: dict[tuple[str, int, str], str] = {}  # (user, position, item) -> the line that logged it
    for where, obj in read_jsonl(folder / "interactions.jsonl"):
        check_keys(obj, _INTERACTION_KEYS, where, DataFormatError)
        user, bought = get_field(obj, "user_id", "id", where), get_field(obj, "items", "id_list", where)
        positions = obj.get("positions")
        if not isinstance(positions, list) or len(positions) != len(bought) or \
                not all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
            raise DataFormatError(f"{where}: key 'positions' must be a list of integers as long as 'items'")
        domain = _known(items, obj, where, bought)
        for p, item in zip(positions, bought):  # one item bought again later is two interactions, not a repeat
            if (user, p, item) in first:
                raise DataFormatError(f"{where}: the same interaction as {first[user, p, item]} (user {user!r}, "
                                      f"item {item!r}, position {p}); drop the repeat")
            first[user, p, item] = where
        events.setdefault(user, []).extend((p, domain, item) for p, item in zip(positions, bought))
    for seq in events.values():
        seq.sort()
    targets = []
    seen: dict[tuple[str, int], str] = {}  # (user, case) -> the line that set it
    for where, obj in read_jsonl(folder / "targets.jsonl"):
        check_keys(obj, _TARGET_KEYS, where, DataFormatError)
        user, item, case = (get_field(obj, "user_id", "id", where), get_field(obj, "item_id", "id", where),
                            get_field(obj, "case", "int", where))
        if (user, case) in seen:
            raise DataFormatError(f"{where}: a second target for user {user!r}, case {case} (first at "
                                  f"{seen[user, case]}); drop the repeat")
        seen[user, case] = where
        targets.append({"user_id": user, "item_id": item, "split": _one_of(obj, "split", SPLITS, where),
                        "domain": _known(items, obj, where, [item]), "case": case})
    splits = _read_splits(folder / "splits.json")
    _check_splits(splits, targets, events, folder)
    return _Raw(items, events, targets, splits)


def _one_of(obj: dict, key: str, choices: tuple[str, ...], where: str) -> str:
    value = get_field(obj, key, "str", where)
    if value not in choices:
        raise DataFormatError(f"{where}: key {key!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _known(items: dict[str, dict[str, str]], obj: dict, where: str, ids: list[str]) -> str:
    """The row's domain, once every one of `ids` is in that domain's catalogue."""
    domain = _one_of(obj, "domain", DOMAINS, where)
    unknown = next((i for i in ids if i not in items[domain]), None)
    if unknown is not None:
        raise DataFormatError(f"{where}: item {unknown!r} is not in items_{domain}.jsonl")
    return domain


def _read_splits(path: Path) -> dict[str, frozenset[str]]:
    """splits.json: {split: [user id, ...]}."""
    splits = parse_json(read_user_text(path, "file", DataSpecError), str(path), DataFormatError)
    users = list(splits.values()) if isinstance(splits, dict) else None
    if users is None or not all(isinstance(u, list) and all(is_id(i) for i in u) for u in users):
        raise DataFormatError(f"{path}: expected {{split: [user id, ...]}}")
    return {name: frozenset(str(u) for u in users) for name, users in splits.items()}


def _check_splits(splits: dict[str, frozenset[str]], targets: list[dict], events: dict, folder: Path) -> None:
    """The split lists and the targets agree: encoders learn from the train users, cases come from the targets, so a
    test user listed under train would put test targets into encoder training."""
    where = folder / "splits.json"
    owner: dict[str, str] = {}
    for name in SPLITS:
        if name not in splits:
            raise DataFormatError(f"{where}: no {name!r} list of users")
        for user in sorted(splits[name]):
            if user in owner:
                raise DataFormatError(f"{where}: user {user!r} is in both {owner[user]!r} and {name!r}")
            if user not in events:
                raise DataFormatError(f"{where}: {name} user {user!r} has no interactions")
            owner[user] = name
    stray = next((t for t in targets if owner.get(t["user_id"]) != t["split"]), None)
    if stray is not None:
        raise DataFormatError(f"{folder / 'targets.jsonl'}: a {stray['split']} target of user {stray['user_id']!r}, "
                              f"whom splits.json lists under {owner.get(stray['user_id'])!r}")


def _raw() -> _Raw:
    return _load(amazon_dir())


def _text(title: str) -> str:
    return f'"{title}"'


def amazon_items(domain: str) -> dict[str, str]:
    """`item_id -> prompt text` (the quoted title) for the whole domain catalogue, in id order."""
    _check(domain)
    return {item: _text(title) for item, title in _raw().items[domain].items()}


def amazon_user_items() -> dict[str, frozenset[str]]:
    """Every item each user interacted with, any domain, split or role (targets included)."""
    return {user: frozenset(item for _, _, item in seq) for user, seq in _raw().events.items()}


def train_interactions() -> list[tuple[str, str, bool]]:
    """(user, item, True) of every interaction of the train-split users, both domains, each user's in position order:
    what a collaborative encoder may learn from (valid and test users' interactions never are)."""
    raw = _raw()
    return [(user, item, True) for user in sorted(raw.splits["train"]) for _, _, item in raw.events[user]]


def amazon_item_counts(domain: str) -> Counter[str]:
    """Interaction counts of the domain's items among TRAIN users, keyed by item id."""
    _check(domain)
    raw = _raw()
    return Counter(item for user in sorted(raw.splits["train"]) for _, d, item in raw.events[user] if d == domain)


def amazon_popularity(domain: str) -> dict[str, float]:
    """`amazon_item_counts` keyed like `Case.target` (items sharing a title share its count)."""
    counts = amazon_item_counts(domain)  # checks `domain` before its catalogue is read
    items = _raw().items[domain]
    return text_counts(counts, lambda item: _text(items[item]))


def _check(domain: str, split: str = "train", history_domains: str = "both") -> None:
    if domain not in DOMAINS or split not in SPLITS or history_domains not in HISTORY_DOMAINS:
        raise DataSpecError(f"Amazon has domains {DOMAINS}, splits {SPLITS}, history_domains {HISTORY_DOMAINS}; "
                            f"got {domain!r}, {split!r}, {history_domains!r}")


def load_amazon(domain: str, split: str, *, history_domains: str = "both", max_history: int | None = None) -> list[Case]:
    """Positive cases for the `domain` targets of `split` users.

    `history_domains`: "both" (default), "target" (only target-domain history) or "other"
    (target-domain history hidden: the cold-start view). `max_history` keeps the N most recent.
    """
    _check(domain, split, history_domains)
    raw = _raw()
    cases = []
    for t in raw.targets:
        if t["split"] != split or t["domain"] != domain:
            continue
        seq = raw.events[t["user_id"]]
        last = seq[-1][0]
        shown = [history_domains == "both" or (d == domain) == (history_domains == "target") for _, d, _ in seq]
        history = [HistoryItem(text=_text(raw.items[d][item]), liked=True, item_id=item, domain=d)
                   for (p, d, item), keep in zip(seq, shown) if p < last and keep]
        hidden = tuple(item for (p, _, item), keep in zip(seq, shown) if p < last and not keep)
        activity = sum(p < last for p, _, _ in seq)  # every earlier interaction, the hidden domain's too
        if max_history is not None:
            kept = history[-max_history:] if max_history > 0 else []
            hidden += tuple(h.item_id for h in history[:len(history) - len(kept)])
            history = kept
        cases.append(Case(user_id=t["user_id"], domain=domain, noun=NOUNS[domain], history=tuple(history),
                          target=_text(raw.items[domain][t["item_id"]]), label=1, target_id=t["item_id"],
                          meta={"case": t["case"], "activity": activity, HIDDEN_HISTORY: hidden}))
    return cases
