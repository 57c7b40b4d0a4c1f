"""The cross-domain transfer experiment: Amazon Arts↔Office, source → target, rows a–f.

Per direction, a seeded subset of target-domain test users is ranked over 1 held-out item + N sampled
negatives (`evaluation.rank_lists`). Rows: (a) the untuned backbone, (b) like-ratio / popularity,
(c) the source adapter (its recipe, reused from the registry when the recipe settings match), (d) few-shot
target adapters (the target recipe with `data.shots` overridden), (e) source + the largest-shot target
adapter composed with CMA-ES weights learned on the SAME target shots (`cat`, `ties_svd` registered as
`composed`; `mix` at score level), (f) the cold slice (`:cold`, target history hidden): untuned, the
target adapter alone, and the router's cold-start decision with the composition of lowest search loss.

Every LLM score comes from `Scorer.score_lists` on the shared-prefix path (one history prefix per user
and adapter) through the SQLite score cache. The result is a JSON document; `render` turns it into
docs/cross_domain.md and is a pure function of it.

    python experiments/cross_domain.py --users 200 --negatives 19      # writes the JSON, then the page
    python experiments/cross_domain.py --render-only                   # re-renders the page from the JSON
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from report import banner, cell, scored_before, table, write_results

from adaptrec import scripts
from adaptrec.adapters.attach import adapter_key, attach, bare_model, detach
from adaptrec.adapters.merge import METHODS, MIX, Composition, compose
from adaptrec.atomic import write_text
from adaptrec.backbone import load_backbone
from adaptrec.baselines import BASELINES
from adaptrec.config import load_recipe, step_budget
from adaptrec.data.candidates import candidate_cases
from adaptrec.data.records import Case
from adaptrec.data.spec import load_spec
from adaptrec.errors import AdaptrecError
from adaptrec.evaluation import rank_lists
from adaptrec.metrics import bootstrap_ci, compute_ranking
from adaptrec.metrics.bootstrap import BootstrapCI
from adaptrec.metrics.ranking import user_auc
from adaptrec.registry import Registry
from adaptrec.router.policy import route
from adaptrec.router.weights import DEFAULT_L1, MAX_SHOTS, search_composition
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import SCORING_VERSION, backbone_scorer
from adaptrec.scoring.logits import to_scores
from adaptrec.scoring.variants import mix
from adaptrec.train.recipe import train_or_reuse, training_cases

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_JSON = HERE / "results" / "cross_domain.json"  # the page's source (its banner names this file)
BASE = "__base__"  # the untuned backbone's ref in rows and plans
SCORING_CHANGES = {2: "2026-12-04, exact score-cache keys"}  # scoring version -> when and what changed

DOMAINS = ("arts", "office")
RANK_METRICS = ("hit@1", "hit@5", "hit@10", "ndcg@10")
METRICS = ("auc",) + RANK_METRICS
PRIMARY = "auc"  # the metric the verdicts compare
COMPOSE_METHODS = ("cat", "ties_svd", "mix")
VERSION = 1
Log = Callable[[str], None]


class TransferError(AdaptrecError):
    """Bad options of the experiment (direction, shots, methods)."""


@dataclass(frozen=True)
class TransferConfig:
    directions: tuple[tuple[str, str], ...] = (("arts", "office"), ("office", "arts"))
    users: int = 200
    negatives: int = 19
    shots: tuple[int, ...] = (16, 32)
    steps: int | None = None  # training.max_steps override (None: the recipes' own)
    search_budget: int = 20
    max_prompt_tokens: int = 320
    seed: int = 0
    methods: tuple[str, ...] = COMPOSE_METHODS
    backbone: str = "embedded:smollm2"
    quantization: str = "8bit"
    overrides: tuple[str, ...] = ()  # extra `--set key=value` for every recipe
    batch_size: int = 20
    template: str = "tallrec"


# ---------------------------------------------------------------- options
def parse_directions(text: str) -> tuple[tuple[str, str], ...]:
    """`"arts:office,office:arts"` -> (("arts", "office"), ("office", "arts")); anything else is a TransferError."""
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        src, _, tgt = item.partition(":")
        if src not in DOMAINS or tgt not in DOMAINS or src == tgt:
            raise TransferError(f"--directions {item!r}: expected SOURCE:TARGET with two different domains of "
                                f"{', '.join(DOMAINS)}, e.g. arts:office")
        out.append((src, tgt))
    if not out:
        raise TransferError("--directions: give at least one SOURCE:TARGET, e.g. arts:office")
    return tuple(dict.fromkeys(out))


def check_config(cfg: TransferConfig) -> None:
    """Refuse options the experiment cannot run, before anything is loaded."""
    if not cfg.shots or min(cfg.shots) < 1:
        raise TransferError(f"--shots {cfg.shots}: give positive shot counts, e.g. 16,32")
    if max(cfg.shots) > MAX_SHOTS:
        raise TransferError(f"--shots {max(cfg.shots)}: the weight search learns from the largest shot count, "
                            f"at most {MAX_SHOTS} target cases")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad or not cfg.methods:
        raise TransferError(f"--methods {','.join(cfg.methods)}: expected some of {', '.join(METHODS)}")
    if cfg.users < 2 or cfg.negatives < 1 or cfg.search_budget < 1:
        raise TransferError("--users must be >= 2, --negatives >= 1 and --search-budget >= 1")


# ---------------------------------------------------------------- adapters (train / reuse / compose)
def recipe_overrides(cfg: TransferConfig, recipe_name: str, shots: int | None) -> list[str]:
    """`--set` overrides of a recipe: backbone (when it differs), step budget, shots (+ a matching name)."""
    base, _ = load_recipe(recipe_name)
    sets = []
    if base.backbone.name != cfg.backbone:
        sets.append(f"backbone.name={cfg.backbone}")
    if base.backbone.quantization != cfg.quantization:
        sets.append(f"backbone.quantization={cfg.quantization}")
    sets += list(cfg.overrides)
    if cfg.steps is not None:
        sets += step_budget(cfg.steps, cfg.overrides, base.training.warmup_steps)
    if shots is not None:
        sets += [f"data.shots={shots}", f"name={base.name}-{shots}shot"]
    return sets


def target_shots(recipe_name: str, sets: Sequence[str]) -> tuple[str, list[Case]]:
    """The target recipe's data SPEC and the exact few-shot draw `run_recipe` trains on."""
    recipe, _ = load_recipe(recipe_name, list(sets))
    return recipe.data.train, training_cases(recipe)


