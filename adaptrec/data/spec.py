"""Data SPECs: one string naming a dataset split, resolved to labelled Cases (see docs/data.md).

    tallrec:movie|book:train|valid|test      TALLRec's files (there is no book train set)
    movielens:100k:train|valid|test          TALLRec's movie files rebuilt from MovieLens-100K
    movielens:100k:loo:train|valid|test      MovieLens-100K leave-one-out (implicit: sampled negatives)
    amazon:arts|office:train|valid|test[:cold]   Amazon Arts<->Office; ":cold" hides target-domain history
    feedback:DOMAIN[:SINCE]                  served requests' feedback in $ADAPTREC_HOME/online.db (SINCE: Unix seconds)
    PATH.json                                a TALLRec-style file
    PATH.jsonl | PATH.parquet                an interaction log, catalogue in items.jsonl | items.parquet beside it
    PATH.jsonl|.parquet:loo:train|valid|test the log's leave-one-out parts (implicit: sampled negatives)
    SPEC[start:stop]                         a slice of any of the above (Python slice, no step)
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import DataSpecError
from ..fingerprint import digest, file_sha256, stat_identity
from . import amazon, interaction_log, leave_one_out, movielens, tallrec
from .candidates import with_sampled_negatives
from .online_log import OnlineLog, default_log_path
from .records import HIDDEN_HISTORY, Case

FORMAT_VERSION = 1  # bump when a loader's output changes: data fingerprints (update runs, result files) change
SPEC_FORMS = ("tallrec:movie|book:train|valid|test, movielens:100k[:loo]:train|valid|test, "
              "amazon:arts|office:train|valid|test[:cold], feedback:DOMAIN[:SINCE] (Unix seconds), PATH.json (TALLRec-style), "
              "PATH.jsonl|.parquet[:loo:train|valid|test] (interaction log with items.jsonl|.parquet beside it; sliding "
              "windows, or leave-one-out), any of them + [start:stop]")


NEGATIVES_AVOID = "seen by the part's end"  # leave-one-out negatives (`leave_one_out.seen_items`); in cache keys


@dataclass
class DataSet:
    """Cases of one SPEC plus what evaluation needs around them.

    `item_popularity` is keyed like `Case.target` and comes from the domain's training data; `item_counts` holds the
    same training interaction counts per item id, where items have ids (items sharing a title keep their own count).
    `catalogues` (domain -> item_id -> prompt text) and `user_items` (user -> every item they
    touched; on leave-one-out parts, by the end of that part: `leave_one_out.seen_items`) are filled for
    implicit-feedback data only: they feed negative sampling.
    `fingerprint` hashes the source files and the options, to key score caches. `transductive`: the popularity
    counts come from the split's own cases (a TALLRec file with no train or valid sibling before it, e.g. book's
    valid.json), so a row that reads them is labelled transductive.
    """

    spec: str
    cases: list[Case]
    item_popularity: dict[str, float]
    fingerprint: str
    catalogues: dict[str, dict[str, str]] = field(default_factory=dict)
    user_items: dict[str, frozenset[str]] = field(default_factory=dict)
    transductive: bool = False
    item_counts: dict[str, float] = field(default_factory=dict)
    sources: tuple[Path, ...] = ()  # the files it was read from (no output may replace them)


@lru_cache(maxsize=64)
def _sha256(path: Path, identity: tuple[int, ...]) -> str:
    """`file_sha256`, remembered per process while the file's `stat` identity stays the same."""
    return file_sha256(path)


