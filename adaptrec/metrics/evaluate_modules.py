"""`evaluate`-library wrappers around adaptrec's metrics, usable offline.

Instantiate the classes directly (no `evaluate.load`, nothing is fetched):

    >>> from adaptrec.metrics.evaluate_modules import AdaptrecAUC, AdaptrecRanking
    >>> AdaptrecAUC().compute(predictions=[0.9, 0.2, 0.6], references=[1, 0, 0])
    {'auc': 1.0}
    >>> AdaptrecRanking().compute(predictions=[[0.1, 0.9], [0.5, 0.5]], references=[1, 0],
    ...                           metrics=["hit@1", "ndcg@2"])
    {'hit@1': 0.5, 'ndcg@2': 0.815...}

`predictions` are scores (P(yes) for AUC; one score list per case for ranking; lists may be
ragged); `references` are 0/1 labels (AUC) or the index of the true candidate (ranking).
Values equal the plain functions in `adaptrec.metrics` (same tie rules). `add_batch` works
as in any evaluate metric. By default the modules keep their buffer in memory
(`keep_in_memory=True`); evaluate still creates an empty folder under `cache_dir`, which
defaults to `$ADAPTREC_HOME/evaluate` rather than the Hugging Face cache.

`evaluate` is the optional extra `metrics` (`pip install 'adaptrec[metrics]'`); without it importing this module
raises `MissingOptionalPackage`. Nothing else in adaptrec imports it.
"""

from __future__ import annotations

import datasets

from ..errors import MissingOptionalPackage
from ..home import adaptrec_home
from . import RANKING_METRICS, parse_ranking_names
from .classification import auc
from .ranking import ranks

try:
    import evaluate
except ImportError:
    raise MissingOptionalPackage("adaptrec.metrics.evaluate_modules needs the evaluate package: "
                                 "run `pip install 'adaptrec[metrics]'` (in a checkout: `make install`)") from None

__all__ = ["AdaptrecAUC", "AdaptrecRanking"]

_CITATION = ""  # adaptrec's own implementation


class _OfflineMetric(evaluate.Metric):
    def __init__(self, *args, keep_in_memory: bool = True, cache_dir=None, **kwargs):
        if cache_dir is None:
            cache_dir = str(adaptrec_home() / "evaluate")
        super().__init__(*args, keep_in_memory=keep_in_memory, cache_dir=cache_dir, **kwargs)


class AdaptrecAUC(_OfflineMetric):
    """ROC AUC of scores against 0/1 labels; ties get half credit."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="ROC AUC (Mann-Whitney; tied scores get half credit). Undefined with one class.",
            citation=_CITATION,
            inputs_description=(
                "predictions: list of float scores (higher = more likely positive); "
                "references: list of 0/1 labels. Returns {'auc': float}."
            ),
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"auc": auc(references, predictions)}


class AdaptrecRanking(_OfflineMetric):
    """HR@K / NDCG@K / MRR@K for one true item among scored candidates (pessimistic ties)."""

    DEFAULT_METRICS = ("hit@10", "ndcg@10", "mrr@10")

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=(
                "Top-K ranking metrics with a single relevant item per case; candidates tied "
                "with the target are ranked ahead of it."
            ),
            citation=_CITATION,
            inputs_description=(
                "predictions: one list of candidate scores per case (lengths may differ); "
                "references: index of the true candidate in each list; "
                "metrics (compute kwarg): names like 'hit@10', 'ndcg@10', 'mrr@10' "
                f"(default {list(self.DEFAULT_METRICS)}). Returns {{name: float}}."
            ),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, metrics=None):
        names = list(self.DEFAULT_METRICS) if metrics is None else (
            [metrics] if isinstance(metrics, str) else list(metrics)
        )
        parsed = parse_ranking_names(names)
        r = ranks(predictions, references)
        return {name: float(RANKING_METRICS[base](r, k).mean()) for name, (base, k) in parsed.items()}