def _same_search(record, parents: Sequence[str], method: str, search: dict) -> bool:
    lineage = record.lineage or {}
    old = lineage.get("search") or {}
    keys = ("data", "shots", "budget", "l1", "seed")
    return lineage.get("parents") == list(parents) and lineage.get("method") == method and \
        all(old.get(k) == search[k] for k in keys)


@dataclass
class Composed:
    """One composition row: how it is served (a registered ref, or a score-level mix of refs) and its search loss."""

    method: str
    refs: tuple[str, ...]
    weights: tuple[float, ...]
    loss: float
    ref: str | None = None  # registered `composed` adapter (ΔW methods)


def composition(bb, registry, cache, cfg: TransferConfig, refs: tuple[str, str], target: str,
                data: str, shots: list[Case], method: str, log: Log) -> Composed:
    """Source + target composed by `method`, weights searched on `shots`; ΔW ones registered (or reused)."""
    search = {"data": data, "shots": len(shots), "budget": cfg.search_budget, "l1": DEFAULT_L1, "seed": cfg.seed}
    name = f"{refs[0].split(':')[0]}+{refs[1].split(':')[0]}-{method}".replace("_", "-")
    if method != MIX:
        for record in reversed(registry.list(name=name)):
            if record.kind == "composed" and _same_search(record, refs, method, search) \
                    and bb.fingerprint.match(record.fingerprint) == "exact":
                log(f"  reusing {record.ref} ({method}, same search)")
                lineage = record.lineage
                return Composed(method, refs, tuple(lineage["weights"]), lineage["search"]["log_loss"], record.ref)
    log(f"  searching {method} weights ({cfg.search_budget} evaluations on {len(shots)} {target} shots)")
    comp, result = search_composition(bb, registry, refs, method, shots, budget=cfg.search_budget, seed=cfg.seed,
                                      data=data, template=cfg.template, max_prompt_tokens=cfg.max_prompt_tokens,
                                      batch_size=cfg.batch_size, cache=cache)
    if method == MIX:
        return Composed(method, refs, comp.weights, round(result.loss, 6))
    record = compose(bb, registry, comp, name=name, domain=target)
    log(f"  registered {record.ref}")
    return Composed(method, refs, comp.weights, round(result.loss, 6), record.ref)


