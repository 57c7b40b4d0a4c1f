"""The serving engine: path agreement with the plain Scorer, per-request adapters, LRU, refusals, limits."""

from __future__ import annotations

import numpy as np
import pytest
from router_helpers import fresh_backbone, register_peft, register_random
from serve_helpers import ADAPTERS, candidates, make_registry, user_case

from adaptrec.adapters.attach import peft_name
from adaptrec.errors import ConfigError, FingerprintMismatch, IntegrityError, RegistryError
from adaptrec.fingerprint import Fingerprint
from adaptrec.scoring.logits import to_scores
from adaptrec.scoring.variants import component_scores
from adaptrec.serve.engine import AdapterNotLoaded, Engine, LimitExceeded, Limits, QueueTimeout, wait_or_refuse

REFS = list(ADAPTERS)


@pytest.fixture(scope="module", params=["none", "8bit"])
def quantization(request) -> str:
    """fp32, and the CPU int8 backend (per-token activation scales: paths agree there too)."""
    return request.param


@pytest.fixture(scope="module")
def registry(tiny_model_dir, tmp_path_factory, quantization):
    return make_registry(tiny_model_dir, tmp_path_factory.mktemp("serve-home"), quantization)


@pytest.fixture(scope="module")
def cases():
    return [user_case(n) for n in (2, 4, 7)] + candidates(user_case(3, "office"), 2)


@pytest.fixture(scope="module")
def plain(tiny_model_dir, registry, cases, quantization):
    """(adapter, case) scores through the plain Scorer, each adapter attached alone (router.compose)."""
    return component_scores(fresh_backbone(tiny_model_dir, quantization), registry, REFS, cases, progress=False)


def test_per_request_and_mixed_batches_agree_with_the_plain_scorer(tiny_model_dir, registry, cases, plain, quantization):
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry, batch_size=4)
    per_request = np.stack([engine.score(cases, ref) for ref in REFS])
    np.testing.assert_allclose(per_request, plain, atol=1e-4)
    # every row of one batch under another adapter (LoRA, LoRA on other modules, exported AdaLoRA, prefix)
    rows = [(REFS[(i + j) % len(REFS)], j) for j in range(len(cases)) for i in range(len(REFS))]
    mixed = to_scores(engine.logits([(ref, engine.prompt(cases[j])) for ref, j in rows]))
    np.testing.assert_allclose(mixed, [plain[REFS.index(ref), j] for ref, j in rows], atol=1e-4)
    spread = np.ptp(plain, axis=0)  # the adapters really differ, so a row scored under the wrong one would fail
    assert spread.min() > 1e-3


def test_requests_never_touch_the_global_active_adapter(tiny_model_dir, registry, cases, plain, monkeypatch, quantization):
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry)
    for ref in REFS:
        engine.load(ref)
    model = engine.lora_model
    active = model.active_adapter

    def forbidden(*args, **kwargs):
        raise AssertionError("set_adapter called while serving")

    monkeypatch.setattr(model, "set_adapter", forbidden)
    monkeypatch.setattr(model.base_model, "set_adapter", forbidden)
    for ref in ["office-lora", "arts-lora", "ada", "office-lora"]:
        np.testing.assert_allclose(engine.score(cases[:2], ref), plain[REFS.index(ref), :2], atol=1e-4)
    assert model.active_adapter == active


def test_lru_cap_evicts_the_least_recently_used(tiny_model_dir, registry, cases, plain, quantization):
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry, max_resident=2)
    engine.score(cases[:1], "arts-lora")
    engine.score(cases[:1], "office-lora")
    engine.score(cases[:1], "arts-lora")  # now office-lora is the least recently used
    engine.score(cases[:1], "ada")
    assert [r["ref"] for r in engine.resident()] == ["arts-lora:1", "ada:1"]
    assert peft_name("office-lora:1") not in engine.lora_model.peft_config  # its weights left the model
    np.testing.assert_allclose(engine.score(cases, "office-lora"), plain[1], atol=1e-4)  # reloaded on use
    # rows of more adapters than fit resident (a routed mix of three sources): two, then one (was: 413)
    rows = [(ref, engine.prompt(cases[0])) for ref in REFS[:3]] * 2
    np.testing.assert_allclose(engine.logits(rows), np.vstack([engine.logits([row]) for row in rows]), atol=1e-4)


