"""One process: cases scored chunk by chunk, each chunk's rows appended to the output as soon as it is scored.

Memory stays bounded by the chunk (prompts, token ids, rows); scores go through the score cache as they are made,
so a rerun after a crash reads every finished batch back instead of recomputing it."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data.prompts import UnknownItemsWarning, items_without_tokens, plain_template
from ..data.records import Case
from ..errors import AdaptrecError
from ..evaluation import Predictions
from ..scoring.core import Scorer
from ..scoring.logits import to_scores
from ..scoring.variants import llm_variants, variant_scorer
from .formats import PredictionWriter

CHUNK_SIZE = 256  # cases per chunk: scored, then written


def adapter_scorer(backbone, registry, adapter: str | None, **scorer_options) -> Scorer:
    """A Scorer with `adapter` (a registry ref) active on `backbone`; None: the untuned backbone."""
    refs = [adapter] if adapter else []
    name, key, model = next(llm_variants(backbone, registry, refs, include_untuned=not adapter))
    return variant_scorer(backbone, registry, name, key, model, **scorer_options)


def prediction_rows(chunk: Sequence[tuple[int, Case]], logits: np.ndarray) -> list[dict]:
    """One output row per (position, case): its identity, label, P(yes) and TALLRec's score. Logits that are no
    numbers (a diverged adapter: the Yes and No logits, or the log-sum-exp over the vocabulary TALLRec's score reads)
    are refused in one line: the output file is never completed with them."""
    bad = ~np.isfinite(np.asarray(logits, dtype=float)).all(axis=1)
    if bad.any():
        i, case = chunk[int(np.argmax(bad))]
        raise AdaptrecError(f"case {i} (user {case.user_id!r}): the model's answer logits are not finite numbers "
                            f"({int(bad.sum())} of {len(chunk)} cases in its chunk), so no score can be written; a "
                            "diverged adapter? Nothing was written to the output")
    pyes, tall = to_scores(logits, "pyes"), to_scores(logits, "tallrec")
    return [{"case": i, "user_id": c.user_id, "domain": c.domain, "target": c.target, "label": c.label,
             "p_yes": float(p), "tallrec_score": float(t)} for (i, c), p, t in zip(chunk, pyes, tall)]


def title_only_items(scorer: Scorer, shown: Sequence[Case]) -> list[int] | None:
    """Under an item template (a collaborative adapter): [items the prompts of `shown` (cases already `fitted`) read
    by their titles alone, items they show]; None under a plain template."""
    if scorer.template == plain_template(scorer.template):
        return None
    return list(items_without_tokens(shown, scorer.tokenizer))


def add_counts(total: list[int] | None, counts: list[int] | None) -> list[int] | None:
    """Two `title_only_items` counts summed (None: none counted)."""
    if counts is None:
        return total
    return counts if total is None else [total[0] + counts[0], total[1] + counts[1]]


def note_title_only(writer: PredictionWriter, counted: list[int] | None) -> None:
    """Record `counted` (`title_only_items` summed over the output) as the meta's `items_without_tokens`; warn when
    some items had no token."""
    if counted is None:
        return
    if writer.meta is not None:
        writer.meta["items_without_tokens"] = counted
    if counted[0]:
        warnings.warn(f"{counted[0]} of the {counted[1]} items the prompts showed have no id in the adapter's item "
                      "table (or none at all): they were read by their titles alone", UnknownItemsWarning, stacklevel=4)


def stream_predictions(scorer: Scorer, cases: Sequence[tuple[int, Case]], out: Path,
                       chunk_size: int = CHUNK_SIZE, meta: dict | None = None) -> Predictions:
    """Score `cases` ((position, case) pairs) `chunk_size` at a time, appending each chunk's rows to `out`
    (`meta`: its provenance, `PredictionWriter`). Under an item template (a collaborative adapter) the meta also
    counts `items_without_tokens`: [items its prompts read by their titles alone, items shown]."""
    start, forward_s = time.perf_counter(), 0.0
    fresh0, cached0 = scorer.fresh, scorer.cached
    scorer.progress = False  # one bar over all chunks instead of one per chunk
    counted = title_only_items(scorer, [])
    meta = None if meta is None else dict(meta)
    with PredictionWriter(Path(out), meta) as writer, tqdm(total=len(cases), desc="scoring", unit="case") as bar:
        for b in range(0, len(cases), chunk_size):
            chunk = cases[b : b + chunk_size]
            before = scorer.fresh
            shown = scorer.fitted([c for _, c in chunk])
            counted = add_counts(counted, title_only_items(scorer, shown))
            logits = scorer.logits_for_prompts(scorer.rendered(shown))
            if scorer.last_throughput:
                forward_s += (scorer.fresh - before) / scorer.last_throughput
            writer.write(prediction_rows(chunk, logits))
            bar.update(len(chunk))
        note_title_only(writer, counted)  # in the meta, written when the file is complete
    fresh = scorer.fresh - fresh0
    return Predictions(Path(out), writer.n, fresh / forward_s if forward_s else 0.0,
                       rows_per_s=writer.n / max(time.perf_counter() - start, 1e-9), cached=scorer.cached - cached0)
