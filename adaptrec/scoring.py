"""The one scoring path (eval, router, serving): prompts -> answer logits -> P(yes), batched and cached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import CausalLMOutputWithPast

from .data.prompts import render_prompt
from .data.records import Case
from .score_cache import ScoreCache

# transformers 5.24 renamed the KV cache `past_key_values` -> `cache` (forward kwarg and output field).
CACHE_KEY = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

ScoreMode = Literal["pyes", "tallrec"]
SCORE_MODES: tuple[str, ...] = ("pyes", "tallrec")


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """Token ids that start the answers "Yes." and "No." (read from the tokenizer, never hard-coded)."""
    yes = tokenizer("Yes.", add_special_tokens=False).input_ids[0]
    no = tokenizer("No.", add_special_tokens=False).input_ids[0]
    if yes == no:
        raise ValueError("the tokenizer maps 'Yes.' and 'No.' to the same first token")
    return yes, no


def pad_ids(tokenizer, ids: Sequence[Sequence[int]], device: torch.device) -> dict:
    """Left-padded batch of token ids with position ids that ignore padding (so a score never depends on its batch-mates)."""
    batch = tokenizer.pad({"input_ids": [list(x) for x in ids]}, return_tensors="pt")
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
    """`pyes`: softmax over the Yes/No logits. `tallrec`: TALLRec's sigmoid(P(Yes) - P(No)) over the full vocabulary."""
    yes, no, lse = logits3[:, 0], logits3[:, 1], logits3[:, 2]
    if mode == "pyes":
        return 1.0 / (1.0 + np.exp(no - yes))
    if mode == "tallrec":
        return 1.0 / (1.0 + np.exp(-(np.exp(yes - lse) - np.exp(no - lse))))
    raise ValueError(f"score mode {mode!r}: expected one of {', '.join(SCORE_MODES)}")


@dataclass
class Scorer:
    """Scores cases with `model` (a backbone, or a peft model with its adapter active)."""

    model: torch.nn.Module
    tokenizer: object
    model_key: str
    template: str = "tallrec"
    max_prompt_tokens: int | None = 1024
    batch_size: int = 8
    cache: ScoreCache | None = None
    progress: bool = True
    last_throughput: float = field(default=0.0, init=False)  # prompts/s of the last uncached forward work

    def __post_init__(self) -> None:
        self.yes_id, self.no_id = answer_token_ids(self.tokenizer)

    def prompts(self, cases: Sequence[Case]) -> list[str]:
        return [render_prompt(c, self.template, self.tokenizer, self.max_prompt_tokens) for c in cases]

    def logits_for_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, 3) answer logits; cached rows are read, the rest run in length-sorted batches."""
        self.last_throughput = 0.0
        keys = [ScoreCache.key(self.model_key, p) for p in prompts]
        out = np.full((len(prompts), 3), np.nan)
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in cached]
        for i, k in enumerate(keys):
            if k in cached:
                out[i] = cached[k]
        if not todo:
            return out
        special = self.template != "chat"  # a rendered chat template already holds its special tokens
        ids = dict(zip(todo, self.tokenizer([prompts[i] for i in todo], add_special_tokens=special).input_ids))
        todo.sort(key=lambda i: len(ids[i]))  # length-sorted batches waste little on padding
        device = next(self.model.parameters()).device
        start = time.perf_counter()
        with torch.inference_mode(), tqdm(total=len(todo), desc="scoring", unit="prompt", disable=not self.progress) as bar:
            for b in range(0, len(todo), self.batch_size):
                idx = todo[b : b + self.batch_size]
                batch = pad_ids(self.tokenizer, [ids[i] for i in idx], device)
                rows = answer_logits(last_token_logits(self.model, batch), self.yes_id, self.no_id).cpu().numpy()
                out[idx] = rows
                if self.cache is not None:
                    self.cache.put_many({keys[i]: r for i, r in zip(idx, rows)})
                bar.update(len(idx))
        self.last_throughput = len(todo) / max(time.perf_counter() - start, 1e-9)
        return out

    def score(self, cases: Sequence[Case], mode: ScoreMode = "pyes") -> np.ndarray:
        """One score per case (higher = more likely "Yes.")."""
        return to_scores(self.logits_for_prompts(self.prompts(cases)), mode)


def backbone_scorer(backbone, model: torch.nn.Module | None = None, adapter_key: str = "base", **options) -> Scorer:
    """A Scorer for `backbone` (or `model`, a peft model over it); cache key = backbone score key + adapter key."""
    return Scorer(model if model is not None else backbone.model, backbone.tokenizer,
                  f"{backbone.score_key}:{adapter_key}", **options)
