"""The cross-domain transfer experiment (issue 5): Amazon Arts↔Office, source → target, rows a–f.

Per direction, a seeded subset of target-domain test users is ranked over 1 held-out item + N sampled
negatives (`evaluation.rank_lists`). Rows: (a) the untuned backbone, (b) like-ratio / popularity,
(c) the source adapter (its recipe, reused from the registry when the recipe settings match), (d) few-shot
target adapters (the target recipe with `data.shots` overridden), (e) source + the largest-shot target
adapter composed with CMA-ES weights learned on the SAME target shots (`cat`, `ties_svd` registered as
`composed`; `mix` at score level), (f) the cold slice (`:cold`, target history hidden): untuned, the
target adapter alone, and the router's cold-start decision with the composition of lowest search loss.

Every LLM score is an answer-logit row in the SQLite score cache (same keys as `scoring.Scorer`); the
forwards run through `serve.prefix_cache.PrefixRanker` (one history prefix per user and adapter). The
result is a JSON document; `render` turns it into docs/cross_domain.md and is a pure function of it.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .data.candidates import candidate_cases
from .data.prompts import render_prompt, shared_history
from .data.records import Case
from .errors import AdaptrecError
from .metrics import bootstrap_ci, compute_ranking
from .metrics.bootstrap import BootstrapCI
from .score_cache import ScoreCache

DOMAINS = ("arts", "office")
RANK_METRICS = ("hit@1", "hit@5", "hit@10", "ndcg@10")
METRICS = ("auc",) + RANK_METRICS
PRIMARY = "auc"  # the metric the verdicts compare
COMPOSE_METHODS = ("cat", "ties_svd", "mix")
VERSION = 1
Log = Callable[[str], None]


class TransferError(AdaptrecError):
    """Bad eval-transfer options (direction, shots, methods)."""


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
    from .router.compose import METHODS
    from .router.weights import MAX_SHOTS

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
    from .config import load_recipe

    base, _ = load_recipe(recipe_name)
    sets = []
    if base.backbone.name != cfg.backbone:
        sets.append(f"backbone.name={cfg.backbone}")
    if base.backbone.quantization != cfg.quantization:
        sets.append(f"backbone.quantization={cfg.quantization}")
    sets += list(cfg.overrides)
    if cfg.steps is not None:
        sets.append(f"training.max_steps={cfg.steps}")
    if shots is not None:
        sets += [f"data.shots={shots}", f"name={base.name}-{shots}shot"]
    return sets


def target_shots(recipe_name: str, sets: Sequence[str]) -> tuple[str, list[Case]]:
    """The target recipe's data SPEC and the exact few-shot draw `run_recipe` trains on."""
    from .config import load_recipe
    from .train.recipe import training_cases

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
    from .router.compose import MIX, compose
    from .router.weights import DEFAULT_L1, search_composition

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
    from .train.recipe import train_or_reuse

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
class ListScorer:
    """Answer logits of candidate lists under one adapter (or `BASE`): the score cache first, shared-prefix
    forwards (`PrefixRanker`) for the rest; each user's candidates share one history (`shared_history`)."""

    def __init__(self, bb, registry, cache: ScoreCache, cfg: TransferConfig):
        from .serve.engine import Engine, Limits
        from .serve.prefix_cache import PrefixRanker

        big = 10**9  # the prompts are fitted by `shared_history`, not refused
        self.engine = Engine(bb, registry, template=cfg.template, batch_size=cfg.batch_size, limits=Limits(big, big))
        self.ranker = PrefixRanker(self.engine)
        self.template, self.max_prompt_tokens = cfg.template, cfg.max_prompt_tokens
        self.bb, self.registry, self.cache = bb, registry, cache
        self.fresh = self.cached = 0

    def model_key(self, ref: str) -> str:
        from .adapters.attach import weights_key
        from .serve.engine import BASE

        key = "base" if ref == BASE else weights_key(self.registry.resolve(ref).path)
        return f"{self.bb.score_key}:{key}"

    def logits(self, ref: str, lists: Sequence[Sequence[Case]], desc: str) -> np.ndarray:
        """(users, candidates, 3) answer logits; each user's list is cached as soon as it is scored."""
        model_key, out = self.model_key(ref), []
        for cases in tqdm(lists, desc=desc, unit="user", leave=False):
            shared = shared_history(cases, self.template, self.bb.tokenizer, self.max_prompt_tokens)
            prompts = [render_prompt(c, self.template, self.bb.tokenizer) for c in shared]  # already fitted
            keys = [ScoreCache.key(model_key, p) for p in prompts]
            found = self.cache.get_many(keys)
            if len(found) == len(keys):
                self.cached += len(keys)
                out.append(np.stack([found[k] for k in keys]))
                continue
            rows = self.ranker.logits(ref, prompts)
            self.cache.put_many(dict(zip(keys, rows)))
            self.fresh += len(keys)
            out.append(rows)
        return np.stack(out)

    def scores(self, refs: Sequence[str], weights: Sequence[float], lists, desc: str) -> np.ndarray:
        """(users, candidates) P(yes), a score-level mix when several refs are given."""
        from .router.compose import mix
        from .scoring import to_scores

        parts = [to_scores(self.logits(r, lists, desc).reshape(-1, 3)) for r in refs]
        return mix(np.stack(parts), weights).reshape(len(lists), -1) if len(refs) > 1 else parts[0].reshape(len(lists), -1)