@dataclass
class Plan:
    """The adapters of one direction, ready to score."""

    source: str
    target: str
    source_ref: str
    target_refs: dict[int, str]  # shots -> ref
    compositions: list[Composed]


def prepare(bb, registry, cache, cfg: TransferConfig, source: str, target: str, log: Log) -> Plan:
    """Train or reuse (c) and (d), then search and register (e)."""
    log(f"[{source}→{target}] adapters")
    fp = bb.fingerprint
    src = train_or_reuse(registry, fp, f"{source}-lora", recipe_overrides(cfg, f"{source}-lora", None), log).ref
    tgt = {k: train_or_reuse(registry, fp, f"{target}-lora", recipe_overrides(cfg, f"{target}-lora", k), log).ref
           for k in cfg.shots}
    k = max(cfg.shots)
    data, shots = target_shots(f"{target}-lora", recipe_overrides(cfg, f"{target}-lora", k))
    comps = [composition(bb, registry, cache, cfg, (src, tgt[k]), target, data, shots, m, log) for m in cfg.methods]
    return Plan(source, target, src, tgt, comps)


# ---------------------------------------------------------------- scoring candidate lists
class ListScores:
    """P(yes) of candidate lists under registered adapters (or `BASE`), through `Scorer.score_lists` on the
    shared-prefix path with the score cache; each user's candidates share one history."""

    def __init__(self, bb, registry, cache: ScoreCache, cfg: TransferConfig):
        self.bb, self.registry, self.cache, self.cfg = bb, registry, cache, cfg
        self.fresh = self.cached = 0

    def logits(self, ref: str, lists: Sequence[Sequence[Case]]) -> np.ndarray:
        """(users, candidates, 3) answer logits; each user's list is cached as soon as it is scored."""
        if ref == BASE:
            return self._run(bare_model(self.bb), "base", lists)
        model, (record,) = attach(self.bb, self.registry, [ref])
        try:
            return self._run(model, adapter_key(record.path), lists)
        finally:
            detach(model)

    def _run(self, model, key: str, lists: Sequence[Sequence[Case]]) -> np.ndarray:
        cfg = self.cfg
        scorer = backbone_scorer(self.bb, model, key, template=cfg.template, max_prompt_tokens=cfg.max_prompt_tokens,
                                 batch_size=cfg.batch_size, cache=self.cache)
        rows = np.stack(scorer.list_logits(lists, shared_prefix=True))
        self.fresh, self.cached = self.fresh + scorer.fresh, self.cached + scorer.cached
        return rows

    def scores(self, refs: Sequence[str], weights: Sequence[float], lists) -> np.ndarray:
        """(users, candidates) P(yes), a score-level mix when several refs are given."""
        parts = [to_scores(self.logits(r, lists).reshape(-1, 3)) for r in refs]
        return mix(np.stack(parts), weights).reshape(len(lists), -1) if len(refs) > 1 else parts[0].reshape(len(lists), -1)


