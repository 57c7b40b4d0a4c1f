"""`--shard i/n`: a deterministic partition of the cases to score, by position modulo n."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

from ..data.records import Case
from ..data.spec import DataSet, split_slice
from ..errors import AdaptrecError, option
from ..evaluation import select_cases

T = TypeVar("T")
_SHARD_RE = re.compile(r"^\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*$")  # past 4300 digits `int` refuses with a traceback


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the cases whose position in the case list is `index` modulo `count`.

    Positions, not user ids, decide, so shards differ in size by at most one case; together the `count`
    shards hold every case exactly once."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"i/n"` with 0 <= i < n; anything else is a one-line error."""
        match = _SHARD_RE.match(text)
        if not match or int(match[2]) == 0 or int(match[1]) >= int(match[2]):
            raise AdaptrecError(f"{option('shard', text)}: expected I/N with 0 <= I < N (e.g. 0/4 ... 3/4)")
        return cls(int(match[1]), int(match[2]))

    def take(self, items: Sequence[T]) -> list[tuple[int, T]]:
        """(position, item) of this shard's items, in order."""
        return [(i, items[i]) for i in range(self.index, len(items), self.count)]


WHOLE = Shard(0, 1)


def batch_cases(dataset: DataSet, limit: int | None, seed: int, shard: Shard = WHOLE) -> list[tuple[int, Case]]:
    """(position, case) to score: every case of `dataset`, or its seeded subset of `limit` (`select_cases`),
    then this shard's part of them. The position is the case's place in that list (the `case` output field).
    A feedback log still growing (no slice end, or fewer cases than its slice spans) is refused for a shard, and so
    is a `limit` of a feedback window: the shards' runs would split different case lists (the subset is drawn per
    label, and a pair can be re-labelled between the runs)."""
    base, start, stop = split_slice(dataset.spec)
    if shard != WHOLE and base.startswith("feedback:"):
        if not dataset.cases and stop - start > 0:
            raise AdaptrecError(f"{option('shard')} over {dataset.spec}: no feedback is logged from position {start} "
                                "on yet")
        if len(dataset.cases) < stop - start:
            window = f"{base}[{start}:{start + len(dataset.cases)}]"
            raise AdaptrecError(f"{option('shard')} over {dataset.spec}: the feedback log grows between the shards' "
                                "runs, so they would split different case lists; name a full window, e.g. "
                                f"{window}")
        if limit and limit < sum(c.label is not None for c in dataset.cases):  # what `select_cases` draws from
            raise AdaptrecError(f"{option('shard')} with {option('limit', limit)} over {dataset.spec}: the subset is "
                                "drawn per label, so a pair re-labelled between the shards' runs would move them to "
                                "different subsets; shard the whole window or a narrower one, e.g. "
                                f"{base}[{start}:{start + limit}]")
    return shard.take(select_cases(dataset, limit, seed) if limit else dataset.cases)
