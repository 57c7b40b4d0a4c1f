"""Joint training: L = L_rec + λ·L_text. L_rec is the Yes/No cross-entropy or a ranking loss over each query's
candidates (one user's history: a held-out item and its sampled negatives); L_text is the causal-LM loss on the
domain's item text, so the adapter learns the domain's language."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from ...config import JointSettings
from ...data.interaction_log import get_field, read_jsonl
from ...data.records import Case
from ...errors import ConfigError
from ...home import data_root
from ...scoring.logits import tokenize
from ..losses import answer_pair, causal_lm_loss, listwise_loss, pairwise_loss, rec_loss
from .base import Method, StepContext, micro_batches, shard


@lru_cache(maxsize=1)
def _amazon_attributes(path: Path) -> dict[tuple[str, str], str]:
    """(domain, item_id) -> the upstream category/brand words of `item_attributes.jsonl`."""
    return {(get_field(o, "domain", "str", w), get_field(o, "item_id", "id", w)): get_field(o, "attributes", "str", w)
            for w, o in read_jsonl(path)}


def item_texts(cases: Sequence[Case], source: str = "titles") -> list[str]:
    """The distinct target-domain item texts of `cases` (history and targets), in first-seen order.

    `titles`: the items as prompts show them. `attributes`: each title followed by its Amazon category/brand
    words (items without attributes keep the bare title)."""
    seen: dict[tuple[str, str | None], str] = {}
    for case in cases:
        items = [(h.text, h.item_id) for h in case.history if h.in_domain(case.domain)]
        for text, item_id in items + [(case.target, case.target_id)]:
            seen.setdefault((case.domain, item_id) if item_id else (case.domain, text), text)
    if source == "titles":
        return list(dict.fromkeys(seen.values()))
    attributes = _amazon_attributes(data_root() / "amazon_arts_office" / "item_attributes.jsonl")
    return list(dict.fromkeys(f"{text}: {attributes[key]}" if key in attributes else text
                              for key, text in seen.items()))


def query_key(case: Case) -> tuple:
    """One ranking query: a user's history in one domain (a held-out item and its sampled negatives share it; a user
    with several training positions has one query per position)."""
    return case.user_id, case.domain, case.history


def _query_groups(cases: Sequence[Case]) -> list[list[Case]]:
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        groups.setdefault(query_key(case), []).append(case)
    return list(groups.values())


def ranked_queries(cases: Sequence[Case]) -> list[list[Case]]:
    """The queries a ranking loss learns from: those holding a Yes and a No case (a query of one label forms no
    pair, so its forward would teach nothing)."""
    return [g for g in _query_groups(cases) if len({c.label for c in g}) == 2]


class JointMethod(Method):
    """With a ranking `rec_loss`, a micro-batch holds all candidates of `batch_size` queries of both labels: the
    training cases plus `partners`, the same queries' other candidates (e.g. the sampled negatives the few-shot draw
    left out)."""

    name = "joint"

    def __init__(self, cfg: JointSettings, texts: Sequence[str], seed: int = 0, partners: Sequence[Case] = ()):
        self.cfg, self.texts, self.seed, self.partners = cfg, list(texts), seed, list(partners)

    def prepare(self, model: torch.nn.Module, ctx: StepContext, train_cases: Sequence[Case]) -> None:
        if self.cfg.rec_loss != "yesno" and not ranked_queries([*train_cases, *self.partners]):
            raise ConfigError(f"method.rec_loss: {self.cfg.rec_loss} ranks a query's candidates, but no training "
                              "history has both a Yes and a No case (TALLRec files: one case per user); use "
                              "rec_loss: yesno")

    def batch(self, cases: Sequence[Case], batch_size: int, seed: int, index: int) -> list[Case]:
        if self.cfg.rec_loss == "yesno":
            return micro_batches(cases, batch_size, seed, index)
        groups = ranked_queries([*cases, *self.partners])
        return [c for group in micro_batches(groups, batch_size, seed, index) for c in group]

    def own_cases(self) -> Sequence[Case]:
        return self.partners

    def share(self, batch: list[Case], rank: int, world: int) -> list[Case]:
        """With a ranking loss, whole queries: a query's candidates split across processes would form no pairs."""
        if self.cfg.rec_loss == "yesno":
            return super().share(batch, rank, world)
        return [c for group in shard(_query_groups(batch), rank, world) for c in group]

    def rec(self, logits: torch.Tensor, cases: Sequence[Case], ctx: StepContext) -> torch.Tensor:
        labels, yes, no = ctx.labels(cases), ctx.scorer.yes_id, ctx.scorer.no_id
        if self.cfg.rec_loss == "yesno":
            return rec_loss(logits, labels, yes, no)
        pair = answer_pair(logits, yes, no)
        margin = pair[:, 1] - pair[:, 0]  # logit P(yes): the score scoring ranks by
        queries = {q: i for i, q in enumerate(dict.fromkeys(query_key(c) for c in cases))}
        groups = torch.tensor([queries[query_key(c)] for c in cases], device=logits.device)
        ranking = pairwise_loss if self.cfg.rec_loss == "pairwise" else listwise_loss
        return ranking(margin, labels, groups)

    def text(self, model: torch.nn.Module, ctx: StepContext, index: int) -> torch.Tensor:
        texts = micro_batches(self.texts, self.cfg.text_batch_size, self.seed, index)
        batch = tokenize(ctx.scorer.tokenizer, texts, ctx.device)
        return causal_lm_loss(model(**batch).logits, batch["input_ids"], batch["attention_mask"])

    def loss(self, model: torch.nn.Module, cases: Sequence[Case], ctx: StepContext, index: int) -> torch.Tensor:
        return self.rec(ctx.answer_logits(model, cases), cases, ctx)

    def aux_loss(self, model: torch.nn.Module, ctx: StepContext, index: int) -> torch.Tensor | None:
        """The weighted text loss: its batch is `text_batch_size` texts whatever the micro-batch's cases (was: scaled
        with the Yes/No part, so a short last micro-batch shrank its text batch's weight)."""
        if self.cfg.text_weight == 0 or not self.texts:
            return None
        return self.cfg.text_weight * self.text(model, ctx, index)