# ---------------------------------------------------------------- metrics
def metrics(rows: np.ndarray, target_idx: np.ndarray, seed: int, users: Sequence[str]) -> dict[str, dict]:
    """AUC, HR@1/5/10, NDCG@10 with 95% bootstrap CIs resampling `users` (a user's lists move together)."""
    per_user = user_auc(rows, target_idx)
    ci: BootstrapCI = bootstrap_ci(np.mean, per_user, seed=seed, clusters=users)
    out = {"auc": {"value": float(per_user.mean()), "ci_low": ci.low, "ci_high": ci.high, "n": len(per_user)}}
    for name, v in compute_ranking(RANK_METRICS, rows, target_idx, seed=seed, clusters=users).items():
        out[name] = {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high, "n": v.n}
    return out


def _row(role: str, group: str, name: str, rows: np.ndarray, target_idx: np.ndarray, seed: int, users: Sequence[str],
         **extra) -> dict:
    return {"role": role, "group": group, "name": name, "metrics": metrics(rows, target_idx, seed, users), **extra}


# ---------------------------------------------------------------- one direction
def _slices(cfg: TransferConfig, target: str):
    """(warm positives, cold positives of the same users, candidate lists, catalogues, popularity)."""
    warm = load_spec(f"amazon:{target}:test", seed=cfg.seed)
    cold = {(c.user_id, c.target_id): c for c in load_spec(f"amazon:{target}:test:cold", seed=cfg.seed).cases
            if c.held_out_positive}
    positives, lists = rank_lists(warm, cfg.users, cfg.seed, cfg.negatives)
    return positives, [cold[(c.user_id, c.target_id)] for c in positives], lists, warm


def _cold_decision(registry, bb, plan: Plan, cold_cases: Sequence[Case]):
    """The router's decision for the cold users: the composition of lowest search loss, the target adapter otherwise."""
    best = min(plan.compositions, key=lambda c: c.loss)
    cold = Composition(best.refs, MIX, best.weights) if best.method == MIX else Composition((best.ref,), best.method, (1.0,))
    target = registry.resolve(plan.target_refs[max(plan.target_refs)])
    decisions = [route(registry, bb.fingerprint, c, cold=cold, target=target) for c in cold_cases]
    if any(d.mode != "cold" for d in decisions):
        raise TransferError("a user of the :cold slice was routed as warm; the cold slice must hide target history")
    decision = decisions[0]  # the same adapters for every cold user; only the reason's counts differ
    return best, decision


