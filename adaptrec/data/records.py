"""The in-memory unit every other module consumes: one (user, history, target item) case."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class HistoryItem:
    """One past interaction. `text` is the item exactly as the prompt lists it (quotes included)."""

    text: str
    liked: bool = True  # implicit-feedback data (Amazon) has only positives
    item_id: str | None = None
    domain: str | None = None

    def in_domain(self, domain: str) -> bool:
        """Whether the item is of `domain`; single-domain data leaves item domains unset, so such an item is."""
        return self.domain in (None, domain)


LIKED_FIRST = "liked_first"  # Case.meta key: a TALLRec-style history, liked items listed before disliked ones
ANONYMOUS = "anonymous"  # the user of a request or history file that names none
HIDDEN_HISTORY = "hidden_history"  # Case.meta key: ids of the user's earlier items a view or a cut left out
NOUNS = {"arts": "arts product", "office": "office product"}  # the shipped Amazon domains' item kinds


def default_noun(domain: str) -> str:
    """The item kind prompts name for `domain` when a request gives none: what its shipped data set's cases (and so
    its adapters) use ("office product"), else the domain itself ("movie")."""
    return NOUNS.get(domain, domain)


@dataclass(frozen=True)
class Case:
    """A user's history and one target item; `label` is 1 (Yes), 0 (No) or None (unknown).

    `history` is oldest first, except in TALLRec-style cases (`meta[LIKED_FIRST]`): every liked item, then every
    disliked one, each list in file order, their order in time unknown. `target` is the target exactly as it
    appears in the question
    (TALLRec's book files wrap it in an extra pair of quotes; that quirk lives in `target`).
    `noun` names the item kind in the instruction ("movie", "book", "arts product", ...).
    """

    user_id: str
    domain: str
    noun: str
    history: tuple[HistoryItem, ...]
    target: str
    label: int | None = None
    target_id: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def shown(self) -> tuple:
        """What the case shows a model (its history, target and label), whatever SPEC or log event named it: two
        cases with equal `shown` train or test a model alike."""
        return tuple((h.text, h.liked) for h in self.history), self.target, self.label

    @property
    def held_out_positive(self) -> bool:
        """A positive the data holds out, not a sampled negative copy of one (`meta["negative_of"]`)."""
        return self.label == 1 and "negative_of" not in self.meta

    def without_oldest(self, drop: int) -> "Case":
        """This case with `drop` history items fewer: the oldest; in a TALLRec-style history the first of each list,
        in proportion to the lists' lengths, so the share of liked items stays (which of them is oldest is
        unknown)."""
        history = self.history
        if not self.meta.get(LIKED_FIRST) or drop <= 0 or not history:
            return replace(self, history=history[max(drop, 0):])
        liked = sum(h.liked for h in history)
        from_liked = min(liked, round(drop * liked / len(history)))
        from_disliked = min(len(history) - liked, drop - from_liked)
        from_liked = min(liked, drop - from_disliked)  # the other list takes what one cannot give
        return replace(self, history=history[from_liked:liked] + history[liked + from_disliked:])

    @property
    def activity(self) -> int:
        """How many interactions the user had before the target: `meta["activity"]` where the history was cut to
        its latest items, else the history's length."""
        return self.meta.get("activity", len(self.history))

    @property
    def like_ratio(self) -> float | None:
        """Share of liked items in the history; None when the history is empty."""
        if not self.history:
            return None
        return sum(h.liked for h in self.history) / len(self.history)


def logged_by(cases: Sequence[Case], until: float | None) -> list[Case]:
    """`cases` without feedback logged after `until` (cases without a time, and all of them for None, are kept)."""
    return [c for c in cases if until is None or c.meta.get("time", until) <= until]
