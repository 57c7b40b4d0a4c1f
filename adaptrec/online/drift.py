"""Drift between two windows of a domain: how the champion's scores moved (PSI, KS), whether they stayed calibrated
(reliability curves, ECE), and whether the adapter still beats the non-LLM rows (AUC per window)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from adaptrec.baselines import like_ratio_scores, popularity_scores
from adaptrec.data.records import Case
from adaptrec.data.sampling import stratified_subset
from adaptrec.data.tallrec import item_popularity
from adaptrec.metrics import MetricValue, compute_classification
from adaptrec.metrics.calibration import ks, psi, psi_null, reliability
from adaptrec.names import served_domain
from adaptrec.registry import Registry
from adaptrec.scoring.variants import component_scores

from ..errors import ConfigError, option


def _auc(labels: np.ndarray, scores: np.ndarray, users: list[str], seed: int = 0) -> dict:
    m = compute_classification(["auc"], labels, scores, seed=seed, clusters=users)["auc"]
    return {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "ci_skipped": m.ci_skipped}


def window_report(labels: np.ndarray, users: list[str], scores: np.ndarray, baselines: dict[str, np.ndarray],
                  seed: int = 0) -> dict:
    """One window: size, mean score, like rate, reliability, and AUC (user-clustered CI, bootstrap `seed`) of the
    adapter and each baseline row."""
    curve = reliability(labels, scores)
    return {"cases": int(len(labels)), "users": len(set(users)), "mean_score": float(np.mean(scores)),
            "like_rate": float(np.mean(labels)), "reliability": asdict(curve),
            "auc": {"adapter": _auc(labels, scores, users, seed),
                    **{name: _auc(labels, s, users, seed) for name, s in baselines.items()}}}


def compare(before: dict, after: dict, scores_before: np.ndarray, scores_after: np.ndarray, seed: int = 0) -> dict:
    statistic, p_value = ks(scores_before, scores_after)
    chance, psi_p = psi_null(scores_before, scores_after, seed=seed)
    return {"psi": psi(scores_before, scores_after), "psi_chance_95": chance, "psi_p": psi_p, "ks": statistic,
            "ks_p": p_value,
            "ece_change": after["reliability"]["ece"] - before["reliability"]["ece"],
            "auc_change": after["auc"]["adapter"]["value"] - before["auc"]["adapter"]["value"]}


def champion_ref(registry: Registry, domain: str, adapter: str | None = None) -> str:
    """The exact `name:version` drift scores with: `adapter` resolved once, else the domain's champion."""
    record = registry.resolve(adapter) if adapter else registry.promoted(domain)
    if record is None:
        raise ConfigError(f"domain {domain!r} has no promoted adapter; name one with {option('adapter')}")
    return record.ref


def domain_cases(cases: list[Case], domain: str, data: str, flag: str = "data") -> list[Case]:
    """The cases of `domain` among `cases` (a log may hold several domains; a cold slice's cases keep their domain);
    a one-line error when there are cases but none of `domain`: a decision about one domain's adapter on another's
    data."""
    found, served = sorted({c.domain for c in cases}), served_domain(domain)  # a cold alias serves its domain's
    if found and served not in found:
        raise ConfigError(f"{option(flag, data)}: its cases are of domain {', '.join(map(repr, found))}, not "
                          f"{served!r}; give {served}'s data")
    return [c for c in cases if c.domain == served]


def labelled_windows(before: list[Case], after: list[Case], limit: int | None = None,
                     seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Each window's labelled cases (a seeded, label-stratified `limit` of them), a feedback pair the whole after
    window holds (re-labelled since) counted there only; a one-line error for a window without both classes."""
    later = {c.meta["event"] for c in after if "event" in c.meta}
    kept = [c for c in before if c.meta.get("event") not in later]  # its label is the after window's
    also = (f"; {len(before) - len(kept)} of its cases are events {option('after')} holds too, counted there only"
            if len(kept) < len(before) else "")
    windows = []
    for name, cases in (("before", kept), ("after", after)):
        labelled = [c for c in cases if c.label is not None]
        labelled = stratified_subset(labelled, limit, seed) if limit else labelled
        if len({c.label for c in labelled}) < 2:
            raise ConfigError(f"{option(name)}: drift needs labelled cases of both classes ({len(labelled)} labelled"
                              f"{also if name == 'before' else ''})")
        windows.append(labelled)
    return windows[0], windows[1]


def drift(backbone, registry: Registry, domain: str, before: list[Case], after: list[Case], adapter: str | None = None,
          seed: int = 0, **scorer_options) -> dict:
    """Score both windows with `adapter` (default: the domain's champion) and compare them. Popularity counts the
    `before` window's history items (what its users had seen), for both windows; in the before window a case's own
    target can be among them (a later case of its user lists it), so that row is transductive there (the window's
    report names it under `transductive`). `seed`: the bootstrap's and the PSI permutations'."""
    ref = champion_ref(registry, domain, adapter)
    windows = dict(zip(("before", "after"), labelled_windows(before, after)))
    popularity = item_popularity(windows["before"], targets=False)
    report, raw = {"adapter": ref, "domain": domain}, {}
    for name, cases in windows.items():
        labels, users = np.array([c.label for c in cases]), [c.user_id for c in cases]
        raw[name] = component_scores(backbone, registry, [ref], cases, **scorer_options)[0]
        baselines = {"like-ratio": like_ratio_scores(cases, popularity),
                     "popularity": popularity_scores(cases, popularity)}
        report[name] = {**window_report(labels, users, raw[name], baselines, seed),
                        "transductive": ["popularity"] if name == "before" else []}
    report["change"] = compare(report["before"], report["after"], raw["before"], raw["after"], seed)
    return report


def summary(report: dict) -> str:
    """The report as a few lines of text."""
    c = report["change"]
    lines = [f"drift of {report['domain']} ({report['adapter']}): PSI {c['psi']:.3f} (p {c['psi_p']:.3g}; "
             f"{c['psi_chance_95']:.3f} by chance at these sizes), KS {c['ks']:.3f} (p {c['ks_p']:.3g}; both over "
             f"cases, not users), ECE {c['ece_change']:+.3f}, AUC {c['auc_change']:+.3f}"]
    for name in ("before", "after"):
        w = report[name]
        rows = ", ".join(f"{row} {MetricValue(**m).format()}" + (
            f" ({m['ci_skipped']} resamples with one class skipped)" if m.get("ci_skipped") else "")
            for row, m in w["auc"].items())
        transductive = "".join(f" ({row} transductive here)" for row in w.get("transductive", []))
        spec = f" ({w['spec']})" if "spec" in w else ""
        lines.append(f"  {name}{spec}: {w['cases']} cases of {w['users']} users, mean score {w['mean_score']:.3f}, "
                     f"like rate {w['like_rate']:.3f}, ECE {w['reliability']['ece']:.3f}; AUC {rows}{transductive}")
    return "\n".join(lines)