def evaluate(scorer: ListScores, registry, cfg: TransferConfig, plan: Plan, log: Log) -> dict:
    """Rows a–f of one direction, with the routing decision."""
    source, target = plan.source, plan.target
    log(f"[{source}→{target}] ranking {cfg.users} {target} users × {cfg.negatives + 1} candidates")
    positives, cold_cases, lists, warm = _slices(cfg, target)
    cats = warm.catalogues
    warm_lists = [candidate_cases(lst, c, cats) for lst, c in zip(lists, positives)]
    cold_lists = [candidate_cases(lst, c, cats) for lst, c in zip(lists, cold_cases)]
    idx = np.array([lst.target_index for lst in lists])
    flat = [c for cases in warm_lists for c in cases]
    n, seed, users = len(lists), cfg.seed, [lst.user_id for lst in lists]

    def llm(refs, weights, slice_lists, what):
        log(f"  scoring {what}")
        return scorer.scores(refs, weights, slice_lists)

    rows = [_row("untuned", "a", "backbone (untuned)", llm([BASE], [1.0], warm_lists, "untuned"), idx, seed, users)]
    rows += [_row(f"baseline:{name}", "b", name, fn(flat, warm.item_popularity).reshape(n, -1), idx, seed, users)
             for name, fn in BASELINES.items()]
    rows.append(_row("source", "c", f"source {plan.source_ref}", llm([plan.source_ref], [1.0], warm_lists, "source"),
                     idx, seed, users, adapters=[plan.source_ref]))
    for k, ref in sorted(plan.target_refs.items()):
        rows.append(_row(f"target:{k}", "d", f"target {ref} ({k} shots)", llm([ref], [1.0], warm_lists, f"{k}-shot"),
                         idx, seed, users, adapters=[ref], shots=k))
    for comp in plan.compositions:
        refs, weights = ((comp.ref,), (1.0,)) if comp.ref else (comp.refs, comp.weights)
        label = f"composed {comp.method} ({comp.ref})" if comp.ref else f"mix of {', '.join(comp.refs)}"
        rows.append(_row(f"composed:{comp.method}", "e", label, llm(refs, weights, warm_lists, comp.method), idx,
                         seed, users, adapters=list(refs), weights=list(comp.weights), search_loss=comp.loss))
    k = max(plan.target_refs)
    best, decision = _cold_decision(registry, scorer.bb, plan, cold_cases)
    rows.append(_row("cold:untuned", "f", "cold: backbone (untuned)", llm([BASE], [1.0], cold_lists, "cold untuned"),
                     idx, seed, users))
    rows.append(_row("cold:target", "f", f"cold: target {plan.target_refs[k]} alone",
                     llm([plan.target_refs[k]], [1.0], cold_lists, "cold target"), idx, seed, users))
    # naive serving: the target adapter with the target-domain history only, which a cold user lacks
    bare = [[replace(c, history=tuple(h for h in c.history if h.domain == target)) for c in cases] for cases in cold_lists]
    rows.append(_row("cold:target-only", "f", f"cold: target {plan.target_refs[k]} alone, target-domain history only",
                     llm([plan.target_refs[k]], [1.0], bare, "cold target-only"), idx, seed, users))
    routed = [[decision.prompt_case(c) for c in cases] for cases in cold_lists]
    rows.append(_row("cold:routed", "f", f"cold: routed ({', '.join(decision.adapters)})",
                     llm(decision.adapters, decision.weights, routed, "cold routed"), idx, seed, users,
                     adapters=list(decision.adapters), weights=list(decision.weights)))
    return {"source": source, "target": target, "spec": warm.spec, "cold_spec": f"{warm.spec}:cold",
            "users": len(set(users)), "lists": n, "shots": k, "best_composition": best.method,
            "routing": {"reason": decision.reason, "mode": decision.mode},
            "rows": rows}


# ---------------------------------------------------------------- the whole experiment
def run_transfer(cfg: TransferConfig, command: str, log: Log = print) -> dict:
    """Train/reuse, compose and score every direction; returns the JSON document `render` reads."""
    check_config(cfg)
    bb = load_backbone(cfg.backbone, cfg.quantization)
    registry, cache = Registry(), ScoreCache.default()
    plans = [prepare(bb, registry, cache, cfg, s, t, log) for s, t in cfg.directions]
    scorer = ListScores(bb, registry, cache, cfg)
    directions = [evaluate(scorer, registry, cfg, plan, log) for plan in plans]
    protocol = {**asdict(cfg), "directions": [list(d) for d in cfg.directions], "environment": scripts.machine(),
                "base_model": bb.fingerprint.base_model, "score_key": bb.score_key, "command": command,
                "primary": PRIMARY, "scoring_version": SCORING_VERSION, "backbone_environment": bb.environment()}
    return {"version": VERSION, "protocol": protocol, "directions": directions,
            "prompts": {"fresh": scorer.fresh, "cached": scorer.cached}}


# ---------------------------------------------------------------- verdicts and rendering
def _value(row: dict, metric: str = PRIMARY) -> float:
    return row["metrics"][metric]["value"]


