"""LightGCN (He et al. 2020) on the user-item interaction graph, through `torch_geometric.nn.LightGCN`,
trained with its BPR `recommendation_loss` on one sampled negative per interaction."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .base import FactorEncoder, Interactions, need


@dataclass(frozen=True)
class LightGCNSettings:
    dim: int = 64
    layers: int = 3
    epochs: int = 40
    batch_size: int = 2048
    lr: float = 5e-3
    weight_decay: float = 1e-4  # lambda_reg of the BPR loss, on the batch's layer-0 embeddings
    seed: int = 0


def fit_lightgcn(data: Interactions, settings: LightGCNSettings = LightGCNSettings()) -> FactorEncoder:
    """Item vectors and user vectors are the final (layer-averaged) embeddings of the trained graph."""
    pyg = need("torch_geometric.nn")
    from torch_geometric.utils import to_torch_csr_tensor
    n_users, n_items = len(data.users), len(data.items)
    users, items = torch.from_numpy(data.user_idx), torch.from_numpy(data.item_idx) + n_users
    edges = torch.cat([torch.stack([users, items]), torch.stack([items, users])], dim=1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": a CSR adjacency propagates ~7x faster here
        warnings.simplefilter("ignore", UserWarning)
        edge_index = to_torch_csr_tensor(edges, size=(n_users + n_items, n_users + n_items))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = pyg.LightGCN(n_users + n_items, settings.dim, settings.layers)
        opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
        for _ in range(settings.epochs):
            for batch in torch.randperm(len(users)).split(settings.batch_size):
                neg = torch.randint(n_users, n_users + n_items, (len(batch),))
                emb = model.get_embedding(edge_index)
                u, pos = users[batch], items[batch]
                loss = model.recommendation_loss((emb[u] * emb[pos]).sum(-1), (emb[u] * emb[neg]).sum(-1),
                                                 node_id=torch.cat([u, pos, neg]), lambda_reg=settings.weight_decay)
                opt.zero_grad()
                loss.backward()
                opt.step()
    with torch.no_grad():
        emb = model.get_embedding(edge_index).numpy()
    return FactorEncoder("lightgcn", data.users, data.items, emb[:n_users], emb[n_users:],
                         np.zeros(n_items, np.float32))