def _file_hashes(paths: Sequence[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        out[p.name] = _sha256(p, stat_identity(p))
    return out


def _floats(counts: Mapping[str, int]) -> dict[str, float]:
    return {key: float(n) for key, n in counts.items()}


def _bad(spec: str, why: str) -> DataSpecError:
    return DataSpecError(f"bad data SPEC {spec!r} ({why}); valid forms: {SPEC_FORMS}")


def _tallrec_popularity_file(path: Path) -> Path | None:
    """TALLRec popularity comes from the sibling train.json, else valid.json (book has no train set)."""
    return next((p for p in (path.with_name("train.json"), path.with_name("valid.json")) if p.is_file()), None)


def _tallrec_file(spec: str, path: Path, cases: list[Case]) -> DataSet:
    pop_file = _tallrec_popularity_file(path)
    pop_cases = cases if pop_file == path else tallrec.read_tallrec_json(pop_file) if pop_file else []
    files = [path] + ([pop_file] if pop_file and pop_file != path else [])
    return DataSet(spec, cases, tallrec.item_popularity(pop_cases),
                   digest({"v": FORMAT_VERSION, "spec": spec, "files": _file_hashes(files)}),
                   transductive=pop_file == path, sources=tuple(files))


def _movielens(spec: str, split: str) -> DataSet:
    folder = movielens.ml100k_dir()
    files = [folder / "ml-100k.inter", folder / "ml-100k.item"]
    return DataSet(spec, movielens.load_movielens(split), tallrec.item_popularity(movielens.load_movielens("train")),
                   digest({"v": FORMAT_VERSION, "spec": spec, "files": _file_hashes(files)}),
                   transductive=split == "train", sources=tuple(files))  # train: popularity counts its targets


def _movielens_loo(spec: str, part: str, negatives: int, seed: int, history_len: int) -> DataSet:
    folder = movielens.ml100k_dir()
    timelines, texts = movielens.loo_timelines(), movielens.item_texts()
    positives = leave_one_out.loo_cases(timelines, part, texts.__getitem__, "movie", history_len)
    catalogues = {"movie": texts}
    user_items = leave_one_out.seen_items(timelines, part)
    counts = leave_one_out.train_counts(timelines)
    files = (folder / "ml-100k.inter", folder / "ml-100k.item")
    key = {"v": FORMAT_VERSION, "spec": spec, "files": _file_hashes(files),
           "negatives_per_positive": negatives, "seed": seed, "negatives_avoid": NEGATIVES_AVOID}
    cases = with_sampled_negatives(positives, catalogues, user_items, negatives, seed)
    return DataSet(spec, cases, interaction_log.text_counts(counts, texts.__getitem__), digest(key), catalogues,
                   user_items, transductive=part == "train",  # the training interactions hold its own targets
                   item_counts=_floats(counts), sources=files)


def _amazon(spec: str, domain: str, split: str, cold: bool, negatives: int, seed: int) -> DataSet:
    folder = amazon.amazon_dir()
    positives = amazon.load_amazon(domain, split, history_domains="other" if cold else "both")
    catalogues, user_items = {domain: amazon.amazon_items(domain)}, amazon.amazon_user_items()
    cases = with_sampled_negatives(positives, catalogues, user_items, negatives, seed)
    files = tuple(folder / f for f in amazon.FILES)
    key = {"v": FORMAT_VERSION, "spec": spec, "files": _file_hashes(files),
           "negatives_per_positive": negatives, "seed": seed}
    return DataSet(spec, cases, amazon.amazon_popularity(domain), digest(key), catalogues, user_items,
                   transductive=split == "train",  # the training users' interactions hold its own targets
                   item_counts=_floats(amazon.amazon_item_counts(domain)), sources=files)


def _log(spec: str, path: Path, negatives: int, seed: int, part: str | None = None,
         history_len: int = leave_one_out.HISTORY_LEN) -> DataSet:
    """An interaction log's sliding windows, or its leave-one-out `part` (every interaction a positive)."""
    if not path.exists():  # a folder or pipe there is named so by its reader
        raise DataSpecError(f"no such interaction log: {path}")
    rows = interaction_log.read_log(path)
    items_path = path.with_name("items" + path.suffix)  # items.jsonl beside a .jsonl log, items.parquet beside .parquet
    if not items_path.exists():
        raise DataSpecError(f"interaction log {path} needs its catalogue {items_path} (item_id, title per row)")
    catalogue = interaction_log.read_catalogue(items_path)
    if part is None:
        cases = interaction_log.cases_from_log(rows, catalogue)
        counts = interaction_log.log_item_counts(rows, catalogue)
    else:  # popularity from the training interactions only: no valid or test target counts
        timelines = interaction_log.log_timelines(rows, catalogue)
        cases = leave_one_out.loo_cases(timelines, part, lambda item: catalogue[item].text, rows[0].domain,
                                        history_len)
        counts = leave_one_out.train_counts(timelines)
    popularity = interaction_log.text_counts(counts, lambda item: catalogue[item].text)
    if not cases:
        need = ("2 interactions before their last two, other than repeats of those two" if part == "train"
                else "3 interactions")
        raise DataSpecError(f"{path}: no user has more than 10 interactions, so no cases can be built" if part is None
                            else f"{path}: no user has {need}, so leave-one-out has no {part} case")
    key = {"v": FORMAT_VERSION, "spec": spec, "files": _file_hashes([path, items_path])}
    catalogues: dict[str, dict[str, str]] = {}
    user_items: dict[str, frozenset[str]] = {}
    implicit = part is not None or (rows[0].label is None and rows[0].rating is None)
    if implicit:
        for domain in dict.fromkeys(r.domain for r in rows):
            catalogues[domain] = {i: it.text for i, it in catalogue.items() if it.domain in (None, domain)}
        if part is None:
            touched: dict[str, set[str]] = {}
            for row in rows:
                touched.setdefault(row.user_id, set()).add(row.item_id)
            user_items = {user: frozenset(items) for user, items in touched.items()}
        else:
            user_items = leave_one_out.seen_items(timelines, part)
            key.update(negatives_avoid=NEGATIVES_AVOID)
        cases = with_sampled_negatives(cases, catalogues, user_items, negatives, seed)
        key.update(negatives_per_positive=negatives, seed=seed)
    return DataSet(spec, cases, popularity, digest(key), catalogues, user_items,
                   transductive=part in (None, "train"),  # popularity counts these cases' own targets
                   item_counts=_floats(counts), sources=(path, items_path))


def _feedback(spec: str, parts: list[str]) -> DataSet:
    """`feedback:DOMAIN[:SINCE]`: the domain's logged feedback; DOMAIN has no ':', SINCE is a number."""
    since = None
    if len(parts) == 3:
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", parts[2]):  # float() would take nan, inf, 1_5_0 and other digits
            raise _bad(spec, f"SINCE must be Unix seconds, got {parts[2]!r}")
        since = float(parts[2])
        if not math.isfinite(since):  # 400 digits read as inf
            raise _bad(spec, f"SINCE {parts[2][:20]}...: past any time")
    if not parts[1]:
        raise _bad(spec, "no domain")
    if not default_log_path().is_file():  # nothing served here yet: no log is made by reading it
        raise _bad(spec, f"no request of domain {parts[1]!r} is logged (domains logged: none; no request log yet)")
    log = OnlineLog()
    cases = log.cases(parts[1], since)
    if not cases and parts[1] not in (logged := log.domains()):  # a typo: no request of that domain was ever served
        raise _bad(spec, f"no request of domain {parts[1]!r} is logged (domains logged: {', '.join(logged) or 'none'})")
    key = {"v": FORMAT_VERSION, "spec": spec,
           "events": digest([[c.meta["request_id"], c.target, c.label, c.meta["time"]] for c in cases])}
    return DataSet(spec, cases, tallrec.item_popularity(cases), digest(key), transductive=True)  # counts its targets


SCHEMES = ("tallrec", "movielens", "amazon", "feedback")
_SLICE_RE = re.compile(r"(?P<base>.+)\[(?P<start>[0-9]*):(?P<stop>[0-9]*)\]")  # fullmatch: ASCII digits, no newline
_LOO_LOG_RE = re.compile(r"(?P<path>.+\.(?:jsonl|parquet)):loo:(?P<part>train|valid|test)")
FILE_SUFFIXES = (".json", ".jsonl", ".parquet")


def spec_file(base: str) -> tuple[str, str] | None:
    """(the data file, the rest of the SPEC after it: `:loo:PART` or "") when `base` (a SPEC without its slice)
    reads a file, as loading it does: a path ending in .json, .jsonl or .parquet, or a log's `PATH:loo:PART`; one
    spelt like a built-in SPEC (`feedback:x/test.json`) when that file exists. None: a built-in SPEC."""
    builtin = base.split(":")[0] in SCHEMES
    if base.endswith(FILE_SUFFIXES) and (not builtin or Path(base).expanduser().is_file()):
        return base, ""
    loo = _LOO_LOG_RE.fullmatch(base)
    if loo and (not builtin or Path(loo["path"]).expanduser().is_file()):
        return loo["path"], base[len(loo["path"]):]
    return None


def split_slice(spec: str) -> tuple[str, int, float]:
    """(base SPEC, start, stop) of `spec`'s `[start:stop]` slice, open ends as 0 and inf; the whole: (spec, 0, inf).
    A slice of a slice is refused: every reader of a SPEC (the gate's overlap check, the history rule) sees one."""
    sliced = _SLICE_RE.fullmatch(spec)
    if sliced is None:
        return spec, 0, math.inf
    if _SLICE_RE.fullmatch(sliced["base"]):
        raise _bad(spec, "one [start:stop] slice per SPEC; write the cases it keeps as a single slice")
    try:
        start, stop = int(sliced["start"] or 0), int(sliced["stop"]) if sliced["stop"] else math.inf
    except ValueError:  # past Python's digit limit for int()
        raise _bad(spec, "a slice bound too long to be a case position") from None
    if stop < start:  # Python's slice would give nothing without a word
        raise _bad(spec, f"the slice ends ({stop}) before it starts ({start})")
    return sliced["base"], start, stop


PROTOCOLS = ("leave_one_out", "sliding")


def is_leave_one_out(spec: str) -> bool:
    """Whether `spec` names leave-one-out data: `movielens:100k:loo:PART` or `PATH.jsonl|.parquet:loo:PART` (not,
    say, the feedback of a domain called `loo`)."""
    base = split_slice(spec)[0]
    named = spec_file(base)
    return base.split(":")[:3] == ["movielens", "100k", "loo"] if named is None else bool(named[1])


def with_protocol(spec: str, protocol: str | None, part: str | None = None) -> str:
    """`spec` in the form `protocol` asks for: `leave_one_out` turns `movielens:100k:PART` and an interaction log
    (`PATH.jsonl`, then `part` names train, valid or test) into their `:loo:` SPECs; `sliding` keeps windowed
    SPECs and refuses leave-one-out ones; None keeps `spec`. Fixed-split data (TALLRec files, Amazon) has no
    leave-one-out form: `DataSpecError`."""
    if protocol is None or (protocol == "leave_one_out") == is_leave_one_out(spec):
        return spec
    if protocol not in PROTOCOLS:
        raise _bad(spec, f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "sliding":
        raise _bad(spec, "a leave-one-out SPEC, but the protocol is sliding")
    sliced = _SLICE_RE.fullmatch(spec)
    if sliced:
        return with_protocol(sliced["base"], protocol, part) + spec[len(sliced["base"]):]
    parts = spec.split(":")
    if parts[:2] == ["movielens", "100k"] and len(parts) == 3 and parts[2] in leave_one_out.PARTS:
        return f"movielens:100k:loo:{parts[2]}"
    if spec.endswith((".jsonl", ".parquet")) and spec_file(spec) is not None:
        if part not in leave_one_out.PARTS:
            raise _bad(spec, f"name its leave-one-out part: {spec}:loo:train|valid|test")
        return f"{spec}:loo:{part}"
    raise _bad(spec, "its splits are fixed, so it has no leave-one-out form (that is for movielens:100k and "
                     "interaction logs)")


def load_spec(spec: str, *, negatives_per_positive: int = 1, seed: int = 0, history_len: int | None = None) -> DataSet:
    """Resolve a SPEC. Implicit-feedback data (Amazon, unlabelled logs) gets
    `negatives_per_positive` sampled label-0 cases after each positive (0: positives only).
    A trailing `[start:stop]` keeps that slice of the cases (e.g. disjoint train/valid slices of one file).
    `history_len`: each case keeps at most that many latest history items (leave-one-out cases are built with
    that many; windowed data holds 10 at most)."""
    if isinstance(spec, os.PathLike):  # a data file given as a Path
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise DataSpecError(f"expected a data SPEC (text, or a path to a data file), got {type(spec).__name__}")
    n = negatives_per_positive
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:  # -1 failed deep in sampling; 1.5 drew 2
        raise DataSpecError(f"{spec}: negatives_per_positive {n!r}: give a whole number, 0 or more")
    if history_len is not None:
        if history_len < 1:
            raise DataSpecError(f"{spec}: history_len {history_len}: keep at least 1 history item")
        if _liked_first(spec):
            raise DataSpecError(f"{spec}: history_len keeps the latest history items, and TALLRec-style cases list "
                                "every liked item before every disliked one (their order in time is not recorded)")
        base = _load(spec, negatives_per_positive, seed, history_len)
        cases = [_latest(c, history_len) for c in base.cases]
        return replace(base, cases=cases, fingerprint=digest({"base": base.fingerprint, "history_len": history_len}))
    return _load(spec, negatives_per_positive, seed, leave_one_out.HISTORY_LEN)


def _latest(case: Case, n: int) -> Case:
    """`case` with its latest `n` history items; the ids of those it drops join `meta[HIDDEN_HISTORY]` (the user
    has them all the same: retrieval never offers them back)."""
    dropped = [h.item_id for h in case.history[:-n] if h.item_id is not None]
    if not dropped:
        return replace(case, history=case.history[-n:])
    hidden = [*case.meta.get(HIDDEN_HISTORY, ()), *dropped]
    return replace(case, history=case.history[-n:], meta={**case.meta, HIDDEN_HISTORY: hidden})


def draws_negatives(spec: str) -> bool:
    """Whether `negatives_per_positive` can change `spec`'s cases: not for TALLRec-style cases (labelled) nor for
    `feedback:` (each served item with its feedback)."""
    base = split_slice(spec)[0]
    return not _liked_first(base) and not (spec_file(base) is None and base.startswith("feedback:"))


def _liked_first(spec: str) -> bool:
    """Whether `spec` names TALLRec-style cases (TALLRec files, a PATH.json, movielens:100k's windows)."""
    base = split_slice(spec)[0]
    if spec_file(base) is not None:
        return base.endswith(".json")
    parts = base.split(":")
    return parts[0] == "tallrec" or (parts[:2] == ["movielens", "100k"] and parts[2:3] != ["loo"])


def _load(spec: str, negatives_per_positive: int, seed: int, history_len: int) -> DataSet:
    whole, start, end = split_slice(spec)
    if whole != spec:
        base = _load(whole, negatives_per_positive, seed, history_len)
        stop = None if end == math.inf else int(end)
        growing = spec_file(whole) is None and whole.startswith("feedback:")  # a log that grows may fill it later
        if not base.cases[start:stop] and not growing:
            raise _bad(spec, f"the slice keeps none of its {len(base.cases)} cases")
        return replace(base, spec=spec, cases=base.cases[start:stop],
                       fingerprint=digest({"base": base.fingerprint, "slice": [start, stop]}))
    parts = spec.split(":")
    named = spec_file(spec)
    if named is not None:
        try:
            path, rest = Path(named[0]).expanduser(), named[1]
        except (RuntimeError, ValueError):  # pathlib's words for `~nobody/x.json` and for a NUL in the user name
            raise _bad(spec, f"no home folder for {named[0].split('/')[0]!r}") from None
        if rest:
            return _log(spec, path, negatives_per_positive, seed, rest.rsplit(":", 1)[1], history_len)
        if spec.endswith(".json"):
            return _tallrec_file(spec, path, tallrec.read_tallrec_json(path))
        return _log(spec, path, negatives_per_positive, seed)
    if parts[0] == "feedback" and len(parts) in (2, 3):
        return _feedback(spec, parts)
    if parts[0] == "tallrec" and len(parts) == 3 and parts[1] in tallrec.DOMAINS and parts[2] in tallrec.SPLITS:
        return _tallrec_file(spec, tallrec.tallrec_path(parts[1], parts[2]), tallrec.load_tallrec(parts[1], parts[2]))
    if parts[0] == "movielens" and len(parts) == 3 and parts[1] == "100k" and parts[2] in tallrec.SPLITS:
        return _movielens(spec, parts[2])
    if parts[:3] == ["movielens", "100k", "loo"] and len(parts) == 4 and parts[3] in leave_one_out.PARTS:
        return _movielens_loo(spec, parts[3], negatives_per_positive, seed, history_len)
    if parts[0] == "amazon" and len(parts) in (3, 4) and parts[1] in amazon.DOMAINS and parts[2] in amazon.SPLITS:
        if len(parts) == 4 and parts[3] != "cold":
            raise _bad(spec, f"unknown view {parts[3]!r}, only 'cold'")
        return _amazon(spec, parts[1], parts[2], len(parts) == 4, negatives_per_positive, seed)
    raise _bad(spec, "not recognised")