def _separated(a: dict, b: dict, metric: str = PRIMARY) -> bool:
    """a's 95% CI lies wholly above b's (a conservative, unpaired check)."""
    return a["metrics"][metric]["ci_low"] > b["metrics"][metric]["ci_high"]


def _beats(a: dict, others: Sequence[dict]) -> str:
    vs = "; ".join(f"{_value(a):.3f} vs {_value(o):.3f} ({o['name']})" for o in others)
    if all(_value(a) > _value(o) for o in others):
        if all(_separated(a, o) for o in others):
            return f"**yes** ({PRIMARY} {vs}; CIs separated)"
        return f"**not resolved** ({PRIMARY} {vs}; higher point estimate, CIs overlap)"
    return f"**no** ({PRIMARY} {vs})"


def verdicts(direction: dict) -> list[str]:
    """Statements computed from one direction's rows: composition vs single adapters, cold routing vs target."""
    rows = {r["role"]: r for r in direction["rows"]}
    k = direction["shots"]
    best = rows[f"composed:{direction['best_composition']}"]
    singles = [rows["source"], rows[f"target:{k}"]]
    out = [f"Composition ({direction['best_composition']}, the lowest search loss) beats both the source adapter "
           f"alone and the {k}-shot target adapter at equal target data: {_beats(best, singles)}."]
    for role in sorted(r for r in rows if r.startswith("composed:") and r != f"composed:{direction['best_composition']}"):
        out.append(f"Composition {role.split(':')[1]}: {_beats(rows[role], singles)}.")
    naive = [rows[r] for r in ("cold:target", "cold:target-only") if r in rows]
    out.append(f"Cold-start routing beats the {k}-shot target adapter alone on cold users (same prompt; and "
               f"the prompt of target-domain history only): {_beats(rows['cold:routed'], naive)}.")
    baselines = [r for role, r in rows.items() if role.startswith("baseline:")]
    llms = [r for r in direction["rows"] if r["group"] in ("a", "c", "d", "e") and not r["role"].startswith("baseline:")]
    if baselines and llms:
        best_llm, best_base = max(llms, key=_value), max(baselines, key=_value)
        out.append(f"The LLM row with the best test AUC ({best_llm['name']}, picked on test among {len(llms)}, which "
                   f"favours the LLM side) beats the best non-LLM baseline: {_beats(best_llm, [best_base])}.")
    return out


def _table(direction: dict) -> list[str]:
    rows = [[r["group"], r["name"], *(cell(r["metrics"][m]) for m in METRICS)] for r in direction["rows"]]
    return table(["", "row", *METRICS], "ll" + "r" * len(METRICS), rows)


def stale_note(protocol: dict) -> list[str]:
    """A warning paragraph when the JSON was scored by older scoring code than this checkout's."""
    version = protocol.get("scoring_version", 1)
    if version >= SCORING_VERSION:
        return []
    return [f"**Stale (since {SCORING_CHANGES[SCORING_VERSION]}):** these scores were cached under scoring version "
            f"{version}, whose cache keys left out the scoring path, the adapter config and the backbone's device, dtype "
            "and tokenizer; the full-prompt and shared-prefix paths could overwrite each other's rows. Re-run the "
            "experiment to replace the numbers below.", ""]


def mix_stale_note(doc: dict) -> list[str]:
    """A warning paragraph when a mix's weights came from the search that charged for their scale (they do not sum
    to 1: today's search has no penalty and stores shares)."""
    old = [r["name"] for d in doc["directions"] for r in d["rows"]
           if r["role"] == "composed:mix" and abs(sum(r["weights"]) - 1) > 1e-3]
    if not old:
        return []
    return [f"**Stale:** the weights of {', '.join(old)} were searched with an L1 penalty on their size, which a "
            "score-level mix ignores (only their ratios score), so the search could keep a worse ratio; the search "
            "no longer charges for it (docs/router.md). Re-run the experiment to replace those rows.", ""]