def test_an_lru_eviction_keeps_an_adapter_preloaded(tiny_model_dir, registry, quantization):
    """Anonymous requests may name a preloaded adapter whatever else the traffic loaded; an explicit unload ends it."""
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry, max_resident=1)
    engine.preload("ada")
    engine.load("arts-lora")  # evicts ada:1 (LRU)
    assert [r["ref"] for r in engine.resident()] == ["arts-lora:1"] and "ada:1" in engine.preloaded
    engine.unload("ada")  # evicted, still preloaded: the unload ends that (was: "ada is not loaded", preload kept)
    assert "ada:1" not in engine.preloaded
    engine.preload("ada")
    engine.unload("ada:1")
    assert "ada:1" not in engine.preloaded
    with pytest.raises(AdapterNotLoaded, match="ada:1 is not loaded"):
        engine.unload("ada:1")


def test_a_preloaded_bare_name_keeps_its_version_after_an_eviction_and_a_newer_registration(tiny_model_dir, tmp_path):
    """(was: the bare name resolved to the new, unpreloaded version: anonymous requests got 403, and the admin's
    unload of the name found nothing loaded)"""
    registry = make_registry(tiny_model_dir, tmp_path / "home")
    engine = Engine(fresh_backbone(tiny_model_dir), registry, max_resident=1)
    engine.preload("arts-lora")
    engine.load("office-lora")  # evicts arts-lora:1 (LRU)
    register_peft(tiny_model_dir, registry, "arts-lora", seed=9)
    assert engine.record_for("arts-lora").ref == "arts-lora:1" and engine.pin("arts-lora") == "arts-lora:1"
    assert engine.load("arts-lora").ref == "arts-lora:1" == engine.record_for("arts-lora").ref  # (was: loaded :2)
    engine.unload("arts-lora")
    assert "arts-lora:1" not in engine.preloaded and engine.record_for("arts-lora").ref == "arts-lora:2"


def test_a_bare_name_preloaded_again_ends_the_older_versions_preload(tiny_model_dir, tmp_path):
    """The admin's refresh to a newer version left the older one preloaded for good: anonymous requests could go on
    naming it. One the admin preloaded by its own version stays preloaded."""
    registry = make_registry(tiny_model_dir, tmp_path / "home")
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    engine.preload("arts-lora")
    register_peft(tiny_model_dir, registry, "arts-lora", seed=9)
    assert engine.preload("arts-lora").ref == "arts-lora:2"
    assert engine.preloaded == {"arts-lora:2"}
    assert [r["ref"] for r in engine.resident()][-2:] == ["arts-lora:1", "arts-lora:2"]  # pinned requests still run
    engine.preload("office-lora:1")
    engine.preload("office-lora")
    register_peft(tiny_model_dir, registry, "office-lora", seed=9)
    engine.preload("office-lora")
    assert engine.preloaded == {"arts-lora:2", "office-lora:1", "office-lora:2"}
    engine.unload("office-lora:1")
    assert engine.preloaded == {"arts-lora:2", "office-lora:2"}


def test_a_failed_refresh_leaves_the_name_with_the_version_that_serves_it(tiny_model_dir, tmp_path):
    """The admin's refresh of a bare name to a newer version whose files are damaged pointed the name at that version
    before loading it (was: anonymous requests then got 403, admins the integrity error, and the name's unload found
    nothing loaded, while arts-lora:1 stayed resident)."""
    registry = make_registry(tiny_model_dir, tmp_path / "home")
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    engine.preload("arts-lora")
    broken = register_peft(tiny_model_dir, registry, "arts-lora", seed=9)
    weights = broken.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError):
        engine.preload("arts-lora")
    assert engine.record_for("arts-lora").ref == "arts-lora:1" == engine.pin("arts-lora")
    assert engine.load("arts-lora").ref == "arts-lora:1" and engine.preloaded == {"arts-lora:1"}
    engine.unload("arts-lora")
    assert not engine.resident() and not engine.preloaded


