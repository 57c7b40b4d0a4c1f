"""Amazon Arts<->Office: the collaborative adapter re-ranking LightGCN's top candidates, against the non-LLM rows.

Per target domain (arts, office): LightGCN (`cf.fit`, source amazon: the 8000 train users, both domains) ranks
each test user's target among 19 sampled unseen items of the domain; the collaborative adapter (`office-collab`,
with `--set` lines for arts: LoRA + LightGCN item tokens, 256 shots) re-orders LightGCN's top K for a seeded subset
of test users, one case per user (an LLM prompt per candidate). The same in the cold view, where the target
domain's history is hidden: LightGCN folds the user in from the other domain's items and the adapter reads those
items with their tokens. Office also trains a staged variant (the projector alone for its first steps, then
LoRA too) and a user-token variant (the question names the user by one more soft token, the projected mean of
the history items' LightGCN vectors, as LightGCN folds in an unseen user, next to the target's token); Office and
Arts also train a match-token variant (one soft token after the target's, from that mean times the target's vector:
LightGCN's score of the pair, element by element), also for up to 96 steps (three passes over the 256 shots); Arts
also one whose item vectors continue with their MiniLM title embeddings (`adapter.content: titles`). Rows on
the same users: popularity, LightGCN alone, each adapter's re-ranking, in the cold view also text-only re-rankers (the untuned backbone; the domain's text-only LoRA adapter when registered), and what a
re-ranker at chance gets (LightGCN's top K in random order, in expectation); paired NDCG@10 differences bootstrap
users. For each direction of the plan's `final`, the variant with the best validation AUC then re-ranks for every
test user (whose prompts fit the budget) in both views, alone and stacked with LightGCN's score (a logistic
regression fit on validation users' top K). A content row ranks by MiniLM title embeddings alone (with MiniLM's
wheel), and in those sections is stacked with LightGCN the same way: what titles add to the encoder without an LLM.
Re-ordering the top K of 20 leaves HR@K unchanged by construction.

    python experiments/amazon_collab.py                 # train (or resume) the adapters, re-rank, write the page
    python experiments/amazon_collab.py --render-only   # re-render docs/amazon_collab.md from the JSON
    python experiments/amazon_collab.py --smoke DIR     # the whole path in minutes (tiny encoder, 2 steps, 3 users)

Runs in $ADAPTREC_HOME (default experiments/home), whose encoder cache shares LightGCN's fit with the recipes.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from amazon_encoders import VIEWS, arena
from collab_goals import CONTENT, content_rows, picked, stack_row
from ml100k_loo import TIES, as_dict, group_order, mean_ci, paired, reranked_ranks, stack_scores
from report import (RERANKED_CHANGES, ROOT, banner, cell, experiment_main, machine, scored_before, side_of_zero,
                    signed, table)

from adaptrec.adapters.attach import adapter_key
from adaptrec.backbone import EMBEDDED, load_backbone
from adaptrec.cf.base import FactorEncoder, Interactions, PopularityEncoder
from adaptrec.cf.fit import fit_encoder, source_ratings
from adaptrec.config import load_recipe
from adaptrec.data import amazon
from adaptrec.data.candidates import candidate_cases
from adaptrec.errors import DataFormatError
from adaptrec.evaluation import user_groups
from adaptrec.metrics.beyond import averagepopularity, diversity, giniindex, group_gap, group_means, itemcoverage
from adaptrec.metrics.ranking import hit_per_case, ndcg_per_case, ranks
from adaptrec.registry import Registry
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import backbone_scorer
from adaptrec.scoring.variants import llm_variants, variant_scorer
from adaptrec.text_encoder import title_vectors
from adaptrec.train.recipe import run_recipe

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "amazon_collab.json"
DOC = ROOT / "docs" / "amazon_collab.md"
COMMAND = "python experiments/amazon_collab.py"
RECIPE = "office-collab"
ADAPTER_ROWS = {"joint": "collab adapter (joint)", "staged": "collab adapter (staged)",
                "user token": "collab adapter (joint, user token)", "match token": "collab adapter (joint, match token)",
                "match token, 96 steps": "collab adapter (joint, match token, 96 steps)",
                "match token + titles, 96 steps": "collab adapter (joint, match token, titles, 96 steps)"}
TITLES_OVERRIDE = "adapter.content=titles"  # the override whose item vectors carry MiniLM title embeddings
RANDOM_ROW = "top K re-ordered at random (expected)"
TEXT_ONLY = " (text only)"  # the suffix of the cold view's text-only rows
DIRECTIONS = {"office": (), "arts": ("name=arts-collab", "domain=arts", "data.train=amazon:arts:train",
                                     "data.valid=amazon:arts:valid", "data.test=amazon:arts:test")}


def at_chance(encoder: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected NDCG@10 and HR@10 per case of a re-ranker at chance: a target the encoder ranks within the top `k`
    is equally likely at each of its k places; one below keeps the encoder's rank (was: right for k = 10 only)."""
    places = np.arange(1, k + 1)
    inside = np.asarray(encoder) <= k
    return (np.where(inside, ndcg_per_case(places, 10).mean(), ndcg_per_case(encoder, 10)),
            np.where(inside, hit_per_case(places, 10).mean(), hit_per_case(encoder, 10)))


