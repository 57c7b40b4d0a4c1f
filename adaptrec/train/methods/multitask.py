"""Multi-task training: one adapter on several domains at once, per-domain loss weights and sampling ratios.

The prompts are already domain-tagged: the instruction names the domain's noun ("the target office product"),
and evaluation scores exactly those prompts, so no extra tag is added that scoring would not see."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ...data.records import Case
from ..losses import rec_loss
from .base import Method, StepContext


class MultitaskMethod(Method):
    """Trains on the loop's cases plus `extra_cases` (the other domains). Each micro-batch slot draws a domain
    by `ratios`, then a case of it (with replacement, seeded by the index: a pure function, so resume is exact).
    The loss weighs each case by its domain's `weights`, divided by the weight a drawn case has on average, so a
    domain's share of the gradient follows ratio × weight and the loss keeps its scale."""

    name = "multitask"

    def __init__(self, extra_cases: Sequence[Case], weights: Mapping[str, float], ratios: Mapping[str, float]):
        self.extra, self.weights, self.ratios = list(extra_cases), dict(weights), dict(ratios)
        self.scale = 1.0  # set by `prepare`: the mean weight of a drawn case

    def own_cases(self) -> Sequence[Case]:
        return self.extra

    def prepare(self, model: torch.nn.Module, ctx: StepContext, train_cases: Sequence[Case]) -> None:
        self.scale = self.mean_weight(self.by_domain(train_cases))

    def domain_probs(self, by_domain: Mapping[str, Sequence[Case]]) -> np.ndarray:
        """Sampling probability per domain (in `by_domain` order): `ratios`, default proportional to case counts."""
        raw = np.array([self.ratios.get(d, len(cs) / sum(map(len, by_domain.values()))) for d, cs in by_domain.items()])
        return raw / raw.sum()

    def by_domain(self, cases: Sequence[Case]) -> dict[str, list[Case]]:
        out: dict[str, list[Case]] = {}
        for case in [*cases, *self.extra]:
            out.setdefault(case.domain, []).append(case)
        return out

    def mean_weight(self, by_domain: Mapping[str, Sequence[Case]]) -> float:
        """The loss weight a drawn case has on average: Σ_domain P(domain) · weight(domain)."""
        weights = np.array([self.weights.get(d, 1.0) for d in by_domain])
        return float(self.domain_probs(by_domain) @ weights)

    def batch(self, cases: Sequence[Case], batch_size: int, seed: int, index: int) -> list[Case]:
        by_domain = self.by_domain(cases)
        rng = np.random.default_rng([seed, index])
        domains = list(by_domain)
        picks = rng.choice(len(domains), size=batch_size, p=self.domain_probs(by_domain))
        return [by_domain[domains[d]][rng.integers(len(by_domain[domains[d]]))] for d in picks]

    def loss(self, model: torch.nn.Module, cases: Sequence[Case], ctx: StepContext, index: int) -> torch.Tensor:
        weights = torch.tensor([self.weights.get(c.domain, 1.0) / self.scale for c in cases], device=ctx.device)
        return rec_loss(ctx.answer_logits(model, cases), ctx.labels(cases), ctx.scorer.yes_id, ctx.scorer.no_id, weights)
