"""Leave-one-out ranking of an encoder: the target's rank among sampled candidates and in the full catalogue."""

from __future__ import annotations

from typing import Collection, Iterable, Mapping, Sequence

import numpy as np

from adaptrec.data.candidates import CandidateList
from adaptrec.data.records import Case
from adaptrec.metrics.ranking import ranks

from .base import Encoder


def labelled_scores(encoder: Encoder, users: Sequence[str], histories: Sequence[Sequence[str]],
                    targets: Sequence[str | None]) -> np.ndarray:
    """Each case's target score for a like/dislike AUC: a target the encoder never saw scores its user's catalogue
    mean, a neutral guess (`score_lists` puts it below every known item, as ranking must, which here reads as a
    certain dislike: MF's own `score` gives such an item no item term either)."""
    full = encoder.score_catalogue(users, histories)
    index = encoder.item_index
    return np.array([full[n, index[t]] if t in index else full[n].mean() for n, t in enumerate(targets)])


def sampled_ranks(encoder: Encoder, lists: Sequence[CandidateList],
                  histories: Mapping[str, Sequence[str]]) -> np.ndarray:
    """1-based rank of each list's target among its candidates (ties against the target)."""
    users = [c.user_id for c in lists]
    rows = encoder.score_lists(users, [histories[u] for u in users], [c.candidates for c in lists])
    return ranks(rows, np.array([c.target_index for c in lists]))


def full_ranks(encoder: Encoder, users: Sequence[str], targets: Sequence[str], histories: Sequence[Sequence[str]],
               seen: Sequence[Iterable[str]], catalogue: Collection[str] | None = None) -> np.ndarray:
    """1-based rank of each case's target (user `users[n]`, folded in from `histories[n]` when unknown) among every
    item of `catalogue` (default: the encoder's) but `seen[n]` (items the user touched, excluded as RecBole's full
    sort excludes the training ones); ties count against the target. A target the encoder does not know ranks below
    every eligible item, last among the catalogue items it does not know either (all tied at the bottom); those
    never outrank a known target. A non-finite target score is refused."""
    scores = encoder.score_catalogue(list(users), [list(h) for h in histories]).astype(np.float64)
    if np.isnan(scores).any():  # a NaN is never >= the target's score: it would rank the target too high
        raise ValueError(f"encoder {encoder.kind}: NaN scores in the catalogue ranking")
    index = encoder.item_index
    unknown = set() if catalogue is None else {i for i in catalogue if i not in index}
    if catalogue is not None:  # e.g. one domain's items of a two-domain encoder
        outside = np.ones(len(index), dtype=bool)
        outside[[index[i] for i in catalogue if i in index]] = False
        scores[:, outside] = -np.inf
    out = np.empty(len(users), dtype=np.int64)
    for n, target in enumerate(targets):
        row, touched = scores[n].copy(), set(seen[n])
        row[[index[i] for i in touched if i in index and i != target]] = -np.inf
        if target not in index:
            tied = len(unknown) - len(unknown & (touched | {target}))  # other unknown items the user has not touched
            out[n] = int((row > -np.inf).sum()) + tied + 1  # below every eligible item, +inf scored ones included
            continue
        if not np.isfinite(row[index[target]]):
            raise ValueError(f"encoder {encoder.kind}: a non-finite score for target {target!r} of user {users[n]!r}")
        out[n] = int((row >= row[index[target]]).sum())
    return out


def _ranked(encoder: Encoder, lists: Sequence[CandidateList], histories: Mapping[str, Sequence[str]],
            data: str) -> dict:
    from adaptrec.metrics.ranking import hit_per_case, ndcg_per_case

    r = sampled_ranks(encoder, lists, histories)
    return {"hr@10": float(hit_per_case(r, 10).mean()), "ndcg@10": float(ndcg_per_case(r, 10).mean()),
            "users": len({lst.user_id for lst in lists}), "lists": len(lists), "data": data}


def validation_metrics(encoder: Encoder, source: str, seed: int = 0) -> dict:
    """The encoder alone on its source's validation part: AUC on TALLRec movie's validation windows
    (`movielens:100k`), else HR@10 and NDCG@10 of each validation target among sampled unseen items (99 for
    leave-one-out; 19 for Amazon, per domain)."""
    from adaptrec.data import amazon, movielens
    from adaptrec.data.candidates import make_candidate_lists
    from adaptrec.metrics.classification import auc

    if source == "movielens:100k":
        cases = movielens.load_movielens("valid")
        scores = labelled_scores(encoder, [c.user_id for c in cases], [[h.item_id for h in c.history] for c in cases],
                                 [c.target_id for c in cases])
        return {"auc": auc([c.label for c in cases], scores), "cases": len(cases), "data": "movielens:100k:valid"}
    if source == "amazon":
        out = {}
        for domain in amazon.DOMAINS:
            cases = amazon.load_amazon(domain, "valid")
            catalogue = {domain: amazon.amazon_items(domain)}
            lists = make_candidate_lists(cases, catalogue, amazon.amazon_user_items(), 19, seed)
            histories = {c.user_id: [h.item_id for h in c.history] for c in cases}
            out.update({f"{domain} {k}": v for k, v in _ranked(encoder, lists, histories, "").items() if k != "data"})
        return {**out, "data": "amazon:arts|office:valid (1 + 19 sampled)"}
    _, lists, histories = movielens_loo_lists("valid", 99, seed)
    return _ranked(encoder, lists, histories, "movielens:100k:loo:valid (1 + 99 sampled)")


def movielens_loo_lists(part: str, negatives: int, seed: int) -> tuple[list[Case], list[CandidateList], dict]:
    """MovieLens-100K leave-one-out `part` ("valid" or "test"): its positive cases, each with 1 + `negatives`
    sampled movies the user had not rated by then (`leave_one_out.seen_items`), and every user's whole history before
    the target (what encoders read)."""
    from adaptrec.data import leave_one_out, movielens
    from adaptrec.data.candidates import make_candidate_lists

    timelines, texts = movielens.loo_timelines(), movielens.item_texts()
    cases = leave_one_out.loo_cases(timelines, part, texts.__getitem__, "movie")
    lists = make_candidate_lists(cases, {"movie": texts}, leave_one_out.seen_items(timelines, part), negatives, seed)
    before = leave_one_out.split_timelines(timelines)[part]
    return cases, lists, {u: [e.item for e in events[:-1]] for u, events in before.items()}