@dataclass(frozen=True)
class Plan:
    rerank_k: int = 10  # the adapter re-orders LightGCN's top K of the 1 + 19 sampled list
    users: int = 100  # seeded test users per direction and view (K prompts each)
    encoder: str = "lightgcn"  # the recipe's: best alone on validation in 3 of 4 arenas (docs/amazon_encoders.md)
    encoder_epochs: int | None = None  # None: the encoder's default (the recipe's)
    sets: tuple[str, ...] = ()  # recipe overrides
    variants: dict = field(default_factory=lambda: {"office": ("joint", "staged", "user token", "match token",
                                                               "match token, 96 steps"),
                                                    "arts": ("joint", "match token", "match token, 96 steps",
                                                             "match token + titles, 96 steps")})
    projector_steps: int = 16  # the staged variant's projector-only steps (of the recipe's 32)
    text_only: dict = field(default_factory=lambda: {"office": ("office-lora",), "arts": ("arts-lora",)})  # if registered
    final: tuple[str, ...] = ("office", "arts")  # directions whose picked variant also re-ranks every test user
    final_users: int | None = None  # None: every test user (one case each)
    valid_users: int = 100  # validation users drawn per view to fit the stacked row (those whose prompts fit)
    seed: int = 0


SMOKE = Plan(rerank_k=3, users=3, encoder_epochs=2, projector_steps=1, final_users=4, valid_users=4,
             sets=("training.max_steps=2", "training.warmup_steps=0", "training.eval_every=1", "training.val_limit=4",
                   "evaluation.limit=4", "data.shots=4", "training.checkpoint_every=1", "adapter.encoder_epochs=2"))


def one_per_user(cases: list, n: int | None, seed: int) -> list[int]:
    """Indices of a seeded subset of `n` cases (None: every user), no two of one user (a user with two targets
    counts once); a larger `n` keeps the users of a smaller one."""
    first = list({c.user_id: i for i, c in reversed(list(enumerate(cases)))}.values())
    return sorted(np.random.default_rng(seed).permutation(sorted(first))[:n].tolist())


def variant_sets(variant: str, plan: Plan) -> tuple[str, tuple[str, ...]]:
    """The run name's suffix and the recipe overrides of `variant` (an `ADAPTER_ROWS` key)."""
    return {
        "joint": ("", ()),
        "staged": ("-staged", (f"adapter.projector_steps={plan.projector_steps}",)),
        "user token": ("-user", ("adapter.user_token=true",)),
        "match token": ("-match", ("adapter.match_token=true",)),
        "match token, 96 steps": ("-match96", ("adapter.match_token=true", "training.max_steps=96")),
        "match token + titles, 96 steps": ("-match96-titles", ("adapter.match_token=true", TITLES_OVERRIDE,
                                                               "training.max_steps=96")),
    }[variant]


