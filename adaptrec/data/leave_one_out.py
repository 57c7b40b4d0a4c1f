"""The leave-one-out protocol of sequential recommendation (SASRec, BERT4Rec, RecBole's `LS` split).

Per user, interactions in time order: the last one is the test target, the second last the validation
target, everything before is training. Every test and validation case shows up to `history_len` items
just before its target (the validation target is in the test case's history, as in the field), so a
user with 3 interactions already has a validation and a test case (a training case needs 4) — unlike sliding
10-item windows, which skip every user with fewer than 11. Training cases are the training prefix's own positions (each with
at least one earlier item). Collaborative encoders learn from `train_interactions` only: no valid or
test (user, item) pair reaches them (tested); sampled negatives avoid `seen_items`, what the user had touched by
the end of their part, so no later interaction shapes them either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .records import Case, HistoryItem

PARTS = ("train", "valid", "test")
HISTORY_LEN = 10  # the prompt length of TALLRec's windows; encoders see the whole training prefix
ENCODER_HISTORY = "encoder_history"  # a held-out case's meta key: every item id before its target, oldest first


@dataclass(frozen=True)
class Event:
    item: str
    liked: bool = True  # implicit data: every interaction
    domain: str | None = None  # None: the domain `loo_cases` is given (one-domain data)


def split_timelines(timelines: Mapping[str, Sequence[Event]]) -> dict[str, dict[str, list[Event]]]:
    """`{part: {user: events}}`: test/valid hold the whole timeline up to and with their target; train the prefix,
    less any earlier interaction with a held-out target (a log with repeats would otherwise train on the very
    (user, item) pair it tests). Users with fewer than 3 interactions have training events only."""
    out: dict[str, dict[str, list[Event]]] = {part: {} for part in PARTS}
    for user, events in timelines.items():
        events = list(events)
        cut = _train_end(events)
        held_out = {e.item for e in events[cut:]}
        out["train"][user] = [e for e in events[:cut] if e.item not in held_out]
        if cut < len(events):
            out["valid"][user] = events[:-1]
            out["test"][user] = events
    return out


def _train_end(events: Sequence[Event]) -> int:
    """Where a timeline's training prefix ends: before its last two interactions (valid, test), or at its end for
    a user with fewer than 3."""
    return len(events) - 2 if len(events) >= 3 else len(events)


def seen_items(timelines: Mapping[str, Sequence[Event]], part: str) -> dict[str, frozenset[str]]:
    """Every item each user had interacted with by the end of `part` (its own target included; test: the whole
    timeline): what that part's sampled negatives avoid, so no negative is drawn knowing a later interaction (as
    RecBole samples training negatives from the training interactions only)."""
    if part not in PARTS:
        raise ValueError(f"leave-one-out parts are {PARTS}; got {part!r}")
    out = {}
    for user, events in timelines.items():
        cut = _train_end(events)
        end = {"train": cut, "valid": min(cut + 1, len(events)), "test": len(events)}[part]
        out[user] = frozenset(e.item for e in events[:end])
    return out


def train_interactions(timelines: Mapping[str, Sequence[Event]]) -> list[tuple[str, str, bool]]:
    """(user, item, liked) of every training interaction, users in timeline order: what encoders may learn from."""
    return [(user, e.item, e.liked) for user, events in split_timelines(timelines)["train"].items() for e in events]


def train_counts(timelines: Mapping[str, Sequence[Event]]) -> Counter[str]:
    """Interaction counts per item id among the training interactions: popularity without a valid or test target."""
    return Counter(item for _, item, _ in train_interactions(timelines))


def loo_cases(timelines: Mapping[str, Sequence[Event]], part: str, text: Callable[[str], str], domain: str,
              history_len: int = HISTORY_LEN) -> list[Case]:
    """Positive cases of `part` (label 1, `target_id` set; history oldest first, at most `history_len` items).
    `text(item_id)` is the item as prompts show it; an event's own domain, when it has one, overrides `domain`."""
    if part not in PARTS:
        raise ValueError(f"leave-one-out parts are {PARTS}; got {part!r}")

    def case(user: str, events: Sequence[Event], i: int) -> Case:
        history = tuple(HistoryItem(text(e.item), e.liked, e.item, e.domain or domain)
                        for e in events[max(0, i - history_len):i])
        target = events[i].domain or domain
        # a held-out case also keeps the whole earlier timeline: what an encoder reads (the prompt shows the latest)
        meta = {"activity": i}
        if part != "train":
            meta[ENCODER_HISTORY] = tuple(e.item for e in events[:i])
        return Case(user, target, target, history, text(events[i].item), 1, events[i].item, meta=meta)

    by_user = split_timelines(timelines)[part]
    if part != "train":
        return [case(user, events, len(events) - 1) for user, events in by_user.items()]
    return [case(user, events, i) for user, events in by_user.items() for i in range(1, len(events))]
