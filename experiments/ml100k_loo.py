"""MovieLens-100K leave-one-out: the arena where collaborative signal is known to exist.

943 users; each user's last interaction is the test target, the second last the validation target, everything
before trains the encoders (`data.leave_one_out`). Rows:

* the classic encoders alone — popularity, BPR and ALS (implicit), LightGCN (torch_geometric), SASRec — on
  1 + 99 sampled candidates (HR@10, NDCG@10, per-user AUC) and on the full catalogue (HR@10, NDCG@10,
  coverage/average popularity/Gini of the top 10), every user;
* the collaborative adapter (`ml100k-collab`: LoRA + item tokens from the encoder best on validation NDCG@10,
  256 shots; three training variants) re-ranking that encoder's top K sampled candidates, on a seeded subset of
  test users (an LLM prompt per candidate: ~K prompts per user), and the encoder's score stacked with the
  adapter's logit (a logistic regression fit on validation users' top K);
* the variant picked on validation (`collab_goals.picked_reranker`) re-ranking every test user (`Plan.final_users`),
  stacked likewise;
* paired differences against the best encoder on the same users. One case per user, so a user bootstrap.

    python experiments/ml100k_loo.py                 # fit, train (or resume) the adapter, re-rank, write the page
    python experiments/ml100k_loo.py --render-only   # re-render docs/leave_one_out.md from the JSON
    python experiments/ml100k_loo.py --refresh-encoders  # re-measure the encoder rows only (minutes)
    python experiments/ml100k_loo.py --smoke DIR     # the whole path in minutes (tiny encoders, 2 steps, 3-5 users)

Runs in $ADAPTREC_HOME (default experiments/home).
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from collab_goals import picked_reranker, stack_row
from report import (RERANKED_CHANGES, ROOT, STARTED, banner, cell, experiment_main, machine, scored_before,
                    side_of_zero, signed, table)
from sklearn.linear_model import LogisticRegression

from adaptrec.adapters.attach import adapter_key
from adaptrec.adapters.base import tuner_for
from adaptrec.backbone import load_backbone
from adaptrec.cf.base import Interactions, PopularityEncoder
from adaptrec.cf.evaluate import full_ranks, movielens_loo_lists
from adaptrec.cf.fit import fit_encoder
from adaptrec.config import load_recipe
from adaptrec.data import leave_one_out, movielens
from adaptrec.data.candidates import candidate_cases
from adaptrec.data.records import Case
from adaptrec.data.spec import NEGATIVES_AVOID
from adaptrec.errors import AdaptrecError
from adaptrec.metrics.beyond import activity_buckets, averagepopularity, diversity, giniindex, group_means, itemcoverage
from adaptrec.metrics.bootstrap import bootstrap_ci
from adaptrec.metrics.ranking import hit_per_case, ndcg_per_case, ranks, user_auc
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import backbone_scorer
from adaptrec.text_encoder import title_vectors
from adaptrec.train.loop import train
from adaptrec.train.recipe import run_dir_for, run_recipe

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ml100k_loo.json"
DOC = ROOT / "docs" / "leave_one_out.md"
COMMAND = "python experiments/ml100k_loo.py"
TIES = ("A target scored level with a candidate ranks below it (ties count against the target): the popularity row's "
        "integer counts tie often, so its HR and NDCG are lower bounds (ties broken at random would raise them); the "
        "other rows' scores rarely tie.")
ENCODERS = ("bpr", "als", "lightgcn", "sasrec")
RECIPE = "ml100k-collab"


@dataclass(frozen=True)
class Plan:
    negatives: int = 99
    rerank_k: int = 20  # the LLM re-orders the best encoder's top K of the sampled list
    test_users: int = 300  # seeded subset of test users every variant re-ranks (K prompts each)
    final_users: int | None = None  # test users the variant picked on validation then re-ranks (None: every one)
    valid_users: int = 100  # validation users whose top K fit the stacked row
    encoder_epochs: int | None = None  # None: each encoder's default
    sets: tuple[str, ...] = ()  # recipe overrides
    seed: int = 0


SMOKE = Plan(negatives=19, rerank_k=4, test_users=3, final_users=5, valid_users=4, encoder_epochs=2,
             sets=("training.max_steps=2", "training.warmup_steps=0", "training.eval_every=1", "training.val_limit=4",
                   "evaluation.limit=4", "data.shots=4", "training.checkpoint_every=1", "name=ml100k-collab-smoke",
                   "adapter.encoder_epochs=2"))


def mean_ci(values: np.ndarray, seed: int, users: list[str] | None = None) -> dict:
    """Mean with a 95% bootstrap CI over users (one value per user, or `users` naming each value's user)."""
    ci = bootstrap_ci(np.mean, values, seed=seed, clusters=users)
    return {"value": float(values.mean()), "ci_low": ci.low, "ci_high": ci.high, "n": len(values)}


class Arena:
    """One split's cases, 1 + N sampled lists, full histories and the items each user has seen."""

    def __init__(self, part: str, plan: Plan):
        self.texts = movielens.item_texts()
        self.cases, self.lists, self.histories = movielens_loo_lists(part, plan.negatives, plan.seed)
        self.users = [c.user_id for c in self.cases]

    def subset(self, n: int | None, seed: int) -> list[int]:
        """Indices of a seeded subset of n users (all when n is None or >= their number); a larger n keeps the
        users of a smaller one."""
        return sorted(np.random.default_rng(seed).permutation(len(self.cases))[:n].tolist())


def ranking_metrics(sampled: np.ndarray, auc: np.ndarray | None, full: np.ndarray | None, seed: int) -> dict:
    out = {"sampled_hr@10": mean_ci(hit_per_case(sampled, 10), seed),
           "sampled_ndcg@10": mean_ci(ndcg_per_case(sampled, 10), seed)}
    if auc is not None:
        out["user_auc"] = mean_ci(auc, seed)
    if full is not None:
        out["full_hr@10"] = mean_ci(hit_per_case(full, 10), seed)
        out["full_ndcg@10"] = mean_ci(ndcg_per_case(full, 10), seed)
    return out


ACTIVITY_EDGES = (50, 150)  # every MovieLens-100K user rated 20+ movies: the default edges (5, 20) make one group


def as_dict(v) -> dict:
    """A `MetricValue` as the results JSON holds it."""
    return {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high, "n": v.n}


def activity_groups(arena: Arena, idx: list[int], per_user: np.ndarray, seed: int) -> dict[str, dict]:
    """Mean of `per_user` (one value per user of `idx`) per activity bucket: how many movies the user rated before
    the target (`ACTIVITY_EDGES`), CIs over users."""
    lengths = [len(arena.histories[arena.users[i]]) for i in idx]
    buckets = np.array(activity_buckets(lengths, ACTIVITY_EDGES))
    masks = {f"history {b}": buckets == b for b in activity_buckets([0, *ACTIVITY_EDGES], ACTIVITY_EDGES)}
    return {g: as_dict(v) for g, v in group_means(per_user, masks, None, seed).items()}


@functools.cache
def movie_vectors() -> dict[str, np.ndarray] | None:
    """MiniLM embeddings of the movie titles, keyed by item id (None without MiniLM's wheel)."""
    return title_vectors(movielens.item_texts())


def encoder_row(name: str, encoder, arena: Arena, counts: dict[str, float], seed: int) -> dict:
    """Every metric of one encoder on every user of `arena`, with its per-user sampled scores kept for re-ranking."""
    histories = [arena.histories[u] for u in arena.users]
    rows = encoder.score_lists(arena.users, histories, [c.candidates for c in arena.lists])
    target = np.array([c.target_index for c in arena.lists])
    sampled = ranks(rows, target)
    movies = list(arena.texts)  # every row ranks, and counts its coverage in, the whole catalogue (an encoder's
    # own items leave out the movies no training interaction touched)
    full = full_ranks(encoder, arena.users, [c.target_id for c in arena.lists], histories, histories, movies)
    scores = encoder.score_catalogue(arena.users, [arena.histories[u] for u in arena.users])
    for n, user in enumerate(arena.users):  # top 10 of the unseen items, as the full ranking counts them
        scores[n, [encoder.item_index[i] for i in arena.histories[user] if i in encoder.item_index]] = -np.inf
    top = [[encoder.items[j] for j in np.argsort(-row, kind="stable")[:10]] for row in scores]
    beyond = {"coverage@10": itemcoverage(top, len(movies)), "averagepopularity@10": averagepopularity(top, counts),
              "gini@10": giniindex(top, len(movies))}
    if movie_vectors() is not None:
        beyond["diversity@10"] = diversity(top, movie_vectors())
    per_user = ndcg_per_case(sampled, 10)
    return {"name": name, "kind": "encoder", "metrics": ranking_metrics(sampled, user_auc(rows, target), full, seed),
            "beyond_full": beyond, "per_user_ndcg": per_user.tolist(),
            "groups": activity_groups(arena, list(range(len(arena.users))), per_user, seed),
            "scores": [r.tolist() for r in rows]}


def fit_all(plan: Plan) -> dict:
    """Every encoder, fitted on the leave-one-out training interactions, with its fit time (a fresh fit, never the
    encoder cache's copy, whose time the page would report instead; the fits are seeded, and a re-run reproduced
    every encoder row and re-ranked the same candidates)."""
    timelines = movielens.loo_timelines()
    data = Interactions.of([(u, i) for u, i, _ in leave_one_out.train_interactions(timelines)],
                           items=list(movielens.item_texts()))
    out = {"popularity": (PopularityEncoder(data), 0.0)}
    for kind in ENCODERS:
        start = time.perf_counter()
        out[kind] = (fit_encoder(kind, "movielens:100k:loo", epochs=plan.encoder_epochs, seed=plan.seed,
                                 cache=False).encoder, round(time.perf_counter() - start, 1))
    return out


def rerank(scores: list[np.ndarray], idx: list[int], k: int) -> list[list[int]]:
    """For each chosen user, the candidate positions of the encoder's top k."""
    return [list(np.argsort(-scores[i], kind="stable")[:k]) for i in idx]


def reranked_ranks(base: list[np.ndarray], new: list[np.ndarray], tops: list[list[int]],
                   targets: list[int]) -> np.ndarray:
    """Target rank when the top k are re-ordered by `new` (ties against the target) and the rest keep `base`'s order.
    A target that `base` ties with candidates across the cut counts as outside it (was: inside whenever the stable
    sort listed it first, in the re-ranker's favour); its every tie is inside when its own rank is within k."""
    out = []
    for b, n, top, t in zip(base, new, tops, targets):
        at = int(ranks([b], [t])[0])
        if at <= len(top):
            mine = n[top.index(t)]
            out.append(int((n >= mine).sum()))
        else:
            out.append(at)
    return np.array(out)


def llm_scores(scorer, arena: Arena, idx: list[int], tops: list[list[int]]) -> list[np.ndarray]:
    """P(Yes) of each top-k candidate (score cache), per chosen user."""
    cases = []
    for i, top in zip(idx, tops):
        lst = arena.lists[i]
        every = candidate_cases(lst, arena.cases[i], {"movie": arena.texts})
        cases.extend(every[j] for j in top)
    flat = scorer.score(cases)
    return [flat[n * len(top):(n + 1) * len(top)] for n, top in enumerate(tops)]


def _stack_x(enc: list[np.ndarray], llm: list[np.ndarray], logit: bool = True) -> np.ndarray:
    """Per candidate: the encoder score and the LLM logit (`logit`; else `llm` holds another score as it is), each
    standardised within the user's top k."""
    def z(v):
        v = np.asarray(v, float)
        return (v - v.mean()) / (v.std() + 1e-9)

    return np.column_stack([np.concatenate([z(e) for e in enc]),
                            np.concatenate([z(np.log(p / (1 - p + 1e-12) + 1e-12) if logit else p) for p in llm])])


def stack_scores(v_enc: list[np.ndarray], v_llm: list[np.ndarray], v_tops: list, v_targets: list[int],
                 t_enc: list[np.ndarray], t_llm: list[np.ndarray],
                 logit: bool = True) -> tuple[list[np.ndarray], list[float]] | None:
    """Per test user, a logistic regression's P(target) over its top k from the encoder's score and the LLM's logit
    (`_stack_x`; `logit` False: a second score as it is), fit on the validation users' top k (`v_tops`: candidate
    indices; label 1 where the candidate is the user's `v_targets` entry); and its weights. None when no validation
    target made a top k (nothing to fit)."""
    labels = np.concatenate([[int(j == t) for j in top] for top, t in zip(v_tops, v_targets)])
    if labels.min() == labels.max():
        return None
    model = LogisticRegression(max_iter=1000).fit(_stack_x(v_enc, v_llm, logit), labels)
    flat = model.predict_proba(_stack_x(t_enc, t_llm, logit))[:, 1]
    return np.split(flat, np.cumsum([len(t) for t in t_enc])[:-1]), [round(float(w), 4) for w in model.coef_[0]]


def hard_cases(encoder, part: str, users: list[str], k: int, seed: int) -> list[Case]:
    """Per user: the positive of `part` (train: the training prefix's last item) and one negative drawn from the
    encoder's top k items the user had not touched by then (`leave_one_out.seen_items`), the kind of candidate
    re-ranking must reject."""
    timelines, texts = movielens.loo_timelines(), movielens.item_texts()
    prefixes, seen = leave_one_out.split_timelines(timelines)[part], leave_one_out.seen_items(timelines, part)
    rng = np.random.default_rng(seed)
    out = []
    for user in users:
        events = prefixes[user]
        (case,) = leave_one_out.loo_cases({user: events}, "test", texts.__getitem__, "movie")  # last item = target
        scores = encoder.score_catalogue([user], [[e.item for e in events[:-1]]])[0]
        touched = {encoder.item_index[i] for i in seen[user] if i in encoder.item_index}
        top = [j for j in np.argsort(-scores, kind="stable") if j not in touched][:k]
        item = encoder.items[int(rng.choice(top))]
        out += [case, replace(case, target=texts[item], target_id=item, label=0)]
    return out


UNSEEN_NOW = ("\"Unseen\" means not rated by the end of that part (training: the training prefix), so a movie "
              "the user rates later can be a training or validation negative, as RecBole samples them.")
UNSEEN_AS_RUN = ("\"Unseen\" meant, in this run, never in the user's whole timeline, so a movie the user rates "
                 "later (the validation or test target) was never a training or validation negative: for random "
                 "negatives that rarely matters, for hard negatives (often the very movies re-ranking must place) it "
                 "kept the future out of the No side. The code now samples them from what the user had rated by "
                 "then, as RecBole does; a re-run refreshes these rows.")
VARIANTS = {"random negatives": (), "hard negatives": (f"name={RECIPE}-hard",),
            "match token": (f"name={RECIPE}-match", "adapter.match_token=true")}  # name: recipe overrides


def trained(plan: Plan, best: str, encoder, variant: str, seed: int) -> tuple:
    """(scorer, info) of the collab adapter on `best`'s item vectors in `variant` (a `VARIANTS` key): the recipe
    as shipped (random negatives, `run_recipe`), with the match token, or trained on 128 users' hard-negative pairs
    (validated on 24 validation users' pairs)."""
    hard = variant == "hard negatives"
    sets = [f"adapter.encoder={best}", *plan.sets, *VARIANTS[variant]]
    recipe, text = load_recipe(RECIPE, sets)
    start = time.perf_counter()
    if hard:
        train_users = sorted(u for u, ev in leave_one_out.split_timelines(movielens.loo_timelines())["train"].items()
                             if len(ev) >= 3)  # a target, and a history before it
        pick = np.random.default_rng(seed).permutation(len(train_users))
        n_train, n_valid = recipe.data.shots // 2, recipe.training.val_limit // 2
        train_cases = hard_cases(encoder, "train", [train_users[i] for i in pick[:n_train]], plan.rerank_k, seed)
        valid_users = sorted(leave_one_out.split_timelines(movielens.loo_timelines())["valid"])
        chosen = np.random.default_rng(seed + 1).permutation(len(valid_users))[:n_valid]
        val_cases = hard_cases(encoder, "valid", [valid_users[i] for i in chosen], plan.rerank_k, seed)
        backbone = load_backbone(recipe.backbone.name, recipe.backbone.quantization,
                                 int8_backend=recipe.backbone.int8_backend)
        run_dir = run_dir_for(recipe)
        result = train(recipe, backbone, train_cases, val_cases, run_dir, resume=True,
                       start_over=f"remove {run_dir} to train this variant again")
        model = result.model
        model.load_adapter(str(result.adapter_dir), adapter_name="best", is_trainable=False)
        model.set_adapter("best")
        tuner_for(model).load_extra(model, result.adapter_dir, backbone.tokenizer)
        model.eval()
        record = f"run folder {result.run_dir.name} (not registered)"
    else:
        done = run_recipe(recipe, text, resume=True)
        backbone, result, record = done.backbone, done.train, done.record.ref
    scorer = backbone_scorer(backbone, result.model, adapter_key(result.adapter_dir), template=recipe.data.template,
                             max_prompt_tokens=recipe.data.max_prompt_tokens, batch_size=recipe.evaluation.batch_size,
                             cache=ScoreCache.default())
    negatives = "hard: one of the encoder's top K" if hard else "random: one sampled unseen movie"
    info = {"recipe": RECIPE, "negatives": negatives, "match_token": variant == "match token",
            "encoder": best, "record": record, "steps": result.steps, "best_val_auc": result.best_val_auc,
            "train_seconds": round(time.perf_counter() - start, 1), "environment": backbone.environment()}
    return scorer, info


def adapter_rows(plan: Plan, best: str, valid: Arena, test: Arena, enc_valid: list, enc_test: list,
                 best_ndcg: list[float], adapters: dict[str, tuple], n_test: int | None, seed: int) -> list[dict]:
    """For each variant of `adapters` (variant -> `trained`'s (scorer, info)): re-rank `best`'s top K on `n_test`
    seeded test users, stack the two scores, and pair both rows with `best` alone (`best_ndcg`: its NDCG@10 per
    test user) on the same users."""
    k = plan.rerank_k
    vi, ti = valid.subset(plan.valid_users, seed), test.subset(n_test, seed)
    v_tops, t_tops = rerank(enc_valid, vi, k), rerank(enc_test, ti, k)
    v_enc, t_enc = [enc_valid[i][top] for i, top in zip(vi, v_tops)], [enc_test[i][top] for i, top in zip(ti, t_tops)]
    targets, base = [test.lists[i].target_index for i in ti], [enc_test[i] for i in ti]
    best_here = np.asarray([best_ndcg[i] for i in ti])
    paired_with_best = {"best_on_same_users": mean_ci(best_here, seed),
                        "best_groups": activity_groups(test, ti, best_here, seed)}
    out = []
    for variant, (scorer, trained_info) in adapters.items():
        info = dict(trained_info)
        start = time.perf_counter()
        v_llm, t_llm = llm_scores(scorer, valid, vi, v_tops), llm_scores(scorer, test, ti, t_tops)
        info["score_seconds"] = round(time.perf_counter() - start, 1)
        info["prompts"] = int(sum(len(t) for t in v_tops) + sum(len(t) for t in t_tops))
        fit = stack_scores(v_enc, v_llm, v_tops, [valid.lists[i].target_index for i in vi], t_enc, t_llm)
        rows = [(f"collab adapter ({variant}) re-ranks {best}'s top {k}", t_llm)]
        if fit is not None:  # no validation target in a top k (a smoke run's few users): no stacked row
            stacked, info["stack_weights"] = fit
            rows.append((stack_row(best, f"collab adapter ({variant})"), stacked))
        for name, new in rows:
            r = reranked_ranks(base, new, t_tops, targets)
            per_user = ndcg_per_case(r, 10)
            out.append({"name": name, "kind": "llm", "variant": variant, "users": len(ti),
                        "metrics": ranking_metrics(r, None, None, seed), "per_user_ndcg": per_user.tolist(),
                        "groups": activity_groups(test, ti, per_user, seed),
                        "vs_best": paired(per_user, best_here, seed), **paired_with_best, **info})
    return out


def paired(a: list[float], b: list[float], seed: int, users: list[str] | None = None) -> dict:
    """Mean of a − b with a 95% bootstrap CI over users (one pair per user, or `users` naming each pair's user)."""
    return mean_ci(np.asarray(a) - np.asarray(b), seed, users)


def encoder_rows(plan: Plan, encoders: dict, valid: Arena, test: Arena) -> tuple[list[dict], dict, str]:
    """Each encoder's test row (with its validation metrics and fit time), its validation row, and the name of the
    best on validation NDCG@10."""
    counts = dict(zip(encoders["popularity"][0].items, encoders["popularity"][0].counts.tolist()))
    rows, valid_rows = [], {}
    for name, (encoder, seconds) in encoders.items():
        valid_rows[name] = encoder_row(name, encoder, valid, counts, plan.seed)
        row = encoder_row(name, encoder, test, counts, plan.seed)
        row["fit_seconds"], row["valid"] = seconds, valid_rows[name]["metrics"]
        rows.append(row)
    best = max(ENCODERS, key=lambda n: valid_rows[n]["metrics"]["sampled_ndcg@10"]["value"])  # one with item vectors
    return rows, valid_rows, best


def compared_with_best(rows: list[dict], best: str, seed: int) -> list[dict]:
    """The encoder rows without their kept scores, each but the best with its paired difference from the best."""
    best_row = next(r for r in rows if r["name"] == best)
    for row in rows:
        row.pop("scores")
        if row is not best_row:
            row["vs_best"] = paired(row["per_user_ndcg"], best_row["per_user_ndcg"], seed)
    return rows


def refresh_encoders(doc: dict, plan: Plan) -> dict:
    """The stored results with every encoder row fitted and measured anew and the adapter rows kept; refused when
    the best encoder, its sampled test ranking or its sampled validation NDCG changed, which the adapter rows
    re-rank, are compared with and were picked by."""
    if not doc:
        raise AdaptrecError(f"no results at {RESULTS} to refresh: run without --refresh-encoders first")
    valid, test = Arena("valid", plan), Arena("test", plan)
    rows, _, best = encoder_rows(plan, fit_all(plan), valid, test)
    stored = next(r for r in doc["rows"] if r["kind"] == "encoder" and r["name"] == doc["protocol"]["best"])
    fresh = next(r for r in rows if r["name"] == best)  # its sampled test and validation rankings, which the adapter
    # rows re-rank and the pick reads, as they were (full-catalogue metrics may change: that is what a refresh is for)
    picked = [(r["per_user_ndcg"], r["valid"]["sampled_ndcg@10"]) for r in (fresh, stored)]
    if best != stored["name"] or picked[0] != picked[1]:
        raise AdaptrecError(f"the encoders no longer reproduce the stored {stored['name']} ranking the adapter rows "
                            f"re-rank: run {COMMAND} without --refresh-encoders")
    return {**doc, "protocol": {**doc["protocol"], "encoders_refreshed": time.strftime("%Y-%m-%d")},
            "rows": compared_with_best(rows, best, plan.seed) + [r for r in doc["rows"] if r["kind"] != "encoder"]}


REFRESH = ("--refresh-encoders", "re-fit and re-measure the encoder rows only, keeping the adapter rows",
           refresh_encoders)


def run(plan: Plan) -> dict:
    valid, test = Arena("valid", plan), Arena("test", plan)
    encoders = fit_all(plan)
    rows, valid_rows, best = encoder_rows(plan, encoders, valid, test)
    best_row = next(r for r in rows if r["name"] == best)
    enc_valid = [np.asarray(s) for s in valid_rows[best]["scores"]]
    enc_test = [np.asarray(s) for s in best_row["scores"]]
    args = (plan, best, valid, test, enc_valid, enc_test, best_row["per_user_ndcg"])
    adapters = {variant: trained(plan, best, encoders[best][0], variant, plan.seed) for variant in VARIANTS}
    llm_rows = adapter_rows(*args, adapters, plan.test_users, plan.seed)
    pick = picked_reranker(llm_rows)["variant"]
    final_rows = adapter_rows(*args, {pick: adapters[pick]}, plan.final_users, plan.seed)
    for row in final_rows:
        row["final"] = True
    rows = compared_with_best(rows, best, plan.seed)
    return {"protocol": {"data": "movielens:100k:loo", "users": len(test.cases), "negatives": plan.negatives,
                         "rerank_k": plan.rerank_k, "llm_test_users": llm_rows[0]["users"],
                         "llm_final_users": final_rows[0]["users"], "llm_valid_users": plan.valid_users,
                         "seed": plan.seed, "best": best, "machine": machine(),
                         "command": COMMAND, "negatives_avoid": NEGATIVES_AVOID,
                         "llm_rows_commit": STARTED["git_commit"]},  # `--refresh-encoders` keeps it with the rows
            "rows": rows + llm_rows + final_rows}


def verdicts(doc: dict) -> list[str]:
    best = doc["protocol"]["best"]
    out = []
    for row in doc["rows"]:
        if row["kind"] != "llm":
            continue
        d = row["vs_best"]
        out.append(f"* {row['name']} against {best} alone on the same {row['users']} users (sampled NDCG@10): "
                   f"{side_of_zero(d)} ({signed(d)}).")
    return out


def group_order(names) -> list[str]:
    """User-group names in reading order (the results JSON sorts keys): history buckets by their lower edge, then
    cold, warm and their gap."""
    def key(name: str) -> tuple:
        bucket = name.removeprefix("history ")
        if bucket == name:
            return (1, ["cold", "warm", "cold − warm"].index(name))
        return (0, -1 if bucket.startswith("<") else int(bucket.removeprefix(">=").split("-")[0]))

    return sorted(names, key=key)


def group_table(caption: str, rows: list[tuple[str, dict | None]]) -> list[str]:
    """`caption` and a table of each row's value per user group (n: the group's users); nothing for results
    written before the groups."""
    if not rows or any(g is None for _, g in rows):
        return []
    groups = rows[0][1]
    order = group_order(groups)
    return [caption, "", *table(["row", *(f"{g} (n={groups[g]['n']})" for g in order)], "l" + "r" * len(order),
                                [[name, *(cell(g[k]) for k in order)] for name, g in rows]), ""]


def _llm_rows(p: dict, llm: list[dict]) -> list[str]:
    """The table of re-ranker and stacked rows (pairs of rows on the same users), their NDCG@10 per activity group,
    verdicts and stack weights."""
    n = p["negatives"]
    lines = [*table(["row", f"HR@10 (1+{n})", f"NDCG@10 (1+{n})", f"{p['best']} alone, same users",
                     "paired NDCG@10 diff", "best val AUC", "steps", "prompts scored", "train s", "score s"],
                    "lrrrrrrrrr",
                    [[r["name"], cell(r["metrics"]["sampled_hr@10"]), cell(r["metrics"]["sampled_ndcg@10"]),
                      cell(r["best_on_same_users"]), signed(r["vs_best"]), f"{r['best_val_auc']:.3f}", r["steps"],
                      r["prompts"], r["train_seconds"], r["score_seconds"]] for r in llm]), "",
             *group_table(f"NDCG@10 (1+{n}) by how many movies the user rated before the target (the same "
                          f"{llm[0]['users'] if llm else 0} users):",
                          [(f"{p['best']} alone", llm[0].get("best_groups") if llm else None),
                           *((r["name"], r.get("groups")) for r in llm)]),
             *verdicts({"protocol": p, "rows": llm}), ""]
    for r in [r for r in llm if r["name"].startswith("collab adapter")]:  # one per variant, beside its stacked row
        variant = f"{r['negatives']}{', match token' if r.get('match_token') else ''}"
        weights = (f"stacked weights (encoder, adapter logit; each standardised within a user's top {p['rerank_k']}) "
                   f"{r['stack_weights']}" if "stack_weights" in r else "no stacked row (no validation target in a top "
                   f"{p['rerank_k']})")
        lines += [f"* {variant}: {weights}; adapter {r['record']}."]
    return [*lines, ""]


def render(doc: dict) -> str:
    p = doc["protocol"]
    n = p["negatives"]
    metric_names = ("sampled_hr@10", "sampled_ndcg@10", "user_auc", "full_hr@10", "full_ndcg@10")
    enc = [r for r in doc["rows"] if r["kind"] == "encoder"]
    diverse = all("diversity@10" in r["beyond_full"] for r in enc)
    llm = [r for r in doc["rows"] if r["kind"] == "llm"]
    lines = [
        "# MovieLens-100K leave-one-out", "",
        banner(f"{COMMAND} --render-only", [RESULTS]) if RESULTS.is_relative_to(ROOT) else f"(smoke: {RESULTS})", "",
        *scored_before(doc, RESULTS, [p.get("llm_rows_commit")], RERANKED_CHANGES),
        f"{p['users']} users; each one's last interaction is the test target, its second last the validation "
        f"target, the rest trains the encoders. Sampled: the target among {p['negatives']} movies the user never "
        "rated (seeded per user); full: among every movie the user has not rated before the target. "
        f"95% CIs bootstrap users (one case each). {TIES} Machine: " + p["machine"] + ".", "",
        "## Encoders alone (every user)", "",
        *table(["row", f"HR@10 (1+{n})", f"NDCG@10 (1+{n})", "per-user AUC", "HR@10 (full)", "NDCG@10 (full)",
                "itemcoverage@10", "averagepopularity@10", "giniindex@10", *(["diversity@10"] if diverse else []),
                f"valid NDCG@10 (1+{n})", "fit s"], "l" + "r" * (10 + diverse),
               [[r["name"], *(cell(r["metrics"][m]) for m in metric_names),
                 f"{r['beyond_full']['coverage@10']:.3f}", f"{r['beyond_full']['averagepopularity@10']:.1f}",
                 f"{r['beyond_full']['gini@10']:.3f}",
                 *([f"{r['beyond_full']['diversity@10']:.3f}"] if diverse else []),
                 cell(r["valid"]["sampled_ndcg@10"]), r["fit_seconds"]] for r in enc]), "",
        *(["The beyond-accuracy columns describe each encoder's top 10 of the full catalogue (item popularity: "
           "training interactions; diversity: 1 − cosine of MiniLM title embeddings, within a list).", ""]
          if diverse else []),
        *group_table(f"NDCG@10 (1+{n}) by how many movies the user rated before the target (every user):",
                     [(r["name"], r.get("groups")) for r in enc]),
        f"The best on validation NDCG@10 is **{p['best']}**; the collaborative adapter uses its item vectors.", "",
        *([(f"These encoder rows were fitted and measured again on {p['encoders_refreshed']} (`--refresh-encoders`, "
            "each ranking the whole catalogue); the adapter rows below are the earlier run's, kept because "
            f"{p['best']}'s per-user sampled ranking reproduced exactly."), ""] if "encoders_refreshed" in p else []),
        f"## The collaborative adapter re-ranking {p['best']}'s top {p['rerank_k']} "
        f"({p['llm_test_users']} seeded test users)", "",
        "Each adapter trains 256 labelled prompts (the recipe's budget, up to 96 steps, validation AUC every 12): "
        "with random negatives, 256 shots of the training positions each paired with one sampled unseen movie "
        "(`ml100k-collab` as shipped); with the match token, the same, plus one soft token after the target's, "
        "the mean of the history items' vectors times the target's (docs/adapters.md); with hard negatives, 128 "
        f"users' last training item each paired with one of the encoder's top {p['rerank_k']} unseen movies for "
        "that history, the candidates re-ranking has to reject (validated on 24 validation users' pairs of the same "
        "kind). " + (UNSEEN_NOW if p.get("negatives_avoid") == NEGATIVES_AVOID else UNSEEN_AS_RUN) + " "
        "Train s and score s are the wall time of the invocation that wrote the results: a resumed run and "
        "cached scores take less than the first (the recipe's header gives its first run's cost).", "",
        *_llm_rows(p, [r for r in llm if not r.get("final")]),
    ]
    final = [r for r in llm if r.get("final")]
    if final:
        lines += [f"## The picked adapter on {p['llm_final_users']} test users", "",
                  "The variant with the best validation AUC among those validated on random negatives (hard "
                  "negatives validate on harder pairs) re-ranks them; the stacked row's regression is "
                  f"fit on the same {p['llm_valid_users']} validation users.", "", *_llm_rows(p, final)]
    if llm:
        lines += ["Environment of the adapter rows: " + ", ".join(f"{k} {v}" for k, v in llm[0]["environment"].items())
                  + ". The encoder rows record the machine only.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    experiment_main(sys.modules[__name__])
