"""Serving collaborative adapters: item tokens through the engine's mixed batches and shared prefixes, one item
table per engine with a projector per adapter, and items the encoder does not know scored by their titles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from data_markers import needs_ml100k
from router_helpers import fresh_backbone, register_random

from adaptrec.registry import Registry
from adaptrec.serve.engine import AdapterLoadFailed, Engine
from adaptrec.serve.plans import answer_directly
from adaptrec.serve.schemas import ScoreRequest

pytestmark = needs_ml100k
COLLAB = {"type": "collab", "r": 4, "encoder_epochs": 3, "encoder_dim": 8}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """Two collab adapters over one item table (other projectors and LoRA), one over another table, one LoRA."""
    from adaptrec.data.movielens import load_movielens

    home = tmp_path_factory.mktemp("collab-serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTREC_HOME", str(home))  # the encoder cache: the two adapters of one table share its fit
        registry = Registry(home)
        register_random(tiny_model_dir, registry, "collab-a", COLLAB, seed=1, domain="movie", std=0.2)
        register_random(tiny_model_dir, registry, "collab-b", COLLAB, seed=2, domain="movie", std=0.2)
        register_random(tiny_model_dir, registry, "collab-other", {**COLLAB, "encoder_epochs": 2}, seed=3,
                        domain="movie", std=0.2)
        register_random(tiny_model_dir, registry, "plain", {"type": "lora", "r": 4}, seed=4, domain="movie", std=0.2)
        registry.promote("collab-a", "movie")
    cases = [c for c in load_movielens("test") if c.target_id is not None][:4]
    return home, cases


def _eval_scores(tiny_model_dir, registry, ref: str, cases) -> np.ndarray:
    """What `adaptrec eval` scores: the adapter alone on a fresh backbone, `-items` prompts for a collab one."""
    from adaptrec.scoring.variants import llm_variants, variant_scorer

    backbone = fresh_backbone(tiny_model_dir)
    (name, key, model), = list(llm_variants(backbone, registry, [ref], include_untuned=False))
    return variant_scorer(backbone, registry, name, key, model, template="tallrec", progress=False).score(cases)


def test_the_engine_scores_collab_adapters_as_eval_does_in_mixed_batches_and_shared_prefixes(setup, tiny_model_dir):
    home, cases = setup
    registry = Registry(home)
    expected = {ref: _eval_scores(tiny_model_dir, registry, ref, cases) for ref in ("collab-a", "collab-b", "plain")}
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    engine.load("collab-a")  # its item tokens join the tokenizer: prompts render them from now on
    rows = [(ref, engine.prompt(c, engine.template_of(registry.resolve(ref)))) for ref in expected for c in cases]
    assert "<item_" in rows[0][1] and "<item_" not in rows[-1][1]
    logits = engine.logits(rows)  # one batch: two projectors and a plain LoRA, each row through its own
    from adaptrec.scoring.logits import to_scores

    got = to_scores(logits, "pyes").reshape(3, len(cases))
    for i, ref in enumerate(expected):
        np.testing.assert_allclose(got[i], expected[ref], atol=1e-5, err_msg=ref)
    assert np.abs(expected["collab-a"] - expected["collab-b"]).max() > 1e-4  # the projectors differ
    user = cases[0]
    targets = [replace(user, target=c.target, target_id=c.target_id) for c in cases]
    ranked = engine.rank(user, [c.target for c in cases], "collab-a")  # shared prefix, targets without ids
    titles = [replace(user, target=c.target, target_id=None) for c in cases]  # (was: each with the user case's token)
    np.testing.assert_allclose(ranked, to_scores(engine.shared_prefix_logits(
        "collab-a", [engine.prompt(t, "tallrec-items") for t in titles]), "pyes"), atol=1e-6)
    shared = engine.shared_prefix_logits("collab-a", [engine.prompt(t, "tallrec-items") for t in targets])
    np.testing.assert_allclose(to_scores(shared, "pyes"),
                               _eval_scores(tiny_model_dir, registry, "collab-a", targets), atol=1e-4)


def test_an_items_template_reaches_only_collab_rows(setup, tiny_model_dir):
    """`serve --template tallrec-items` (the collab recipes' template): plain adapters read the plain prompts, as eval
    scores them (was: once a collab adapter loaded, their prompts carried item tokens no projector of theirs reads)."""
    home, cases = setup
    registry = Registry(home)
    engine = Engine(fresh_backbone(tiny_model_dir), registry, template="tallrec-items")
    engine.load("collab-a")
    assert "<item_" in engine.prompt(cases[0], engine.template_of(registry.resolve("collab-a")))
    assert "<item_" not in engine.prompt(cases[0], engine.template_of(registry.resolve("plain")))
    np.testing.assert_allclose(engine.score(cases, "plain"), _eval_scores(tiny_model_dir, registry, "plain", cases),
                               atol=1e-5)


def test_another_item_table_is_refused_and_eviction_drops_the_projector(setup, tiny_model_dir):
    home, cases = setup
    registry = Registry(home)
    engine = Engine(fresh_backbone(tiny_model_dir), registry, max_resident=1)
    before = engine.score(cases, "collab-a")
    with pytest.raises(AdapterLoadFailed, match="item table differs"):
        engine.load("collab-other")
    assert [r["ref"] for r in engine.resident()] == ["collab-a:1"]
    engine.load("plain")  # evicts collab-a: its LoRA slot stays, its projector goes
    assert set(engine.items.projectors) == set()
    np.testing.assert_allclose(engine.score(cases, "collab-a"), before, atol=1e-6)


def test_loading_a_collab_adapter_beside_another_reads_its_table_file_once(setup, tiny_model_dir, monkeypatch):
    import safetensors.torch

    home, _ = setup
    engine = Engine(fresh_backbone(tiny_model_dir), Registry(home))
    engine.load("collab-a")  # the engine now carries an item table: the next load checks against it
    reads, load_file = [], safetensors.torch.load_file
    monkeypatch.setattr(safetensors.torch, "load_file", lambda path, *a, **k: reads.append(path) or load_file(path, *a, **k))
    engine.load("collab-b")
    assert [p for p in reads if p.endswith("collab.safetensors")] == [str(Registry(home).resolve("collab-b").path
                                                                          / "collab.safetensors")]


def test_an_unknown_item_id_is_scored_by_its_title_and_the_answer_says_so(setup, tiny_model_dir):
    home, cases = setup
    registry = Registry(home)
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    case = cases[0]
    history = [{"text": h.text, "liked": h.liked, "item_id": h.item_id} for h in case.history]
    body = {"domain": "movie", "noun": "movie", "history": history, "adapter": "collab-a"}
    known = {"text": case.target, "item_id": case.target_id}
    answer = answer_directly(engine, ScoreRequest(**body, items=[known, {"text": case.target, "item_id": "no-such"},
                                                                 case.target]))
    assert answer["unknown_items"] == ["no-such"]
    assert answer["scores"][1] == pytest.approx(answer["scores"][2], abs=1e-6)  # the title alone, as with no id
    assert answer["scores"][0] != pytest.approx(answer["scores"][1], abs=1e-6)
    plain = answer_directly(engine, ScoreRequest(**{**body, "adapter": "plain"}, items=[known]))
    assert plain["unknown_items"] == []


def test_the_app_loads_a_collab_adapter_before_rendering_and_recommends_with_its_item_tokens(setup, tiny_model_dir):
    """The first request routed to a (promoted) collab adapter waits for its load on the forward thread, then
    renders `-items` prompts: the same scores as the engine's own shared-prefix ranking."""
    from fastapi.testclient import TestClient

    from adaptrec.serve.app import ServeOptions, create_app

    home, cases = setup
    case = cases[0]
    engine = Engine(fresh_backbone(tiny_model_dir), Registry(home))
    history = [{"text": h.text, "liked": h.liked, "item_id": h.item_id} for h in case.history]
    targets = [{"text": c.target, "item_id": c.target_id} for c in cases]
    body = {"domain": "movie", "noun": "movie", "history": history, "candidates": targets, "k": 2}
    app = create_app(engine, ServeOptions(request_log=False, watch_promotions=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/v1/recommend", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["adapters"] == ["collab-a:1"]
    prompts = [engine.prompt(replace(case, target=c.target, target_id=c.target_id), "tallrec-items") for c in cases]
    expected = engine.shared_prefix_logits("collab-a", prompts)
    from adaptrec.scoring.logits import to_scores

    best = np.sort(to_scores(expected, "pyes"))[::-1][:2]
    np.testing.assert_allclose([r["score"] for r in answer.json()["items"]], best, atol=1e-5)
    assert answer.json()["unknown_items"] == []


def test_a_plan_reads_the_version_the_engine_serves_and_a_failed_first_load_leaves_no_item_table(
        setup, tiny_model_dir, tmp_path):
    """A bare name pinned to a plain LoRA version renders plain prompts even after a collab version is registered
    under it; a collab adapter whose projector does not fit its files fails to load and leaves the engine without
    an item table (the next collab adapter installs its own)."""
    import json

    from adaptrec.serve.plans import plan

    home, cases = setup
    registry = Registry(home)
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    register_random(tiny_model_dir, registry, "pinned", {"type": "lora", "r": 4}, seed=5, domain="movie", std=0.2)
    engine.load("pinned")
    source = registry.resolve("collab-a").path
    registry.register(source, name="pinned", domain="movie", kind="trained", adapter_type="collab",
                      adapter_config=None, fingerprint=engine.backbone.fingerprint)
    case = cases[0]
    req = ScoreRequest(domain="movie", noun="movie", adapter="pinned", items=[{"text": case.target,
                                                                               "item_id": case.target_id}],
                       history=[{"text": h.text, "item_id": h.item_id} for h in case.history])
    p = plan(engine, req, req.items, admin=True, allow_any=True)
    assert not p.waiting and "<item_" not in p.prompts["pinned:1"][0]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in source.iterdir():
        if f.name != "adaptrec.json":
            (broken / f.name).write_bytes(f.read_bytes())
    meta = json.loads((broken / "collab.json").read_text())
    (broken / "collab.json").write_text(json.dumps({**meta, "projector_hidden": 16}))  # weights are linear
    registry.register(broken, name="broken", domain="movie", kind="trained", adapter_type="collab",
                      adapter_config=None, fingerprint=engine.backbone.fingerprint)
    with pytest.raises(AdapterLoadFailed, match="broken:1"):
        engine.load("broken")
    assert engine.items is None
    np.testing.assert_allclose(engine.score(cases, "collab-other"),
                               _eval_scores(tiny_model_dir, registry, "collab-other", cases), atol=1e-5)


def test_a_match_token_adapter_serves_as_eval_scores_it_and_eviction_drops_its_matcher(tiny_model_dir, tmp_path,
                                                                                       monkeypatch):
    """The match token sits in the suffix of a shared-prefix ranking and reads the history in the prefix."""
    from adaptrec.data.movielens import load_movielens
    from adaptrec.scoring.logits import to_scores

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path))
    registry = Registry(tmp_path)
    register_random(tiny_model_dir, registry, "matched", {**COLLAB, "match_token": True}, seed=5, domain="movie",
                    std=0.2)
    register_random(tiny_model_dir, registry, "plain", {"type": "lora", "r": 4}, seed=4, domain="movie", std=0.2)
    user = next(c for c in load_movielens("test") if c.target_id is not None)
    targets = [replace(user, target=c.target, target_id=c.target_id) for c in load_movielens("test")[:4]
               if c.target_id is not None]
    engine = Engine(fresh_backbone(tiny_model_dir), registry, max_resident=1)
    engine.load("matched")
    prompts = [engine.prompt(t, "tallrec-items") for t in targets]
    assert all(p.count("<match>") == 1 for p in prompts)
    expected = _eval_scores(tiny_model_dir, registry, "matched", targets)
    np.testing.assert_allclose(to_scores(engine.shared_prefix_logits("matched", prompts), "pyes"), expected, atol=1e-4)
    np.testing.assert_allclose(engine.score(targets, "matched"), expected, atol=1e-5)
    with torch.no_grad():  # a matcher that reads the history loudly: a suffix cut off from it would score otherwise
        engine.items.matchers[engine.load("matched").name].weight.mul_(1e5)  # its inputs are ~1e-5 here
    loud = engine.score(targets, "matched")
    assert np.abs(loud - expected).max() > 1e-3
    np.testing.assert_allclose(to_scores(engine.shared_prefix_logits("matched", prompts), "pyes"), loud, atol=1e-4)
    engine.load("plain")
    assert set(engine.items.projectors) == set(engine.items.matchers) == set()


def test_eval_refuses_a_collab_adapter_on_data_its_encoder_may_have_trained_on(setup, tiny_model_dir, monkeypatch):
    """Its item table learned from `movielens:100k`, whose ratings hold the leave-one-out test pairs (was: scored
    there without a word, as registered encoder rows are not); before any model loads, a mix's sources too."""
    import adaptrec
    import adaptrec.api
    from adaptrec.adapters.merge import Composition, compose
    from adaptrec.errors import AdaptrecError

    home, _ = setup
    monkeypatch.setenv("ADAPTREC_HOME", str(home))
    compose(fresh_backbone(tiny_model_dir), Registry(home), Composition(("collab-a", "plain"), "mix", (0.5, 0.5)),
            name="collab-mix", domain="movie")

    class Loaded(Exception):
        pass

    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: (_ for _ in ()).throw(Loaded()))
    for refs in (["collab-a"], ["plain", "collab-mix"]):
        with pytest.raises(AdaptrecError, match="collab-a:1's encoder learned from movielens:100k; it scores only "
                                                ".* not movielens:100k:loo:test"):
            adaptrec.evaluate(refs, data="movielens:100k:loo:test", encoders=())
    with pytest.raises(Loaded):  # its own source's test split passes the check
        adaptrec.evaluate(["collab-mix"], data="movielens:100k:test", encoders=(), limit=2)


