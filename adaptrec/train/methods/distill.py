"""Distillation for cold-start users: a teacher that sees more (e.g. the full cross-domain history) gives soft
Yes/No probabilities; the student, seeing only a cold-start user's view, learns T²·KL(teacher ‖ student) + α·CE.

Teacher answer logits come from the one scoring path, computed once and cached in the score cache under
(teacher backbone's exact fingerprint, teacher adapter weights hash, prompt). The
teacher runs on the student's backbone, or on another one loaded for the scoring and freed before training."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from peft import PeftConfig, PeftModel

from ...adapters.attach import adapter_key
from ...backbone import load_backbone, load_tokenizer
from ...config import DistillSettings
from ...data.prompts import items_template, plain_template
from ...data.records import Case
from ...errors import ConfigError
from ...fingerprint import Fingerprint, digest
from ...score_cache import ScoreCache
from ...scoring.core import Scorer
from ..cases import digest_cases
from ..losses import distill_loss
from .base import Method, StepContext, adapter_active


@dataclass(frozen=True)
class TeacherBackbone:
    """A teacher backbone other than the student's: what `load_backbone` needs, and its fingerprint."""

    name: str
    quantization: str
    int8_backend: str | None
    fingerprint: Fingerprint


@dataclass(frozen=True)
class Teacher:
    """Where the soft labels come from. `path` None: the bare backbone."""

    ref: str  # registry ref, or "backbone"
    path: Path | None
    model_key: str  # backbone score key + adapter weights hash
    cases: Sequence[Case]  # the teacher's view of the training cases
    backbone: TeacherBackbone | None = None  # None: the student's backbone
    collab: bool = False  # a collaborative adapter: it reads the `-items` prompts, through the student's item table


def pair_key(case: Case) -> tuple:
    """What identifies the same (user, target, label) in the teacher's and the student's view."""
    return case.user_id, case.domain, case.target, case.label


def check_teacher_pairs(teacher_cases: Sequence[Case], train_cases: Sequence[Case], source: str = "") -> None:
    """ConfigError unless every training case has its teacher case (`pair_key`: same user, domain, target and label)."""
    have = {pair_key(c) for c in teacher_cases}
    missing = [c for c in train_cases if pair_key(c) not in have]
    if missing:
        m, where = missing[0], f"{source}: " if source else ""
        raise ConfigError(f"{where}method.teacher_data: {len(missing)} training cases have no teacher case "
                          f"(e.g. user {m.user_id!r}, target {m.target}); use the same split with the teacher's view")


class DistillMethod(Method):
    name = "distill"

    def __init__(self, cfg: DistillSettings, teacher: Teacher, cache: ScoreCache):
        self.cfg, self.teacher, self.cache = cfg, teacher, cache
        self.margins: dict[tuple, float] = {}
        self.teacher_forwards = 0  # prompts the teacher actually ran (0 when the cache had them all)

    def cache_key(self) -> str:
        return f"teacher:{self.teacher.model_key}"  # the prompt keys the rest: not the data it came from

    def _scorer(self, model: torch.nn.Module, tokenizer, ctx: StepContext) -> Scorer:
        """The teacher's scorer: its own tokenizer and answer tokens, the student's prompt settings, with item tokens
        only for a collaborative teacher (a collaborative student's projector is not any other teacher's)."""
        s = ctx.scorer
        template = items_template(s.template) if self.teacher.collab else plain_template(s.template)
        return Scorer(model, tokenizer, self.cache_key(), template=template,
                      max_prompt_tokens=s.max_prompt_tokens,
                      batch_size=s.batch_size, cache=self.cache, progress=False)

    def _other_backbone_logits(self, prompts: list[str], ctx: StepContext) -> np.ndarray:
        """Score `prompts` on the teacher's own backbone (with its adapter, if any); the model is dropped on return."""
        other = self.teacher.backbone
        backbone = load_backbone(other.name, other.quantization, str(ctx.device), other.int8_backend)
        model = backbone.model if self.teacher.path is None else PeftModel.from_pretrained(
            backbone.model, str(self.teacher.path), is_trainable=False)
        model.eval()
        scorer = self._scorer(model, backbone.tokenizer, ctx)
        logits = scorer.logits_for_prompts(prompts)
        self.teacher_forwards = scorer.fresh
        return logits

    def _prompt_learning(self) -> bool:
        """Whether the teacher's adapter puts virtual tokens before the prompt (prefix tuning)."""
        return self.teacher.path is not None and PeftConfig.from_pretrained(str(self.teacher.path)).is_prompt_learning

    def prepare(self, model: torch.nn.Module, ctx: StepContext, train_cases: Sequence[Case]) -> None:
        check_teacher_pairs(self.teacher.cases, train_cases)
        by_key = {pair_key(c): c for c in self.teacher.cases}
        keys = list(dict.fromkeys(pair_key(c) for c in train_cases))
        other = self.teacher.backbone
        # on another backbone this scorer only renders prompts and reads cached rows: the student never scores
        scorer = self._scorer(model, ctx.scorer.tokenizer if other is None else load_tokenizer(other.name), ctx)
        prompts = scorer.prompts([by_key[k] for k in keys])
        model.eval()
        if other is None:  # the teacher attached: its scorer reads the cache under the keys its own padding needs
            with adapter_active(model, self.teacher.path, "distill_teacher"):
                logits = scorer.logits_for_prompts(prompts)
            self.teacher_forwards = scorer.fresh
        else:  # a prefix-tuned teacher's rows may be keyed by length (`pad_room`), which only its loaded model tells
            rows = [] if self._prompt_learning() else scorer.cache_keys(prompts)
            cached = self.cache.get_many(rows)
            if rows and len(cached) == len(rows):  # read from the cache: the teacher backbone is not loaded
                logits, self.teacher_forwards = np.array([cached[k] for k in rows]), 0
            else:
                logits = self._other_backbone_logits(prompts, ctx)
                gc.collect()  # the teacher backbone is freed before training starts
        self.margins = {k: float(row[0] - row[1]) for k, row in zip(keys, logits)}

    def loss(self, model: torch.nn.Module, cases: Sequence[Case], ctx: StepContext, index: int) -> torch.Tensor:
        margin = torch.tensor([self.margins[pair_key(c)] for c in cases], device=ctx.device)
        return distill_loss(ctx.answer_logits(model, cases), margin, ctx.labels(cases), ctx.scorer.yes_id,
                            ctx.scorer.no_id, self.cfg.temperature, self.cfg.alpha)

    def identity(self) -> dict[str, str]:
        """The teacher's weights (its adapter's files and config; its backbone's exact fingerprint when that is not
        the student's) and its view of the cases; not its score key, which also names library versions and device."""
        t = self.teacher
        weights = {"adapter": None if t.path is None else adapter_key(t.path),
                   "backbone": None if t.backbone is None else t.backbone.fingerprint.exact}
        return {"teacher": digest(weights), "teacher_cases": digest_cases(t.cases)}

    def lineage(self) -> dict:
        parents = [] if self.teacher.path is None else [self.teacher.ref]
        other = self.teacher.backbone
        teacher_backbone = None if other is None else {
            "name": other.name, "base_model": other.fingerprint.base_model, "fingerprint": other.fingerprint.exact}
        return {"parents": parents, "method": "distill", "teacher": self.teacher.ref,
                "teacher_backbone": teacher_backbone, "teacher_data": self.cfg.teacher_data,
                "temperature": self.cfg.temperature, "alpha": self.cfg.alpha}
