"""One adapter (or the untuned backbone) ready to score and rank items for a user's history, in-process."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..adapters.attach import detach
from ..data.history_file import HistoryEntry, Item, parse_history, parse_items
from ..data.prompts import UnknownItemsWarning, plain_template, unknown_items
from ..data.records import Case, default_noun
from ..errors import DataFormatError, option
from ..scoring.core import PROMPT_TOKENS, Scorer
from ..scoring.logits import ScoreMode
from ..scoring.variants import llm_variants, variant_scorer
from .sources import one_source


class Recommender:
    """`score(history, items)` and `rank(history, candidates, k)` through the one scoring path.

    `score` runs each (history, item) prompt whole, as `adaptrec eval` does; `rank` runs the shared history
    once and each candidate's suffix after it, as the server's /v1/recommend does (docs/serving.md).
    """

    def __init__(self, backbone, registry, ref: str | None = None, *, template: str = "tallrec",
                 max_prompt_tokens: int | None = PROMPT_TOKENS, batch_size: int = 8, mode: ScoreMode = "pyes",
                 cache=None):
        source = one_source(registry, ref)
        refs = [source] if source else []
        self.record = registry.resolve(source) if source else None
        self.ref, key, self.model = next(llm_variants(backbone, registry, refs, include_untuned=not refs))
        self.backbone, self.domain, self.mode = backbone, self.record.domain if self.record else "item", mode
        self.scorer: Scorer = variant_scorer(backbone, registry, self.ref, key, self.model, template=template,
                                             max_prompt_tokens=max_prompt_tokens, batch_size=batch_size, cache=cache,
                                             progress=False)

    def __repr__(self) -> str:
        return f"Recommender({self.ref!r}, domain={self.domain!r})"

    def cases(self, history: Sequence[HistoryEntry], items: Iterable[Item]) -> list[Case]:
        """One Case per item (a title, or {"title", "item_id"}) for this history (titles, or {"title", "liked",
        "domain", "item_id"} objects, oldest first)."""
        base = Case("api", self.domain, default_noun(self.domain), parse_history(history, self.domain), "")
        return [replace(base, target=f'"{title}"', target_id=item_id) for title, item_id in parse_items(items)]

    def score(self, history: Sequence[HistoryEntry], items: Iterable[Item]) -> np.ndarray:
        """P(yes) (or the chosen score) that the user with `history` likes each item."""
        return self.score_cases(self.cases(history, items), _depth=2)

    def score_cases(self, cases: Sequence[Case], _depth: int = 1) -> np.ndarray:
        """The scores of ready-made cases (e.g. a history file's, `data.history_file.read_history_file`); `_depth`:
        the calls of this package in front of this one (its warnings point past them)."""
        return self.scorer.score(self._shown_cases(cases, False, _depth + 1), self.mode)

    def rank(self, history: Sequence[HistoryEntry], candidates: Iterable[Item],
             k: int = 10) -> list[tuple[Item, float]]:
        """The `k` best candidates as (the candidate as given: its title, or its {"title", "item_id"}, score), best
        first."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise DataFormatError(f"{option('k', k)}: expected an integer >= 1")
        listed = isinstance(candidates, Iterable) and not isinstance(candidates, (str, bytes, dict))
        given = list(candidates) if listed else candidates  # anything else is refused by `cases`, in one line
        cases = self.cases(history, given)
        if not cases:
            return []
        scores = self.scorer.score_lists([self._shown_cases(cases, True, 2)], self.mode, shared_prefix=True)[0]
        return [(given[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]

    def _shown_cases(self, cases: Sequence[Case], shared: bool, depth: int) -> list[Case]:
        """`cases`, for a collaborative adapter cut to its prompts (`Scorer.fitted`; `shared`: one history for the
        list) after an `UnknownItemsWarning` naming the item ids they show that its item table lacks (scored by their
        titles alone; the server's answers list them in `unknown_items`; an item the cut left out is not scored at
        all). `depth`: the frames from this one up to the public call, so the warning points at the line that made
        that call."""
        if self.scorer.template == plain_template(self.scorer.template):  # no item tokens: nothing to say
            return list(cases)
        fitted = self.scorer.fitted(cases, shared)
        unknown = list(dict.fromkeys(i for c in fitted for i in unknown_items(c, self.scorer.tokenizer)))
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            warnings.warn(f"{self.ref}: item ids outside its item table, scored by their titles alone: "
                          f"{', '.join(unknown[:5])}{more}", UnknownItemsWarning, stacklevel=depth + 1)
        return fitted

    def close(self) -> None:
        """Detach the adapter from the backbone (the backbone stays loaded)."""
        if self.record is not None:
            detach(self.model)
