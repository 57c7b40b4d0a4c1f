"""Losses on the answer-slot logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rec_loss(logits: torch.Tensor, labels: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """Cross-entropy of the Yes/No answer: softmax over the two answer tokens (the quantity scoring reports)."""
    pair = torch.stack([logits[:, no_id], logits[:, yes_id]], dim=-1)
    return F.cross_entropy(pair, labels.long())
