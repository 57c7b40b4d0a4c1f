"""The promotion gate: a challenger replaces a domain's champion only when a paired, user-clustered test on the same
recent cases says it is not worse than the champion by more than a margin; every decision goes to the audit trail.

The test is named for what it is: with `margin` > 0 it is a non-inferiority test (the challenger may be slightly
worse and still pass), with `margin` = 0 a superiority test. The decision compares the lower end of a 95% bootstrap
CI of AUC(challenger) − AUC(champion), resampling users (a user's cases move together), with −margin. The CI's
half-width is recorded as the smallest difference the window can resolve.

Feedback on served slates is a sample the serving policy chose: only what it showed gets feedback. Where the log
holds each item's probability of being shown (exploration on), every case counts with the inverse of it, so the AUCs
estimate those over all candidates (Yang et al., RecSys 2018: an inverse-propensity-weighted AUC); slates served
without exploration cannot be corrected, and the evidence says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptrec.data.records import ANONYMOUS, Case
from adaptrec.metrics import class_holders, class_units, paired_difference
from adaptrec.metrics.classification import auc
from adaptrec.registry import AdapterRecord, Registry
from adaptrec.scoring.variants import component_scores

from ..config import recipe_from_text
from ..data.spec import spec_file, split_slice, with_protocol
from ..errors import AdaptrecError, ConfigError, RegistryError, option
from .drift import domain_cases

ALPHA = 0.05
MARGIN = 0.005  # the default non-inferiority margin in AUC
MIN_USERS = 10  # fewer users: a user-clustered CI means nothing (one user resamples to itself)
# fewer users holding one class: AUC is undefined on resamples without them (about e^-k of them, k such users), and
# the interval, from the rest, always holds the same few users' cases of it: too narrow
MIN_CLASS_USERS = 3
IPS = "inverse probability of being shown (exploration was on when they were served)"
UNCORRECTED = ("none: slates were served without exploration, so their cases are the items the serving adapter "
               "ranked first, and the AUCs are measured on them, not on the candidates: the comparison is biased (when "
               "one of the two served them, toward the other); serve with --explore DOMAIN=EPS to gate on feedback")


class SelectionBiasWarning(UserWarning):
    """The gate's cases are feedback on slates served without exploration: a sample the serving adapter chose."""


def case_weights(cases: list[Case]) -> tuple[np.ndarray | None, str]:
    """The gate's weight of each case and what it is: the inverse of a served item's logged probability of being
    shown, where every case has one, some is below 1 and no slate was served greedily (its candidates not shown had
    probability 0: nothing corrects for them); else none, saying why."""
    logged = [c.meta.get("shown") for c in cases if "event" in c.meta]
    if not logged:
        return None, "none: labelled data, not feedback on served items"
    if any(c.meta.get("endpoint") == "recommend" and c.meta.get("propensity") == 1 and not c.meta.get("all_shown")
           for c in cases):  # a greedy slate: an explored slot's propensity is below 1 while two or more remain
        return None, UNCORRECTED  # (first: also where some feedback predates the recorded probabilities)
    if len(logged) < len(cases) or not all(isinstance(p, (int, float)) and 0 < p <= 1 for p in logged):
        return None, "none: some feedback was logged before each item's probability of being shown was recorded"
    if all(p == 1 for p in logged):
        return None, "none: every item was shown"
    return 1 / np.array(logged, dtype=np.float64), IPS


