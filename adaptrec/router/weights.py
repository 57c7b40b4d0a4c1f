"""LoraHub-style learned composition weights: gradient-free search (CMA-ES, `cma`) on a few labelled target cases.

The objective is the target log-loss of the composed scores plus `l1` · Σ|wᵢ| (LoraHub's kind of penalty,
which keeps weights small and sparse; LoraHub's own divides the sum by the number of sources). `budget` counts
objective evaluations (LoraHub's inference steps): each ΔW evaluation merges the sources with peft and scores the
k cases; a score-level mix scores each source once and then searches in numpy. Bounds: [-1.5, 1.5] for ΔW
merges (LoraHub's), [0, 1] for mixes (a weighted average needs non-negative weights; only their ratios matter).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from adaptrec.adapters.merge import (
    MIX,
    Composition,
    CompositionError,
    attached_sources,
    check_merge_sources,
    compose,
    merge,
    parse_weights,
    refuse_nested_mix,
)
from adaptrec.data.records import Case
from adaptrec.data.sampling import few_shot
from adaptrec.data.spec import load_spec, spec_file, split_slice
from adaptrec.errors import option
from adaptrec.metrics.classification import log_loss
from adaptrec.scoring.core import backbone_scorer
from adaptrec.scoring.variants import component_scores, mix, sources_prompt

from .sources import resolve_sources

DEFAULT_BUDGET = 20
DEFAULT_L1 = 0.05
MAX_SHOTS = 32
MERGE_BOUNDS = (-1.5, 1.5)
MIX_BOUNDS = (0.0, 1.0)
_SEARCH_ADAPTER = "adaptrec_weight_search"


@dataclass
class SearchResult:
    """The best weights seen, their target log-loss (without the penalty) and every evaluation."""

    weights: tuple[float, ...]
    loss: float
    objective: float
    trace: list[tuple[tuple[float, ...], float]] = field(default_factory=list)  # (weights, objective)

    @property
    def evaluations(self) -> int:
        return len(self.trace)


def search_weights(loss: Callable[[np.ndarray], float], n: int, *, budget: int = DEFAULT_BUDGET, l1: float = DEFAULT_L1,
                   seed: int = 0, bounds: tuple[float, float] = MERGE_BOUNDS) -> SearchResult:
    """Minimise loss(w) + l1·Σ|w| over w in `bounds`ⁿ with at most `budget` evaluations; seeded and reproducible.

    Equal weights 1/n are evaluated first, then CMA-ES generations while the
    budget allows a whole one; leftover evaluations go to one partial generation.
    """
    _check_size(n, budget)
    with warnings.catch_warnings():  # cma warns at import that matplotlib (plots only) is missing
        warnings.simplefilter("ignore")
        import cma

    lo, hi = bounds
    start = np.clip(np.full(n, 1.0 / n), lo, hi)
    trace: list[tuple[tuple[float, ...], float, float]] = []

    def evaluate(w: np.ndarray) -> float:
        value = float(loss(w))
        trace.append((tuple(float(x) for x in w), value, value + l1 * float(np.abs(w).sum())))
        return trace[-1][2]

    evaluate(start)
    rng = np.random.default_rng(seed)
    popsize = max(3, min(4 + int(3 * np.log(n)), budget - 1))
    es = cma.CMAEvolutionStrategy(start, (hi - lo) / 4, {
        "bounds": [lo, hi], "popsize": popsize, "seed": float("nan"), "verbose": -9,
        "randn": lambda *shape: rng.standard_normal(shape),  # no global numpy seeding
    })
    while len(trace) + popsize <= budget:
        xs = es.ask()
        es.tell(xs, [evaluate(np.asarray(x)) for x in xs])
    for x in es.ask()[: budget - len(trace)]:
        evaluate(np.asarray(x))
    best = min(trace, key=lambda t: t[2])
    return SearchResult(best[0], best[1], best[2], [(w, obj) for w, _, obj in trace])


def mix_loss(scores: np.ndarray, labels: Sequence[int]) -> Callable[[np.ndarray], float]:
    """Log-loss of the score-level mix of fixed per-adapter scores (k, N); all-zero weights count as equal ones."""
    y = np.asarray(labels)

    def loss(w: np.ndarray) -> float:
        w = np.clip(w, 0, None)
        return log_loss(y, mix(scores, w if w.sum() > 0 else np.ones_like(w)))

    return loss


def merge_loss(backbone, model, names: Sequence[str], base: Composition, cases: Sequence[Case],
               **scorer_options) -> Callable[[np.ndarray], float]:
    """Log-loss of the ΔW merge of the attached `names` with weights w (merged, scored, then dropped)."""

    labels = np.array([c.label for c in cases])
    options = {"progress": False, **scorer_options, "cache": None}  # merged weights change at every evaluation

    def loss(w: np.ndarray) -> float:
        comp = Composition(base.refs, base.method, tuple(w), base.svd_rank, base.density, base.seed)
        merge(model, names, comp, _SEARCH_ADAPTER)
        try:
            model.set_adapter(_SEARCH_ADAPTER)
            return log_loss(labels, backbone_scorer(backbone, model, _SEARCH_ADAPTER, **options).score(cases))
        finally:
            model.delete_adapter(_SEARCH_ADAPTER)

    return loss


def search_composition(backbone, registry, refs: Sequence[str], method: str, cases: Sequence[Case], *,
                       budget: int = DEFAULT_BUDGET, l1: float = DEFAULT_L1, seed: int = 0, svd_rank: int | None = None,
                       density: float | None = None, data: str | None = None,
                       **scorer_options) -> tuple[Composition, SearchResult]:
    """Learn the weights of `refs` combined by `method` from k <= 32 labelled target cases.

    Returns the Composition (its lineage records the search: data, shots, budget, l1, seed, loss)
    and the search result.
    """
    if not 1 <= len(cases) <= MAX_SHOTS or any(c.label is None for c in cases):
        raise CompositionError(f"weight search takes 1..{MAX_SHOTS} labelled target cases, got {len(cases)}")
    labels = [c.label for c in cases]
    base = Composition(tuple(refs), method, (1.0,) * len(refs), svd_rank, density, seed)
    if method == MIX:  # its scores depend on the weights' ratios only: a penalty on their size would pick the scale
        l1 = 0.0
        scores = component_scores(backbone, registry, refs, cases, **{"progress": False, **scorer_options})
        result = search_weights(mix_loss(scores, labels), len(refs), budget=budget, l1=l1, seed=seed, bounds=MIX_BOUNDS)
        w = np.clip(result.weights, 0, None)  # stored as shares, as `mix_loss` reads them (all zero: equal ones)
        w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
        result = replace(result, weights=tuple(float(x) for x in w))
    else:
        with attached_sources(backbone, registry, refs) as (model, _, names):
            loss = merge_loss(backbone, model, names, base, cases, **scorer_options)
            result = search_weights(loss, len(refs), budget=budget, l1=l1, seed=seed, bounds=MERGE_BOUNDS)
    search = {"data": data, "shots": len(cases), "budget": budget, "l1": l1, "seed": seed,
              "log_loss": round(result.loss, 6), "evaluations": result.evaluations}
    weights = tuple(round(w, 6) for w in result.weights)
    extra = {"search": search, "workdir": str(Path.cwd())}  # a relative `data` resolves there, for the gate
    return Composition(base.refs, method, weights, svd_rank, density, seed, extra=extra), result


@dataclass(frozen=True)
class ComposeResult:
    record: object  # the registered AdapterRecord
    composition: Composition
    search: SearchResult | None = None  # the weight search, when weights were learned
    shots: int = 0  # labelled target cases the search used


def _names_a_test_split(spec: str) -> bool:
    """Whether `spec` (slice aside) names a test split: a `:test` part, or a TALLRec-style file named test.json (a
    log named test.jsonl has its own parts: `test.jsonl:loo:train` is training data)."""
    base = split_slice(spec)[0]
    named = spec_file(base)  # a file's path may hold ':' (`runs/10:00/test.json`)
    if named is None:
        return "test" in base.split(":")
    path, rest = named
    return rest.endswith(":test") if rest else Path(path).name == "test.json"


def _check_size(n: int, budget: int) -> None:
    if n < 2:
        raise CompositionError("weight search needs at least two adapters")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise CompositionError(f"{option('budget', budget)}: give a whole number of evaluations, at least one")


def _check_search(refs: Sequence[str], method: str, l1: float, budget: int) -> None:
    """What the weight search would refuse only after the backbone loaded and every case was scored."""
    _check_size(len(refs), budget)
    if method != MIX and not (isinstance(l1, (int, float)) and math.isfinite(l1) and l1 >= 0):  # NaN: all NaN
        raise CompositionError(f"{option('l1', l1)}: expected a finite penalty of at least 0")


def search_and_compose(load: Callable[[], object], registry, sources: str | Sequence[str], method: str, *, name: str,
                       domain: str | None = None, weights: str | Sequence[float] | None = None,
                       search_data: str | None = None, shots: int = MAX_SHOTS, budget: int = DEFAULT_BUDGET,
                       l1: float = DEFAULT_L1, seed: int = 0, svd_rank: int | None = None,
                       density: float | None = None) -> ComposeResult:
    """Compose `sources` (refs, or domains: their promoted adapter) with given weights, or with weights learned on
    `shots` labelled cases of `search_data`, and register the result under `name` for `domain` (default: the last
    source's). `load` returns the backbone; it is called only once every input is checked (names, weights, method,
    density, shots, the data and its split), so a mistake costs no model load."""
    if search_data is not None and _names_a_test_split(search_data):
        raise CompositionError(f"{option('search_data', search_data, flag='--data')}: the weight search selects on "
                               "its cases; give a train or valid split, and keep the test split for the evaluation")
    refs = resolve_sources(registry, sources)
    records = [registry.resolve(r) for r in refs]
    Composition(refs, method, (1.0,) * len(refs), svd_rank, density, seed)  # method, rank and density, checked now
    if method == MIX:  # before the backbone loads, not after
        refuse_nested_mix(records)
    else:
        check_merge_sources(records, method)
    domain = domain or records[-1].domain
    if not name:
        raise CompositionError("compose: pass a name for the composed adapter's registry entry")
    # the search scores, and the composition is served, in the prompt its sources trained with
    prompt = sources_prompt(records, remedy="a composition reads one prompt: compose adapters of one template")
    if search_data is None:
        parsed = parse_weights(weights, len(refs)) if weights is None or isinstance(weights, str) else tuple(weights)
        composition, result, cases = Composition(refs, method, parsed, svd_rank, density, seed), None, []
        backbone = load()
    else:
        if weights is not None:
            raise CompositionError(f"compose: {option('weights')} and a weight search "
                                   f"({option('search_data', flag='--search')}) exclude each other")
        if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS:
            raise CompositionError(f"{option('shots', shots)}: the weight search takes 1..{MAX_SHOTS} labelled target "
                                   "cases")
        _check_search(refs, method, l1, budget)
        labelled = [c for c in load_spec(search_data, seed=seed).cases if c.label is not None]
        cases = few_shot(labelled, shots, seed)
        backbone = load()
        composition, result = search_composition(backbone, registry, refs, method, cases, budget=budget, l1=l1,
                                                 seed=seed, svd_rank=svd_rank, density=density, data=search_data,
                                                 **prompt)
    if prompt:
        composition = replace(composition, extra={**composition.extra, "prompt": prompt})
    record = compose(backbone, registry, composition, name=name, domain=domain)
    return ComposeResult(record, composition, result, len(cases))
