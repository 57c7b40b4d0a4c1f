"""Seeded subsets: label-stratified evaluation subsets and TALLRec's few-shot training draw."""

from __future__ import annotations

import random
from typing import Sequence

from ..errors import DataSpecError
from .records import Case


def stratified_subset(cases: Sequence[Case], limit: int, seed: int) -> list[Case]:
    """`limit` cases drawn per label in proportion to the label counts (largest remainder),
    so the Yes share is kept; returned in original order. `limit >= len(cases)`: all of them."""
    if limit >= len(cases):
        return list(cases)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    groups: dict[int | None, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(case.label, []).append(i)
    labels = sorted(groups, key=lambda label: (label is None, label))
    quotas = {label: limit * len(groups[label]) // len(cases) for label in labels}
    by_remainder = sorted(labels, key=lambda label: -(limit * len(groups[label]) % len(cases)))
    for label in by_remainder[: limit - sum(quotas.values())]:
        quotas[label] += 1
    rng = random.Random(seed)
    chosen = [i for label in labels for i in rng.sample(groups[label], quotas[label])]
    return [cases[i] for i in sorted(chosen)]


def few_shot(cases: Sequence[Case], shots: int, seed: int) -> list[Case]:
    """TALLRec's few-shot draw: `Dataset.shuffle(seed).select(range(shots))`, then the second
    `.shuffle(seed)` upstream applies before training (`finetune_rec.py`), so both the subset
    and its order match upstream for the same file order and seed. `shots = -1`: every case."""
    from datasets import Dataset  # heavy import, only needed here

    if shots > len(cases):
        raise DataSpecError(f"asked for {shots} shots but the training data has only {len(cases)} cases")
    index = Dataset.from_dict({"i": list(range(len(cases)))}).shuffle(seed=seed)
    if shots > -1:
        index = index.select(range(shots))
    return [cases[i] for i in index.shuffle(seed=seed)["i"]]