def trained(domain: str, plan: Plan, variant: str):
    """(scorer, info) of the direction's collab adapter in `variant` (an `ADAPTER_ROWS` key): the recipe run
    (resumed when its run folder exists)."""
    suffix, sets = variant_sets(variant, plan)
    name = f"{domain}-collab{suffix}" + ("-smoke" if plan.sets else "")
    # the plan's overrides after the variant's: a smoke plan's steps win
    recipe, text = load_recipe(RECIPE, [*DIRECTIONS[domain], *sets, *plan.sets, f"name={name}"])
    start = time.perf_counter()
    done = run_recipe(recipe, text, resume=True)
    scorer = backbone_scorer(done.backbone, done.train.model, adapter_key(done.train.adapter_dir),
                             template=recipe.data.template, max_prompt_tokens=recipe.data.max_prompt_tokens,
                             batch_size=recipe.evaluation.batch_size, cache=ScoreCache.default())
    info = {"record": done.record.ref, "steps": done.train.steps, "best_step": done.train.best_step,
            "best_val_auc": done.train.best_val_auc, "train_seconds": round(time.perf_counter() - start, 1),
            "environment": done.backbone.environment(),
            **({"content": recipe.adapter.content} if recipe.adapter.content else {})}  # the item vectors' titles
    return scorer, info


@functools.cache
def catalogue(domain: str) -> dict[str, str]:
    """`amazon.amazon_items(domain)`, built once."""
    return amazon.amazon_items(domain)


def top_cases(case, lst, domain: str, top: list[int]) -> list:
    """The user's cases of its top-K candidates, in `top`'s order."""
    every = candidate_cases(lst, case, {domain: catalogue(domain)})
    return [every[j] for j in top]


def renders(scorer, cases: list) -> bool:
    """Whether `scorer` can render every case within its prompt budget (a title can overflow it alone)."""
    try:
        scorer.prompts(cases)
    except DataFormatError:
        return False
    return True


def llm_scores(scorer, cases: list, lists: list, domain: str, tops: list[list[int]]) -> list[np.ndarray]:
    """P(Yes) of each user's top-K candidates (score cache)."""
    flat = scorer.score([c for case, lst, top in zip(cases, lists, tops) for c in top_cases(case, lst, domain, top)])
    cuts = np.cumsum([0] + [len(t) for t in tops])
    return [flat[a:b] for a, b in pairwise(cuts)]


BEYOND_COLUMNS = {"coverage": "itemcoverage", "averagepopularity": "averagepopularity", "gini": "giniindex",
                  "diversity": "diversity"}  # stored key: column head (RecBole's names; diversity is adaptrec's)
BEYOND_K = 5  # re-ordering the top 10 keeps every top-10 set as the encoder's: the top 5 shows what a re-ranker moves


@functools.cache
def domain_vectors(domain: str) -> dict[str, np.ndarray] | None:
    """MiniLM embeddings of the domain's titles, keyed by item id (None without MiniLM's wheel)."""
    return title_vectors(catalogue(domain))


def content_encoder() -> FactorEncoder | None:
    """Titles alone as an encoder: an item's MiniLM title embedding (both domains) against the mean of the user's
    history items' (cosine up to the mean's norm); None without MiniLM's wheel. Stacked with LightGCN it measures
    the content signal a title-reading re-ranker could add to the encoder."""
    arts, office = domain_vectors("arts"), domain_vectors("office")
    if arts is None or office is None:
        return None
    vectors = arts | office  # the domains' item ids are disjoint
    table = np.stack(list(vectors.values()))
    return FactorEncoder(CONTENT, [], list(vectors), np.zeros((0, table.shape[1])), table)


