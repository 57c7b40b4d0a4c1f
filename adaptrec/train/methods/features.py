"""A calibrated blend of the LLM score with the features the like-ratio heuristic exploits.

After plain training, a logistic regression on [logit P(yes), like-ratio, log(1 + popularity)] (standardised)
is fitted on the few shots (or the validation subset) with the best adapter; its scores come from the one
scoring path plus these features, so the blend can be applied wherever `Scorer` scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from ...config import BlendSettings
from ...data.records import Case
from ...evaluation import EvalRow, case_row
from ...metrics.classification import auc
from ...scoring.core import Scorer
from .base import Method, adapter_active


def feature_matrix(features: Sequence[str], llm_logit: np.ndarray, cases: Sequence[Case],
                   popularity: Mapping[str, float], leave_one_out: bool = False) -> np.ndarray:
    """(N, len(features)) raw features: `llm` = Yes logit - No logit, `like_ratio` (0.5 without history),
    `popularity` = log(1 + count of the target in the training split). `leave_one_out`: the cases are events of that
    split, so each one's own occurrence as a target (not a sampled negative's) is left out of its count; otherwise a
    positive shot would count itself and a sampled negative never, which no test case does. (Where the split also
    counts the same event again, as history in later windows, those counts stay.)"""
    def count(c: Case) -> float:
        own = 1.0 if leave_one_out and "negative_of" not in c.meta else 0.0
        return max(popularity.get(c.target, 0.0) - own, 0.0)

    columns = {
        "llm": lambda: np.asarray(llm_logit, dtype=np.float64),
        "like_ratio": lambda: np.array([0.5 if c.like_ratio is None else c.like_ratio for c in cases]),
        "popularity": lambda: np.log1p([count(c) for c in cases]),
    }
    return np.stack([columns[f]() for f in features], axis=1)


@dataclass
class FeatureBlend:
    """P(yes) = sigmoid(intercept + coef · (x - mean) / std)."""

    features: list[str]
    mean: list[float]
    std: list[float]
    coef: list[float]
    intercept: float

    @classmethod
    def fit(cls, features: Sequence[str], x: np.ndarray, y: np.ndarray, l2: float) -> "FeatureBlend":
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        reg = LogisticRegression(C=1.0 / l2 if l2 > 0 else 1e12, max_iter=1000).fit((x - mean) / std, y)
        return cls(list(features), mean.tolist(), std.tolist(), reg.coef_[0].tolist(), float(reg.intercept_[0]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.intercept + ((x - np.array(self.mean)) / np.array(self.std)) @ np.array(self.coef)
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, scorer: Scorer, cases: Sequence[Case], popularity: Mapping[str, float]) -> np.ndarray:
        """Blended P(yes) of `cases`, the LLM part through `scorer` (the one scoring path)."""
        logits = scorer.logits_for_prompts(scorer.prompts(cases))
        return self.predict(feature_matrix(self.features, logits[:, 0] - logits[:, 1], cases, popularity))

    def to_dict(self) -> dict:
        return asdict(self)


def blend_row(name: str, blend: FeatureBlend, scorer: Scorer, cases: Sequence[Case], popularity: Mapping[str, float],
              metric_names: Sequence[str], seed: int) -> EvalRow:
    """An evaluation-table row for the blended score (popularity: the test DataSet's, from its training split)."""
    return case_row(name, "llm", cases, blend.score(scorer, cases, popularity), metric_names, seed)


class BlendMethod(Method):
    """Plain Yes/No training; `finish` fits the blend with the best adapter and records it (run_dir/method.json)."""

    name = "blend"

    def __init__(self, cfg: BlendSettings, popularity: Mapping[str, float]):
        self.cfg, self.popularity = cfg, popularity

    def finish(self, scorer: Scorer, train_cases: Sequence[Case], val_cases: Sequence[Case], run_dir: Path) -> dict:
        fit_cases = list(train_cases if self.cfg.fit_on == "shots" else val_cases)
        y = np.array([c.label for c in fit_cases])
        if len(set(y.tolist())) < 2:
            return {"blend": None, "why": f"the {self.cfg.fit_on} cases hold one label only"}
        with adapter_active(scorer.model, run_dir / "best", "blend_best"):
            logits = scorer.logits_for_prompts(scorer.prompts(fit_cases))
        x = feature_matrix(self.cfg.features, logits[:, 0] - logits[:, 1], fit_cases, self.popularity,
                           leave_one_out=self.cfg.fit_on == "shots")  # the shots are events the popularity counts
        blend = FeatureBlend.fit(self.cfg.features, x, y, self.cfg.l2)
        return {"blend": blend.to_dict(), "fit_on": self.cfg.fit_on, "fit_cases": len(fit_cases),
                "fit_auc": auc(y, blend.predict(x))}
