"""Shared-prefix ranking: one user's C candidate prompts share their history; run it once, score only the suffixes.

The split is by token index: the prompts are tokenized whole and the prefix is their longest common
token run (at least one token left to each suffix), so a tokenizer merging across the boundary can
never change a prompt. The prefix's `DynamicCache` is kept per (model key, prefix tokens) in a small
LRU bounded in entries and in bytes; transformers appends to a cache in place, so each suffix batch runs on a deep copy expanded to
its batch size. Suffixes are left-padded: the attention mask is [prefix ones | suffix mask] and the
suffix position ids continue from the prefix length, ignoring padding (as `logits.tokenize` does). A model with
sliding-window layers (Gemma-3) builds their window from cache slots, padding included: where the prompts outgrow the
window, suffixes batch only with suffixes of their own length (no padding), so every row scores as it would alone.
Prefix-tuned adapters (virtual tokens in their own cache) cannot use it: callers take the plain path.
An input embedding with an `after(prefix)` context (a collab adapter's) embeds the suffixes as continuing
the prefix: a soft token in the suffix may read the history items before it.
Used by `Scorer.score_lists` (evaluation, experiments) and by the serving engine.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from transformers import DynamicCache

from adaptrec.compat import CACHE_KEY
from adaptrec.data.prompts import answer_token_ids

from .logits import answer_logits

RowsContext = Callable[[int], AbstractContextManager]  # n rows -> a context the model's forward runs in


def common_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix, leaving at least one token in every sequence."""
    limit = min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == ids[0][n] for x in ids):
        n += 1
    return n


def shared_length(ids: Sequence[Sequence[int]]) -> int:
    """The prefix length token-id sequences can share: 0 (take the plain path) for fewer than two."""
    return common_prefix_length(ids) if len(ids) > 1 else 0


def sliding_window(model: torch.nn.Module) -> int | None:
    """The window of a model whose layers (some or all) attend to their last W tokens only; None for full attention."""
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window, layer_types = getattr(config, "sliding_window", None), getattr(config, "layer_types", None)
    if not window or getattr(config, "use_sliding_window", True) is False \
            or (layer_types is not None and "sliding_attention" not in layer_types):
        return None
    return int(window)


def unpadded(model: torch.nn.Module, ids: Sequence[Sequence[int]]) -> bool:
    """Whether these prompts' suffixes must batch by length (`PrefixRanker.logits`): they outgrow a sliding window."""
    window = sliding_window(model)
    return window is not None and max(map(len, ids)) > window


def pad_room(model: torch.nn.Module) -> int | None:
    """How long a padded batch of full prompts may be before padding moves a score, or None when it never does. A
    prefix-tuned adapter's virtual tokens sit before the left padding, and a sliding-window layer counts its window
    in cache slots, padding included: past the window less the virtual tokens, a padded row loses them sooner than
    it would alone, so such batches hold prompts of one length only (`length_batches`). Under peft's
    `disable_adapter()` no virtual token is in front."""
    config = getattr(model, "active_peft_config", None)
    window = sliding_window(model)
    if not getattr(config, "is_prompt_learning", False) or window is None or not model.has_active_enabled_adapter:
        return None
    return window - int(config.num_virtual_tokens)


def length_batches(order: Sequence[int], lengths: Mapping[int, int], size: int, room: int | None) -> list[list[int]]:
    """`order` (sorted by `lengths[i]`) cut into batches of at most `size`; a batch whose prompts outgrow `room`
    tokens (`pad_room`; None: no limit) holds prompts of one length only (no padding)."""
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else None
        if last is not None and len(last) < size and \
                (room is None or lengths[i] <= room or lengths[last[0]] == lengths[i]):
            last.append(i)
        else:
            batches.append([i])
    return batches


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes of every key and value tensor a KV cache holds."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
               if isinstance(t, torch.Tensor))


def no_rows(n: int) -> AbstractContextManager:
    """The default `RowsContext`: the model's active adapter serves every row."""
    return nullcontext()


