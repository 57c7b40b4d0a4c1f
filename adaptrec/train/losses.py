"""Losses on the answer-slot logits (Yes/No, ranking, distillation) and the causal-LM loss on item text."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def answer_pair(logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """(B, 2) logits of the two answers, No first, so class 1 = Yes."""
    return torch.stack([logits[:, no_id], logits[:, yes_id]], dim=-1)


def rec_loss(logits: torch.Tensor, labels: torch.Tensor, yes_id: int, no_id: int,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the Yes/No answer: softmax over the two answer tokens (the quantity scoring reports).

    With `weights`, mean(w_i * ce_i): a case's weight scales its share of the gradient whatever the rest of the
    micro-batch holds (normalising by sum(w_i) would cancel the weights of a one-domain micro-batch)."""
    ce = F.cross_entropy(answer_pair(logits, yes_id, no_id), labels.long(), reduction="none")
    return ce.mean() if weights is None else (weights * ce).mean()


def _groups(labels: torch.Tensor, groups: torch.Tensor) -> list[torch.Tensor]:
    """Index tensors of the groups holding at least one Yes and one No case."""
    out = []
    for g in torch.unique(groups):
        idx = (groups == g).nonzero(as_tuple=True)[0]
        if 0 < int(labels[idx].sum()) < len(idx):
            out.append(idx)
    return out


def pairwise_loss(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """BPR: mean over every (Yes, No) pair of one group of softplus(s_no - s_yes) = -log sigmoid(s_yes - s_no).

    Zero (with a graph) when no group holds both labels."""
    terms = []
    for idx in _groups(labels, groups):
        s, y = scores[idx], labels[idx].bool()
        terms.append(F.softplus(s[~y][None, :] - s[y][:, None]).flatten())
    return torch.cat(terms).mean() if terms else scores.sum() * 0.0


def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """ListNet over each group: cross-entropy between labels/sum(labels) and softmax(scores); mean over groups."""
    terms = []
    for idx in _groups(labels, groups):
        target = labels[idx].float() / labels[idx].sum()
        terms.append(-(target * F.log_softmax(scores[idx], dim=0)).sum())
    return torch.stack(terms).mean() if terms else scores.sum() * 0.0


def causal_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy where both the token and the one predicting it are real (not padding).

    logits (B, T, V); ids and mask (B, T), left- or right-padded."""
    real = (attention_mask[:, 1:] != 0) & (attention_mask[:, :-1] != 0)
    targets = input_ids[:, 1:].masked_fill(~real, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)


def distill_loss(logits: torch.Tensor, teacher_margin: torch.Tensor, labels: torch.Tensor, yes_id: int, no_id: int,
                 temperature: float, alpha: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student) over the Yes/No pair at temperature T, plus alpha · the hard Yes/No loss.

    `teacher_margin` is the teacher's Yes logit minus its No logit (all a 2-way softmax needs)."""
    student = answer_pair(logits, yes_id, no_id)
    teacher = torch.stack([torch.zeros_like(teacher_margin), teacher_margin], dim=-1).float()
    p_t = F.softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(F.log_softmax(student / temperature, dim=-1), p_t, reduction="batchmean")
    return temperature**2 * kl + alpha * F.cross_entropy(student, labels.long())
