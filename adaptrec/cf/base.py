"""What every collaborative encoder is: a catalogue scorer of (user, history), and — for factor models —
the item table a collaborative adapter's soft tokens project from.

A user the encoder never saw is folded in from their history (the mean of its items' vectors), so the
same encoder scores unseen users (TALLRec's and Amazon's test users) and seen ones (leave-one-out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from adaptrec.errors import MissingOptionalPackage


def need(module: str, extra: str = "cf"):
    """Import an optional dependency or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingOptionalPackage(f"{module} is not installed: `pip install adaptrec[{extra}]` "
                                     "(or `make install`)") from None


@dataclass
class Interactions:
    """(user, item) training interactions as index arrays over sorted id lists."""

    users: list[str]
    items: list[str]
    user_idx: np.ndarray
    item_idx: np.ndarray
    sequences: dict[str, list[str]] = field(default_factory=dict)  # each user's items in time order

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, str]], items: Sequence[str] | None = None) -> "Interactions":
        """From (user, item) pairs in time order per user; `items` fixes the catalogue (default: the items seen)."""
        users = sorted({u for u, _ in pairs})
        catalogue = list(items) if items is not None else sorted({i for _, i in pairs})
        u_index, i_index = {u: k for k, u in enumerate(users)}, {i: k for k, i in enumerate(catalogue)}
        sequences: dict[str, list[str]] = {}
        for u, i in pairs:
            sequences.setdefault(u, []).append(i)
        return cls(users, catalogue, np.array([u_index[u] for u, _ in pairs], dtype=np.int64),
                   np.array([i_index[i] for _, i in pairs], dtype=np.int64), sequences)

    def csr(self):
        """users x items 0/1 matrix (scipy CSR), repeats counted once."""
        from scipy.sparse import csr_matrix

        m = csr_matrix((np.ones(len(self.user_idx), dtype=np.float32), (self.user_idx, self.item_idx)),
                       shape=(len(self.users), len(self.items)))
        m.data[:] = 1.0
        return m


class Encoder:
    """A fitted model: `score_catalogue` ranks every catalogue item for each (user, history)."""

    kind = "encoder"
    items: list[str]

    @property
    def item_index(self) -> dict[str, int]:
        if not hasattr(self, "_item_index"):
            self._item_index = {i: k for k, i in enumerate(self.items)}
        return self._item_index

    def score_catalogue(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(n_users, n_items) scores, higher = ranked higher."""
        raise NotImplementedError

    def score_lists(self, users: Sequence[str], histories: Sequence[Sequence[str]],
                    lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Scores of each user's own candidate list; an item outside the catalogue scores below every known one."""
        full = self.score_catalogue(users, histories)
        floor = full.min() - 1.0
        return [np.array([full[n, self.item_index[i]] if i in self.item_index else floor for i in items])
                for n, items in enumerate(lists)]


class PopularityEncoder(Encoder):
    """Training interaction counts: the same list for every user."""

    kind = "popularity"

    def __init__(self, data: Interactions):
        self.items = data.items
        self.counts = np.bincount(data.item_idx, minlength=len(data.items)).astype(np.float64)

    def score_catalogue(self, users, histories) -> np.ndarray:
        return np.tile(self.counts, (len(users), 1))


class FactorEncoder(Encoder):
    """score(u, i) = bias + user_bias(u) + user_vector(u) · item_vector(i) + item_bias(i); an unseen user is folded
    in from their history (no user bias of their own). The biases other than the item's never change a user's
    order; they make scores comparable across users (a pooled AUC)."""

    def __init__(self, kind: str, users: Sequence[str], items: Sequence[str], user_table: np.ndarray,
                 item_table: np.ndarray, item_bias: np.ndarray | None = None, user_bias: np.ndarray | None = None,
                 bias: float = 0.0):
        self.kind, self.items = kind, list(items)
        self.user_index = {u: k for k, u in enumerate(users)}
        self.user_table, self.item_table = np.asarray(user_table, np.float32), np.asarray(item_table, np.float32)
        self.item_bias = np.asarray(np.zeros(len(self.items)) if item_bias is None else item_bias, np.float32)
        self.user_bias = np.zeros(len(users), np.float32) if user_bias is None else np.asarray(user_bias, np.float32)
        self.bias = float(bias)

    def user_vectors(self, users: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(users), self.item_table.shape[1]), np.float32)
        for n, (user, history) in enumerate(zip(users, histories)):
            if user in self.user_index:
                out[n] = self.user_table[self.user_index[user]]
            else:
                rows = [self.item_index[i] for i in history if i in self.item_index]
                if rows:
                    out[n] = self.item_table[rows].mean(axis=0)
        return out

    def score_catalogue(self, users, histories) -> np.ndarray:
        own = np.array([self.user_bias[self.user_index[u]] if u in self.user_index else 0.0 for u in users], np.float32)
        return self.user_vectors(users, histories) @ self.item_table.T + self.item_bias + own[:, None] + self.bias
