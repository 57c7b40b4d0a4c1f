"""Training methods, one module each, chosen by a recipe's `method.type` (see docs/methods.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...adapters.attach import COLLAB_TYPE, adapter_key, peft_type
from ...adapters.base import TUNERS
from ...adapters.check import base_change
from ...backbone import (
    backbone_fingerprint,
    base_score_key,
    config_digest,
    load_tokenizer,
    resolve_backend,
    resolve_source,
    tokenizer_digest,
)
from ...config import Recipe
from ...data.records import Case, logged_by
from ...data.tallrec import item_popularity
from ...errors import AdaptrecError, ConfigError
from ...registry import Registry
from ...score_cache import ScoreCache
from ..cases import recipe_cases
from .base import Method, StepContext, adapter_active, micro_batches
from .distill import DistillMethod, Teacher, TeacherBackbone, check_teacher_pairs, pair_key
from .features import BlendMethod, FeatureBlend, blend_row
from .joint import JointMethod, item_texts, query_key
from .multitask import MultitaskMethod

__all__ = ["Method", "StepContext", "adapter_active", "micro_batches", "build_method", "DistillMethod", "Teacher",
           "TeacherBackbone", "BlendMethod", "FeatureBlend", "blend_row", "JointMethod", "item_texts",
           "MultitaskMethod"]


def _teacher_fingerprint(recipe: Recipe):
    """`method.teacher_backbone`'s fingerprint, quantized like the student's backbone; None when none is named."""
    if recipe.method.teacher_backbone is None:
        return None
    try:
        return backbone_fingerprint(recipe.method.teacher_backbone, recipe.backbone.quantization)
    except AdaptrecError as e:
        raise ConfigError(f"{recipe._source}: method.teacher_backbone: {e}") from None


def _teacher_backbone(recipe: Recipe, backbone) -> TeacherBackbone | None:
    """`method.teacher_backbone`, fingerprinted like the student's backbone; None when it is the student's."""
    name, b = recipe.method.teacher_backbone, recipe.backbone
    fingerprint = _teacher_fingerprint(recipe)
    if fingerprint is None or fingerprint.exact == backbone.fingerprint.exact:  # none, or the student's own weights
        return None
    return TeacherBackbone(name, b.quantization, b.int8_backend, fingerprint)


def _teacher_record(recipe: Recipe, fingerprint, beside_student: bool):
    """`method.teacher`'s registered adapter, verified against the backbone `fingerprint` it must be made for, and
    of a kind that can teach there (`beside_student`: on the student's backbone, loaded into the student's model)."""
    try:
        record = Registry().load_verified(recipe.method.teacher, fingerprint)
    except AdaptrecError as e:
        raise ConfigError(f"{recipe._source}: method.teacher: {e}") from None
    # it loads beside the student: the base must stay the same
    changes = base_change(record.adapter_config or {}, record.path)
    if changes is not None:
        raise ConfigError(f"{recipe._source}: method.teacher: {record.ref}: {changes}")
    if record.adapter_type == COLLAB_TYPE and not beside_student:  # peft alone would leave its item tokens out
        raise ConfigError(f"{recipe._source}: method.teacher: {record.ref} is a collaborative adapter: it teaches on "
                          "the student's backbone only, where its item tokens are read")
    student = TUNERS[recipe.adapter.type].peft_type
    if beside_student and peft_type(record) != student:  # peft refuses a second adapter type in one model
        raise ConfigError(f"{recipe._source}: method.teacher: {record.ref} is a {record.adapter_type} adapter "
                          f"({peft_type(record)}); on the student's backbone a teacher loads beside the student, so "
                          f"its peft type must be the student's ({student})")
    return record


def _teacher(recipe: Recipe, backbone) -> Teacher:
    """The distillation teacher: its backbone, its adapter (verified against that backbone) and its view of the data."""
    cfg = recipe.method
    cases, _ = recipe_cases(recipe, cfg.teacher_data, "method.teacher_data")
    other = _teacher_backbone(recipe, backbone)
    if other is None:
        fingerprint, base_key = backbone.fingerprint, backbone.score_key
    else:
        backend = resolve_backend(other.quantization, str(backbone.device), other.int8_backend)
        tokenizer = tokenizer_digest(load_tokenizer(other.name))
        config = config_digest(resolve_source(other.name)[0])
        fingerprint = other.fingerprint
        base_key = base_score_key(fingerprint, backend, backbone.device.type, tokenizer, config)
    if cfg.teacher == "backbone":
        return Teacher("backbone", None, f"{base_key}:base", cases, other)
    record = _teacher_record(recipe, fingerprint, beside_student=other is None)
    collab = record.adapter_type == COLLAB_TYPE
    return Teacher(record.ref, record.path, f"{base_key}:{adapter_key(record.path)}", cases, other, collab)


# (recipe, backbone, training cases, until): `until` bounds the time of logged feedback a method reads besides the
# training cases (an update's window; None: all of it)
MethodBuilder = Callable[[Recipe, Any, Sequence[Case], "float | None"], Method]


def _plain(recipe: Recipe, backbone, train_cases: Sequence[Case], until: float | None = None) -> Method:
    return Method()


def _joint(recipe: Recipe, backbone, train_cases: Sequence[Case], until: float | None = None) -> JointMethod:
    cfg = recipe.method
    if cfg.text_source == "attributes" and not recipe.data.train.startswith("amazon:"):
        raise ConfigError(f"{recipe._source}: method.text_source: attributes are the Amazon items' category and "
                          f"brand words; data.train is {recipe.data.train} (use text_source: titles)")
    partners: list[Case] = []
    if cfg.rec_loss != "yesno":  # complete each shot query's candidate list from the full training split
        queries, have = {query_key(c) for c in train_cases}, {(query_key(c), pair_key(c)) for c in train_cases}
        partners = [c for c in logged_by(recipe_cases(recipe, recipe.data.train, "data.train")[0], until)
                    if query_key(c) in queries and (query_key(c), pair_key(c)) not in have]
    return JointMethod(cfg, item_texts(train_cases, cfg.text_source), recipe.training.seed, partners)


def _blend(recipe: Recipe, backbone, train_cases: Sequence[Case], until: float | None = None) -> BlendMethod:
    cases, data = recipe_cases(recipe, recipe.data.train, "data.train")
    kept = logged_by(cases, until)  # a feedback log counts its items as its SPEC does, over what was logged by then
    return BlendMethod(recipe.method, data.item_popularity if len(kept) == len(cases) else item_popularity(kept))


def _multitask(recipe: Recipe, backbone, train_cases: Sequence[Case], until: float | None = None) -> MultitaskMethod:
    cfg = recipe.method
    extra = [c for i, spec in enumerate(cfg.extra_train)
             for c in logged_by(recipe_cases(recipe, spec, f"method.extra_train[{i}]", shots=recipe.data.shots)[0],
                                 until)]
    domains = sorted({c.domain for c in [*train_cases, *extra]})
    for key, given in (("weights", cfg.weights), ("ratios", cfg.ratios)):
        unknown = sorted(set(given) - set(domains))
        if unknown:
            raise ConfigError(f"{recipe._source}: method.{key}: {', '.join(unknown)} is no domain of the training data "
                              f"({', '.join(domains)})")
    if cfg.ratios and set(cfg.ratios) != set(domains):  # a ratio beside a case-count share would mix units
        raise ConfigError(f"{recipe._source}: method.ratios: give a ratio for every domain ({', '.join(domains)}) "
                          "or none")
    return MultitaskMethod(extra, cfg.weights, cfg.ratios)


def _distill(recipe: Recipe, backbone, train_cases: Sequence[Case], until: float | None = None) -> DistillMethod:
    return DistillMethod(recipe.method, _teacher(recipe, backbone), ScoreCache.default())


# `method.type` -> the builder of its method object (config.MethodSection lists the types).
_METHOD_BUILDERS: dict[str, MethodBuilder] = {
    "plain": _plain, "joint": _joint, "blend": _blend, "multitask": _multitask, "distill": _distill}


def build_method(recipe: Recipe, backbone, train_cases: Sequence[Case]) -> Method:
    """The method object `recipe.method` names, with the data and teacher it needs loaded."""
    return _METHOD_BUILDERS[recipe.method.type](recipe, backbone, train_cases, None)


def check_method(recipe: Recipe, train_cases: Sequence[Case], fingerprint=None) -> Sequence[Case]:
    """`checked_method`'s own cases: those the method trains on besides `train_cases` (`Method.own_cases`: a ranking
    loss's partners, other domains)."""
    method = checked_method(recipe, train_cases, fingerprint)
    return () if method is None else method.own_cases()


