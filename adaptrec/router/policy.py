"""Routing: which adapter(s) serve a (user, target domain) request, and why.

* The target domain's adapter is the one promoted for it (`adaptrec registry promote`), provided its
  base fingerprint matches the loaded backbone: exact, or same family (served with a warning).
* A user with fewer than `min_target_history` target-domain interactions is **cold**: the prompt
  shows their whole history (so the other-domain items carry the signal) and the composed adapter
  serves: an explicit composition if given, else the adapter promoted for `<domain>:cold`, else the
  newest registered `composed` adapter of the domain. A **warm** user gets the target adapter.
* Every decision carries a one-sentence reason (and any warnings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from adaptrec.adapters.merge import MIX, Composition, as_mix, parse_weights
from adaptrec.data.history_file import HistoryEntry, parse_history, read_history_file
from adaptrec.data.records import Case, default_noun
from adaptrec.errors import FingerprintMismatch, option
from adaptrec.fingerprint import Fingerprint
from adaptrec.scoring.variants import component_scores, mix

from ..names import COLD_SUFFIX
from .sources import RouteError, named_sources, resolve_sources


@dataclass(frozen=True)
class RoutePolicy:
    min_target_history: int = 3  # fewer target-domain interactions than this: cold start
    warm_history: Literal["both", "target"] = "both"  # what a warm user's prompt shows (the shipped adapters train on both)


@dataclass(frozen=True)
class Decision:
    """The adapters that serve one request, how they combine, what the prompt shows, and why."""

    user_id: str
    domain: str
    mode: Literal["warm", "cold"]
    adapters: tuple[str, ...]  # registry refs (name:version)
    weights: tuple[float, ...]  # score-level weights; (1.0,) for a single (possibly ΔW-composed) adapter
    history_domains: Literal["both", "target"]
    reason: str
    warnings: tuple[str, ...] = ()

    def prompt_case(self, case: Case) -> Case:
        """`case` with the history this decision puts in the prompt."""
        if self.history_domains == "both":
            return case
        return replace(case, history=tuple(h for h in case.history if h.in_domain(self.domain)))

    def to_dict(self) -> dict:
        return asdict(self)


def usable(record, fingerprint, role: str) -> list[str]:
    """[] for an exact base match, [warning] for a family match; `FingerprintMismatch` for another base model (a 409
    from the server, as for a request naming the adapter)."""
    match = fingerprint.match(record.fingerprint)
    if match == "none":
        raise FingerprintMismatch(f"the {role} adapter {record.ref} was trained on "
                                  f"{record.base_model or 'another base model'}, not the loaded backbone "
                                  f"{fingerprint.base_model}; promote one trained on this backbone")
    if match == "family":
        return [f"{record.ref} was trained on another build of this base family ({record.base_model}); scores may shift"]
    return []


def _none_promoted(domain: str) -> RouteError:
    return RouteError(f"no adapter is promoted for domain {domain!r}; run `adaptrec registry promote NAME --domain "
                      f"{domain}`")


def target_adapter(registry, domain: str, fingerprint):
    """The adapter promoted for `domain` and its warnings; RouteError if none can serve this backbone."""
    record = registry.promoted(domain)
    if record is None:
        raise _none_promoted(domain)
    return record, usable(record, fingerprint, "target")


def check_routable(domain: str) -> None:
    """RouteError for a cold-start alias given as the domain: routing reads the domain's own adapter for warm users
    (was: `office:cold` served its cold-start adapter to every user, warm ones too)."""
    if domain.endswith(COLD_SUFFIX):
        served = domain.removesuffix(COLD_SUFFIX)
        raise RouteError(f"{domain!r} names the cold-start adapter of {served!r}, not a domain: route {served!r}, "
                         f"whose cold users {domain} serves")


def check_servable(registry, domain: str) -> None:
    """`route`'s RouteError for a domain nothing could serve (no promoted adapter, no cold-start one, no composition),
    raised before any backbone is read: its fingerprint's first read may convert or download the model."""
    if registry.promoted(domain) is None and registry.promoted(domain + COLD_SUFFIX) is None and \
            not any(r.is_composition for r in registry.list(domain=domain)):
        raise _none_promoted(domain)


def cold_adapter(registry, domain: str, fingerprint):
    """The composed adapter for cold users of `domain` (promoted `<domain>:cold`, else the newest composition: not an
    exact export of one adapter), or None."""
    record = registry.promoted(domain + COLD_SUFFIX)
    if record is None:
        composed = [r for r in registry.list(domain=domain)
                    if r.is_composition and fingerprint.match(r.fingerprint) != "none"]
        record = max(composed, key=lambda r: r.created, default=None)  # registration times, to the microsecond
    return (record, usable(record, fingerprint, "cold-start")) if record is not None else None


def serving(record) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """(refs, score weights) that serve a record: a registered mix expands into its sources."""
    composition = as_mix(record)
    return (composition.refs, composition.weights) if composition else ((record.ref,), (1.0,))


def target_history_count(case: Case) -> int:
    return sum(h.in_domain(case.domain) for h in case.history)