# ---------------------------------------------------------------- metrics
def user_auc(rows: np.ndarray, target_idx: np.ndarray) -> np.ndarray:
    """Per-user AUC of the positive against its negatives: share of negatives scored below it, ties half."""
    pos = rows[np.arange(len(rows)), target_idx][:, None]
    mask = np.ones_like(rows, dtype=bool)
    mask[np.arange(len(rows)), target_idx] = False
    below = ((rows < pos) + 0.5 * (rows == pos)) * mask
    return below.sum(axis=1) / mask.sum(axis=1)


def metrics(rows: np.ndarray, target_idx: np.ndarray, seed: int) -> dict[str, dict]:
    """AUC, HR@1/5/10, NDCG@10 with 95% bootstrap CIs over users."""
    per_user = user_auc(rows, target_idx)
    ci: BootstrapCI = bootstrap_ci(np.mean, per_user, seed=seed)
    out = {"auc": {"value": float(per_user.mean()), "ci_low": ci.low, "ci_high": ci.high, "n": len(per_user)}}
    for name, v in compute_ranking(RANK_METRICS, rows, target_idx, seed=seed).items():
        out[name] = {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high, "n": v.n}
    return out


def _row(role: str, group: str, name: str, rows: np.ndarray, target_idx: np.ndarray, seed: int, **extra) -> dict:
    return {"role": role, "group": group, "name": name, "metrics": metrics(rows, target_idx, seed), **extra}


# ---------------------------------------------------------------- one direction
def _slices(cfg: TransferConfig, target: str):
    """(warm positives, cold positives of the same users, candidate lists, catalogues, popularity)."""
    from .data.spec import load_spec
    from .evaluation import rank_lists

    warm = load_spec(f"amazon:{target}:test", seed=cfg.seed)
    cold = {(c.user_id, c.target_id): c for c in load_spec(f"amazon:{target}:test:cold", seed=cfg.seed).cases
            if c.label == 1 and "negative_of" not in c.meta}
    positives, lists = rank_lists(warm, cfg.users, cfg.seed, cfg.negatives)
    return positives, [cold[(c.user_id, c.target_id)] for c in positives], lists, warm


def _cold_decision(registry, bb, plan: Plan, cold_cases: Sequence[Case]):
    """The router's decision for the cold users: the composition of lowest search loss, the target adapter otherwise."""
    from .router.compose import MIX, Composition
    from .router.policy import route

    best = min(plan.compositions, key=lambda c: c.loss)
    cold = Composition(best.refs, MIX, best.weights) if best.method == MIX else Composition((best.ref,), best.method, (1.0,))
    target = registry.resolve(plan.target_refs[max(plan.target_refs)])
    decisions = [route(registry, bb.fingerprint, c, cold=cold, target=target) for c in cold_cases]
    if any(d.mode != "cold" for d in decisions):
        raise TransferError("a user of the :cold slice was routed as warm; the cold slice must hide target history")
    decision = decisions[0]  # the same adapters for every cold user; only the reason's counts differ
    return best, decision