@dataclass(frozen=True)
class GateResult:
    promoted: bool
    challenger: str
    champion: str | None
    evidence: dict

    def summary(self) -> str:
        e = self.evidence
        verdict = "promoted" if self.promoted else "not promoted"
        if self.champion is None:
            return f"{verdict} {self.challenger}: {e['reason']}"
        weighted = " (weighted by the inverse probability of being shown)" if e.get("weighting") == IPS else ""
        return (f"{verdict} {self.challenger} over {self.champion}: {e['test']} on {e['cases']} cases of "
                f"{e['users']} users{weighted}, AUC {e['challenger_auc']:.4f} vs {e['champion_auc']:.4f}, "
                f"difference {e['diff']:+.4f} [95% CI {e['ci_low']:+.4f}, {e['ci_high']:+.4f}], "
                f"passes when the lower bound > {-e['margin'] + 0.0:+.4f}; resolves about ±{e['resolution']:.4f}"
                + (f"; {e['ci_skipped']} resamples held one class only and were skipped" if e.get("ci_skipped")
                   else ""))


def describe_test(margin: float, clustered: bool = True) -> str:
    """The test's name; `clustered` False: no user has two cases (TALLRec's files name none), so the bootstrap
    resamples cases."""
    unit = "user-clustered paired bootstrap" if clustered else "paired bootstrap over cases (no user has two)"
    return (f"non-inferiority (margin {margin:g})" if margin > 0 else "superiority") + \
        f": lower 95% bound of the {unit} AUC difference"


def decide(labels: np.ndarray, users: list[str], challenger: np.ndarray, champion: np.ndarray, margin: float,
           seed: int = 0, n_resamples: int = 1000, weights: np.ndarray | None = None,
           weighting: str = "none") -> dict:
    """The gate's evidence for scores of the same cases (`weights`: each case's, described by `weighting`);
    `promote` is the decision."""
    units = len(set(users))
    if units < 2:  # one user (or case) resamples to itself: no interval
        raise ValueError(f"the gate's test needs at least 2 users to resample, got {units}")
    if (holders := class_units(labels, users)) < 2:  # every resample with both classes holds that user's cases
        raise ValueError(f"the gate's test needs each class held by at least 2 users, got {holders}")
    diff = paired_difference("auc", labels, challenger, champion, seed=seed, n_resamples=n_resamples, alpha=ALPHA,
                             clusters=users, weights=weights)
    return {"test": describe_test(margin, units < len(labels)), "metric": "auc", "margin": margin,
            "cases": len(labels), "users": units, "weighting": weighting,
            "challenger_auc": auc(labels, challenger, weights), "champion_auc": auc(labels, champion, weights),
            "diff": diff.value, "ci_low": diff.ci_low, "ci_high": diff.ci_high, "ci_skipped": diff.ci_skipped,
            "resolution": (diff.ci_high - diff.ci_low) / 2, "promote": bool(diff.ci_low > -margin)}


def ancestry(registry: Registry, record: AdapterRecord) -> list[AdapterRecord]:
    """`record` and every registered adapter it comes from: the version it was updated from, a composition's or an
    export's sources, a distillation teacher, and theirs in turn (what they trained on, it learned from)."""
    found, todo = {}, [record]
    while todo:
        current = todo.pop()
        if current.ref in found:
            continue
        found[current.ref] = current
        lineage = current.lineage or {}
        parents = [] if current.kind == "pulled" else [lineage.get("updated_from"), *lineage.get("parents", [])]
        for parent in parents:  # a pulled adapter's lineage names its publisher's versions, not this registry's
            if isinstance(parent, str):
                try:
                    todo.append(registry.resolve(parent))
                except RegistryError:  # removed since: that branch stops there
                    pass
    return list(found.values())


def trained_on(records: list[AdapterRecord], cases: list[Case]) -> int:
    """How many of `cases` are logged events any of `records` (an adapter's `ancestry`) was trained on or had its
    checkpoint chosen on: by (request, item) pair from their lineages' `events` and `valid_events`; for versions
    registered before lineages listed them, by their lineage windows' time ranges (their own, or those passed on as
    `earlier_windows`)."""
    events, windows = set(), []
    for record in records:
        lineage = record.lineage or {}
        events |= record.trained_events | record.validated_events
        windows += lineage.get("earlier_windows", [])
        windows += [] if record.trained_events else [lineage.get("window", {})]
    windows = [w for w in windows if "until" in w]

    def seen(c: Case) -> bool:
        return c.meta.get("event") in events or ("time" in c.meta and any(
            w["since"] <= c.meta["time"] <= w["until"] for w in windows))
    return sum(seen(c) for c in cases)