class View:
    """One direction, view and split: seeded users, the encoders' ranks on them and the encoder's top K."""

    def __init__(self, domain: str, view: str, encoders: dict, plan: Plan, users: int | None, split: str = "test",
                 scorer=None):
        """`scorer`: keep only the users whose every top-K prompt it can render (`renders`), counted in
        `self.dropped`."""
        self.domain, self.view, self.plan = domain, view, plan
        self.counts = dict(zip(encoders["popularity"].items, encoders["popularity"].counts.tolist()))
        all_cases, all_lists = arena(domain, split, view, plan.seed)
        idx = one_per_user(all_cases, users, plan.seed)
        cases, lists = [all_cases[i] for i in idx], [all_lists[i] for i in idx]
        self.dropped = 0
        if scorer is not None:  # the re-ranked encoder's top K decides who stays; the rest rank the kept users
            self._rank(cases, lists, {plan.encoder: encoders[plan.encoder]})
            keep = [n for n, (c, lst, top) in enumerate(zip(cases, lists, self.tops))
                    if renders(scorer, top_cases(c, lst, domain, top))]
            self.dropped = len(cases) - len(keep)
            cases, lists = [cases[n] for n in keep], [lists[n] for n in keep]
        self._rank(cases, lists, encoders)
        self.prompts, self.seconds, self.llm, self.stacks = 0, 0.0, {}, {}

    def _rank(self, cases: list, lists: list, encoders: dict) -> None:
        """These users' cases and lists, each encoder's ranks and top 10 on them, and the re-ranked encoder's top K."""
        plan = self.plan
        self.cases, self.lists = cases, lists
        self.targets = [lst.target_index for lst in self.lists]
        scored = {name: enc.score_lists([c.user_id for c in self.cases],
                                        [[h.item_id for h in c.history] for c in self.cases],
                                        [lst.candidates for lst in self.lists]) for name, enc in encoders.items()}
        self.rank_of = {name: ranks(rows, np.array(self.targets)) for name, rows in scored.items()}
        self.order = {name: [np.argsort(-r, kind="stable")[:10] for r in rows] for name, rows in scored.items()}
        self.scored = {name: [np.asarray(r) for r in rows] for name, rows in scored.items()}
        self.base = self.scored[plan.encoder]
        self.tops = [list(np.argsort(-r, kind="stable")[: plan.rerank_k]) for r in self.base]

    def rerank(self, name: str, scorer) -> None:
        """Row `name`: `scorer`'s P(Yes) re-orders the encoder's top K."""
        start = time.perf_counter()
        self.llm[name] = llm_scores(scorer, self.cases, self.lists, self.domain, self.tops)
        self._reordered(name, self.llm[name])
        self.prompts += int(sum(map(len, self.tops)))
        self.seconds += time.perf_counter() - start

    def _reordered(self, name: str, scores: list[np.ndarray]) -> None:
        """Row `name`: the encoder's top K re-ordered by `scores` (one array per user), the rest as the encoder's."""
        self.rank_of[name] = reranked_ranks(self.base, scores, self.tops, self.targets)
        self.order[name] = [np.concatenate([np.asarray(top)[np.argsort(-np.asarray(v), kind="stable")],
                                            [j for j in np.argsort(-b, kind="stable") if j not in top]])[:10]
                            for top, v, b in zip(self.tops, scores, self.base)]

    def top_scores(self, name: str) -> list[np.ndarray]:
        """Row `name`'s scores of each user's top K: an LLM row's P(Yes), or an encoder's scores."""
        if name in self.llm:
            return self.llm[name]
        return [s[top] for s, top in zip(self.scored[name], self.tops)]

    def stack(self, name: str, valid: View) -> None:
        """Row "<encoder> + `name`, stacked on validation": a logistic regression on the encoder's score and row
        `name`'s (an LLM row's logit, another encoder's score as it is; `stack_scores`), fit on `valid`'s top K,
        re-orders the top K."""
        enc = self.plan.encoder
        fit = stack_scores(valid.top_scores(enc), valid.top_scores(name), valid.tops, valid.targets,
                           self.top_scores(enc), self.top_scores(name), logit=name in self.llm)
        if fit is None:  # no validation target in a top K (a tiny smoke run): no row
            return
        stacked = stack_row(self.plan.encoder, name)
        self._reordered(stacked, fit[0])
        self.stacks[stacked] = {"weights": fit[1], "valid_users": len(valid.cases),
                                "second": "adapter logit" if name in self.llm else f"{name} score"}

    def beyond(self, name: str) -> dict[str, float]:
        """RecBole's beyond-accuracy metrics of row `name`'s top `BEYOND_K` (against the domain's catalogue; item
        popularity: training interaction counts), and the intra-list diversity of MiniLM title embeddings."""
        top = [[lst.candidates[j] for j in o[:BEYOND_K]] for lst, o in zip(self.lists, self.order[name])]
        size, k = len(catalogue(self.domain)), BEYOND_K
        out = {f"coverage@{k}": itemcoverage(top, size), f"averagepopularity@{k}": averagepopularity(top, self.counts),
               f"gini@{k}": giniindex(top, size)}
        vectors = domain_vectors(self.domain)
        return out if vectors is None else {**out, f"diversity@{k}": diversity(top, vectors)}

    def groups(self, per_user: np.ndarray) -> dict[str, dict]:
        """NDCG@10 per user group (history length buckets; cold and warm where both occur) and the cold − warm gap."""
        groups, users = user_groups(self.cases), [c.user_id for c in self.cases]
        if not groups["cold"].any() or not groups["warm"].any():  # one of them is every user
            groups = {g: m for g, m in groups.items() if g not in ("cold", "warm")}
        out = {g: as_dict(v) for g, v in group_means(per_user, groups, users, self.plan.seed).items()}
        gap = group_gap(per_user, groups["cold"], groups["warm"], users, self.plan.seed) if "cold" in groups else None
        return out if gap is None else {**out, "cold − warm": as_dict(gap)}

    def block(self) -> dict:
        """Every row's HR/NDCG@10 and paired NDCG@10 differences, plus a re-ranker at chance."""
        plan, encoder = self.plan, self.rank_of[self.plan.encoder]
        ndcg = {name: ndcg_per_case(r, 10) for name, r in self.rank_of.items()}
        ndcg[RANDOM_ROW], random_hits = at_chance(encoder, plan.rerank_k)
        hits = {name: hit_per_case(r, 10) for name, r in self.rank_of.items()} | {RANDOM_ROW: random_hits}
        text = [name for name in ndcg if name.endswith(TEXT_ONLY)]
        content = [name for name in content_rows(plan.encoder) if name in ndcg]  # non-LLM rows beyond the two
        rows = [{"name": name, "hr@10": mean_ci(hits[name], plan.seed), "ndcg@10": mean_ci(ndcg[name], plan.seed),
                 "vs_encoder": paired(ndcg[name], ndcg[plan.encoder], plan.seed),
                 "vs_popularity": paired(ndcg[name], ndcg["popularity"], plan.seed),
                 **({"vs_non_llm": {c: paired(ndcg[name], ndcg[c], plan.seed) for c in content}}
                    if name in ADAPTER_ROWS.values() and content else {}),
                 **({"vs_text_only": {t: paired(ndcg[name], ndcg[t], plan.seed) for t in text}}
                    if name in ADAPTER_ROWS.values() and text else {}),
                 **({"beyond": self.beyond(name)} if name in self.order else {}),
                 "groups": self.groups(ndcg[name])} for name in ndcg]
        return {"domain": self.domain, "view": self.view, "users": len(self.cases), "prompts": self.prompts,
                "score_seconds": round(self.seconds, 1), "rows": rows, "stacks": self.stacks}