def render(doc: dict) -> str:
    """docs/cross_domain.md from the JSON document (pure: the same JSON gives the same page)."""
    p = doc["protocol"]
    built = p.get("backbone_environment")  # the backbone's backend, dtype, device and versions (later runs)
    env = ", ".join(f"{k} {v}" for k, v in sorted({**p["environment"], **(built or {})}.items()))
    env += "" if built else "; its int8 backend, dtype, device and package versions were not recorded"
    prompts = sum(d.get("lists", d["users"]) * (p["negatives"] + 1) * sum(len(r.get("adapters", [1])) for r in d["rows"]
                                                         if r["group"] != "b") for d in doc["directions"])
    lines = [
        "# Cross-domain transfer: Amazon Arts ↔ Office", "",
        banner("python experiments/cross_domain.py --render-only", [RESULTS_JSON]), "",
        *stale_note(p),
        *mix_stale_note(doc),
        *scored_before(doc, RESULTS_JSON),
        "![Heat map of every row by metric per direction, against the untuned backbone]"
        "(figures/cross_domain_heatmap.png)", "",
        "## Protocol", "",
        f"* Data: target-domain test users (`amazon:<target>:test`), a seeded subset of {p['users']} held-out items "
        f"(seed {p['seed']}; a user with two targets in the domain may give two), "
        f"each ranked with {p['negatives']} sampled negatives (never items the user touched; "
        "seeded per user and target). Cold slice: the same users and lists with the target-domain history hidden (`:cold`).",
        f"* Metrics: AUC = per-user AUC of the held-out item against its {p['negatives']} negatives (ties count half), "
        "averaged over the lists; HR@1/5/10 and NDCG@10 with ties counted against the target; 95% percentile "
        f"bootstrap CIs (seed {p['seed']}) " + ("over users (a user's lists move together)"
                                               if all("lists" in d for d in doc["directions"]) else
                                               "over the lists (this run did not cluster a user's two lists)")
        + f". A verdict is yes only when the `{p['primary']}` CIs separate (unpaired, conservative); a higher point "
        "estimate with overlapping CIs is not resolved. The compositions and the routing are several comparisons "
        "at 95% each, not corrected for their number.",
        f"* Adapters: source = the source recipe (`<source>-lora`); few-shot target adapters = the target recipe with "
        f"`data.shots` ∈ {{{', '.join(map(str, p['shots']))}}}, step budget "
        f"{p['steps'] if p['steps'] is not None else 'the recipes’ own'}; compositions of source + the "
        f"{max(p['shots'])}-shot target adapter ({', '.join(p['methods'])}) with CMA-ES weights learned on the same "
        f"{max(p['shots'])} target shots (budget {p['search_budget']} evaluations).",
        f"* Prompts: `{p['template']}` template, capped at {p['max_prompt_tokens']} tokens (oldest history dropped); "
        f"score P(yes). {prompts} scored prompts in all (cached in the score cache).",
        f"* Backbone: {p['base_model']} ({p['quantization']}, score key `{p['score_key']}`); hardware: {env}.",
        f"* Command: {_command(p['command'])}",
    ]
    for d in doc["directions"]:
        lines += ["", f"## {d['source']} → {d['target']}", "",
                  (f"{d['lists']} held-out items of {d['users']} users" if "lists" in d else
                   f"{d['users']} held-out items") + f" of `{d['spec']}`; cold routing: {d['routing']['reason']}.", ""]
        lines += _table(d) + [""] + [f"* {v}" for v in verdicts(d)]
    return "\n".join(lines) + "\n"


RETIRED_COMMAND = "adaptrec eval-transfer "  # this experiment's former CLI command, which took the same options


def _command(command: str) -> str:
    """The recorded command, and the one that runs it today where it names the retired CLI command."""
    if command.startswith(RETIRED_COMMAND):
        return f"`{command}` as run; today `python experiments/cross_domain.py {command.removeprefix(RETIRED_COMMAND)}`"
    return f"`{command}`"