def test_a_request_planned_before_an_admin_refresh_does_not_undo_it(tiny_model_dir, tmp_path):
    """A request reads the version it is served by, the admin's preload resolves the bare name afresh, then the
    request pins what it read (was: the pin put the old version back, so later requests went on getting it)."""
    registry = make_registry(tiny_model_dir, tmp_path / "home")
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    engine.load("arts-lora")
    register_peft(tiny_model_dir, registry, "arts-lora", seed=9)
    served = engine.record_for("arts-lora").ref  # the request's read, on the preparation thread
    assert engine.preload("arts-lora").ref == "arts-lora:2"  # the admin's refresh, meanwhile
    assert engine.pin("arts-lora", served) == "arts-lora:1"  # the request is still served by what it read
    assert engine.record_for("arts-lora").ref == "arts-lora:2" == engine.load("arts-lora").ref


def test_spellings_of_one_ref_share_one_alias(tiny_model_dir, registry, quantization):
    """Every spelling a client sent (`arts-lora:01`, `:001`, ...) was kept as an alias for good, before the access
    check: memory grew with each request. Now one alias per name or version; unknown refs add none."""
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry)
    for spelling in ("arts-lora:1", "arts-lora:01", "arts-lora:" + "0" * 50 + "1", "arts-lora", "arts-lora:latest"):
        assert engine.pin(spelling) == "arts-lora:1"
    with pytest.raises(RegistryError, match="no adapter named .no-such."):
        engine.pin("no-such:1")
    assert engine._aliases == {"arts-lora:1": "arts-lora:1", "arts-lora": "arts-lora:1"}


def test_an_adalora_adapter_is_served_from_its_verified_files_not_a_stored_export(tiny_model_dir, registry, cases,
                                                                                  plain, quantization, monkeypatch):
    import adaptrec.serve.engine as engine_module
    from adaptrec.home import adaptrec_home

    exports = []
    real = engine_module.adalora_to_lora
    monkeypatch.setattr(engine_module, "adalora_to_lora", lambda src, out: exports.append((src, out)) or real(src, out))
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry)
    np.testing.assert_allclose(engine.score(cases, "ada"), plain[REFS.index("ada")], atol=1e-4)
    engine.unload("ada")
    np.testing.assert_allclose(engine.score(cases, "ada"), plain[REFS.index("ada")], atol=1e-4)
    record = registry.resolve("ada")
    assert [src for src, _ in exports] == [record.path] * 2  # made afresh from the verified files at each load
    assert not any(out.exists() for _, out in exports)  # and gone once loaded
    assert not list(adaptrec_home().rglob("*adalora-as-lora*"))  # nothing left that a later load would trust


def test_an_engine_holds_at_least_one_adapter(tiny_model_dir, registry):
    with pytest.raises(ConfigError, match="max_resident must be at least 1"):
        Engine(fresh_backbone(tiny_model_dir), registry, max_resident=0)


def test_an_adapter_trained_with_another_template_is_refused_not_served_in_the_servers(tiny_model_dir, tmp_path):
    """(was: rendered in the server's template, prompts the adapter never trained on, without a word)"""
    from adaptrec.config import load_recipe
    from adaptrec.registry import Registry
    from adaptrec.serve.engine import Unservable

    registry = Registry(tmp_path / "home")
    _, stats = load_recipe("movie-lora", ["data.template=tallrec-stats"])
    ref = register_random(tiny_model_dir, registry, "stats", {"type": "lora", "r": 4}, seed=0, recipe_text=stats).ref
    plain = register_random(tiny_model_dir, registry, "plain", {"type": "lora", "r": 4}, seed=1,
                            recipe_text=load_recipe("movie-lora")[1]).ref
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    with pytest.raises(Unservable, match=f"{ref} was trained with the tallrec-stats prompt template and this "
                                         "server renders tallrec: serve it from a server started with "
                                         "template='tallrec-stats'"):
        engine.load(ref)
    engine.load(plain)  # its own template
    odd = register_random(tiny_model_dir, registry, "odd", {"type": "lora", "r": 4}, seed=2,
                          recipe_text=stats + "bogus_section: 1\n").ref  # a recipe this version no longer reads
    with pytest.raises(Unservable, match=f"{odd}.*no longer validates, so the prompt template it was trained with"):
        engine.load(odd)  # as `load` refuses it (was: served in the server's template)
    assert Engine(fresh_backbone(tiny_model_dir), registry, template="tallrec-stats").load(ref).record.ref == ref