def text_only(domain: str, views: list[View], plan: Plan) -> None:
    """The cold view's text-only rows: the untuned backbone and the domain's registered text-only LoRA adapters
    (titles only, no item tokens), re-ranking the same top K."""
    registry = Registry()
    registered = {record.name for record in registry.list()}
    refs = [ref for ref in plan.text_only.get(domain, ()) if ref in registered]
    backbone = load_backbone(EMBEDDED, "8bit")
    for name, key, model in llm_variants(backbone, registry, refs):
        scorer = variant_scorer(backbone, registry, name, key, model, template="tallrec", max_prompt_tokens=384,
                                cache=ScoreCache.default())
        for view in views:
            if view.view == "other":
                view.rerank(name + TEXT_ONLY, scorer)


def run(plan: Plan) -> dict:
    ratings = source_ratings("amazon")
    start = time.perf_counter()
    encoder = fit_encoder(plan.encoder, "amazon", epochs=plan.encoder_epochs, seed=plan.seed)
    encoders = {"popularity": PopularityEncoder(Interactions.of([(u, i) for u, i, _ in ratings.rows], ratings.items)),
                plan.encoder: encoder.encoder}
    content = content_encoder()
    if content is not None:
        encoders[CONTENT] = content
    protocol = {"data": "amazon", "negatives": 19, "rerank_k": plan.rerank_k, "users": plan.users,
                "final": list(plan.final), "valid_users": plan.valid_users,
                "projector_steps": plan.projector_steps,
                "encoder": plan.encoder, "encoder_record": encoder.record, "seed": plan.seed, "command": COMMAND,
                "encoder_seconds": round(time.perf_counter() - start, 1),
                "machine": machine(), "groups_by": "activity"}
    blocks, adapters = [], {}
    for domain in DIRECTIONS:
        views = [View(domain, view, encoders, plan, plan.users) for view in VIEWS.values()]
        scorers = {}
        for variant in plan.variants[domain]:
            if TITLES_OVERRIDE in variant_sets(variant, plan)[1] and content is None:
                continue  # it reads MiniLM title embeddings, as the content row does
            row = ADAPTER_ROWS[variant]
            scorers[row], adapters[f"{domain}, {row}"] = trained(domain, plan, variant)
            for view in views:
                view.rerank(row, scorers[row])
        text_only(domain, views, plan)
        blocks += [view.block() for view in views]
        if domain in plan.final:
            row = picked({"adapters": adapters}, domain)
            blocks += final(domain, plan, encoders, row, scorers[row])
    return {"protocol": protocol, "adapters": adapters, "blocks": blocks}


