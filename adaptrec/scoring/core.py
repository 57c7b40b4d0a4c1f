"""The one scoring path (eval, experiments, router, serving): prompts -> answer logits -> P(yes), batched and cached."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from adaptrec.data.prompts import (adds_special_tokens, answer_token_ids, answers_marked_alone, render_prompt,
                                   shared_history, truncate_history)
from adaptrec.data.records import Case
from adaptrec.errors import AdaptrecError
from adaptrec.score_cache import ScoreCache

from .logits import ScoreMode, answer_logits, last_token_logits, pad_ids, to_scores
from .prefix import PrefixRanker, length_batches, pad_room, unpadded

PROMPT_TOKENS = 1024  # the prompt length a scorer cuts to when no recipe names one
# Bump when a change to the scoring code changes the numbers it produces: cached rows of other versions stay unread.
SCORING_VERSION = 2
# How a prompt reached the model: whole (`full`) or as a shared history prefix + its suffix (`prefix`). The two
# agree to ~1e-4 in fp32 but differ by up to ~0.1 in P(yes) on int8 kernels (per-token activation scales see
# other tokens), so their cached rows are kept apart.
PATHS = ("full", "prefix")


@dataclass
class Scorer:
    """Scores cases with `model` (a backbone, or a peft model with its adapter active)."""

    model: torch.nn.Module
    tokenizer: object
    model_key: str
    template: str = "tallrec"
    max_prompt_tokens: int | None = PROMPT_TOKENS
    batch_size: int = 8
    cache: ScoreCache | None = None
    progress: bool = True
    last_throughput: float = field(default=0.0, init=False)  # prompts/s of the last uncached forward work
    fresh: int = field(default=0, init=False)  # prompts scored by a forward so far
    cached: int = field(default=0, init=False)  # prompts read from the cache so far
    answers_keyed_apart: bool = field(default=False, init=False)  # see `answers_marked_alone`

    def __post_init__(self) -> None:
        self.yes_id, self.no_id = answer_token_ids(self.tokenizer)
        self.answers_keyed_apart = answers_marked_alone(self.tokenizer)

    def cache_keys(self, prompts: Sequence[str], path: str = "full", split: int | None = None,
                   by_length: bool = False) -> list[str]:
        """Score-cache keys: the model key, the scoring path and code version (on the prefix path also the `split`,
        the shared-prefix length in tokens, which can move a score slightly in 8-bit), whether rows batched by length
        only (the prefix path's suffixes, `prefix.unpadded`; the full path's prompts, `prefix.pad_room`), marks of
        older scoring that moved some templates' or tokenizers' rows, and each prompt."""
        if path not in PATHS:
            raise ValueError(f"scoring path {path!r}: expected one of {', '.join(PATHS)}")
        if (path == "prefix") != (split is not None):
            raise ValueError("the prefix path's keys need its split point, the full path's take none")
        model = f"{self.model_key}:{path}:v{SCORING_VERSION}" + (f":split{split}" if split is not None else "")
        if by_length:  # rows scored before suffixes batched by length depended on their batch-mates: never read them
            model += ":unpadded"
        if self.template in ("chat-stats", "chat-items"):  # once tokenized with a second BOS: those rows stay unread
            model += ":chat-bos"
        if self.answers_keyed_apart:  # once scored on the answers' start-of-text tokens: those rows stay unread
            model += ":newline-answers"
        return [ScoreCache.key(model, p) for p in prompts]

    def prompts(self, cases: Sequence[Case]) -> list[str]:
        return self.rendered(self.fitted(cases))

    def rendered(self, fitted: Sequence[Case]) -> list[str]:
        """The prompts of cases already cut to this scorer's length (`fitted`)."""
        return [render_prompt(c, self.template, self.tokenizer) for c in fitted]

    def fitted(self, cases: Sequence[Case], shared: bool = False) -> list[Case]:
        """`cases` with their histories cut as this scorer's prompts cut them to `max_prompt_tokens`: each on its own
        (`score`), or, `shared`, one user's candidate list to one history (`score_lists`, `shared_history`)."""
        if shared:
            return shared_history(cases, self.template, self.tokenizer, self.max_prompt_tokens)
        if self.tokenizer is None or self.max_prompt_tokens is None:
            return list(cases)
        return [truncate_history(c, self.template, self.tokenizer, self.max_prompt_tokens) for c in cases]

    def logits_for_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, 3) answer logits; cached rows are read, the rest run in length-sorted batches."""
        self.last_throughput = 0.0
        room = pad_room(self.model)  # padding past it moves a score: such rows are keyed apart from older ones
        keys = self.cache_keys(prompts, "full", by_length=room is not None)
        out = np.full((len(prompts), 3), np.nan)
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in cached]
        for i, k in enumerate(keys):
            if k in cached:
                out[i] = cached[k]
        self.cached += len(keys) - len(todo)
        self.fresh += len(todo)
        if not todo:
            return out
        special = adds_special_tokens(self.template)
        ids = dict(zip(todo, self.tokenizer([prompts[i] for i in todo], add_special_tokens=special).input_ids))
        todo.sort(key=lambda i: len(ids[i]))  # length-sorted batches waste little on padding
        device = next(self.model.parameters()).device
        start = time.perf_counter()
        lengths = {i: len(ids[i]) for i in todo}
        with torch.inference_mode(), tqdm(total=len(todo), desc="scoring", unit="prompt", disable=not self.progress) as bar:
            for idx in length_batches(todo, lengths, self.batch_size, room):
                batch = pad_ids(self.tokenizer, [ids[i] for i in idx], device)
                rows = answer_logits(last_token_logits(self.model, batch), self.yes_id, self.no_id).cpu().numpy()
                out[idx] = rows
                if self.cache is not None:
                    self.cache.put_many({keys[i]: r for i, r in zip(idx, rows)})
                bar.update(len(idx))
        self.last_throughput = len(todo) / max(time.perf_counter() - start, 1e-9)
        return out

    def score(self, cases: Sequence[Case], mode: ScoreMode = "pyes") -> np.ndarray:
        """One score per case (higher = more likely "Yes."); non-finite ones are refused (`finite_scores`)."""
        return finite_scores(to_scores(self.logits_for_prompts(self.prompts(cases)), mode))

    def list_prompts(self, lists: Sequence[Sequence[Case]]) -> list[list[str]]:
        """Each user's candidate prompts, sharing one history fitted to `max_prompt_tokens` (`shared_history`)."""
        return [[render_prompt(c, self.template, self.tokenizer) for c in self.fitted(cases, shared=True)]
                for cases in lists]

    def list_logits(self, lists: Sequence[Sequence[Case]], shared_prefix: bool = False) -> list[np.ndarray]:
        """(C, 3) answer logits per candidate list. `shared_prefix`: a list not wholly cached runs through
        `PrefixRanker` (its history once, then the candidates' suffixes); cached rows are kept, never overwritten."""
        prompts = self.list_prompts(lists)
        if not shared_prefix or not self._prefix_capable():
            flat = self.logits_for_prompts([p for ps in prompts for p in ps])
            return np.split(flat, np.cumsum([len(ps) for ps in prompts])[:-1])
        out = []
        for ps in tqdm(prompts, desc="scoring", unit="user", leave=False, disable=not self.progress):
            ids, n = self.ranker.split(ps)  # where the prompts split depends on the whole list: it keys the rows
            if n == 0:  # nothing shared: the plain path (it caches and counts)
                out.append(self.logits_for_prompts(ps))
                continue
            keys = self.cache_keys(ps, "prefix", split=n, by_length=unpadded(self.model, ids))
            found = self.cache.get_many(keys) if self.cache is not None else {}
            self.cached += len(found)
            if len(found) < len(keys):
                fresh = {k: r for k, r in zip(keys, self.ranker.logits(self.model, self.model_key, ids, n))
                         if k not in found}
                if self.cache is not None:
                    self.cache.put_many(fresh)
                self.fresh += len(fresh)
                found = {**fresh, **found}
            out.append(np.stack([found[k] for k in keys]))
        return out

    def score_lists(self, lists: Sequence[Sequence[Case]], mode: ScoreMode = "pyes", shared_prefix: bool = False
                    ) -> list[np.ndarray]:
        """One score per candidate of each list (see `list_logits`); non-finite ones are refused (`finite_scores`)."""
        return [finite_scores(to_scores(rows, mode)) for rows in self.list_logits(lists, shared_prefix)]

    @functools.cached_property
    def ranker(self) -> PrefixRanker:
        """The shared-prefix ranker over this scorer's model (built on first use)."""
        return PrefixRanker(self.tokenizer, self.batch_size, adds_special_tokens(self.template))

    def _prefix_capable(self) -> bool:
        """False when a prompt-learning adapter (prefix tuning) is active: its virtual tokens own the KV cache."""
        config = getattr(self.model, "active_peft_config", None)
        return not getattr(config, "is_prompt_learning", False)


def finite_scores(scores: np.ndarray) -> np.ndarray:
    """`scores`, or a one-line `AdaptrecError` when any is NaN or infinite (a diverged adapter's): the metrics and
    tests they would feed fail on them with no word of why."""
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        raise AdaptrecError(f"the model gave {bad} of {len(scores)} scores that are not finite numbers (NaN or inf): "
                            "its adapter's weights are broken (a diverged training?); retrain or replace it")
    return scores


def backbone_scorer(backbone, model: torch.nn.Module | None = None, adapter_key: str = "base", **options) -> Scorer:
    """A Scorer for `backbone` (or `model`, a peft model over it); cache key = backbone score key + adapter key."""
    return Scorer(model if model is not None else backbone.model, backbone.tokenizer,
                  f"{backbone.score_key}:{adapter_key}", **options)
