"""The in-memory unit every other module consumes: one (user, history, target item) case."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HistoryItem:
    """One past interaction. `text` is the item exactly as the prompt lists it (quotes included)."""

    text: str
    liked: bool = True  # implicit-feedback data (Amazon) has only positives
    item_id: str | None = None
    domain: str | None = None


@dataclass(frozen=True)
class Case:
    """A user's history and one target item; `label` is 1 (Yes), 0 (No) or None (unknown).

    `history` is oldest first. `target` is the target exactly as it appears in the question
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
    def held_out_positive(self) -> bool:
        """A positive the data holds out, not a sampled negative copy of one (`meta["negative_of"]`)."""
        return self.label == 1 and "negative_of" not in self.meta

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
