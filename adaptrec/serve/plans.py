"""One scoring request from body to answer: check sizes, plan (route, render, tokenize), run, mix.

The app runs `plan` on its preparation thread and `Plan.run` (or its rows, merged) on the forward
thread; `answer_directly` is the same work in-process, one request at a time, the baseline of
`bench/serve_load.py`. Which path a plan's forward takes: several targets under LoRA-type adapters
share their history prefix (`Engine.shared_prefix_logits`, as `/v1/recommend` always does); one
target, or a prefix-tuned adapter, runs full prompts (`Engine.logits`), mergeable with other requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from adaptrec.adapters.attach import COLLAB_TYPE, peft_type
from adaptrec.errors import option
from adaptrec.router.policy import Decision, route, serving, usable
from adaptrec.scoring.logits import to_scores
from adaptrec.scoring.variants import mix

from .engine import AdapterLoadFailed, Engine, ServeError, finite
from .envelope import scrub
from .explore import Slate
from .schemas import ScoreRequest, Target, UserRequest, id_of, text_of


class Forbidden(ServeError):
    status = 403


def check_sizes(engine: Engine, req: UserRequest, targets: list[str | Target]) -> None:
    """Every size limit but the token count (`LimitExceeded`, 413): cheap enough for the event loop."""
    engine.limits.check_sizes(req.strings(targets), len(req.history), len(targets))


def check_access(engine: Engine, asked: str, served: str, admin: bool, allow_any: bool) -> None:
    """Anonymous requests may name promoted adapters (as of now) and preloaded ones; `Forbidden` otherwise.
    `served`: the exact version `asked` is served by (`Engine.record_for`: a bare name stays pinned while resident)."""
    if admin or allow_any:
        return
    if served not in engine.preloaded and served not in engine.routing.aliases().values() \
            and served not in engine.registry.aliases().values():
        raise Forbidden(f"adapter {asked} is neither promoted nor preloaded; anonymous requests may name only those "
                        f"(an admin can preload it, or start the server with {option('allow_any_adapter', True)})")


@dataclass
class Plan:
    """A request routed and rendered: the adapters to run, their weights, and each adapter's prompts with token
    ids (a collaborative adapter reads the `-items` template, the others the engine's)."""

    decision: Decision
    prompts: dict[str, list[str]]  # adapter ref -> one prompt per target
    ids: dict[str, list[list[int]]]
    mode: str
    shared: bool  # the shared-prefix path (else full prompts, one row per (adapter, prompt))
    unknown: list[str] = field(default_factory=list)  # item ids a collaborative adapter has no token for
    waiting: tuple[str, ...] = ()  # collaborative adapters to load before rendering (`Engine.items` is not there)

    @property
    def rows(self) -> list[tuple[str, str]]:
        return [(ref, p) for ref in self.decision.adapters for p in self.prompts[ref]]

    @property
    def tokens(self) -> list[int]:
        return [len(x) for ref in self.decision.adapters for x in self.ids[ref]]

    def run(self, engine: Engine) -> np.ndarray:
        """The answer logits on the plan's path: shared prefix per adapter, or its full-prompt `rows` in one call."""
        if not self.shared:
            return engine.logits(self.rows)
        return np.stack([engine.shared_prefix_logits(ref, self.prompts[ref], self.ids[ref])
                         for ref in self.decision.adapters])

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """The mixed P(yes) per prompt from (adapters × prompts × 3) or (rows × 3) logits; non-finite refused."""
        per_adapter = to_scores(np.asarray(logits).reshape(-1, 3), self.mode)
        per_adapter = per_adapter.reshape(len(self.decision.adapters), -1)
        return finite(mix(per_adapter, self.decision.weights), ", ".join(self.decision.adapters))


def plan(engine: Engine, req: UserRequest, targets: list[str | Target], admin: bool, allow_any: bool) -> Plan:
    """Route (or take the requested adapter), render and tokenize one prompt per target and adapter template.
    A collaborative adapter's item tokens join the tokenizer when the first one loads (on the forward thread):
    until then the plan only names it in `waiting`, and the caller loads it there and plans again."""
    case = req.case(targets[0])
    if req.adapter is not None:
        record = engine.record_for(req.adapter)  # read once: the version checked is the version served
        ref = record.ref
        check_access(engine, req.adapter, ref, admin, allow_any)  # before the pin: a refused one changes nothing
        engine.pin(req.adapter, ref)  # the version asked for, served (a mix: by its sources)
        refs, weights = serving(record)  # a score-level mix: its sources, as routing serves one
        fingerprint = engine.backbone.fingerprint  # another base model: refused as its load refuses it
        warned = usable(record, fingerprint, "requested") if fingerprint.match(record.fingerprint) != "none" else []
        decision = Decision(req.user_id, req.domain, "warm", refs, weights, "both", f"adapter {ref} requested",
                            tuple(warned))
    else:
        decision = route(engine.routing, engine.backbone.fingerprint, case)
        case = decision.prompt_case(case)
    records = {ref: engine.record_for(ref) for ref in decision.adapters}
    collab = [ref for ref, r in records.items() if r.adapter_type == COLLAB_TYPE]
    if collab and engine.items is None:
        return Plan(decision, {}, {}, req.mode, False, waiting=tuple(collab))
    cases = [replace(case, target=text_of(t), target_id=id_of(t)) for t in targets]
    # each adapter's template, and the prompt length it trained with: the history cut to it, as `load` cuts it; the
    # sources of a mix or cold-start composition all to the shortest of theirs, as `variants.sources_prompt` does
    lengths = [n for n in (engine.trained(r).get("max_prompt_tokens") for r in records.values()) if n is not None]
    length = min(lengths) if lengths else None
    readings = {ref: (engine.template_of(r), length) for ref, r in records.items()}
    cut = {reading: engine.cut(cases, *reading) for reading in set(readings.values())}
    measured = {reading: engine.measured_prompts(cut[reading], reading[0]) for reading in cut}
    shared = len(targets) > 1 and all(peft_type(r) != "PREFIX_TUNING" for r in records.values())
    shown = [c for ref in collab for c in cut[readings[ref]]]  # an item the cut left out was not scored at all
    return Plan(decision, {ref: [m[0] for m in measured[r]] for ref, r in readings.items()},
                {ref: [m[1] for m in measured[r]] for ref, r in readings.items()}, req.mode, shared,
                unknown=engine.unknown_items(shown))


def after_load(p: Plan) -> Plan:
    """The plan made after loading what an earlier one waited for: refused (409) if it still waits."""
    if p.waiting:
        raise AdapterLoadFailed(f"{p.waiting[0]} loaded without its item tokens in place; retry the request")
    return p


def _said(p: Plan) -> dict:
    """What every answer says of its plan: the adapters, the routing reason and its warnings, items scored by their
    text alone."""
    return {"adapters": list(p.decision.adapters), "reason": p.decision.reason,
            "warnings": [scrub(w, ()) for w in p.decision.warnings],  # a local base's path stays on the server
            "unknown_items": p.unknown}


def score_answer(p: Plan, scores: np.ndarray) -> dict:
    return {"scores": scores.tolist(), **_said(p)}


def recommend_answer(p: Plan, scores: np.ndarray, candidates: list[str | Target], slate: Slate) -> dict:
    """The slate's candidates in slot order, each with its score and whether exploration put it there."""
    items = [{"item": text_of(candidates[i]), "score": float(scores[i]), "explored": explored,
              "item_id": None if isinstance(candidates[i], str) else candidates[i].item_id}
             for i, explored in zip(slate.order, slate.explored)]
    return {"items": items, **_said(p)}


def answer_directly(engine: Engine, req: ScoreRequest) -> dict:
    """`/v1/score`'s answer computed in-process, one request at a time (no HTTP, no queue, no batching)."""
    check_sizes(engine, req, req.items)
    p = plan(engine, req, req.items, admin=True, allow_any=True)
    if p.waiting:
        engine.load(p.waiting[0])
        p = after_load(plan(engine, req, req.items, admin=True, allow_any=True))
    return score_answer(p, p.scores(p.run(engine)))
