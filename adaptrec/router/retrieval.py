"""Two-stage recommendation: MiniLM candidate retrieval, then re-ranking with the routed LLM adapter(s).

Stage one embeds item titles and the user's history with all-MiniLM-L6-v2 (`adaptrec.text_encoder`).
The user vector is the normalised mean of the liked history items' embeddings (of every item when none is liked);
candidates are the top-N catalogue items by cosine similarity, items the user has (`Retriever.seen`) excluded.
Stage two scores each candidate with the routing decision through the one scoring path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from adaptrec.data.candidates import CandidateList, read_candidates
from adaptrec.data.history_file import HistoryEntry
from adaptrec.data.leave_one_out import ENCODER_HISTORY
from adaptrec.data.records import HIDDEN_HISTORY, Case
from adaptrec.errors import AdaptrecError, option
from adaptrec.scoring.variants import sources_prompt
from adaptrec.text_encoder import MiniLMEncoder, TextEncoder, catalogue_embeddings, title_of

from .policy import Decision, RoutePolicy, decision_scores, route_user

def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


class Retriever:
    """Top-N catalogue items for a user by cosine similarity of MiniLM embeddings, seen items excluded."""

    def __init__(self, catalogue: Mapping[str, str], encoder: TextEncoder | None = None, cache: bool = True):
        self.encoder = encoder or MiniLMEncoder()
        self.ids = list(catalogue)
        self.position = {item_id: n for n, item_id in enumerate(self.ids)}
        self.texts = [catalogue[i] for i in self.ids]
        self.row = {text: i for i, text in enumerate(self.texts)}
        self.ids_of: dict[str, list[str]] = {}  # a title -> every catalogue id that has it (catalogues repeat titles)
        for item_id, text in zip(self.ids, self.texts):
            self.ids_of.setdefault(text, []).append(item_id)
        self.matrix = self._catalogue_matrix(cache)
        self._memo: dict[str, np.ndarray] = {}

    def _catalogue_matrix(self, cache: bool) -> np.ndarray:
        return catalogue_embeddings(self.texts, self.encoder, cache)

    def _embed(self, text: str) -> np.ndarray:
        if text in self.row:
            return self.matrix[self.row[text]]
        if text not in self._memo:
            self._memo[text] = self.encoder.encode([title_of(text)])[0]
        return self._memo[text]

    def seen(self, case: Case) -> set[str]:
        """Catalogue ids of what the user has: the history's item ids, on a held-out case also every earlier item
        (`ENCODER_HISTORY`: the prompt keeps only the latest ones; `HIDDEN_HISTORY`: what a cold or shortened view
        left out), and every id of a title the history holds (a second listing of an item the user has is no
        recommendation)."""
        ids = {h.item_id for h in case.history if h.item_id is not None} | set(case.meta.get(ENCODER_HISTORY, ())) \
            | set(case.meta.get(HIDDEN_HISTORY, ()))  # a cold view's hidden items: the user has them all the same
        titles = {h.text for h in case.history} | {self.texts[self.position[i]] for i in ids if i in self.position}
        return ids | {i for text in titles for i in self.ids_of.get(text, ())}

    def retrieve(self, case: Case, n: int) -> list[tuple[str, float]]:
        """The `n` most similar unseen items as (item id, cosine similarity), best first; one id per title (a title
        listed under several ids is one recommendation)."""
        check_retrievable(case)
        liked = [h.text for h in case.history if h.liked] or [h.text for h in case.history]
        user = _unit(np.mean([self._embed(t) for t in liked], axis=0))
        sims = self.matrix @ user
        seen, titles, out = self.seen(case), set(), []
        for i in np.argsort(-sims, kind="stable"):
            if len(out) == n:
                break
            if self.ids[i] not in seen and self.texts[i] not in titles:
                titles.add(self.texts[i])
                out.append((self.ids[i], float(sims[i])))
        return out

    def recall(self, cases: Sequence[Case], n: int) -> float:
        """Recall@n of the retrieval stage: the share of held-out positives whose target is retrieved, by its id or
        by another id of its title (a sampled negative's target is a random item, not something to recall)."""
        cases = [c for c in cases if c.target_id is not None and c.held_out_positive]
        if not cases:
            raise AdaptrecError("retrieval recall needs cases with a held-out target_id (implicit-feedback data)")
        return float(np.mean([bool({c.target_id, *self.ids_of.get(c.target, ())} & {i for i, _ in self.retrieve(c, n)})
                              for c in cases]))


def check_retrievable(case: Case) -> None:
    """`AdaptrecError` when the user has no history to retrieve candidates from."""
    if not case.history:
        raise AdaptrecError(f"user {case.user_id!r} has no history to retrieve candidates from; pass "
                            f"{option('candidates_file')}")


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float  # the routed adapter(s)' score (P(yes) by default)
    similarity: float | None = None  # stage one's cosine similarity, when it retrieved the item


@dataclass(frozen=True)
class RecommendResult:
    items: list[Recommendation]  # best first, at most top_k
    retrieved: tuple[str, ...] | None  # stage one's candidates, perhaps none (None when they were given)
    retrieved_titles: tuple[str, ...] = ()  # their catalogue texts


def recommend(load: Callable[[], object], registry, decision: Decision, case: Case, catalogue: Mapping[str, str], *,
              candidates: Sequence[str] | None = None, retriever: Retriever | None = None, n_retrieve: int = 20,
              top_k: int = 10, mode: str = "pyes", **scorer_options) -> RecommendResult:
    """Re-rank `candidates` (default: the retriever's top `n_retrieve`) with the decision's adapters; the top `top_k`.
    `load` gives the backbone, called once the candidates are retrieved and checked (a user without history, or an
    unknown candidate, costs no model load; nor does a retrieval that found nothing new to the user)."""
    retrieved = candidates is None
    similarity: dict[str, float] = {}
    if retrieved:
        similarity = dict((retriever or Retriever(catalogue)).retrieve(case, n_retrieve))
        candidates = list(similarity)
    check_candidates(candidates, catalogue, case.domain)
    items = []
    if candidates:
        cases = [replace(case, target=catalogue[i], target_id=i, label=None) for i in candidates]
        scores = decision_scores(load(), registry, decision, cases, mode, **scorer_options)
        ranked = sorted(zip(candidates, scores), key=lambda t: -t[1])[:top_k]
        items = [Recommendation(i, title_of(catalogue[i]), float(s), similarity.get(i)) for i, s in ranked]
    return RecommendResult(items, tuple(similarity) if retrieved else None, tuple(catalogue[i] for i in similarity))


def check_candidates(candidates: Sequence[str], catalogue: Mapping[str, str], domain: str) -> None:
    unknown = [i for i in candidates if i not in catalogue]
    if unknown:
        raise AdaptrecError(f"candidate item {unknown[0]!r} is not in the {domain} catalogue")


def listed_candidates(path: Path, user_id: str, domain: str) -> list[CandidateList]:
    """The user's candidate lists for `domain` from a candidates.jsonl file (docs/data.md): one per target."""
    rows = [c for c in read_candidates(path) if c.user_id == user_id and c.domain == domain]
    if not rows:
        raise AdaptrecError(f"{path}: no candidate list for user {user_id!r} in domain {domain}")
    return rows


def list_for(rows: Sequence[CandidateList], case: Case) -> CandidateList:
    """The user's list built around `case`'s held-out item, when the file has one (as `eval --candidates-file` joins
    them: a user may have a list per target); else their first."""
    return next((r for r in rows if case.target_id is not None and r.target_id == case.target_id), rows[0])


def routed_prompt(registry, decision: Decision, template: str | None = None) -> dict:
    """The prompt settings for the adapters serving `decision` (one prompt is rendered for all of them):
    `variants.sources_prompt`."""
    return sources_prompt([registry.resolve(ref) for ref in decision.adapters], template)


@dataclass(frozen=True)
class UserRecommendation:
    decision: Decision
    case: Case  # the user's history (and held-out target, when it came from a data SPEC)
    result: RecommendResult

    @property
    def retrieval_hit(self) -> bool | None:
        """Whether stage one retrieved the held-out target; None without retrieval or a known target."""
        if self.result.retrieved is None or self.case.target_id is None:
            return None
        # by its id, or another id of its title (retrieval offers one per title)
        return self.case.target_id in self.result.retrieved or self.case.target in self.result.retrieved_titles

    def to_dict(self) -> dict:
        """The decision, the items best first, and with retrieval how many candidates stage one gave and whether
        the held-out target (`target_id`) was among them."""
        retrieved = self.result.retrieved
        return {"decision": self.decision.to_dict(), "items": [asdict(r) for r in self.result.items],
                "retrieved": None if retrieved is None else len(retrieved), "target_id": self.case.target_id,
                "retrieval_hit": self.retrieval_hit}


def recommend_user(load: Callable[[], object], fingerprint: Callable, registry, user_id: str, domain: str, dataset, *,
                   history: str | PathLike | Sequence[HistoryEntry] | None = None,
                   candidates_file: Path | None = None,
                   policy: RoutePolicy = RoutePolicy(), cold_mix: str | None = None, cold_weights: str | None = None,
                   n_retrieve: int = 20, top_k: int = 10, **scorer_options) -> UserRecommendation:
    """Route the user, take their listed candidates (or retrieve them from `dataset`'s `domain` catalogue), re-rank.
    `load` returns the backbone (of the fingerprint `fingerprint` gives); both are called once the catalogue, the
    history and the candidates file are checked, so a mistake in any costs no model load or conversion."""
    if domain not in dataset.catalogues:
        raise AdaptrecError(f"{dataset.spec} has no {domain} catalogue; recommending needs implicit-feedback data "
                            "(e.g. amazon:office:test, movielens:100k:loo:test or an interaction log)")
    rows = listed_candidates(candidates_file, user_id, domain) if candidates_file else None
    listed: list[str] = []

    def take_listed(case: Case) -> None:  # the user's list, checked before the backbone's fingerprint is read
        row = list_for(rows, case)
        check_candidates(row.candidates, dataset.catalogues[domain], domain)
        listed.extend(row.candidates)

    decision, case = route_user(registry, fingerprint, user_id, domain, dataset=dataset, history=history,
                                policy=policy, cold_mix=cold_mix, cold_weights=cold_weights,
                                check=check_retrievable if rows is None else take_listed)
    items = listed if rows is not None else None
    given = scorer_options.pop("template", None)  # else the routed adapters' own; their prompt length either way
    scorer_options = {**scorer_options, **routed_prompt(registry, decision, given)}
    result = recommend(load, registry, decision, case, dataset.catalogues[domain], candidates=items,
                       n_retrieve=n_retrieve, top_k=top_k, progress=False, **scorer_options)
    return UserRecommendation(decision, case, result)