def route(registry, fingerprint, case: Case, policy: RoutePolicy = RoutePolicy(),
          cold: Composition | None = None, target=None) -> Decision:
    """Decide warm or cold for `case.user_id` in `case.domain` from the case's history.

    `target`: the domain's adapter record (default: the one promoted for the domain)."""
    check_routable(case.domain)
    domain, n = case.domain, target_history_count(case)
    others = len(case.history) - n

    def domain_adapter():  # needed by warm users, and by cold ones only when nothing composed serves them
        return (target, usable(target, fingerprint, "target")) if target is not None else \
            target_adapter(registry, domain, fingerprint)

    if n >= policy.min_target_history:
        record, warns = domain_adapter()
        return Decision(case.user_id, domain, "warm", *serving(record), policy.warm_history,
                        f"{n} {domain} interactions >= {policy.min_target_history}: the {domain} adapter {record.ref} serves",
                        tuple(warns))
    why = f"{n} {domain} interactions < {policy.min_target_history} (cold start): {others} other-domain items go into the prompt"
    if cold is not None:
        if cold.method != MIX and len(cold.refs) > 1:
            raise RouteError(f"register the {cold.method} composition first (`adaptrec compose`) and route with its name")
        records = [registry.resolve(r) for r in cold.refs]
        warns = [w for r in records for w in usable(r, fingerprint, "cold-start")]
        refs = tuple(r.ref for r in records)
        weights = cold.weights if cold.method == MIX else (1.0,)
        return Decision(case.user_id, domain, "cold", refs, weights, "both",
                        f"{why} and the given composition ({cold.method} of {', '.join(refs)}) serves", tuple(warns))
    found = cold_adapter(registry, domain, fingerprint)
    if found is None:
        record, warns = domain_adapter()
        return Decision(case.user_id, domain, "cold", *serving(record), "both",
                        f"{why}, but no composed adapter exists for {domain}, so {record.ref} serves", tuple(warns))
    record, cold_warns = found
    parents = ", ".join((record.lineage or {}).get("parents", [])) or "?"
    return Decision(case.user_id, domain, "cold", *serving(record), "both",
                    f"{why} and the composed adapter {record.ref} ({parents}) serves", tuple(cold_warns))


def decision_scores(backbone, registry, decision: Decision, cases: Sequence[Case], mode: str = "pyes",
                    **scorer_options) -> np.ndarray:
    """Scores of one user's candidates `cases` (their prompts built as the decision says, one history shared by all,
    as every ranking path fits it) through the one scoring path."""
    prompt_cases = [decision.prompt_case(c) for c in cases]
    return mix(component_scores(backbone, registry, decision.adapters, prompt_cases, mode, one_list=True,
                                **scorer_options), decision.weights)


def spec_case(dataset, user_id: str, domain: str) -> Case:
    """The user's first positive `domain` case in a loaded data SPEC."""
    mine = [c for c in dataset.cases if c.user_id == user_id and c.held_out_positive]
    for case in mine:
        if case.domain == domain:
            return case
    held = f" (it has {', '.join(sorted({c.domain for c in mine}))} cases)" if mine else ""
    raise RouteError(f"user {user_id!r} has no positive {domain} case in {dataset.spec}{held}")


def no_history() -> RouteError:
    """The refusal of a route that names no history."""
    return RouteError(f"pass the user's history: {option('data')} (a SPEC holding the user's case) or "
                      f"{option('history')} (their items)")


def user_case(user_id: str, domain: str, dataset=None,
              history: str | PathLike | Sequence[HistoryEntry] | None = None) -> Case:
    """The user's history as a Case: from a history file (a path) or a list of items (as `Recommender.score` takes
    them) if given, else their case in a loaded SPEC."""
    if isinstance(history, (str, PathLike)):
        return replace(read_history_file(Path(history), "", domain), user_id=user_id)
    if history is not None:
        return Case(user_id, domain, default_noun(domain), parse_history(history, domain), "")
    if dataset is not None:
        return spec_case(dataset, user_id, domain)
    raise no_history()


def check_cold_options(cold_mix, cold_weights: str | None) -> None:
    """`cold_weights` weigh a `cold_mix`: without one they would be dropped without a word. An empty `cold_mix` is
    refused as a blank list is (it served the default cold adapter without a word)."""
    if cold_mix is not None:
        named_sources(cold_mix)
    if cold_weights and not cold_mix:
        raise RouteError(f"{option('cold_weights', cold_weights)}: they weigh a {option('cold_mix')}, and none is "
                         "given")


def route_user(registry, fingerprint: Callable[[], Fingerprint], user_id: str, domain: str, *, dataset=None,
               history: str | PathLike | Sequence[HistoryEntry] | None = None, policy: RoutePolicy = RoutePolicy(),
               cold_mix: str | Sequence[str] | None = None, cold_weights: str | None = None,
               check: Callable[[Case], None] | None = None) -> tuple[Decision, Case]:
    """The routing decision for one user (history from a file or a list of items, else their case in `dataset`)
    and that case.

    `fingerprint` gives the backbone's, read once the user's case (and `check` of it, when given) and `cold_mix` are
    checked (its first use may convert or download the model). `cold_mix`: serve a cold user a score-level mix of
    these adapters (refs or domains) instead of the promoted cold-start adapter."""
    check_routable(domain)
    check_cold_options(cold_mix, cold_weights)
    case = user_case(user_id, domain, dataset, history)
    if check is not None:
        check(case)
    cold = None
    if cold_mix is not None:
        refs = resolve_sources(registry, cold_mix)
        cold = Composition(refs, MIX, parse_weights(cold_weights, len(refs), "cold_weights"))
    else:
        check_servable(registry, case.domain)
    return route(registry, fingerprint(), case, policy, cold), case
