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
LightGCN's score of the pair, element by element), also for up to 96 steps (three passes over the 256 shots). Rows on
the same users: popularity, LightGCN alone, each adapter's re-ranking, in the cold view also text-only re-rankers (the untuned backbone; the domain's text-only LoRA adapter when registered), and what a
re-ranker at chance gets (LightGCN's top K in random order, in expectation); paired NDCG@10 differences bootstrap
users.
Re-ordering the top K of 20 leaves HR@K unchanged by construction.

    python experiments/amazon_collab.py                 # train (or resume) the adapters, re-rank, write the page
    python experiments/amazon_collab.py --render-only   # re-render docs/amazon_collab.md from the JSON
    python experiments/amazon_collab.py --smoke DIR     # the whole path in minutes (tiny encoder, 2 steps, 3 users)

Runs in $ADAPTREC_HOME (default experiments/home), whose encoder cache shares LightGCN's fit with the recipes.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from amazon_encoders import VIEWS, arena
from ml100k_loo import _diff, mean_ci, paired, reranked_ranks
from report import ROOT, banner, cell, experiment_main, side_of_zero, table

from adaptrec.adapters.attach import adapter_key
from adaptrec.backbone import EMBEDDED, load_backbone
from adaptrec.cf.base import Interactions, PopularityEncoder
from adaptrec.cf.fit import fit_encoder, source_ratings
from adaptrec.config import load_recipe
from adaptrec.data import amazon
from adaptrec.data.candidates import candidate_cases
from adaptrec.metrics.ranking import hit_per_case, ndcg_per_case, ranks
from adaptrec.registry import Registry
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import backbone_scorer
from adaptrec.scoring.variants import llm_variants, variant_scorer
from adaptrec.train.recipe import run_recipe

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "amazon_collab.json"
DOC = ROOT / "docs" / "amazon_collab.md"
COMMAND = "python experiments/amazon_collab.py"
RECIPE = "office-collab"
ADAPTER_ROWS = {"joint": "collab adapter (joint)", "staged": "collab adapter (staged)",
                "user token": "collab adapter (joint, user token)", "match token": "collab adapter (joint, match token)",
                "match token, 96 steps": "collab adapter (joint, match token, 96 steps)"}
RANDOM_ROW = "top K re-ordered at random (expected)"
TEXT_ONLY = " (text only)"  # the suffix of the cold view's text-only rows
DIRECTIONS = {"office": (), "arts": ("name=arts-collab", "domain=arts", "data.train=amazon:arts:train",
                                     "data.valid=amazon:arts:valid", "data.test=amazon:arts:test")}


@dataclass(frozen=True)
class Plan:
    rerank_k: int = 10  # the adapter re-orders LightGCN's top K of the 1 + 19 sampled list
    users: int = 100  # seeded test users per direction and view (K prompts each)
    encoder: str = "lightgcn"  # the recipe's encoder: the best alone on validation (docs/amazon_encoders.md)
    encoder_epochs: int | None = None  # None: the encoder's default (the recipe's)
    sets: tuple[str, ...] = ()  # recipe overrides
    variants: dict = field(default_factory=lambda: {"office": ("joint", "staged", "user token", "match token",
                                                               "match token, 96 steps"),
                                                    "arts": ("joint", "match token", "match token, 96 steps")})
    projector_steps: int = 16  # the staged variant's projector-only steps (of the recipe's 32)
    text_only: dict = field(default_factory=lambda: {"office": ("office-lora",), "arts": ("arts-lora",)})  # if registered
    seed: int = 0


SMOKE = Plan(rerank_k=3, users=3, encoder_epochs=2, projector_steps=1,
             sets=("training.max_steps=2", "training.warmup_steps=0", "training.eval_every=1", "training.val_limit=4",
                   "evaluation.limit=4", "data.shots=4", "training.checkpoint_every=1", "adapter.encoder_epochs=2"))


def one_per_user(cases: list, n: int, seed: int) -> list[int]:
    """Indices of a seeded subset of `n` cases, no two of one user (a user with two targets counts once)."""
    first = list({c.user_id: i for i, c in reversed(list(enumerate(cases)))}.values())
    return sorted(np.random.default_rng(seed).permutation(sorted(first))[:n].tolist())


def trained(domain: str, plan: Plan, variant: str):
    """(scorer, info) of the direction's collab adapter in `variant` (an `ADAPTER_ROWS` key): the recipe run
    (resumed when its run folder exists)."""
    suffix, sets = {  # the run name's suffix and the recipe overrides
        "joint": ("", ()),
        "staged": ("-staged", (f"adapter.projector_steps={plan.projector_steps}",)),
        "user token": ("-user", ("adapter.user_token=true",)),
        "match token": ("-match", ("adapter.match_token=true",)),
        "match token, 96 steps": ("-match96", ("adapter.match_token=true", "training.max_steps=96")),
    }[variant]
    name = f"{domain}-collab{suffix}" + ("-smoke" if plan.sets else "")
    # the plan's overrides after the variant's: a smoke plan's steps win
    recipe, text = load_recipe(RECIPE, [*DIRECTIONS[domain], *sets, *plan.sets, f"name={name}"])
    start = time.perf_counter()
    done = run_recipe(recipe, text, resume=True)
    scorer = backbone_scorer(done.backbone, done.train.model, adapter_key(done.train.adapter_dir),
                             template=recipe.data.template, max_prompt_tokens=recipe.data.max_prompt_tokens,
                             batch_size=recipe.evaluation.batch_size, cache=ScoreCache.default())
    info = {"record": done.record.ref, "steps": done.train.steps, "best_val_auc": done.train.best_val_auc,
            "train_seconds": round(time.perf_counter() - start, 1), "environment": done.backbone.environment()}
    return scorer, info


def llm_scores(scorer, cases: list, lists: list, domain: str, tops: list[list[int]]) -> list[np.ndarray]:
    """P(Yes) of each user's top-K candidates (score cache)."""
    texts = {domain: amazon.amazon_items(domain)}
    flat = scorer.score([candidate_cases(lst, case, texts)[j] for case, lst, top in zip(cases, lists, tops)
                         for j in top])
    cuts = np.cumsum([0] + [len(t) for t in tops])
    return [flat[a:b] for a, b in pairwise(cuts)]


class View:
    """One direction and view: the seeded test users, the encoders' ranks on them and the encoder's top K."""

    def __init__(self, domain: str, view: str, encoders: dict, plan: Plan):
        self.domain, self.view, self.plan = domain, view, plan
        all_cases, all_lists = arena(domain, "test", view, plan.seed)
        idx = one_per_user(all_cases, plan.users, plan.seed)
        self.cases, self.lists = [all_cases[i] for i in idx], [all_lists[i] for i in idx]
        self.targets = [lst.target_index for lst in self.lists]
        scored = {name: enc.score_lists([c.user_id for c in self.cases],
                                        [[h.item_id for h in c.history] for c in self.cases],
                                        [lst.candidates for lst in self.lists]) for name, enc in encoders.items()}
        self.rank_of = {name: ranks(rows, np.array(self.targets)) for name, rows in scored.items()}
        self.base = [np.asarray(r) for r in scored[plan.encoder]]
        self.tops = [list(np.argsort(-r, kind="stable")[: plan.rerank_k]) for r in self.base]
        self.prompts, self.seconds = 0, 0.0

    def rerank(self, name: str, scorer) -> None:
        """Row `name`: `scorer`'s P(Yes) re-orders the encoder's top K."""
        start = time.perf_counter()
        new = llm_scores(scorer, self.cases, self.lists, self.domain, self.tops)
        self.rank_of[name] = reranked_ranks(self.base, new, self.tops, self.targets)
        self.prompts += int(sum(map(len, self.tops)))
        self.seconds += time.perf_counter() - start

    def block(self) -> dict:
        """Every row's HR/NDCG@10 and paired NDCG@10 differences, plus a re-ranker at chance."""
        plan, encoder = self.plan, self.rank_of[self.plan.encoder]
        ndcg = {name: ndcg_per_case(r, 10) for name, r in self.rank_of.items()}
        # a re-ranker at chance: the target, when in the top K, equally likely at each of its K places
        chance = float(np.mean(1 / np.log2(np.arange(plan.rerank_k) + 2)))
        ndcg[RANDOM_ROW] = np.asarray(encoder <= plan.rerank_k, float) * chance
        hits = {name: hit_per_case(r, 10) for name, r in self.rank_of.items()} | {RANDOM_ROW: hit_per_case(encoder, 10)}
        text = [name for name in ndcg if name.endswith(TEXT_ONLY)]
        rows = [{"name": name, "hr@10": mean_ci(hits[name], plan.seed), "ndcg@10": mean_ci(ndcg[name], plan.seed),
                 "vs_encoder": paired(ndcg[name], ndcg[plan.encoder], plan.seed),
                 "vs_popularity": paired(ndcg[name], ndcg["popularity"], plan.seed),
                 **({"vs_text_only": {t: paired(ndcg[name], ndcg[t], plan.seed) for t in text}}
                    if name in ADAPTER_ROWS.values() and text else {})} for name in ndcg]
        return {"domain": self.domain, "view": self.view, "users": len(self.cases), "prompts": self.prompts,
                "score_seconds": round(self.seconds, 1), "rows": rows}


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
    protocol = {"data": "amazon", "negatives": 19, "rerank_k": plan.rerank_k, "users": plan.users,
                "projector_steps": plan.projector_steps,
                "encoder": plan.encoder, "encoder_record": encoder.record, "seed": plan.seed, "command": COMMAND,
                "encoder_seconds": round(time.perf_counter() - start, 1),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    blocks, adapters = [], {}
    for domain in DIRECTIONS:
        views = [View(domain, view, encoders, plan) for view in VIEWS.values()]
        for variant in plan.variants[domain]:
            row = ADAPTER_ROWS[variant]
            scorer, adapters[f"{domain}, {row}"] = trained(domain, plan, variant)
            for view in views:
                view.rerank(row, scorer)
        text_only(domain, views, plan)
        blocks += [view.block() for view in views]
    return {"protocol": protocol, "adapters": adapters, "blocks": blocks}


def verdicts(doc: dict) -> list[str]:
    enc = doc["protocol"]["encoder"]
    out = []
    for block in doc["blocks"]:
        for row in (r for r in block["rows"] if r["name"] in ADAPTER_ROWS.values()):
            against = [(f"{enc} alone", row["vs_encoder"]), ("popularity alone", row["vs_popularity"]),
                       *((f"the text-only {name.removesuffix(TEXT_ONLY)}", d)
                         for name, d in row.get("vs_text_only", {}).items())]
            out += [f"* {block['domain'].title()}, {_view_name(block['view'])}: the {row['name']} against {name}: "
                    f"{side_of_zero(d)} ({_diff(d)})." for name, d in against]
    return out


def _view_name(view: str) -> str:
    return next(name for name, v in VIEWS.items() if v == view)


def render(doc: dict) -> str:
    p, enc = doc["protocol"], doc["protocol"]["encoder"]
    lines = ["# Amazon Arts↔Office: the collaborative adapter against the encoders", "",
             banner(f"{COMMAND} --render-only", [RESULTS]) if RESULTS.is_relative_to(ROOT) else f"(smoke: {RESULTS})",
             "",
             f"{enc} learns from the 8000 train users' interactions (both domains, one catalogue); test users are "
             "unseen, folded in from their history. Each test user's target among 19 sampled unseen items of the "
             f"target domain. The collaborative adapter (`{RECIPE}`; arts: the same recipe with the arts SPECs) "
             f"re-orders {enc}'s top {p['rerank_k']} for {p['users']} seeded test users per view, one case per user; "
             f"the other rows score the same users. Re-ordering the top {p['rerank_k']} leaves HR@10 as {enc}'s; "
             f"a re-ranker at chance gets the last row's NDCG@10 ({enc}'s hits, each at a random place of the top "
             f"{p['rerank_k']}). "
             "Cold: the target domain's history is hidden (encoder and prompt see the other domain's items only); "
             "there the text-only rows (the untuned backbone, and the domain's text-only LoRA adapter where one is "
             "registered) read the same prompts without item tokens and re-rank the same top 10. "
             "95% CIs and paired differences bootstrap users. Machine: " + p["machine"] + ".", "",
             "## Adapters", "",
             (f"Staged: the projector alone for the first {p['projector_steps']} optimizer steps (LoRA's gradients "
              "dropped, so AdamW neither steps nor keeps moments for it), then both; joint: both from the start. "
              "User token: joint, and the question names the user by one more soft token (\"Whether the user <user> "
              "will like ...\"), the projected mean of the history items' encoder vectors. Match token: joint, and "
              "one more soft token after the target's, that mean times the target's vector element by element (its "
              "sum is the encoder's score) through a linear matcher that starts as a lean toward \"Yes\" in "
              "proportion to that score. Train s is the wall time of the invocation that wrote the results: a resumed "
              "run takes less than its first."), "",
             *table(["direction, training", "adapter", "steps", "best val AUC", "train s"], "llrrr",
                    [[d, a["record"], a["steps"], f"{a['best_val_auc']:.3f}", a["train_seconds"]]
                     for d, a in doc["adapters"].items()]), ""]
    for block in doc["blocks"]:
        lines += [f"## {block['domain'].title()} targets, {_view_name(block['view'])} ({block['users']} test users)",
                  "",
                  *table(["row", "HR@10", "NDCG@10", f"NDCG@10 − {enc} (paired)", "NDCG@10 − popularity (paired)"],
                         "lrrrr", [[r["name"], cell(r["hr@10"]), cell(r["ndcg@10"]), _diff(r["vs_encoder"]),
                                    _diff(r["vs_popularity"])] for r in block["rows"]]), "",
                  f"{block['prompts']} prompts scored in {block['score_seconds']} s (cached scores take less).", ""]
    env = next(iter(doc["adapters"].values()))["environment"]
    return "\n".join([*lines, *verdicts(doc), "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
                      ""])


if __name__ == "__main__":
    experiment_main(sys.modules[__name__])
