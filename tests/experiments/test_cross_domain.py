"""experiments/cross_domain.py on the tiny Llama and a synthetic Amazon Arts↔Office folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from experiment_modules import cross_domain
from router_helpers import fresh_backbone, register_random
from serve_helpers import candidates, user_case
from transformers import LlamaForCausalLM

from adaptrec import scripts
from adaptrec.metrics.ranking import user_auc
from adaptrec.registry import Registry
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import backbone_scorer
from adaptrec.scoring.variants import component_scores

render, verdicts = cross_domain.render, cross_domain.verdicts


def run_experiment(capsys, *argv: str) -> tuple[int, str, str]:
    """`python experiments/cross_domain.py ARGV` in-process: (exit status, stdout, stderr)."""
    code = 0
    try:
        scripts.run(lambda: cross_domain.main(list(argv)))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err

ROLES = ["untuned", "baseline:like_ratio", "baseline:popularity", "source", "target:4", "target:8",
         "composed:cat", "composed:ties_svd", "composed:mix", "cold:untuned", "cold:target", "cold:target-only", "cold:routed"]


def write_amazon(root) -> None:
    """28 users (16 train, 6 valid, 6 test), 5 arts + 5 office items each, the last position holding both targets."""
    folder = root / "amazon_arts_office"
    folder.mkdir(parents=True)
    words = ["red", "blue", "green", "big", "small", "soft", "bright", "dark", "fine", "bold"]
    items = {d: [{"item_id": f"{d[0]}{i}", "title": f"{words[i % 10]} {d} thing {i}"} for i in range(30)]
             for d in ("arts", "office")}
    for d, rows in items.items():
        (folder / f"items_{d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    inter, targets, splits = [], [], {"train": [], "valid": [], "test": []}
    for u in range(28):
        split = "train" if u < 16 else "valid" if u < 22 else "test"
        splits[split].append(str(u))
        for j, d in enumerate(("arts", "office")):
            ids = [f"{d[0]}{(u * 3 + k) % 30}" for k in range(5)]
            inter.append({"user_id": str(u), "domain": d, "items": ids, "positions": [j, 2 + j, 4 + j, 6 + j, 8]})
        targets += [{"user_id": str(u), "split": split, "case": 1, "domain": "office", "item_id": inter[-1]["items"][-1]},
                    {"user_id": str(u), "split": split, "case": 2, "domain": "arts", "item_id": inter[-2]["items"][-1]}]
    (folder / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in inter))
    (folder / "targets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in targets))
    (folder / "splits.json").write_text(json.dumps(splits))


@pytest.fixture
def args(tiny_model_dir, tmp_path, monkeypatch):
    write_amazon(tmp_path / "data")
    monkeypatch.setenv("ADAPTREC_DATA", str(tmp_path / "data"))
    sets = ["data.shots=8", "training.val_limit=4", "training.eval_every=1", "training.batch_size=4",
            "training.grad_accum=1", "evaluation.limit=4", "data.max_prompt_tokens=128"]
    return ["--directions", "arts:office", "--users", "4", "--negatives", "3", "--shots", "4,8",
            "--steps", "1", "--search-budget", "3", "--max-prompt-tokens", "128", "--backbone", str(tiny_model_dir),
            "-q", "none", "--out", str(tmp_path / "cd.md"), "--json-out", str(tmp_path / "cd.json"),
            *[x for s in sets for x in ("--set", s)]]


def test_rows_resume_and_render(monkeypatch, capsys, args, tmp_path):
    code, out, err = run_experiment(capsys, *args)
    assert code == 0, err
    doc = json.loads((tmp_path / "cd.json").read_text())
    (d,) = doc["directions"]
    assert [r["role"] for r in d["rows"]] == ROLES
    assert d["routing"]["mode"] == "cold" and "cold start" in d["routing"]["reason"]
    assert all(r["metrics"]["auc"]["n"] == 4 for r in d["rows"]) and doc["prompts"]["fresh"] > 0
    assert d["lists"] == 4 and d["users"] == 4  # one list per user here; CIs resample users
    page = (tmp_path / "cd.md").read_text()
    assert page == render(doc) and "## arts → office" in page and "python experiments/cross_domain.py --directions" in page
    assert "4 held-out items of 4 users" in page and "over users (a user's lists move together)" in page
    assert "training arts-lora" in out and "registered arts-lora+office-lora-8shot-cat:1" in out

    calls = []
    real = LlamaForCausalLM.forward
    monkeypatch.setattr(LlamaForCausalLM, "forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    code, out, err = run_experiment(capsys, *args)
    assert code == 0, err
    again = json.loads((tmp_path / "cd.json").read_text())
    assert calls == [] and again["prompts"]["fresh"] == 0  # adapters reused, every score read from the cache
    assert "reusing office-lora-8shot:1" in out and "reusing arts-lora+office-lora-8shot-cat:1" in out
    assert again["directions"] == doc["directions"]

    (tmp_path / "cd.md").write_text("stale")
    code, out, _ = run_experiment(capsys, *args, "--render-only")
    assert code == 0 and (tmp_path / "cd.md").read_text() == page


def _row(role, value, low, high):
    return {"role": role, "name": role, "group": "x",
            "metrics": {"auc": {"value": value, "ci_low": low, "ci_high": high, "n": 10}}}


def _direction(comp: float, cold: float) -> dict:
    rows = [_row("source", 0.6, 0.55, 0.65), _row("target:32", 0.62, 0.57, 0.67), _row("composed:cat", comp, comp - 0.02, comp + 0.02),
            _row("composed:mix", 0.5, 0.45, 0.55), _row("cold:target", 0.55, 0.5, 0.6), _row("cold:target-only", 0.5, 0.45, 0.55),
            _row("cold:routed", cold, cold - 0.1, cold + 0.1)]
    return {"rows": rows, "shots": 32, "best_composition": "cat"}


def test_verdicts_follow_the_numbers():
    yes = verdicts(_direction(comp=0.9, cold=0.7))
    assert "at equal target data: **yes**" in yes[0] and "CIs separated" in yes[0]
    assert "Composition mix: **no**" in yes[1]
    assert "only): **not resolved**" in yes[2] and "higher point estimate, CIs overlap" in yes[2]
    no = verdicts(_direction(comp=0.61, cold=0.5))  # beats the source, not the 32-shot target adapter
    assert "at equal target data: **no** (auc 0.610 vs 0.600 (source); 0.610 vs 0.620 (target:32))" in no[0]
    assert "only): **no**" in no[2]


def test_user_auc_counts_ties_half():
    rows = np.array([[0.9, 0.1, 0.5, 0.9], [0.2, 0.3, 0.3, 0.4]])
    np.testing.assert_allclose(user_auc(rows, np.array([0, 2])), [2.5 / 3, 1.5 / 3])


@pytest.mark.parametrize("extra, needle", [
    (["--directions", "arts:garden"], "expected SOURCE:TARGET"),
    (["--directions", "arts:arts"], "two different domains"),
    (["--shots", "16,64"], "at most 32"),
    (["--shots", "a"], "comma-separated integers"),
    (["--methods", "cat,nope"], "--methods"),
])
def test_bad_input_is_one_line(capsys, extra, needle):
    code, _, err = run_experiment(capsys, *extra)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err


def test_list_scores_match_the_full_prompt_path_and_cache(tiny_model_dir, tmp_path):
    """Untuned and LoRA rows through the shared prefix equal `Scorer`'s full prompts; a second pass is all cache."""
    registry = Registry()
    register_random(tiny_model_dir, registry, "arts-lora", {"type": "lora", "r": 4}, seed=1, std=0.6)
    lists = [candidates(user_case(6), 5), candidates(user_case(3), 5)]
    flat = [c for cases in lists for c in cases]
    bb = fresh_backbone(tiny_model_dir)
    plain_base = backbone_scorer(bb, progress=False, max_prompt_tokens=320).score(flat)
    plain_lora = component_scores(bb, registry, ["arts-lora"], flat, progress=False, max_prompt_tokens=320)[0]
    scores = cross_domain.ListScores(bb, registry, ScoreCache(tmp_path / "c.db"), cross_domain.TransferConfig(batch_size=3))
    base = cross_domain.BASE
    np.testing.assert_allclose(scores.scores([base], [1.0], lists).ravel(), plain_base, atol=1e-4)
    np.testing.assert_allclose(scores.scores(["arts-lora"], [1.0], lists).ravel(), plain_lora, atol=1e-4)
    assert np.ptp(plain_lora) > 1e-4 and scores.fresh == 20
    scores.scores(["arts-lora", base], [0.5, 0.5], lists)
    assert scores.fresh == 20 and scores.cached == 20


