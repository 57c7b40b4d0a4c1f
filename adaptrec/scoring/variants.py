"""Which model scores each registered adapter, and score-level mixes of several adapters.

One peft model holds one adapter type (LoRA, AdaLoRA or prefix tuning) and one collaborative item table,
so `llm_variants` attaches registered adapters one type (one collaborative adapter) at a time; a `mix`
averages the P(yes) its sources give, each scored alone through `Scorer`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from adaptrec.adapters.attach import COLLAB_TYPE, adapter_key, attach, bare_model, detach, peft_name, peft_type
from adaptrec.adapters.merge import MIX, Composition, as_mix, check_weights
from adaptrec.data.prompts import items_template, plain_template
from adaptrec.data.records import Case

from .core import Scorer, backbone_scorer

UNTUNED = "backbone (untuned)"  # the row name of the backbone without adapters


def trained_prompt(record) -> dict:
    """The prompt template and length a registered adapter was trained with (its stored recipe's; a composition's:
    its sources', as its lineage's `prompt` records them), {} without either; `ConfigError` when that recipe no
    longer validates."""
    from adaptrec.config import recipe_from_text
    from adaptrec.data.prompts import TEMPLATES
    from adaptrec.errors import ConfigError

    if not record.recipe_text:
        recorded = (record.lineage or {}).get("prompt")
        recorded = recorded if isinstance(recorded, dict) else {}
        length = recorded.get("max_prompt_tokens")
        return {**({"template": recorded["template"]} if recorded.get("template") in TEMPLATES else {}),
                **({"max_prompt_tokens": length} if type(length) is int and length >= 1 else {})}
    try:
        recipe = recipe_from_text(record.recipe_text, record.ref)
    except ConfigError as e:
        raise ConfigError(f"{e} (the recipe stored with the adapter no longer validates, so the prompt template it "
                          "was trained with is unknown)") from None
    return {"template": recipe.data.template, "max_prompt_tokens": recipe.data.max_prompt_tokens}


def sources_prompt(records, template: str | None = None, remedy: str | None = None) -> dict:
    """The prompt settings for adapters read through one prompt (a routed mix, a composition's sources): `template`,
    else the template they were trained with, in its plain form (`trained_prompt`; each row reads its own form,
    `variant_scorer`; `AdaptrecError` naming `remedy` when they differ), and the shortest prompt length any was
    trained with (none sees more history than it trained on); {} when none has a recipe."""
    from adaptrec.errors import AdaptrecError, option

    trained = [trained_prompt(r) for r in records]
    templates = sorted({plain_template(t["template"]) for t in trained if "template" in t})
    if template is None and len(templates) > 1:
        raise AdaptrecError(f"{', '.join(r.ref for r in records)} were trained with different prompt templates "
                            f"({', '.join(templates)}); {remedy or 'pass ' + option('template')}")
    lengths = [t["max_prompt_tokens"] for t in trained if "max_prompt_tokens" in t]
    chosen = template or next(iter(templates), None)
    return {**({"template": chosen} if chosen else {}), **({"max_prompt_tokens": min(lengths)} if lengths else {})}


def llm_variants(backbone, registry, adapters: Sequence[str], include_untuned: bool = True) -> Iterator[tuple[str, str, object]]:
    """Yield (row name, adapter cache key, model) with the right adapter active; the untuned row disables adapters.

    Adapters are attached one type at a time (each collaborative adapter alone; in order of first appearance), each
    group detached before the next; the last group stays attached, as a single type's does.
    """
    groups: dict[str, list[str]] = {}
    for ref in adapters:  # a collaborative adapter brings its own item table: one per attach
        record = registry.resolve(ref)
        groups.setdefault(ref if record.adapter_type == COLLAB_TYPE else peft_type(record), []).append(ref)
    model = None
    for group in groups.values():
        if model is not None:
            detach(model)
        model, records = attach(backbone, registry, group)
        if include_untuned:
            include_untuned = False
            with model.disable_adapter():
                yield UNTUNED, "base", model
        for record in records:
            model.set_adapter(peft_name(record.ref))
            yield record.ref, adapter_key(record.path), model
    if include_untuned:  # no adapters
        yield UNTUNED, "base", bare_model(backbone)


def row_template(registry, name: str | None, template: str = "tallrec") -> str:
    """The template the row `name` (a registered adapter; None or `UNTUNED`: the untuned backbone) scores with, given
    `template`: a collaborative adapter reads its item tokens, so its `items_template` form; every other row its
    `plain_template` form (under a collaborative adapter's item table, item tokens would reach the untuned row and
    plain adapters through its projector)."""
    collab = name not in (None, UNTUNED) and registry.resolve(name).adapter_type == COLLAB_TYPE
    return items_template(template) if collab else plain_template(template)


def variant_scorer(backbone, registry, name: str, key: str, model, **options) -> Scorer:
    """The Scorer of one `llm_variants` row, with the template that row reads (`row_template`)."""
    options = {**options, "template": row_template(registry, name, options.get("template", "tallrec"))}
    return backbone_scorer(backbone, model, key, **options)


def variant_rows(backbone, registry, adapters: Sequence[str], include_untuned: bool = True,
                 **scorer_options) -> Iterator[tuple[str, Scorer | None, Composition | None]]:
    """(row name, Scorer, None) of the untuned backbone and each adapter with weights, then (ref, None, Composition)
    of each registered score-level mix, whose sources the caller scores; the adapters are detached before the mixes
    come, so the backbone is left as it was given."""
    mixes = {ref: as_mix(registry.resolve(ref)) for ref in adapters}
    model = None
    try:
        for name, key, model in llm_variants(backbone, registry, [r for r in adapters if mixes[r] is None],
                                             include_untuned):
            yield name, variant_scorer(backbone, registry, name, key, model, **scorer_options), None
    finally:
        if model is not None:
            detach(model)
    for ref, composition in mixes.items():
        if composition is not None:
            yield registry.resolve(ref).ref, None, composition


def mixed_lists(backbone, registry, composition: Composition, lists: Sequence[Sequence[Case]], mode: str = "pyes",
                **scorer_options) -> list[np.ndarray]:
    """A score-level composition over candidate lists: each source scores every list (`Scorer.score_lists`, one
    attach per source), then each list's scores are mixed."""
    sources = {name: scorer.score_lists(lists, mode)
               for name, scorer, _ in variant_rows(backbone, registry, composition.refs, False, **scorer_options)}
    return [mix(np.stack([sources[ref][i] for ref in composition.refs]), composition.weights)
            for i in range(len(lists))]


def mix(component_scores: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Weighted average of per-adapter scores: (k, N) scores and k weights -> N scores."""
    w = np.asarray(weights, dtype=float)
    check_weights(MIX, list(w), len(component_scores))
    return w @ np.asarray(component_scores, dtype=float) / w.sum()


def component_scores(backbone, registry, refs: Sequence[str], cases: Sequence[Case], mode: str = "pyes",
                     one_list: bool = False, **scorer_options) -> np.ndarray:
    """(len(refs), len(cases)) scores, each adapter scored alone (a registered mix: its sources' `mix`); everything is
    detached after use. `one_list`: `cases` are one user's candidates, sharing one history fitted to the prompt cap
    (`Scorer.score_lists`, as every ranking path fits them) rather than each truncated on its own."""
    resolved = {ref: registry.resolve(ref).ref for ref in refs}
    rows: dict[str, np.ndarray] = {}
    for name, scorer, composition in variant_rows(backbone, registry, list(dict.fromkeys(resolved.values())), False,
                                                  **scorer_options):
        if composition is not None:
            rows[name] = mixed_scores(backbone, registry, composition, cases, mode, one_list, **scorer_options)
        else:
            rows[name] = scorer.score_lists([cases], mode)[0] if one_list else scorer.score(cases, mode)
    return np.stack([rows[resolved[r]] for r in refs])


def mixed_scores(backbone, registry, composition: Composition, cases: Sequence[Case], mode: str = "pyes",
                 one_list: bool = False, **scorer_options) -> np.ndarray:
    """Score-level composition: the weighted average of each adapter's score (`one_list` as `component_scores`)."""
    return mix(component_scores(backbone, registry, composition.refs, cases, mode, one_list, **scorer_options),
               composition.weights)