def _spec_range(spec: str, workdir: str | None = None) -> tuple[str, int, float]:
    """(base SPEC, start, stop) with a data file in the base named by its absolute path (`~` expanded; a relative
    one resolved against `workdir`, default the current one)."""
    base, start, stop = split_slice(spec.strip())
    named = spec_file(base)  # the file a SPEC reads, a `:` in its path included
    if named is not None:
        base = str((Path(workdir or ".") / Path(named[0]).expanduser()).resolve()) + named[1]
    return base, start, stop


def trained_specs(records: list[AdapterRecord]) -> list[tuple[str, int, float]]:
    """The data (`_spec_range`s) `records` (an adapter's `ancestry`) trained on or were selected on: each recipe's
    `data.train` and `data.valid` (early stopping chose its checkpoint there) in its protocol's form, its
    `method.extra_train` and a teacher's `method.teacher_data`, each update's `data` and each weight search's (its
    weights were selected on those cases), relative files read from the folder it trained in (its lineage's
    `workdir`); `feedback:` SPECs are left to the exact per-event check."""
    specs = []
    for record in records:
        lineage = record.lineage or {}
        search = lineage.get("search")
        found = [lineage.get("data"), search.get("data") if isinstance(search, dict) else None]
        if record.recipe_text and record.kind != "composed":  # a composition or export copies its source's recipe
            try:
                recipe = recipe_from_text(record.recipe_text, record.ref)
                found += [with_protocol(recipe.data.train, recipe.data.protocol, "train"),
                          with_protocol(recipe.data.valid, recipe.data.protocol, "valid"),
                          *getattr(recipe.method, "extra_train", []), getattr(recipe.method, "teacher_data", None)]
            except AdaptrecError:  # a recipe of an older schema: its update data still counts
                pass
        specs += [_spec_range(f, lineage.get("workdir")) for f in found
                  if isinstance(f, str) and not f.startswith("feedback:")]
    return specs


def shared_cases(cases: list[Case], trained: list[tuple[str, int, float]],
                 shown: dict[str, set | None]) -> tuple[int, str | None]:
    """How many of `cases` show a model exactly what a case of the `trained` data did (another name for the same
    file, another protocol or view of one log, other negatives beside the same positives), and a SPEC they share
    cases with; `feedback:` data is left to the per-event check. `shown` keeps each SPEC's case keys once loaded
    (None: it no longer loads here, and the SPEC comparison is all there is)."""
    from ..data.spec import load_spec

    keys = {c.shown for c in cases}
    for base, start, stop in dict.fromkeys(trained):
        spec = base if (start, stop) == (0, math.inf) else f"{base}[{start}:{'' if stop == math.inf else int(stop)}]"
        if spec not in shown:
            try:
                shown[spec] = {c.shown for c in load_spec(spec).cases}
            except AdaptrecError:
                shown[spec] = None
        if shown[spec] and keys & shown[spec]:
            return sum(c.shown in shown[spec] for c in cases), spec
    return 0, None


def saw_data(registry: Registry, record: AdapterRecord, data: str, cases: list[Case] | None = None,
             shown: dict[str, set | None] | None = None) -> bool:
    """Whether `record`, or an adapter it comes from, trained or was selected on the SPEC `data`: by SPEC and slice,
    then, given the `cases` scored from it, by the cases themselves (another name for the same file, another protocol
    of the same log: `movielens:100k:valid` is `tallrec:movie:valid`); the gate also compares logged events.
    `shown`: the training SPECs' case keys loaded so far (`shared_cases`), shared by the checks of one command."""
    trained = trained_specs(ancestry(registry, record))
    return _overlaps(data, trained) or (cases is not None and shared_cases(cases, trained, {} if shown is None
                                                                           else shown)[0] > 0)


