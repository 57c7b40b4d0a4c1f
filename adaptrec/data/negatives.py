"""Seeded negative sampling for implicit-feedback data."""

from __future__ import annotations

import json
import random
from typing import AbstractSet, Sequence

from ..errors import DataSpecError


def case_rng(seed: int, purpose: str, user_id: str, target_id: str | None) -> random.Random:
    """A generator private to one case, so a case's draws do not depend on which other cases are
    sampled or in what order (string seeds are hashed with SHA-512: stable across runs). Ids holding a ':' are
    keyed as a JSON list, so user `a:1` with target `2` and user `a` with target `1:2` draw apart; other ids keep
    the key every recorded draw was made with."""
    if ":" in f"{user_id}{target_id}":
        return random.Random(json.dumps([purpose, seed, user_id, target_id]))
    return random.Random(f"{purpose}:{seed}:{user_id}:{target_id}")


def sample_negatives(user_items: AbstractSet[str], catalogue: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """`n` distinct items drawn uniformly from `catalogue` minus `user_items` (every item the user
    has interacted with, in any split or role, targets included). `catalogue` holds distinct ids."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if 2 * (n + len(user_items)) <= len(catalogue):  # sparse: rejection sampling, no pool copy
        chosen: dict[str, None] = {}
        while len(chosen) < n:
            item = catalogue[rng.randrange(len(catalogue))]
            if item not in user_items:
                chosen.setdefault(item, None)
        return list(chosen)
    pool = [item for item in dict.fromkeys(catalogue) if item not in user_items]
    if len(pool) < n:
        raise DataSpecError(
            f"cannot draw {n} negatives: the catalogue has only {len(pool)} items this user has not "
            f"interacted with ({len(catalogue)} in all); ask for fewer negatives"
        )
    return rng.sample(pool, n)