def test_a_collab_adapter_whose_source_changed_is_told_to_train_again(setup, tiny_model_dir, monkeypatch):
    """Its item table is in its own folder: fitting the encoder again (was the advice) changes nothing of it."""
    import adaptrec
    from adaptrec.errors import IntegrityError
    from adaptrec.registry import encoders

    home, _ = setup
    monkeypatch.setenv("ADAPTREC_HOME", str(home))
    monkeypatch.setattr(encoders, "_ratings_now", lambda source, memo: "0" * 64)
    with pytest.raises(IntegrityError, match="other training interactions .*; train collab-a again with "
                                             "--restart \\(its item table"):
        adaptrec.evaluate(["collab-a"], data="movielens:100k:test", encoders=(), limit=2)


def test_a_request_s_empty_item_id_is_refused():
    """(was: kept as '', then listed among the unknown items; the Python API refuses it)"""
    from pydantic import ValidationError

    from adaptrec.serve.schemas import ScoreRequest

    for blank in ("", " ", "\t"):
        with pytest.raises(ValidationError, match="an item id must not be empty or blank"):
            ScoreRequest(domain="movie", items=[{"title": "x", "item_id": blank}])
    assert ScoreRequest(domain="movie", items=[{"title": "x", "item_id": 7}]).items[0].item_id == "7"