def _overlaps(data: str, trained: list[tuple[str, int, float]]) -> bool:
    """Whether `data` shares cases with any of `trained`: the same base SPEC and overlapping slices."""
    base, start, stop = _spec_range(data)
    return any(b == base and max(start, s) < min(stop, e) for b, s, e in trained)


@dataclass(frozen=True)
class GatePlan:
    """A gate decision checked and ready to score: the challenger, the champion (None: it is promoted unscored)
    and the labelled cases, from SPEC `data` (a seeded `limit` of it)."""

    challenger: AdapterRecord
    champion: AdapterRecord | None
    domain: str
    cases: list[Case]
    data: str
    margin: float
    limit: int | None = None
    data_fingerprint: str | None = None  # of the data as drawn: an open-ended SPEC holds more cases later

    @property
    def source(self) -> dict:
        """Where the cases came from, for the evidence: the SPEC and limit (the seed is added), and the data's
        fingerprint, which says whether the same SPEC still holds the same cases."""
        return {"data": self.data, **({"limit": self.limit} if self.limit is not None else {}),
                **({"data_fingerprint": self.data_fingerprint} if self.data_fingerprint else {})}


def plan_gate(registry: Registry, challenger: str, domain: str, cases: list[Case], data: str,
              margin: float = MARGIN, limit: int | None = None, data_fingerprint: str | None = None) -> GatePlan:
    """Everything the gate refuses, checked before any model loads: a margin that is not a number in [0, 1), a
    challenger that already is the champion, data it or the champion (or an adapter either comes from) trained on,
    by SPEC, by case or by logged event, fewer than `MIN_USERS` users or fewer than `MIN_CLASS_USERS` holding either
    class. Cases of other domains (a log of several) are left out. A domain without a champion needs none."""
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool) and math.isfinite(margin)
            and 0 <= margin < 1):  # an AUC difference lies in [-1, 1]: 1 passes anything
        raise ConfigError(f"{option('margin', margin)}: expected a margin in AUC from 0 to below 1 (e.g. 0.005)")
    record: AdapterRecord = registry.resolve(challenger)
    champion = registry.promoted(domain)
    labelled = [c for c in domain_cases(cases, domain, data) if c.label is not None]
    plan = GatePlan(record, champion, domain, labelled, data, margin, limit, data_fingerprint)
    if champion is None:
        return plan
    if champion.ref == record.ref:
        raise ConfigError(f"{record.ref} is already the champion of {domain!r}")
    shown: dict[str, set | None] = {}  # each training SPEC loaded once, for both adapters
    for who in (record, champion):  # a champion scored on its own training cases is favoured as unfairly
        _check_unseen(registry, who, labelled, data, "the champion " if who is champion else "", shown)
    users = {c.user_id for c in labelled}
    if len({c.label for c in labelled}) < 2:
        raise ConfigError(f"{option('data', data)}: the gate needs labelled cases of both classes "
                          f"({len(labelled)} labelled)")
    if len(users) < MIN_USERS:
        unnamed = f" (requests sent without a user_id all count as the one user {ANONYMOUS!r})" \
            if ANONYMOUS in users else ""
        raise ConfigError(f"{option('data', data)}: {len(users)} users; the gate's user-clustered test needs at least "
                          f"{MIN_USERS}{unnamed}")
    holders = class_holders([c.label for c in labelled], [c.user_id for c in labelled])
    fewest = min(holders, key=holders.__getitem__)
    if holders[fewest] < MIN_CLASS_USERS:
        raise ConfigError(f"{option('data', data)}: its {'liked' if fewest else 'disliked'} cases are held by "
                          f"{holders[fewest]} user{'s' * (holders[fewest] != 1)}; the gate's user-clustered test "
                          f"needs at least {MIN_CLASS_USERS} users holding each class")
    return plan


