"""Integration on the real embedded backbone: SmolLM2-135M-Instruct, 8-bit, on CPU (about 40 forwards in all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_markers import needs_tallrec
from persistent_home import PERSISTENT_HOME

from adaptrec.data.spec import load_spec
from adaptrec.evaluation import select_cases
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import Scorer

pytestmark = pytest.mark.integration
ADAPTREC = Path(sys.executable).with_name("adaptrec")


def test_embedded_backbone_is_8bit_and_identified(smollm2_8bit):
    from adaptrec.int8_cpu import Int8Linear

    assert smollm2_8bit.fingerprint.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert smollm2_8bit.backend == "torch-int8"  # the CPU default; bitsandbytes on CUDA
    assert isinstance(smollm2_8bit.model.model.layers[0].self_attn.q_proj, Int8Linear)
    assert not any(p.requires_grad for p in smollm2_8bit.model.parameters())


@needs_tallrec
def test_scores_tallrec_prompts_and_caches_them(smollm2_8bit, tmp_path):
    cases = select_cases(load_spec("tallrec:movie:test"), 8, seed=0)
    cache = ScoreCache(tmp_path / "scores.db")
    scorer = Scorer(smollm2_8bit.model, smollm2_8bit.tokenizer, smollm2_8bit.score_key, cache=cache, progress=False)
    first = scorer.score(cases)
    assert np.all((first > 0) & (first < 1)) and len(set(np.round(first, 6))) > 1
    again = scorer.score(cases)
    assert scorer.last_throughput == 0.0  # nothing recomputed
    np.testing.assert_array_equal(first, again)


@needs_tallrec
def test_4bit_backbone_scores_too(smollm2_8bit, monkeypatch):
    """4-bit (bitsandbytes nf4) on this device; same family as the 8-bit load, another exact identity."""
    from adaptrec.backbone import load_backbone
    from adaptrec.scoring.core import backbone_scorer

    monkeypatch.setenv("ADAPTREC_HOME", str(PERSISTENT_HOME))  # reuse the converted weights
    b4 = load_backbone(quantization="4bit")
    assert b4.fingerprint.match(smollm2_8bit.fingerprint) == "family"
    scores = backbone_scorer(b4, progress=False).score(load_spec("tallrec:movie:test").cases[:2])
    assert np.all((scores > 0) & (scores < 1))


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADAPTREC_HOME": str(home)}
    return subprocess.run([str(ADAPTREC), *args], capture_output=True, text=True, env=env, timeout=900)


@needs_tallrec
def test_train_evaluate_register_predict_end_to_end(smollm2_8bit, tmp_path):
    home = tmp_path / "home"
    (home / "backbones").mkdir(parents=True)
    for converted in (PERSISTENT_HOME / "backbones").iterdir():  # reuse the converted backbone, fresh registry
        (home / "backbones" / converted.name).symlink_to(converted)
    tiny_budget = ["training.max_steps=2", "training.batch_size=2", "training.grad_accum=1", "training.val_limit=4",
                   "training.eval_every=2", "training.warmup_steps=0", "evaluation.limit=8", "data.shots=4"]
    proc = _cli(home, "train", "movie-lora", *[a for kv in tiny_budget for a in ("--set", kv)], "--promote")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("like_ratio", "popularity", "backbone (untuned)", "movie-lora:1"):
        assert f"| {row}" in proc.stdout, proc.stdout
    shown = json.loads(_cli(home, "registry", "show", "movie-lora:1").stdout)
    assert shown["promoted_for"] == ["movie"] and shown["kind"] == "trained"
    assert shown["metrics"]["auc"]["data"] == "tallrec:movie:test" and shown["metrics"]["auc"]["limit"] == 8
    assert "training.max_steps=2" in shown["recipe_text"]
    folder = Path(shown["path"])
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "adaptrec.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)

    ev = _cli(home, "eval", "movie-lora", "--data", "tallrec:movie:test", "--limit", "8")
    assert ev.returncode == 0, ev.stderr[-3000:]
    auc_train = [line for line in proc.stdout.splitlines() if line.startswith("| movie-lora:1")][0].split("|")[2]
    auc_eval = [line for line in ev.stdout.splitlines() if line.startswith("| movie-lora:1")][0].split("|")[2]
    assert auc_train == auc_eval  # one scoring path: the same numbers (here straight from the score cache)

    history = tmp_path / "history.json"
    history.write_text(json.dumps({"history": [{"title": "Heat (1995)", "liked": True}, {"title": "Babe (1995)", "liked": False}]}))
    pred = _cli(home, "predict", "movie-lora", "--history", str(history), "--item", "Casino (1995)")
    assert pred.returncode == 0, pred.stderr[-3000:]
    assert 0.0 < float(pred.stdout.strip().splitlines()[-1]) < 1.0
