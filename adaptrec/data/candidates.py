"""Sampled candidate lists for ranking (`candidates.jsonl`) and labelled Yes/No cases for AUC,
both built from positive (implicit-feedback) cases.

`candidates.jsonl`: one object per line, `{"user_id", "domain", "target_id", "candidates":
[item ids, target included, no repeats], "history": [item ids, oldest first] (optional)}`; or a
`.parquet` file with these columns.
Negatives come from `sample_negatives` with a generator private to each case (seed, user,
target), so a case's list does not change when other cases are added or dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AbstractSet, Iterable, Mapping

from ..atomic import write_text
from ..errors import DataFormatError, DataSpecError
from .interaction_log import get_field, read_records
from .negatives import case_rng, sample_negatives
from .records import Case

Catalogues = Mapping[str, Mapping[str, str]]  # domain -> item_id -> item text as prompts show it
_KEYS = {"user_id", "domain", "target_id", "candidates", "history"}


@dataclass(frozen=True)
class CandidateList:
    user_id: str
    domain: str
    target_id: str
    candidates: tuple[str, ...]
    history: tuple[str, ...] | None = None

    @property
    def target_index(self) -> int:
        return self.candidates.index(self.target_id)

    def to_json(self) -> dict:
        obj = {"user_id": self.user_id, "domain": self.domain, "target_id": self.target_id,
               "candidates": list(self.candidates)}
        if self.history is not None:
            obj["history"] = list(self.history)
        return obj


def _positives(cases: Iterable[Case]) -> Iterable[Case]:
    for case in cases:
        if case.label != 1 or case.target_id is None:
            raise DataSpecError(f"case of user {case.user_id!r} is not a positive with a target_id; "
                                "sample negatives from positive implicit-feedback cases only")
        yield case


def _pool(catalogues: Catalogues, domain: str, cache: dict[str, list[str]]) -> list[str]:
    if domain not in cache:
        if domain not in catalogues:
            raise DataSpecError(f"no catalogue for domain {domain!r} (have: {', '.join(catalogues)})")
        cache[domain] = list(catalogues[domain])
    return cache[domain]


def make_candidate_lists(cases: Iterable[Case], catalogues: Catalogues,
                         user_items: Mapping[str, AbstractSet[str]], n_negatives: int = 19,
                         seed: int = 0) -> list[CandidateList]:
    """One list per positive case: the target plus `n_negatives` sampled items, the target at a
    seeded random position; `history` holds the case's history item ids."""
    lists, cache = [], {}
    for case in _positives(cases):
        rng = case_rng(seed, "candidates", case.user_id, case.target_id)
        items = sample_negatives(user_items.get(case.user_id, frozenset()),
                                 _pool(catalogues, case.domain, cache), n_negatives, rng)
        items.insert(rng.randrange(n_negatives + 1), case.target_id)
        history = tuple(h.item_id for h in case.history) if all(h.item_id for h in case.history) else None
        lists.append(CandidateList(case.user_id, case.domain, case.target_id, tuple(items), history))
    return lists


def with_sampled_negatives(cases: Iterable[Case], catalogues: Catalogues,
                           user_items: Mapping[str, AbstractSet[str]], negatives_per_positive: int = 1,
                           seed: int = 0) -> list[Case]:
    """Labelled cases for AUC: each positive followed by `negatives_per_positive` label-0 copies
    of it whose target is a sampled item (same history; `meta["negative_of"]` = the true target)."""
    out, cache = [], {}
    for case in _positives(cases):
        out.append(case)
        rng = case_rng(seed, "auc", case.user_id, case.target_id)
        pool = _pool(catalogues, case.domain, cache)
        for item in sample_negatives(user_items.get(case.user_id, frozenset()), pool, negatives_per_positive, rng):
            out.append(replace(case, target=catalogues[case.domain][item], target_id=item, label=0,
                               meta={**case.meta, "negative_of": case.target_id}))
    return out


def candidate_cases(candidates: CandidateList, case: Case, catalogues: Catalogues) -> list[Case]:
    """One Case per candidate, in list order (label 1 for the target, 0 otherwise), for scoring."""
    texts = catalogues[candidates.domain]
    return [replace(case, target=texts[item], target_id=item, label=int(item == candidates.target_id))
            for item in candidates.candidates]


def write_candidates(path: Path, lists: Iterable[CandidateList]) -> None:
    """Write `candidates.jsonl` atomically; a `DataFormatError` for two lists of one (user, domain, target), which
    the file format cannot tell apart (an item a user consumed twice): `read_candidates` would refuse the file."""
    lists = list(lists)
    keys = Counter((c.user_id, c.domain, c.target_id) for c in lists)
    twice = next((key for key, n in keys.items() if n > 1), None)
    if twice is not None:
        user, domain, target = twice
        raise DataFormatError(f"{path}: user {user!r} has two held-out lists for item {target!r} in {domain} (an item "
                              "consumed twice); a candidates file keys its lists by user, domain and target, so it "
                              "cannot hold both: nothing was written")
    write_text(Path(path), "".join(json.dumps(c.to_json()) + "\n" for c in lists))


def read_candidates(path: Path) -> list[CandidateList]:
    """Read and validate `candidates.jsonl` (or a `.parquet` file); errors name the file, line (row) and key."""
    lists, first_at = [], {}
    for where, obj in read_records(path):
        unknown = sorted(set(obj) - _KEYS)
        if unknown:
            raise DataFormatError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
        target = get_field(obj, "target_id", "id", where)
        candidates = get_field(obj, "candidates", "id_list", where)
        history = get_field(obj, "history", "id_list", where, required=False)
        if target not in candidates:
            raise DataFormatError(f"{where}: key 'candidates' does not contain target_id {target!r}")
        if len(set(candidates)) != len(candidates):
            raise DataFormatError(f"{where}: key 'candidates' repeats an item")
        if len(candidates) < 2:  # ranked first by every row: HR@1 = 1 for all of them
            raise DataFormatError(f"{where}: key 'candidates' holds the target alone; a list ranks 2 items or more")
        user, domain = get_field(obj, "user_id", "id", where), get_field(obj, "domain", "str", where)
        if (user, domain, target) in first_at:  # it would count twice in every mean
            raise DataFormatError(f"{where}: a second list for user {user!r}, domain {domain}, target {target!r} "
                                  f"(the first is at {first_at[user, domain, target]})")
        first_at[user, domain, target] = where
        lists.append(CandidateList(user, domain, target, tuple(candidates),
                                   None if history is None else tuple(history)))
    if not lists:
        raise DataFormatError(f"{path}: no candidate lists (the file has no rows)")
    return lists
