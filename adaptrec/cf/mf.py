"""Matrix factorisation with user and item biases, trained with BCE on like/dislike labels.

P(like | u, i) = σ(b + b_u + b_i + p_u·q_i). Written here in a few lines of torch (full-batch Adam on
≤ 100K ratings takes seconds on a CPU) because `implicit`'s models fit implicit feedback, not labels:
on TALLRec movie the task is explicit like/dislike, and a "will rate" objective learns popularity.
Unknown users score with their item's bias (and vice versa); item vectors are the encoder's output
for the collaborative adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .base import FactorEncoder


@dataclass(frozen=True)
class MFSettings:
    dim: int = 32
    epochs: int = 300
    lr: float = 0.02
    weight_decay: float = 1e-4  # Adam's L2 on every factor and bias: larger = closer to the biases alone
    seed: int = 0


class MFBias(torch.nn.Module):
    """The fitted model: id maps, factors and biases."""

    def __init__(self, users: Sequence[str], items: Sequence[str], dim: int):
        super().__init__()
        self.user_index = {u: i for i, u in enumerate(users)}
        self.item_index = {v: i for i, v in enumerate(items)}
        self.user = torch.nn.Embedding(len(users), dim)
        self.item = torch.nn.Embedding(len(items), dim)
        self.user_bias = torch.nn.Embedding(len(users), 1)
        self.item_bias = torch.nn.Embedding(len(items), 1)
        self.bias = torch.nn.Parameter(torch.zeros(()))
        for emb in (self.user, self.item):
            torch.nn.init.normal_(emb.weight, std=0.01)
        for emb in (self.user_bias, self.item_bias):
            torch.nn.init.zeros_(emb.weight)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Logits of (user index, item index) pairs, shape (N,)."""
        return (self.bias + self.user_bias(u).squeeze(-1) + self.item_bias(i).squeeze(-1)
                + (self.user(u) * self.item(i)).sum(-1))

    @torch.no_grad()
    def score(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """P(like) per (user, item); an unknown user or item contributes no factor and no bias of its own."""
        u = torch.tensor([self.user_index.get(x, -1) for x in users])
        i = torch.tensor([self.item_index.get(x, -1) for x in items])
        known_u, known_i = (u >= 0).float(), (i >= 0).float()
        uc, ic = u.clamp(min=0), i.clamp(min=0)
        logit = (self.bias + self.user_bias(uc).squeeze(-1) * known_u + self.item_bias(ic).squeeze(-1) * known_i
                 + (self.user(uc) * self.item(ic)).sum(-1) * known_u * known_i)
        return torch.sigmoid(logit).numpy()

    def as_encoder(self) -> "FactorEncoder":
        """The same logits as a FactorEncoder (factors, both biases, the global bias)."""
        w = {k: v.detach().numpy() for k, v in self.state_dict().items()}
        return FactorEncoder("mf-bias", list(self.user_index), list(self.item_index), w["user.weight"],
                             w["item.weight"], w["item_bias.weight"][:, 0], w["user_bias.weight"][:, 0],
                             float(w["bias"]))


def train_mf_bias(users: Sequence[str], items: Sequence[str], labels: Sequence[int],
                  settings: MFSettings = MFSettings()) -> MFBias:
    """Fit on (user, item, 0/1 label) triples, full batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = MFBias(sorted(set(users)), sorted(set(items)), settings.dim)
    u = torch.tensor([model.user_index[x] for x in users])
    i = torch.tensor([model.item_index[x] for x in items])
    y = torch.tensor(list(labels), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(settings.epochs):
        opt.zero_grad()
        loss = loss_fn(model(u, i), y)
        loss.backward()
        opt.step()
    return model.eval()
