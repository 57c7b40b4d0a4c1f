"""Shared-prefix ranking: one user's C candidate prompts share their history; run it once, score only the suffixes.

The split is by token index: the prompts are tokenized whole and the prefix is their longest common
token run (at least one token left to each suffix), so a tokenizer merging across the boundary can
never change a prompt. The prefix's `DynamicCache` is kept per (prefix tokens, adapter) in a small
LRU; transformers appends to a cache in place, so each suffix batch runs on a deep copy expanded to
its batch size. Suffixes are left-padded: the attention mask is [prefix ones | suffix mask] and the
suffix position ids continue from the prefix length, ignoring padding (as `scoring.tokenize` does).
Prefix-tuned adapters (virtual tokens in their own cache) take the plain path.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
from transformers import DynamicCache

from adaptrec.data.records import Case
from adaptrec.scoring import CACHE_KEY, ScoreMode, answer_logits, to_scores

from .engine import BASE, Engine, Resident, adapter_rows


def common_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix, leaving at least one token in every sequence."""
    limit = min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == ids[0][n] for x in ids):
        n += 1
    return n


class PrefixRanker:
    """Scores many prompts sharing a prefix under one adapter, reusing the prefix's KV cache."""

    def __init__(self, engine: Engine, max_cached: int = 32):
        self.engine = engine
        self.max_cached = max_cached
        self._caches: OrderedDict[tuple[str, str], DynamicCache] = OrderedDict()
        self.prefix_runs = 0  # prefix forwards actually run (cache misses)

    def rank(self, case: Case, candidates: Sequence[str], adapter: str, mode: ScoreMode = "pyes") -> np.ndarray:
        """P(yes) of each candidate (the target text, as prompts list items) for the user of `case`."""
        self.engine.check_candidates(len(candidates))
        prompts = [self.engine.prompt(replace(case, target=c)) for c in candidates]
        return to_scores(self.logits(adapter, prompts), mode)

    def logits(self, adapter: str, prompts: Sequence[str]) -> np.ndarray:
        """(N, 3) answer logits of `prompts` under `adapter` (`BASE`: the untuned backbone); prefix adapters
        go through the plain path."""
        engine = self.engine
        with engine._lock:
            resident = Resident(BASE, BASE, "lora", None) if adapter == BASE else engine.load(adapter)
        if resident.kind != "lora" or len(prompts) < 2:
            return engine.logits([(adapter, p) for p in prompts])
        ids = [engine.tokenizer(p, add_special_tokens=engine.special).input_ids for p in prompts]
        n = common_prefix_length(ids)
        if n == 0:
            return engine.logits([(adapter, p) for p in prompts])
        resident.uses += len(prompts)
        cache = self._prefix_cache(resident.name, ids[0][:n])
        out = np.empty((len(prompts), 3))
        with torch.inference_mode():
            for b in range(0, len(prompts), engine.batch_size):
                chunk = ids[b : b + engine.batch_size]
                out[b : b + len(chunk)] = self._suffixes(resident.name, cache, n, [x[n:] for x in chunk])
        return out

    def _model(self) -> torch.nn.Module:
        """The engine's LoRA model, or the bare backbone before any LoRA adapter is loaded (untuned rows)."""
        return self.engine.lora_model if self.engine.lora_model is not None else self.engine.backbone.model

    def _prefix_cache(self, name: str, prefix: list[int]) -> DynamicCache:
        key = (name, hashlib.sha256(np.asarray(prefix, dtype=np.int64).tobytes()).hexdigest())
        if key in self._caches:
            self._caches.move_to_end(key)
            return self._caches[key]
        device = self.engine.backbone.device
        with torch.inference_mode(), adapter_rows([name]):
            out = self._model()(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
        self.prefix_runs += 1
        self._caches[key] = cache = getattr(out, CACHE_KEY)
        while len(self._caches) > self.max_cached:
            self._caches.popitem(last=False)
        return cache

    def _suffixes(self, name: str, prefix_cache: DynamicCache, n: int, suffixes: list[list[int]]) -> np.ndarray:
        engine, device = self.engine, self.engine.backbone.device
        width = max(len(s) for s in suffixes)
        pad = engine.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes], device=device)
        suffix_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
        mask = torch.cat([torch.ones(len(suffixes), n, dtype=suffix_mask.dtype, device=device), suffix_mask], dim=-1)
        positions = n + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(suffixes))
        with adapter_rows([name] * len(suffixes)):
            logits = self._model()(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                   use_cache=True, logits_to_keep=1, **{CACHE_KEY: cache}).logits[:, -1, :].float()
        return answer_logits(logits, engine.yes_id, engine.no_id).cpu().numpy()