def test_verdict_compares_the_best_llm_row_with_the_best_baseline():
    d = _direction(comp=0.7, cold=0.6)
    for r in d["rows"]:
        r["group"] = "e" if r["role"].startswith("composed:") else "c"
    d["rows"].append({**_row("baseline:popularity", 0.78, 0.7, 0.85), "group": "b"})
    assert "non-LLM baseline: **no** (auc 0.700 vs 0.780" in verdicts(d)[-1]
    d["rows"][-1] = {**_row("baseline:popularity", 0.6, 0.55, 0.65), "group": "b"}
    assert "non-LLM baseline: **yes**" in verdicts(d)[-1]


def test_a_page_scored_by_older_scoring_code_says_it_is_stale():
    assert cross_domain.stale_note({})[0].startswith("**Stale (since")
    assert cross_domain.stale_note({"scoring_version": cross_domain.SCORING_VERSION}) == []


def test_a_mix_searched_with_the_old_penalty_on_its_scale_is_marked_stale():
    def doc(weights):
        return {"directions": [{"rows": [{"role": "composed:mix", "name": "mix of a, b", "weights": weights}]}]}

    assert "mix of a, b were searched with an L1 penalty" in cross_domain.mix_stale_note(doc([0.25, 0.53]))[0]
    assert cross_domain.mix_stale_note(doc([0.3, 0.7])) == []


def test_a_step_budget_within_the_recipes_warm_up_drops_it():
    """`--steps 2` beside the shipped `warmup_steps 2`: the rate would never reach training.lr, which a new run
    refuses (was: the experiment stopped there)."""
    from adaptrec.config import load_recipe

    cfg = cross_domain.TransferConfig(steps=2, backbone="embedded:smollm2", quantization="8bit")
    sets = cross_domain.recipe_overrides(cfg, "office-lora", None)
    assert sets == ["training.max_steps=2", "training.warmup_steps=0"]
    assert load_recipe("office-lora", sets)[0].training.warmup_steps == 0
