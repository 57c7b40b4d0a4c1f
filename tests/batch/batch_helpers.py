"""Helpers of the batch-scoring tests: a small synthetic TALLRec file and its reference (non-streaming) scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from synthetic import write_tallrec_files

from adaptrec.backbone import load_backbone
from adaptrec.batch import adapter_scorer
from adaptrec.data.spec import load_spec
from adaptrec.registry import Registry
from adaptrec.scoring.logits import to_scores

N_CASES = 11  # not a multiple of the chunk sizes the tests use


def data_file(folder: Path) -> str:
    """A TALLRec-style test file of `N_CASES` synthetic cases under `folder` (train.json beside it for popularity)."""
    return str(write_tallrec_files(folder / "data", {"train": 4, "test": N_CASES})["test"])


def engine_options(model_dir: Path) -> dict:
    """`write_predictions` keywords that score with the tiny Llama, unquantized."""
    return {"backbone": str(model_dir), "quantization": "none"}


def reference_scores(model_dir: Path, data: str, adapter: str | None = None) -> np.ndarray:
    """(N, 2) P(yes) and TALLRec scores of every case, all prompts scored in one call, nothing cached."""
    scorer = adapter_scorer(load_backbone(str(model_dir), "none"), Registry(), adapter)
    logits = scorer.logits_for_prompts(scorer.prompts(load_spec(data).cases))
    return np.stack([to_scores(logits, "pyes"), to_scores(logits, "tallrec")], axis=1)


def row_scores(rows: list[dict]) -> np.ndarray:
    return np.array([[r["p_yes"], r["tallrec_score"]] for r in rows])


def row_ids(rows: list[dict]) -> list[dict]:
    """The rows without their scores: what must match exactly between engines, chunkings and shards."""
    return [{k: v for k, v in r.items() if k not in ("p_yes", "tallrec_score")} for r in rows]