def evaluate(scorer: ListScorer, registry, cfg: TransferConfig, plan: Plan, log: Log) -> dict:
    """Rows a–f of one direction, with the routing decision."""
    from .baselines import BASELINES
    from .serve.engine import BASE

    source, target = plan.source, plan.target
    log(f"[{source}→{target}] ranking {cfg.users} {target} users × {cfg.negatives + 1} candidates")
    positives, cold_cases, lists, warm = _slices(cfg, target)
    cats = warm.catalogues
    warm_lists = [candidate_cases(lst, c, cats) for lst, c in zip(lists, positives)]
    cold_lists = [candidate_cases(lst, c, cats) for lst, c in zip(lists, cold_cases)]
    idx = np.array([lst.target_index for lst in lists])
    flat = [c for cases in warm_lists for c in cases]
    n, seed = len(lists), cfg.seed

    def llm(refs, weights, slice_lists, what):
        return scorer.scores(refs, weights, slice_lists, f"{source}→{target} {what}")

    rows = [_row("untuned", "a", "backbone (untuned)", llm([BASE], [1.0], warm_lists, "untuned"), idx, seed)]
    rows += [_row(f"baseline:{name}", "b", name, fn(flat, warm.item_popularity).reshape(n, -1), idx, seed)
             for name, fn in BASELINES.items()]
    rows.append(_row("source", "c", f"source {plan.source_ref}", llm([plan.source_ref], [1.0], warm_lists, "source"),
                     idx, seed, adapters=[plan.source_ref]))
    for k, ref in sorted(plan.target_refs.items()):
        rows.append(_row(f"target:{k}", "d", f"target {ref} ({k} shots)", llm([ref], [1.0], warm_lists, f"{k}-shot"),
                         idx, seed, adapters=[ref], shots=k))
    for comp in plan.compositions:
        refs, weights = ((comp.ref,), (1.0,)) if comp.ref else (comp.refs, comp.weights)
        label = f"composed {comp.method} ({comp.ref})" if comp.ref else f"mix of {', '.join(comp.refs)}"
        rows.append(_row(f"composed:{comp.method}", "e", label, llm(refs, weights, warm_lists, comp.method), idx, seed,
                         adapters=list(refs), weights=list(comp.weights), search_loss=comp.loss))
    k = max(plan.target_refs)
    best, decision = _cold_decision(registry, scorer.bb, plan, cold_cases)
    rows.append(_row("cold:untuned", "f", "cold: backbone (untuned)", llm([BASE], [1.0], cold_lists, "cold untuned"),
                     idx, seed))
    rows.append(_row("cold:target", "f", f"cold: target {plan.target_refs[k]} alone",
                     llm([plan.target_refs[k]], [1.0], cold_lists, "cold target"), idx, seed))
    # naive serving: the target adapter with the target-domain history only, which a cold user lacks
    bare = [[replace(c, history=tuple(h for h in c.history if h.domain == target)) for c in cases] for cases in cold_lists]
    rows.append(_row("cold:target-only", "f", f"cold: target {plan.target_refs[k]} alone, target-domain history only",
                     llm([plan.target_refs[k]], [1.0], bare, "cold target-only"), idx, seed))
    routed = [[decision.prompt_case(c) for c in cases] for cases in cold_lists]
    rows.append(_row("cold:routed", "f", f"cold: routed ({', '.join(decision.adapters)})",
                     llm(decision.adapters, decision.weights, routed, "cold routed"), idx, seed,
                     adapters=list(decision.adapters), weights=list(decision.weights)))
    return {"source": source, "target": target, "spec": warm.spec, "cold_spec": f"{warm.spec}:cold", "users": n,
            "shots": k, "best_composition": best.method, "routing": {"reason": decision.reason, "mode": decision.mode},
            "rows": rows}


# ---------------------------------------------------------------- the whole experiment
def run_transfer(cfg: TransferConfig, command: str, log: Log = print) -> dict:
    """Train/reuse, compose and score every direction; returns the JSON document `render` reads."""
    from .backbone import environment_summary, load_backbone
    from .home import adaptrec_home
    from .registry import Registry

    check_config(cfg)
    bb = load_backbone(cfg.backbone, cfg.quantization)
    registry, cache = Registry(), ScoreCache(adaptrec_home() / "score_cache.db")
    plans = [prepare(bb, registry, cache, cfg, s, t, log) for s, t in cfg.directions]
    scorer = ListScorer(bb, registry, cache, cfg)  # after every attach/detach: the engine keeps its PeftModel
    directions = [evaluate(scorer, registry, cfg, plan, log) for plan in plans]
    protocol = {**asdict(cfg), "directions": [list(d) for d in cfg.directions], "environment": environment_summary(),
                "base_model": bb.fingerprint.base_model, "score_key": bb.score_key, "command": command,
                "primary": PRIMARY}
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
        sig = "CIs separated" if all(_separated(a, o) for o in others) else "CIs overlap, not significant"
        return f"**yes** ({PRIMARY} {vs}; {sig})"
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
        out.append(f"The best LLM row beats the best non-LLM baseline: {_beats(best_llm, [best_base])}.")
    return out