def final(domain: str, plan: Plan, encoders: dict, row: str, scorer) -> list[dict]:
    """Per view, the blocks of adapter row `row` (the picked one; `scorer` scores with it) on every test user
    (`plan.final_users`) whose prompts fit, with its score, and the content row's where there is one, stacked with
    the encoder's on `plan.valid_users` validation users (those whose prompts fit)."""
    out = []
    for view in VIEWS.values():
        valid = View(domain, view, encoders, plan, plan.valid_users, "valid", scorer)
        test = View(domain, view, encoders, plan, plan.final_users, scorer=scorer)
        valid.rerank(row, scorer)
        test.rerank(row, scorer)
        for stacked in (row, *([CONTENT] if CONTENT in encoders else [])):
            test.stack(stacked, valid)
        out.append({**test.block(), "final": True, "valid_prompts": valid.prompts, "dropped": test.dropped,
                    "valid_dropped": valid.dropped})
    return out


def verdicts(doc: dict) -> list[str]:
    enc = doc["protocol"]["encoder"]
    out = []
    for block in doc["blocks"]:
        judged = {*ADAPTER_ROWS.values(), *block.get("stacks", {})}  # the adapters, and each stacked row
        for row in (r for r in block["rows"] if r["name"] in judged):
            against = [(f"{enc} alone", row["vs_encoder"]), ("popularity alone", row["vs_popularity"]),
                       *((f"the text-only {name.removesuffix(TEXT_ONLY)}", d)
                         for name, d in row.get("vs_text_only", {}).items()),
                       *((name, d) for name, d in row.get("vs_non_llm", {}).items())]
            where = f"{block['domain'].title()}, {_view_name(block['view'])}, {block['users']} users"
            out += [f"* {where}: the {row['name']} against {name}: {side_of_zero(d)} ({signed(d)})."
                    for name, d in against]
    return out


def _view_name(view: str) -> str:
    return next(name for name, v in VIEWS.items() if v == view)