def checked_method(recipe: Recipe, train_cases: Sequence[Case], fingerprint=None,
                   until: float | None = None) -> Method | None:
    """What `build_method` loads, checked without loading a backbone (`train --dry-run`, and a run before its
    backbone loads): the method's data, and with `fingerprint` (the student's backbone's) a distillation teacher
    registered and made for that backbone. Returns the method, built (for `train`: its data is read once), except
    a distillation, which builds with the backbone: None. `until`: as `MethodBuilder`'s."""
    cfg = recipe.method
    if cfg.type != "distill":  # the other builders, and their `prepare`, need no backbone
        method = _METHOD_BUILDERS[cfg.type](recipe, None, train_cases, until)
        try:
            method.prepare(None, None, train_cases)
        except ConfigError as e:
            raise ConfigError(f"{recipe._source}: {e}") from None
        return method
    check_teacher_pairs(recipe_cases(recipe, cfg.teacher_data, "method.teacher_data")[0], train_cases,
                        recipe._source)
    if fingerprint is None:
        return None
    teacher_fingerprint = _teacher_fingerprint(recipe)
    if cfg.teacher != "backbone":
        beside = teacher_fingerprint is None or teacher_fingerprint.exact == fingerprint.exact  # as `_teacher_backbone`
        _teacher_record(recipe, teacher_fingerprint or fingerprint, beside)
    return None
