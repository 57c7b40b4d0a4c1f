"""The serving half of the online loop: logging each answer with a `request_id` (`data.online_log`), with the
slate exploration (`explore.py`) chose for `/v1/recommend`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from adaptrec.data.online_log import LoggedItem, OnlineLog

from .explore import Slate, epsilon_greedy
from .plans import Plan
from .schemas import Target, UserRequest, text_of


@dataclass
class RequestLogger:
    """Logs answers to `log` and feeds the per-domain P(yes) histogram; `exploration`: domain -> ε."""

    log: OnlineLog
    exploration: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def slate(self, domain: str, scores: np.ndarray, k: int) -> Slate:
        return epsilon_greedy(scores, k, self.exploration.get(domain, 0.0), self.rng)

    def record(self, endpoint: str, req: UserRequest, p: Plan, targets: Sequence[str | Target], scores: np.ndarray,
               slate: Slate | None = None) -> str:
        """Log one answer: every target in request order with its score; `/v1/score` shows them all (slot = its
        place, each shown for sure), `/v1/recommend` its `slate` (slot, explored, propensity, probability of being
        shown; candidates not shown have no slot)."""
        n = len(targets)
        shown = slate or Slate(list(range(n)), [False] * n, [1.0] * n, [1.0] * n)
        shown_as = {i: (explored, propensity, slot, p)  # LoggedItem's explored, propensity, slot and shown
                    for slot, (i, explored, propensity, p) in enumerate(zip(shown.order, shown.explored,
                                                                            shown.propensity, shown.shown))}
        items = [LoggedItem(text_of(t), None if isinstance(t, str) else t.item_id, float(scores[i]),
                            *shown_as.get(i, (False, None, None, None)))
                 for i, t in enumerate(targets)]
        history = list(req.case(targets[0]).history)
        return self.log.log_request(req.domain, req.user_id, req.noun, history, items, p.decision.adapters, endpoint)