def beyond_table(block: dict) -> list[str]:
    """Each row's beyond-accuracy metrics of its top `BEYOND_K` and NDCG@10 per user group (n: the group's users),
    and a blank line; nothing for results written before these columns."""
    rows = [r for r in block["rows"] if "groups" in r]
    if not rows:
        return []
    found = {m for r in rows for m in r.get("beyond", {})}
    metrics = [m for m in (f"{name}@{BEYOND_K}" for name in BEYOND_COLUMNS) if m in found]
    groups = group_order(rows[0]["groups"])
    sizes = {g: rows[0]["groups"][g]["n"] for g in groups}
    head = ["row", *(BEYOND_COLUMNS[m.partition("@")[0]] + "@" + m.partition("@")[2] for m in metrics),
            *(f"NDCG@10, {g}" + ("" if g == "cold − warm" else f" (n={sizes[g]})") for g in groups)]
    body = [[r["name"], *(f"{r['beyond'][m]:.{1 if m.startswith('average') else 3}f}" if m in r.get("beyond", {})
                          else "–" for m in metrics),
             *(signed(r["groups"][g]) if g == "cold − warm" else f"{r['groups'][g]['value']:.3f}" for g in groups)]
            for r in rows]
    return [*table(head, "l" + "r" * (len(head) - 1), body), ""]


def intro(doc: dict) -> str:
    """The page's protocol paragraph (the sentences on every-user sections and on the beyond-accuracy and group
    tables only where the results hold them)."""
    p, enc = doc["protocol"], doc["protocol"]["encoder"]
    parts = [
        f"{enc} learns from the 8000 train users' interactions (both domains, one catalogue); test users are "
        "unseen, folded in from their history. Each test user's target among 19 sampled unseen items of the "
        f"target domain. The collaborative adapter (`{RECIPE}`; arts: the same recipe with the arts SPECs) "
        f"re-orders {enc}'s top {p['rerank_k']} for {p['users']} seeded test users per view, one case per user; "
        "the other rows score the same users. "
        + (f"Re-ordering the top {p['rerank_k']} leaves HR@10 as {enc}'s; " if p["rerank_k"] <= 10 else "")
        + f"a re-ranker at chance gets the last row's NDCG@10 and HR@10 ({enc}'s hits in the top {p['rerank_k']}, "
        "each at a random place of it). Cold: the target domain's history is hidden (encoder and prompt see the "
        "other domain's items only); there the text-only rows (the untuned backbone, and the domain's text-only "
        "LoRA adapter where "
        f"one is registered) read the same prompts without item tokens and re-rank the same top {p['rerank_k']}."]
    content = any(r["name"] == CONTENT for b in doc["blocks"] for r in b["rows"])
    if content:
        parts.append(f"The {CONTENT} row ranks by the titles alone: the item's MiniLM title embedding against the "
                     "mean of the history items' (both domains), no LLM.")
    if any(b.get("final") for b in doc["blocks"]):
        parts.append("In the sections marked \"every test user\" the variant with the best validation AUC re-ranks "
                     "for every test user (whose prompts fit the adapter's budget), alone and stacked with the "
                     "encoder's score (a logistic regression on the two, fit on "
                     f"{p['valid_users']} validation users' top {p['rerank_k']})"
                     + (f"; {CONTENT} is stacked with the encoder the same way: the content signal a re-ranker "
                        "reading titles could add to the encoder." if content else "."))
    parts.append(f"95% CIs and paired differences bootstrap users. {TIES}")
    if any("groups" in r for b in doc["blocks"] for r in b["rows"]):
        parts.append(f"Under each table, RecBole's beyond-accuracy metrics of each row's top {BEYOND_K} (re-ordering "
                     f"the top {p['rerank_k']} leaves every top-{p['rerank_k']} set as the encoder's): item coverage "
                     "and Gini index against the domain's catalogue (of lists of 1 + 19 sampled items, so coverage "
                     "stays near the share of the catalogue the samples show, whatever the row), average popularity "
                     "in training interactions, "
                     "intra-list diversity of MiniLM title embeddings (1 − cosine); and NDCG@10 per user group: "
                     + ("history length (every interaction before the target, the hidden domain's too in the cold "
                        "views)" if p.get("groups_by") == "activity" else "history length (as run: the items the "
                        "prompt shows, in the cold views the other domain's only)")
                     + ", and cold (no target-domain item in the history) against warm where both occur.")
    return " ".join([*parts, f"Machine: {p['machine']}."])