def test_corrupt_or_foreign_adapters_are_refused_while_others_keep_serving(tiny_model_dir, registry, cases, plain, tmp_path, quantization):
    from adaptrec.registry import Registry

    reg = Registry(tmp_path / "home2")
    good = registry.resolve("arts-lora")
    reg.register(good.path, name="good", domain="arts", kind="trained", adapter_type="lora", adapter_config=None,
                 fingerprint=good.fingerprint)
    bad = reg.register(good.path, name="bad", domain="arts", kind="trained", adapter_type="lora", adapter_config=None,
                       fingerprint=good.fingerprint)
    reg.register(good.path, name="alien", domain="arts", kind="trained", adapter_type="lora", adapter_config=None,
                 fingerprint=Fingerprint("c" * 64, "b" * 64, "org/other"))
    weights = bad.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), reg)
    np.testing.assert_allclose(engine.score(cases, "good"), plain[0], atol=1e-4)
    with pytest.raises(IntegrityError):
        engine.score(cases, "bad")
    with pytest.raises(FingerprintMismatch):
        engine.score(cases, "alien")
    assert [r["ref"] for r in engine.resident()] == ["good:1"]
    np.testing.assert_allclose(engine.score(cases, "good"), plain[0], atol=1e-4)


def test_over_limit_requests_are_refused_with_a_clear_error(tiny_model_dir, registry, cases, plain, quantization):
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry, limits=Limits(max_prompt_tokens=150, max_candidates=3,
                                                                             queue_timeout_s=0.5))
    with pytest.raises(LimitExceeded, match="over the limit of 150"):
        engine.score([user_case(40)], "arts-lora")
    with pytest.raises(LimitExceeded, match="4 candidates, over the limit of 3"):
        engine.check_candidates(4)
    with pytest.raises(QueueTimeout, match="waited"):
        wait_or_refuse(enqueued=0.0, limits=engine.limits)
    np.testing.assert_allclose(engine.score(cases[:1], "arts-lora"), plain[0, :1], atol=1e-4)


def test_refs_differing_only_in_punctuation_are_served_apart(tiny_model_dir, tmp_path):
    """movie-lora / movie_lora / movie.lora once shared one peft name in the engine: the second was never loaded."""
    from router_helpers import register_random

    from adaptrec.registry import Registry

    registry = Registry(tmp_path / "home")
    refs = ["movie-lora", "movie_lora", "movie.lora"]
    for seed, ref in enumerate(refs):
        register_random(tiny_model_dir, registry, ref, {"type": "lora", "r": 4}, seed=seed, std=0.6)
    cases = candidates(user_case(4), 3)
    alone = [component_scores(fresh_backbone(tiny_model_dir), registry, [r], cases, progress=False)[0] for r in refs]
    engine = Engine(fresh_backbone(tiny_model_dir), registry)
    for ref, expected in zip(refs, alone):
        np.testing.assert_allclose(engine.score(cases, ref), expected, atol=1e-4)
    assert np.abs(alone[0] - alone[1]).max() > 1e-5