def _table(direction: dict) -> list[str]:
    head = "| | row | " + " | ".join(METRICS) + " |"
    lines = [head, "|---|---|" + "---:|" * len(METRICS)]
    for r in direction["rows"]:
        cells = [f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" for m in (r["metrics"][x] for x in METRICS)]
        lines.append(f"| {r['group']} | {r['name']} | " + " | ".join(cells) + " |")
    return lines


def render(doc: dict) -> str:
    """docs/cross_domain.md from the JSON document (pure: the same JSON gives the same page)."""
    p = doc["protocol"]
    env = ", ".join(f"{k} {v}" for k, v in sorted(p["environment"].items()))
    prompts = sum(d["users"] * (p["negatives"] + 1) * sum(len(r.get("adapters", [1])) for r in d["rows"]
                                                         if r["group"] != "b") for d in doc["directions"])
    lines = [
        "# Cross-domain transfer: Amazon Arts ↔ Office", "",
        "Generated by `adaptrec eval-transfer` from its JSON (re-render with `--render-only`); do not edit by hand.", "",
        "## Protocol", "",
        f"* Data: target-domain test users (`amazon:<target>:test`), a seeded subset of {p['users']} (seed {p['seed']}), "
        f"each ranking 1 held-out item + {p['negatives']} sampled negatives (never items the user touched; "
        "seeded per user and target). Cold slice: the same users and lists with the target-domain history hidden (`:cold`).",
        f"* Metrics: AUC = per-user AUC of the held-out item against its {p['negatives']} negatives (ties count half), "
        "averaged over users; HR@1/5/10 and NDCG@10 with ties counted against the target; 95% percentile bootstrap "
        f"CIs over users (seed {p['seed']}). Verdicts compare `{p['primary']}` point estimates and say whether the CIs separate.",
        f"* Adapters: source = the source recipe (`<source>-lora`); few-shot target adapters = the target recipe with "
        f"`data.shots` ∈ {{{', '.join(map(str, p['shots']))}}}, step budget "
        f"{p['steps'] if p['steps'] is not None else 'the recipes’ own'}; compositions of source + the "
        f"{max(p['shots'])}-shot target adapter ({', '.join(p['methods'])}) with CMA-ES weights learned on the same "
        f"{max(p['shots'])} target shots (budget {p['search_budget']} evaluations).",
        f"* Prompts: `{p['template']}` template, capped at {p['max_prompt_tokens']} tokens (oldest history dropped); "
        f"score P(yes). {prompts} scored prompts in all (cached in the score cache).",
        f"* Backbone: {p['base_model']} ({p['quantization']}, score key `{p['score_key']}`); hardware: {env}.",
        f"* Command: `{p['command']}`",
    ]
    for d in doc["directions"]:
        lines += ["", f"## {d['source']} → {d['target']}", "",
                  f"{d['users']} users of `{d['spec']}`; cold routing: {d['routing']['reason']}.", ""]
        lines += _table(d) + [""] + [f"* {v}" for v in verdicts(d)]
    return "\n".join(lines) + "\n"


def command_line(argv: Sequence[str]) -> str:
    return "adaptrec " + shlex.join(list(argv))


def check_rows(doc: dict) -> None:
    """Every direction holds rows a–f (guards a hand-edited or partial JSON before rendering)."""
    for d in doc.get("directions", []):
        roles = {r["role"] for r in d["rows"]}
        need = {"untuned", "source", f"target:{d['shots']}", "cold:routed", "cold:target", f"composed:{d['best_composition']}"}
        if need - roles:
            raise TransferError(f"{d['source']}→{d['target']}: the JSON lacks rows {', '.join(sorted(need - roles))}")

