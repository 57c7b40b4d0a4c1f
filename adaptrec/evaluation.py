"""Evaluation: LLM rows (through the one scoring path) beside the non-LLM baselines, on one seeded subset."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .baselines import BASELINES
from .data.records import Case
from .data.sampling import stratified_subset
from .data.spec import DataSet
from .metrics import MetricValue, compute_classification
from .scoring import Scorer

DEFAULT_METRICS = ("auc", "accuracy", "log_loss")
_PROB_METRICS = {"accuracy", "log_loss"}  # need scores that are probabilities
_PROBABILISTIC_BASELINES = {"like_ratio"}  # popularity is a count share, not a probability


@dataclass
class EvalRow:
    name: str
    kind: str  # "llm" or "baseline"
    metrics: dict[str, MetricValue]
    prompts_per_s: float | None = None


@dataclass
class EvalReport:
    """One table: every row scored on the same cases (`n` of them, drawn with `seed` from `spec`)."""

    spec: str
    n: int
    limit: int | None
    seed: int
    yes_share: float
    score_mode: str
    metric_names: tuple[str, ...]
    rows: list[EvalRow] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        subset = f"seeded label-stratified subset of {self.n} (seed {self.seed})" if self.limit else f"all {self.n} cases"
        return f"{self.spec}, {subset}, Yes share {self.yes_share:.1%}, score {self.score_mode}, 95% bootstrap CIs"

    def markdown(self) -> str:
        head = "| model | " + " | ".join(self.metric_names) + " | prompts/s |"
        lines = [head, "|---|" + "---:|" * (len(self.metric_names) + 1)]
        for row in self.rows:
            cells = [row.metrics[m].format() if m in row.metrics else "–" for m in self.metric_names]
            speed = f"{row.prompts_per_s:.2f}" if row.prompts_per_s else "–"
            lines.append(f"| {row.name} | " + " | ".join(cells) + f" | {speed} |")
        return f"Protocol: {self.protocol}\n\n" + "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "spec": self.spec, "n": self.n, "limit": self.limit, "seed": self.seed, "yes_share": self.yes_share,
            "score_mode": self.score_mode,
            "rows": [
                {"name": r.name, "kind": r.kind, "prompts_per_s": r.prompts_per_s,
                 "metrics": {k: vars(v) for k, v in r.metrics.items()}}
                for r in self.rows
            ],
        }


def select_cases(dataset: DataSet, limit: int | None, seed: int) -> list[Case]:
    """The evaluation subset: seeded and label-stratified, so every configuration sees the same cases."""
    cases = [c for c in dataset.cases if c.label is not None]
    return stratified_subset(cases, limit, seed) if limit else cases


def _row(name: str, kind: str, labels: np.ndarray, scores: np.ndarray, metric_names: Sequence[str], seed: int,
         probabilistic: bool = True) -> EvalRow:
    names = [m for m in metric_names if probabilistic or m not in _PROB_METRICS]
    return EvalRow(name, kind, compute_classification(names, labels, scores, seed=seed))


def baseline_rows(dataset: DataSet, cases: Sequence[Case], metric_names: Sequence[str], seed: int) -> list[EvalRow]:
    labels = np.array([c.label for c in cases])
    return [
        _row(name, "baseline", labels, fn(cases, dataset.item_popularity), metric_names, seed, name in _PROBABILISTIC_BASELINES)
        for name, fn in BASELINES.items()
    ]


def llm_row(name: str, scorer: Scorer, cases: Sequence[Case], mode: str, metric_names: Sequence[str], seed: int) -> EvalRow:
    labels = np.array([c.label for c in cases])
    row = _row(name, "llm", labels, scorer.score(cases, mode), metric_names, seed)
    row.prompts_per_s = scorer.last_throughput or None
    return row


def new_report(dataset: DataSet, cases: Sequence[Case], limit: int | None, seed: int, mode: str,
               metric_names: Sequence[str] = DEFAULT_METRICS) -> EvalReport:
    yes = float(np.mean([c.label for c in cases])) if cases else 0.0
    return EvalReport(dataset.spec, len(cases), limit, seed, yes, mode, tuple(metric_names))


def run_eval(
    backbone,
    dataset: DataSet,
    *,
    registry=None,
    adapters: Sequence[str] = (),
    limit: int | None = 200,
    seed: int = 0,
    mode: str = "pyes",
    template: str = "tallrec",
    max_prompt_tokens: int | None = 1024,
    batch_size: int = 8,
    include_untuned: bool = True,
    cache=None,
) -> EvalReport:
    """Baselines, the untuned backbone and each adapter, all on the same seeded subset."""
    from .adapters.attach import attach, peft_name, weights_key

    cases = select_cases(dataset, limit, seed)
    report = new_report(dataset, cases, limit, seed, mode)
    report.rows.extend(baseline_rows(dataset, cases, report.metric_names, seed))
    model, records = attach(backbone, registry, adapters) if adapters else (backbone.model, [])

    def scorer(model_key: str) -> Scorer:
        return Scorer(model, backbone.tokenizer, f"{backbone.fingerprint.exact}:{model_key}", template,
                      max_prompt_tokens, batch_size, cache)

    if include_untuned:
        with model.disable_adapter() if records else nullcontext():
            report.rows.append(llm_row("backbone (untuned)", scorer("base"), cases, mode, report.metric_names, seed))
    for record in records:
        model.set_adapter(peft_name(record.ref))
        report.rows.append(llm_row(record.ref, scorer(weights_key(record.path)), cases, mode, report.metric_names, seed))
    return report