@pytest.mark.parametrize("patterns", [{}, {"alpha_pattern": {"v_proj": 32}}, {"rank_pattern": {"v_proj": 2}},
                                      {"alpha_pattern": {"^model.layers.0.self_attn.v_proj": 32}},
                                      {"rank_pattern": {"^model.layers.0.self_attn.q_proj": 2}}],
                         ids=["plain", "alpha-pattern", "rank-pattern", "anchored-alpha", "anchored-rank"])
def test_same_shaped_lora_adapters_load_beside_each_other_with_peft_s_scores(tiny_model_dir, tmp_path, monkeypatch,
                                                                            patterns):
    """The layer-by-layer load of an adapter shaped like a resident one (dropout 0.05 included: it must be off),
    and the load into an evicted one's slot, score as peft's own load does; rank and alpha patterns included (was:
    the config's r and alpha in every layer, so a pattern's scale was lost or its weights did not fit), and those
    anchored at the start of the module name as peft names it, without `base_model.model.` (was: matched against
    the PeftModel's names, so the second adapter scored at the default scale, or failed to load)."""
    import adaptrec.serve.engine as engine_module
    from adaptrec.registry import Registry

    registry = Registry(tmp_path / "home")
    refs = [register_peft(tiny_model_dir, registry, f"twin-{i}", 20 + i, r=4, lora_alpha=8, lora_dropout=0.05,
                                **patterns).ref for i in range(3)]
    cases = [user_case(n) for n in (2, 5)]
    plain = component_scores(fresh_backbone(tiny_model_dir), registry, refs, cases, progress=False)
    paths = []
    for spied in ("attach_beside", "attach_in_place"):
        real = getattr(engine_module, spied)
        monkeypatch.setattr(engine_module, spied, lambda *a, real=real, spied=spied: (paths.append(spied), real(*a))[1])
    engine = Engine(fresh_backbone(tiny_model_dir), registry, max_resident=2)
    for _ in range(2):
        for i, ref in enumerate(refs):
            np.testing.assert_allclose(engine.score(cases, ref), plain[i], atol=1e-5)
    # the first load goes through peft, the second beside it; from then on the LRU of 2 evicts and each load
    # takes the evicted adapter's slot
    assert paths == ["attach_beside"] + ["attach_in_place"] * 4
    assert len(engine.lora_model.peft_config) == 2
    assert np.ptp(plain, axis=0).min() > 1e-3  # the twins really differ


def test_a_failed_load_into_a_slot_is_rolled_back(tiny_model_dir, tmp_path, monkeypatch):
    """A load that fails half way through the evicted adapter's slot leaves neither adapter behind; the next
    loads serve exact scores."""
    from router_helpers import register_random

    import adaptrec.serve.engine as engine_module
    from adaptrec.registry import Registry
    from adaptrec.serve.engine import AdapterLoadFailed

    registry = Registry(tmp_path / "home")
    refs = [register_random(tiny_model_dir, registry, f"slot-{i}", {"type": "lora", "r": 4}, seed=60 + i).ref
            for i in range(3)]
    case = user_case(3)
    plain = component_scores(fresh_backbone(tiny_model_dir), registry, refs, [case], progress=False)[:, 0]
    engine = Engine(fresh_backbone(tiny_model_dir), registry, max_resident=2)
    engine.load(refs[0])
    engine.load(refs[1])

    def fails_half_way(model, layers, folder, old, name):  # the first layer's entries renamed, then an error
        for layer in list(layers.values())[:1]:
            for attr in ("lora_A", "lora_B", "scaling"):
                getattr(layer, attr)[name] = getattr(layer, attr).pop(old)
        raise RuntimeError("disk error")

    monkeypatch.setattr(engine_module, "attach_in_place", fails_half_way)
    with pytest.raises(AdapterLoadFailed, match="rolled back"):
        engine.load(refs[2])
    monkeypatch.undo()
    leftovers = [m for m in engine.lora_model.modules()
                 if set(getattr(m, "lora_A", {})) - {peft_name(refs[1])}]
    assert [r["ref"] for r in engine.resident()] == [refs[1]] and not leftovers
    assert set(engine.lora_model.peft_config) == {peft_name(refs[1])}
    for i in (2, 0, 1):
        np.testing.assert_allclose(engine.score([case], refs[i]), [plain[i]], atol=1e-5)