def _check_unseen(registry: Registry, record: AdapterRecord, cases: list[Case], data: str, role: str,
                  shown: dict[str, set | None]) -> None:
    """`ConfigError` when `record`, or an adapter it comes from, trained on `data` or on any of its `cases`
    (`shown`: `shared_cases`' loaded SPECs)."""
    records = ancestry(registry, record)
    trained = trained_specs(records)
    if _overlaps(data, trained):
        raise ConfigError(f"{option('data', data)}: {role}{record.ref} (or an adapter it comes from) was trained on "
                          "this data, or had its checkpoint chosen on it (data.valid); "
                          "gate on data neither adapter saw: a held-out split, or feedback logged after both")
    shared, spec = shared_cases(cases, trained, shown)
    if shared:
        raise ConfigError(f"{option('data', data)}: {shared} of its cases are cases {role}{record.ref} (or an "
                          f"adapter it comes from) was trained or validated on, as {spec}; gate on data neither "
                          "adapter saw")
    seen = trained_on(records, cases)
    if seen:
        raise ConfigError(f"{option('data', data)}: {seen} of its cases are events {role}{record.ref} was trained "
                          "or validated on (its lineage lists them); gate on later feedback, e.g. "
                          "feedback:DOMAIN:SINCE with SINCE after its lineage window")


def run_gate(backbone, registry: Registry, plan: GatePlan, seed: int = 0,
             options: Callable[[str], dict] = lambda ref: {}, **scorer_options) -> GateResult:
    """Score challenger and champion on the plan's cases, each with its own prompt settings (`options(ref)`),
    decide, and record the decision: promote (the new champion) or refuse (the champion stays); without a champion
    the challenger is promoted (no backbone needed). The decision is recorded only if the champion is still the
    one scored (`RegistryError` otherwise)."""
    record, champion, domain = plan.challenger, plan.champion, plan.domain
    if champion is None:
        evidence = {"test": "none", "reason": f"domain {domain!r} had no champion", **plan.source}
        registry.promote(record.ref, domain, evidence=evidence, expect=None)
        return GateResult(True, record.ref, None, evidence)
    labels, users = np.array([c.label for c in plan.cases]), [c.user_id for c in plan.cases]
    weights, weighting = case_weights(plan.cases)
    if weighting == UNCORRECTED:
        warnings.warn(SelectionBiasWarning(f"the gate's {len(plan.cases)} cases of {plan.data}: {weighting}"),
                      stacklevel=2)  # names the data: Python shows a warning once per text and line
    scores = [component_scores(backbone, registry, [ref], plan.cases, **{**scorer_options, **options(ref)})[0]
              for ref in (record.ref, champion.ref)]
    evidence = {**decide(labels, users, scores[0], scores[1], plan.margin, seed, weights=weights, weighting=weighting),
                **plan.source, "seed": seed,
                "environment": backbone.environment()}  # the backbone's build both were scored on
    if evidence["promote"]:
        registry.promote(record.ref, domain, evidence=evidence, expect=champion.ref)
    else:
        registry.refuse(record.ref, domain, evidence, expect=champion.ref)
    return GateResult(evidence["promote"], record.ref, champion.ref, evidence)


def gate(backbone, registry: Registry, challenger: str, domain: str, cases: list[Case], data: str,
         margin: float = MARGIN, seed: int = 0, options: Callable[[str], dict] = lambda ref: {},
         limit: int | None = None, data_fingerprint: str | None = None, **scorer_options) -> GateResult:
    """`plan_gate`, then `run_gate` on `backbone`: one call where the backbone is loaded already."""
    plan = plan_gate(registry, challenger, domain, cases, data, margin, limit, data_fingerprint)
    return run_gate(backbone, registry, plan, seed, options, **scorer_options)
