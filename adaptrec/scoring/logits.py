"""Prompt tokens -> answer-slot logits -> scores: the small tensor functions every scoring path shares."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

ScoreMode = Literal["pyes", "tallrec"]
SCORE_MODES: tuple[str, ...] = ("pyes", "tallrec")


def pad_ids(tokenizer, ids: Sequence[Sequence[int]], device: torch.device) -> dict:
    """Left-padded batch of token ids with position ids that ignore padding (so a score never depends on its batch-mates)."""
    batch = tokenizer.pad({"input_ids": [list(x) for x in ids]}, padding_side="left", return_tensors="pt")
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return {k: v.to(device) for k, v in batch.items()}


def tokenize(tokenizer, prompts: Sequence[str], device: torch.device, add_special_tokens: bool = True) -> dict:
    """`pad_ids` of the prompts' tokens."""
    return pad_ids(tokenizer, tokenizer(list(prompts), add_special_tokens=add_special_tokens).input_ids, device)


def last_token_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Next-token logits at the answer position (the last one; prompts are left-padded), shape (B, vocab)."""
    return model(**batch, logits_to_keep=1).logits[:, -1, :].float()


def answer_logits(logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """(B, 3): the Yes logit, the No logit and the full-vocabulary logsumexp — enough for every score mode."""
    return torch.stack([logits[:, yes_id], logits[:, no_id], torch.logsumexp(logits, dim=-1)], dim=-1)


def to_scores(logits3: np.ndarray, mode: ScoreMode = "pyes") -> np.ndarray:
    """`pyes`: softmax over the Yes/No logits. `tallrec`: TALLRec's sigmoid(P(Yes) - P(No)) over the full vocabulary.
    In float64 whatever the logits' type: in float32 every margin above about 17 gave P(yes) 1.0, ties a ranking
    counts against the target."""
    logits3 = np.asarray(logits3, dtype=np.float64)
    yes, no, lse = logits3[:, 0], logits3[:, 1], logits3[:, 2]
    if mode == "pyes":
        return 1.0 / (1.0 + np.exp(no - yes))
    if mode == "tallrec":
        return 1.0 / (1.0 + np.exp(-(np.exp(yes - lse) - np.exp(no - lse))))
    raise ValueError(f"score mode {mode!r}: expected one of {', '.join(SCORE_MODES)}")