def render(doc: dict) -> str:
    p, enc = doc["protocol"], doc["protocol"]["encoder"]
    lines = ["# Amazon Arts↔Office: the collaborative adapter against the encoders", "",
             banner(f"{COMMAND} --render-only", [RESULTS]) if RESULTS.is_relative_to(ROOT) else f"(smoke: {RESULTS})",
             "", *scored_before(doc, RESULTS, changes=RERANKED_CHANGES),
             intro(doc), "",
             "## Adapters", "",
             (f"Staged: the projector alone for the first {p['projector_steps']} optimizer steps (LoRA's gradients "
              "dropped, so AdamW neither steps nor keeps moments for it), then both; joint: both from the start. "
              "User token: joint, and the question names the user by one more soft token (\"Whether the user <user> "
              "will like ...\"), the projected mean of the history items' encoder vectors. Match token: joint, and "
              "one more soft token after the target's, that mean times the target's vector element by element (its "
              "sum is the encoder's score) through a linear matcher that starts as a lean toward \"Yes\" in "
              "proportion to that score." + (" Titles: each item's encoder vector continues with its MiniLM title "
              "embedding, in the item tokens and in the match token's product; the matcher's title columns start at "
              "zero." if any(a.get("content") for a in doc["adapters"].values()) else "") + " N steps in a name: the "
              "step budget; steps: those run (early stopping may end a run before its budget); best step: the "
              "validation whose checkpoint re-ranks. Train s is the wall time of the invocation that wrote the results: a resumed run "
              "takes less than its first."), "",
             *table(["direction, training", "adapter", "steps", "best step", "best val AUC", "train s"], "llrrrr",
                    [[d, a["record"], a["steps"], a.get("best_step", "–"), f"{a['best_val_auc']:.3f}",
                      a["train_seconds"]] for d, a in doc["adapters"].items()]), ""]
    for block in doc["blocks"]:
        every = (f" (every test user{' whose prompts fit' if block.get('dropped') else ''}: the picked adapter)"
                 if block.get("final") else "")
        lines += [f"## {block['domain'].title()} targets, {_view_name(block['view'])}, {block['users']} test "
                  f"users{every}",
                  "",
                  *table(["row", "HR@10", "NDCG@10", f"NDCG@10 − {enc} (paired)", "NDCG@10 − popularity (paired)"],
                         "lrrrr", [[r["name"], cell(r["hr@10"]), cell(r["ndcg@10"]), signed(r["vs_encoder"]),
                                    signed(r["vs_popularity"])] for r in block["rows"]]), "",
                  *beyond_table(block),
                  f"{block['prompts']} prompts scored in {block['score_seconds']} s (cached scores take less)"
                  + (f", and {block['valid_prompts']} validation prompts for the stack." if "valid_prompts" in block
                     else "."),
                  *([f"Left out: {block['dropped']} test and {block['valid_dropped']} validation users, whose top "
                     f"{p['rerank_k']} holds an item whose title alone overflows the adapter's prompt budget."]
                    if block.get("dropped") or block.get("valid_dropped") else []),
                  *(f"{name}: weights (encoder, {s.get('second', 'adapter logit')}; each standardised within a "
                    f"user's top {p['rerank_k']}) {s['weights']}, fit on {s['valid_users']} validation users."
                    for name, s in block.get("stacks", {}).items()), ""]
    env = next(iter(doc["adapters"].values()))["environment"]
    return "\n".join([*lines, *verdicts(doc), "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
                      ""])


if __name__ == "__main__":
    experiment_main(sys.modules[__name__])