class PrefixRanker:
    """Scores many prompts sharing a prefix under one model, reusing the prefix's KV cache."""

    def __init__(self, tokenizer, batch_size: int = 8, special: bool = True, max_cached: int = 32,
                 max_bytes: int = 256 << 20):
        self.tokenizer, self.batch_size, self.special, self.max_cached = tokenizer, batch_size, special, max_cached
        self.max_bytes = max_bytes
        self.yes_id, self.no_id = answer_token_ids(tokenizer)
        self._caches: OrderedDict[tuple[str, str], tuple[DynamicCache, int]] = OrderedDict()
        self.prefix_runs = 0  # prefix forwards actually run (cache misses)

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the kept prefix caches."""
        return sum(size for _, size in self._caches.values())

    def forget(self, key: str) -> None:
        """Drop every prefix cache kept for model key `key` (an adapter being unloaded)."""
        for entry in [e for e in self._caches if e[0] == key]:
            del self._caches[entry]

    def split(self, prompts: Sequence[str]) -> tuple[list[list[int]], int]:
        """The prompts' token ids and their shared prefix length (0: nothing to share, take the plain path)."""
        ids = [self.tokenizer(p, add_special_tokens=self.special).input_ids for p in prompts]
        return ids, shared_length(ids)

    def logits(self, model: torch.nn.Module, key: str, ids: Sequence[Sequence[int]], n: int,
               rows: RowsContext = no_rows) -> np.ndarray:
        """(N, 3) answer logits of token ids sharing their first `n` tokens, under `model` (cached as `key`); suffixes
        batch by length where padding would shift a sliding window (`unpadded`)."""
        prefix = list(ids[0][:n])
        cache = self._prefix_cache(model, key, prefix, rows)
        groups = [list(range(len(ids)))]
        if unpadded(model, ids):
            by_length: dict[int, list[int]] = {}
            for i, x in enumerate(ids):
                by_length.setdefault(len(x), []).append(i)
            groups = list(by_length.values())
        out = np.empty((len(ids), 3))
        with torch.inference_mode():
            for group in groups:
                for b in range(0, len(group), self.batch_size):
                    idx = group[b : b + self.batch_size]
                    out[idx] = self._suffixes(model, cache, prefix, [list(ids[i][n:]) for i in idx], rows)
        return out

    def _prefix_cache(self, model: torch.nn.Module, key: str, prefix: list[int], rows: RowsContext) -> DynamicCache:
        entry = (key, hashlib.sha256(np.asarray(prefix, dtype=np.int64).tobytes()).hexdigest())
        if entry in self._caches:
            self._caches.move_to_end(entry)
            return self._caches[entry][0]
        device = next(model.parameters()).device
        with torch.inference_mode(), rows(1):
            out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
        self.prefix_runs += 1
        cache = getattr(out, CACHE_KEY)
        self._caches[entry] = (cache, cache_bytes(cache))
        while self._caches and (len(self._caches) > self.max_cached or self.cached_bytes > self.max_bytes):
            self._caches.popitem(last=False)  # an entry alone over the byte cap is used once, then dropped
        return cache

    def _suffixes(self, model: torch.nn.Module, prefix_cache: DynamicCache, prefix: list[int],
                  suffixes: list[list[int]], rows: RowsContext) -> np.ndarray:
        device = next(model.parameters()).device
        width = max(len(s) for s in suffixes)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes], device=device)
        suffix_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
        n = len(prefix)
        mask = torch.cat([torch.ones(len(suffixes), n, dtype=suffix_mask.dtype, device=device), suffix_mask], dim=-1)
        positions = n + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(suffixes))
        embedding = model.get_input_embeddings()  # a collab adapter's embeds the suffix as continuing the prefix
        continuing = embedding.after(prefix) if hasattr(embedding, "after") else nullcontext()
        with rows(len(suffixes)), continuing:
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                           use_cache=True, logits_to_keep=1, **{CACHE_KEY: cache}).logits[:, -1, :].float()
        return answer_logits(logits, self.yes_id, self.no_id).cpu().numpy()