def command_line(argv: Sequence[str]) -> str:
    return "python experiments/cross_domain.py " + shlex.join(list(argv))


def check_rows(doc: dict) -> None:
    """Every direction holds rows a–f (guards a hand-edited or partial JSON before rendering)."""
    for d in doc.get("directions", []):
        roles = {r["role"] for r in d["rows"]}
        need = {"untuned", "source", f"target:{d['shots']}", "cold:routed", "cold:target", f"composed:{d['best_composition']}"}
        if need - roles:
            raise TransferError(f"{d['source']}→{d['target']}: the JSON lacks rows {', '.join(sorted(need - roles))}")


# ---------------------------------------------------------------- command line
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--directions", default="arts:office,office:arts", help="SOURCE:TARGET pairs, comma-separated")
    ap.add_argument("--users", type=scripts.positive_int, default=200, help="seeded subset of target-domain test users")
    ap.add_argument("--negatives", type=scripts.positive_int, default=19, help="sampled negatives per held-out item")
    ap.add_argument("--shots", default="16,32", help="few-shot target adapters; the largest (<= 32) feeds the weight search")
    ap.add_argument("--steps", type=scripts.positive_int, default=None, help="training.max_steps of every trained adapter (default: the recipes')")
    ap.add_argument("--search-budget", type=scripts.positive_int, default=20, help="CMA-ES loss evaluations per composition")
    ap.add_argument("--methods", default="cat,ties_svd,mix", help="composition methods")
    ap.add_argument("--max-prompt-tokens", type=scripts.positive_int, default=320, help="prompts drop their oldest history beyond this")
    ap.add_argument("--seed", type=int, default=0,
                    help="the test subset's, negatives', weight search's and bootstrap's seed; adapters train with their "
                         "recipes' seeds (--set data.seed=N --set training.seed=N changes those)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override key=value (repeatable)")
    ap.add_argument("--batch-size", type=scripts.positive_int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "cross_domain.md", help="the rendered report")
    ap.add_argument("--json-out", type=Path, default=RESULTS_JSON)
    ap.add_argument("--render-only", action="store_true", help="re-render --out from --json-out; score nothing")
    ap.add_argument("--backbone", default="embedded:smollm2")
    ap.add_argument("-q", "--quantization", default="8bit")
    return ap.parse_args(list(argv))


def config_from(args: argparse.Namespace) -> TransferConfig:
    """The experiment's settings from parsed options, refused (TransferError) before anything loads."""
    try:
        shots = tuple(int(x) for x in args.shots.split(","))
    except ValueError:
        raise TransferError(f"--shots {args.shots!r}: expected comma-separated integers, e.g. 16,32") from None
    cfg = TransferConfig(parse_directions(args.directions), args.users, args.negatives, shots, args.steps,
                         args.search_budget, args.max_prompt_tokens, args.seed,
                         tuple(m.strip() for m in args.methods.split(",") if m.strip()), args.backbone,
                         args.quantization, tuple(args.sets), args.batch_size)
    check_config(cfg)
    return cfg


def main(argv: Sequence[str] | None = None) -> None:
    """Run (or re-render) the experiment; a bad option is one `error:` line and exit status 2 (`scripts.run`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.render_only:
        if not args.json_out.is_file():
            raise TransferError(f"--render-only: no {args.json_out}; run without it first")
        doc = json.loads(args.json_out.read_text())
    else:
        write_results(args.json_out, run_transfer(config_from(args), command_line(argv)))
        doc = json.loads(args.json_out.read_text())  # with the provenance the page reads (the commit it was scored at)
    check_rows(doc)
    write_text(args.out, render(doc))
    print(f"re-rendered {args.out} from {args.json_out}" if args.render_only else f"wrote {args.out} and {args.json_out}")


if __name__ == "__main__":
    scripts.run(main)