def test_loads_and_unloads_in_any_order_keep_every_score(tiny_model_dir, tmp_path):
    """Once its last adapter was unloaded, peft kept a deleted adapter "active" and the next forward raised
    KeyError (seen as 500s in the soak); any order of loads, unloads and scores must keep serving exact scores."""
    import random

    from router_helpers import register_random

    from adaptrec.registry import Registry

    registry = Registry(tmp_path / "home")
    refs = [register_random(tiny_model_dir, registry, f"churn-{i}", {"type": "lora", "r": 4}, seed=40 + i).ref
            for i in range(3)]
    refs.append(register_random(tiny_model_dir, registry, "other", {"type": "lora", "r": 2,
                                                                   "target_modules": ["q_proj", "o_proj"]}, seed=50).ref)
    case = user_case(3)
    plain = component_scores(fresh_backbone(tiny_model_dir), registry, refs, [case], progress=False)[:, 0]
    engine, rng = Engine(fresh_backbone(tiny_model_dir), registry, max_resident=3), random.Random(0)
    for ref in refs:  # every adapter loaded, then all unloaded: the state the soak hit
        engine.load(ref)
    for ref in refs[1:]:
        engine.unload(ref)
    for _ in range(150):
        i, op = rng.randrange(len(refs)), rng.choice(["load", "unload", "score", "score"])
        if op == "load":
            engine.preload(refs[i])
        elif op == "unload":
            try:
                engine.unload(refs[i])
            except AdapterNotLoaded:
                pass
        else:
            np.testing.assert_allclose(engine.score([case], refs[i]), [plain[i]], atol=1e-5)


def test_a_prefix_tuned_adapter_on_sliding_window_layers_serves_each_row_as_alone(tiny_model_dir, tmp_path):
    """Past the window less its virtual tokens, a padded row lost them sooner than alone: the engine batches such
    rows by length, as the Scorer does."""
    from router_helpers import register_random, tiny_gemma

    from adaptrec.registry import Registry

    _, tok = tiny_gemma(tiny_model_dir, 48, tmp_path / "gemma")
    registry = Registry(tmp_path / "home")
    register_random(tmp_path / "gemma", registry, "pre", {"type": "prefix", "num_virtual_tokens": 8}, seed=1, std=1.0)
    engine = Engine(fresh_backbone(tmp_path / "gemma"), registry, batch_size=6)
    cases = [user_case(n) for n in (4, 6, 9, 12, 15, 20)]
    assert len({len(tok(engine.prompt(c)).input_ids) for c in cases}) == 6  # lengths past the window, all apart
    assert min(len(tok(engine.prompt(c)).input_ids) for c in cases) > 48
    batched = engine.score(cases, "pre")
    np.testing.assert_allclose(batched, [engine.score([c], "pre")[0] for c in cases], atol=1e-6)


def test_a_one_adapter_batch_skips_peft_s_row_gather_and_scores_the_same(tiny_model_dir, registry, cases, plain,
                                                                         quantization, monkeypatch):
    """peft's mixed-batch forward gathers and scatters rows even when all name one adapter; the engine's LoRA layers
    skip that for such batches (the same sums) and keep peft's for mixed ones."""
    from peft.tuners.lora import LoraLayer

    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry, batch_size=8)
    calls = []
    original = LoraLayer._mixed_batch_forward
    monkeypatch.setattr(LoraLayer, "_mixed_batch_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    np.testing.assert_allclose(engine.score(cases, "arts-lora"), plain[REFS.index("arts-lora")], atol=1e-4)
    assert calls == []  # one adapter: the engine's own sums
    rows = [(ref, engine.prompt(cases[0])) for ref in ("arts-lora", "office-lora")]
    np.testing.assert_allclose(to_scores(engine.logits(rows)), plain[:2, 0], atol=1e-4)
    assert calls  # two adapters in one batch: peft's mixed forward
