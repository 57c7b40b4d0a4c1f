"""What the training loop needs from a method: micro-batches, a loss, and what to record when done."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from peft import PeftModel

from ...adapters.collab import TABLE_FILE, ItemEmbedding
from ...adapters.collab import TUNER as COLLAB_TUNER
from ...data.prompts import adds_special_tokens
from ...data.records import Case
from ...errors import ConfigError
from ...scoring.core import Scorer
from ...scoring.logits import last_token_logits, tokenize
from ..losses import rec_loss


def micro_batches(cases: Sequence[Case], batch_size: int, seed: int, index: int) -> list[Case]:
    """The `index`-th micro-batch of an endless, per-epoch reshuffled stream (a pure function: resume needs no state)."""
    per_epoch = max(1, -(-len(cases) // batch_size))
    epoch, pos = divmod(index, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(cases))
    return [cases[i] for i in order[pos * batch_size : (pos + 1) * batch_size]]


def shard(items: Sequence, rank: int, world: int) -> list:
    """Rank `rank`'s part of `items`: every `world`-th from `rank` (all of them in one process). Fewer items than
    processes (an epoch's short last batch) are cycled, so that no rank runs an empty forward while the others wait
    for its gradients."""
    return [items[i % len(items)] for i in range(rank, max(len(items), world), world)] if items else []


@dataclass
class StepContext:
    """The loop's tokenizer, prompt rendering (the scorer's, so training sees the prompts scoring sees) and device."""

    scorer: Scorer
    device: torch.device

    def answer_logits(self, model: torch.nn.Module, cases: Sequence[Case]) -> torch.Tensor:
        """(B, vocab) next-token logits at each case's answer slot, with gradients."""
        batch = tokenize(self.scorer.tokenizer, self.scorer.prompts(cases), self.device,
                         adds_special_tokens(self.scorer.template))
        return last_token_logits(model, batch)

    def labels(self, cases: Sequence[Case]) -> torch.Tensor:
        return torch.tensor([c.label for c in cases], device=self.device)


class Method:
    """Plain training: the Yes/No cross-entropy on uniformly shuffled micro-batches. Subclasses override parts."""

    name = "plain"

    def prepare(self, model: torch.nn.Module, ctx: StepContext, train_cases: Sequence[Case]) -> None:
        """Called once before the first step (after a resume too); must not touch trainable weights."""

    def batch(self, cases: Sequence[Case], batch_size: int, seed: int, index: int) -> list[Case]:
        """The `index`-th micro-batch; must be a pure function of its arguments (exact resume)."""
        return micro_batches(cases, batch_size, seed, index)

    def share(self, batch: list[Case], rank: int, world: int) -> list[Case]:
        """This process's part of a micro-batch drawn for all `world` processes (`shard`)."""
        return shard(batch, rank, world)

    def loss(self, model: torch.nn.Module, cases: Sequence[Case], ctx: StepContext, index: int) -> torch.Tensor:
        """The mean loss over `cases` (the loop weighs it by their number: a short micro-batch counts less)."""
        return rec_loss(ctx.answer_logits(model, cases), ctx.labels(cases), ctx.scorer.yes_id, ctx.scorer.no_id)

    def aux_loss(self, model: torch.nn.Module, ctx: StepContext, index: int) -> torch.Tensor | None:
        """A term of the `index`-th micro-batch that does not depend on its cases' number (a weighted text loss), or
        None: each micro-batch's counts the same."""
        return None

    def finish(self, scorer: Scorer, train_cases: Sequence[Case], val_cases: Sequence[Case], run_dir: Path) -> dict:
        """After training, with `scorer` on the model as its last step left it (`run_dir/best` holds the best
        adapter): JSON-able facts to record (e.g. a fitted blend)."""
        return {}

    def lineage(self) -> dict | None:
        """Registry lineage of the trained adapter (e.g. its teacher), or None."""
        return None

    def identity(self) -> dict[str, str]:
        """Inputs besides the cases that decide what the method trains (a teacher): a resumed run must have the same."""
        return {}

    def own_cases(self) -> Sequence[Case]:
        """Cases the method trains on besides the loop's (a ranking loss's partners, other domains): their logged
        feedback events go into the lineage with the loop's."""
        return ()


@contextmanager
def adapter_active(model: PeftModel, path: Path | None, name: str) -> Iterator[None]:
    """Score with the adapter at `path` (None: the bare backbone) instead of the trained one, then make the
    trained adapter active (and trainable: peft's set_adapter) again and drop the loaded one. A collaborative
    adapter brings its projector (and matcher) too, over the model's own item table."""
    if path is None:
        with model.disable_adapter():
            yield
        return
    layer = model.get_input_embeddings()
    extras = (Path(path) / TABLE_FILE).is_file()
    if extras and not isinstance(layer, ItemEmbedding):
        raise ConfigError(f"{path} is a collaborative adapter: its scores need item tokens this model does not read")
    active = model.active_adapter
    active_items, meta = (layer.active, model.adaptrec_collab) if extras else ("", None)
    model.load_adapter(str(path), adapter_name=name, is_trainable=False)
    model.set_adapter(name)
    try:
        if extras:  # `check_table` refuses one made over another item table
            COLLAB_TUNER.load_extra(model, Path(path), None, name)
        yield
    finally:
        model.set_adapter(active)
        model.delete_adapter(name)
        if extras:
            layer.active, model.adaptrec_collab = active_items, meta
            layer.drop(name)
