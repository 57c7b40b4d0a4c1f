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


def stream_predictions(scorer: Scorer, cases: Sequence[tuple[int, Case]], out: Path,
                       chunk_size: int = CHUNK_SIZE, meta: dict | None = None) -> Predictions:
    """Score `cases` ((position, case) pairs) `chunk_size` at a time, appending each chunk's rows to `out`
    (`meta`: its provenance, `PredictionWriter`). Under an item template (a collaborative adapter) the meta also
    counts `items_without_tokens`: [items its prompts read by their titles alone, items shown]."""
    start, forward_s = time.perf_counter(), 0.0
    fresh0, cached0 = scorer.fresh, scorer.cached
    scorer.progress = False  # one bar over all chunks instead of one per chunk
    counted = [0, 0] if scorer.template != plain_template(scorer.template) else None
    meta = None if meta is None else {**meta, **({"items_without_tokens": counted} if counted else {})}
    with PredictionWriter(Path(out), meta) as writer, tqdm(total=len(cases), desc="scoring", unit="case") as bar:
        for b in range(0, len(cases), chunk_size):
            chunk = cases[b : b + chunk_size]
            before = scorer.fresh
            shown = scorer.fitted([c for _, c in chunk])
            if counted is not None:  # the list the meta holds, written when the file is complete
                missing, items = items_without_tokens(shown, scorer.tokenizer)
                counted[0], counted[1] = counted[0] + missing, counted[1] + items
            logits = scorer.logits_for_prompts(scorer.rendered(shown))
            if scorer.last_throughput:
                forward_s += (scorer.fresh - before) / scorer.last_throughput
            writer.write(prediction_rows(chunk, logits))
            bar.update(len(chunk))
    fresh = scorer.fresh - fresh0
    if counted and counted[0]:
        warnings.warn(f"{counted[0]} of the {counted[1]} items the prompts showed have no id in the adapter's item "
                      "table (or none at all): they were read by their titles alone", UnknownItemsWarning, stacklevel=3)
    return Predictions(Path(out), writer.n, fresh / forward_s if forward_s else 0.0,
                       rows_per_s=writer.n / max(time.perf_counter() - start, 1e-9), cached=scorer.cached - cached0)
