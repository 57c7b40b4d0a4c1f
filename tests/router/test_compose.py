"""Composition on the tiny Llama: what each peft merge computes, refusals, score-level mixing, registration."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from peft.utils import merge_utils
from router_helpers import fresh_backbone, register_peft, register_random
from synthetic import synthetic_cases, write_film_log

from adaptrec.adapters.attach import attach, peft_name
from adaptrec.adapters.files import FamilyMatchWarning
from adaptrec.adapters.merge import (
    Composition,
    CompositionError,
    attached_sources,
    check_merge_sources,
    compose,
    delta_weights,
    merge,
    merge_into_base,
)
from adaptrec.errors import FingerprintMismatch
from adaptrec.fingerprint import Fingerprint
from adaptrec.registry import Registry
from adaptrec.scoring.core import backbone_scorer
from adaptrec.scoring.variants import component_scores, llm_variants, mix, mixed_scores

LORA4 = {"type": "lora", "r": 4, "alpha": 8}
LORA2 = {"type": "lora", "r": 2, "alpha": 8}


@pytest.fixture
def registry():
    return Registry()


def _weighted_sum(model, names, weights) -> dict[str, torch.Tensor]:
    deltas = [delta_weights(model, n) for n in names]
    return {k: sum(w * d[k] for w, d in zip(weights, deltas)) for k in deltas[0]}


def _max_err(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_merge_knobs_are_refused_where_they_do_nothing_and_an_svd_rank_past_the_layers(tiny_model_dir, registry):
    """(was: `cat` with `--svd-rank 2 --density 0.3` recorded both in its lineage though neither applied; an
    `--svd-rank` above the smallest layer side registered an adapter whose config rank its tensors could not have,
    which never loaded again)"""
    for method, knobs in (("cat", {"svd_rank": 2}), ("cat", {"density": 0.3}), ("svd", {"density": 0.5}),
                          ("linear", {"density": 0.5}), ("svd", {"svd_rank": 0})):
        with pytest.raises(CompositionError, match="^(svd_rank|density)="):
            Composition(("a", "b"), method, (0.5, 0.5), **knobs)
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA2, seed=2)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        with pytest.raises(CompositionError, match="above the smallest targeted matrix side"):
            merge(model, names, Composition(("a", "b"), "svd", (0.5, 0.5), svd_rank=1000), "m")
    record = compose(fresh_backbone(tiny_model_dir), registry, Composition(("a", "b"), "svd", (0.5, 0.5)),
                     name="c", domain="arts")
    assert record.lineage["svd_rank"] == 6 and "density" not in record.lineage  # the rank applied: Σ rᵢ


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("method", ["cat", "svd", "magnitude_prune_svd"])
def test_exact_delta_w_merges_reproduce_the_weighted_sum(tiny_model_dir, registry, method):
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA2, seed=2)  # unequal ranks are fine for ΔW merges
    weights = (0.7, -0.4)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        density = 1.0 if method.startswith("magnitude") else None  # keep every value: the sum stays exact
        merged = merge(model, names, Composition(("a", "b"), method, weights, density=density), "m")
        expected = _weighted_sum(model, names, weights)
        assert _max_err(delta_weights(model, merged), expected) < 1e-5
        assert model.peft_config[merged].r == 6  # Σ rᵢ


@pytest.mark.parametrize("method", ["cat", "svd"])
def test_an_rslora_source_merges_to_the_weighted_sum(tiny_model_dir, registry, method):
    """peft copies the first source's `use_rslora` into the merged config: its scale became √(Σr) (was: ×√6 here)."""
    register_peft(tiny_model_dir, registry, "a", 1, r=4, lora_alpha=8, use_rslora=True)
    register_random(tiny_model_dir, registry, "b", LORA2, seed=2)
    weights = (0.7, -0.4)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        merged = merge(model, names, Composition(("a", "b"), method, weights), "m")
        assert _max_err(delta_weights(model, merged), _weighted_sum(model, names, weights)) < 1e-5
        assert not model.peft_config[merged].use_rslora  # so a reload scales it the same


def test_a_dora_source_has_no_delta_w_to_merge(tiny_model_dir, registry):
    register_peft(tiny_model_dir, registry, "d", 1, r=4, lora_alpha=8, use_dora=True)
    with pytest.raises(CompositionError, match="use_dora"), \
            attached_sources(fresh_backbone(tiny_model_dir), registry, ["d"]):
        pass


def test_an_svd_merge_that_would_truncate_a_larger_module_is_refused_without_a_rank(tiny_model_dir, registry):
    """peft applies one SVD rank to every module: Σrᵢ = 24 capped at v_proj's side 16 truncated q_proj (32 × 32)
    without a word (was: registered as an exact merge, 11% off)."""
    register_random(tiny_model_dir, registry, "a", {**LORA4, "r": 12}, seed=1)
    register_random(tiny_model_dir, registry, "b", {**LORA4, "r": 12}, seed=2)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        with pytest.raises(CompositionError, match="add up to 24, above the smallest targeted matrix side \\(16\\)"):
            merge(model, names, Composition(("a", "b"), "svd", (0.7, -0.4)), "m")
        merged = merge(model, names, Composition(("a", "b"), "svd", (0.7, -0.4), svd_rank=16), "m")  # accepted
        assert model.peft_config[merged].r == 16


def test_one_adapter_named_twice_or_merged_alone_by_a_two_source_method_is_refused(tiny_model_dir, registry):
    """(was: `a` and `a` at 1 and -1 registered an adapter that changes nothing; `ties` of one source was peft's
    linear merge under a lineage saying ties)"""
    with pytest.raises(CompositionError, match="a is named twice"):
        Composition(("a", "a"), "cat", (1.0, -1.0))
    for method, knobs in (("ties", {}), ("dare_linear_svd", {}), ("svd", {"svd_rank": 1})):
        with pytest.raises(CompositionError, match="one adapter is merged linearly"):
            Composition(("a",), method, (0.8,), **knobs)
    Composition(("a",), "cat", (0.8,))  # a scaled copy: what peft computes
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    with pytest.raises(CompositionError, match="a:1 is named twice"), \
            attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "a:1"]):
        pass


def test_peft_default_svd_rank_truncates(tiny_model_dir, registry):
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA4, seed=2)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        merged = merge(model, names, Composition(("a", "b"), "svd", (0.5, 0.5), svd_rank=4), "m")  # peft's default: max rᵢ
        assert _max_err(delta_weights(model, merged), _weighted_sum(model, names, (0.5, 0.5))) > 1e-3


@pytest.mark.parametrize("method, fn", [("linear", "task_arithmetic"), ("ties", "ties"), ("magnitude_prune", "magnitude_prune")])
def test_separate_ab_methods_merge_a_and_b_separately(tiny_model_dir, registry, method, fn):
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA4, seed=2)
    weights = (0.7, -0.4)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        density = None if method == "linear" else 0.6  # linear keeps every value
        merged = merge(model, names, Composition(("a", "b"), method, weights, density=density), "m")
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        ws = [w * layer.scaling[n] for w, n in zip(weights, names)]  # peft: √|w·s| on both sides, the sign on A
        wa = torch.tensor([math.copysign(math.sqrt(abs(w)), w) for w in ws])
        wb = torch.tensor([math.sqrt(abs(w)) for w in ws])
        extra = {} if fn == "task_arithmetic" else {"density": 0.6}
        ref_a = getattr(merge_utils, fn)([layer.lora_A[n].weight.data for n in names], wa, **extra)
        ref_b = getattr(merge_utils, fn)([layer.lora_B[n].weight.data for n in names], wb, **extra)
        assert torch.allclose(layer.lora_A[merged].weight, ref_a, atol=1e-6)
        assert torch.allclose(layer.lora_B[merged].weight, ref_b, atol=1e-6)
        # cross terms BᵢAⱼ: not the weighted ΔW sum
        assert _max_err(delta_weights(model, merged), _weighted_sum(model, names, weights)) > 1e-3


def test_dare_merges_are_seeded(tiny_model_dir, registry):
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA4, seed=2)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        out = {}
        for tag, seed in (("x", 0), ("y", 0), ("z", 1)):
            out[tag] = delta_weights(model, merge(model, names, Composition(("a", "b"), "dare_linear", (1, 1), seed=seed), tag))
        assert _max_err(out["x"], out["y"]) == 0 and _max_err(out["x"], out["z"]) > 0


def test_unequal_ranks_refused_for_separate_ab_methods(tiny_model_dir, registry):
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA2, seed=2)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "b"]) as (model, _, names):
        for method, hint in (("linear", "use cat or svd"), ("ties", "ties_svd")):
            with pytest.raises(CompositionError) as e:
                merge(model, names, Composition(("a", "b"), method, (0.5, 0.5)), "m")
            assert "equal ranks" in _one_line(e) and hint in str(e.value)
        assert "m" not in model.peft_config


def test_adalora_sources_are_exported_then_merged(tiny_model_dir, registry):
    register_random(tiny_model_dir, registry, "ada", {"type": "adalora", "init_r": 4, "target_r": 2}, seed=3)
    register_random(tiny_model_dir, registry, "b", LORA2, seed=2)
    ada_model, _ = attach(fresh_backbone(tiny_model_dir), registry, ["ada"])
    ada = peft_name("ada:1")
    ada_delta = {k: m.get_delta_weight(ada).detach()
                 for k, m in ada_model.named_modules() if hasattr(m, "lora_E") and ada in m.lora_E}
    with attached_sources(fresh_backbone(tiny_model_dir), registry, ["ada", "b"]) as (model, _, names):
        merged = merge(model, names, Composition(("ada", "b"), "cat", (0.6, 0.4)), "m")
        b_delta = delta_weights(model, names[1])
        expected = {k: 0.6 * ada_delta[k] + 0.4 * b_delta[k] for k in b_delta}
        assert _max_err(delta_weights(model, merged), expected) < 1e-5


def test_attaching_adalora_warns_of_no_missing_keys(tiny_model_dir, registry):
    """peft reports AdaLoRA's unsaved `ranknum` as missing when the adapter's name holds "lora_" (as
    movie-adalora's did when peft names were the ref with punctuation replaced); hashed names never do."""
    import warnings

    register_random(tiny_model_dir, registry, "movie-adalora", {"type": "adalora", "init_r": 4, "target_r": 2}, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attach(fresh_backbone(tiny_model_dir), registry, ["movie-adalora"])
    assert not [w for w in caught if "missing adapter keys" in str(w.message)]


def test_refs_differing_only_in_punctuation_keep_their_own_weights(tiny_model_dir, registry):
    """movie-lora, movie_lora and movie.lora once shared one peft name: the second load was skipped and
    served the first one's weights. Each must score as itself, in eval rows and in a composition."""
    from adaptrec.adapters.attach import peft_name
    from adaptrec.scoring.variants import component_scores, llm_variants

    refs = ["movie-lora", "movie_lora", "movie.lora"]
    for seed, ref in enumerate(refs):
        register_random(tiny_model_dir, registry, ref, {"type": "lora", "r": 4}, seed=seed, std=0.6)
    assert len({peft_name(f"{r}:1") for r in refs}) == 3 and not any("lora_" in peft_name(f"{r}:1") for r in refs)
    cases = synthetic_cases(4)
    alone = [component_scores(fresh_backbone(tiny_model_dir), registry, [r], cases, progress=False)[0] for r in refs]
    assert min(np.abs(alone[0] - alone[1]).max(), np.abs(alone[1] - alone[2]).max()) > 1e-5
    bb = fresh_backbone(tiny_model_dir)
    rows = {name: backbone_scorer(bb, model, key, progress=False).score(cases)
            for name, key, model in llm_variants(bb, registry, refs, include_untuned=False)}
    for ref, expected in zip(refs, alone):
        np.testing.assert_allclose(rows[f"{ref}:1"], expected, atol=1e-5)
    with attached_sources(fresh_backbone(tiny_model_dir), registry, refs) as (model, _, names):
        assert len(set(names)) == 3 and all(n in model.peft_config for n in names)


def test_prefix_cannot_be_merged_but_mixes(tiny_model_dir, registry):
    register_random(tiny_model_dir, registry, "p", {"type": "prefix", "num_virtual_tokens": 3}, seed=4)
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    backbone = fresh_backbone(tiny_model_dir)
    with pytest.raises(CompositionError) as e:
        compose(backbone, registry, Composition(("a", "p"), "cat", (0.5, 0.5)), name="x", domain="arts")
    assert "method='mix'" in _one_line(e)

    cases = synthetic_cases(6)
    backbone = fresh_backbone(tiny_model_dir)
    untuned = backbone_scorer(backbone, progress=False).score(cases)
    mixed = mixed_scores(backbone, registry, Composition(("a", "p"), "mix", (0.3, 0.9)), cases, progress=False)
    alone = []
    for ref in ("a", "p"):  # each adapter on its own backbone, through the one scoring path
        bb = fresh_backbone(tiny_model_dir)
        _, key, model = next(llm_variants(bb, registry, [ref], include_untuned=False))
        alone.append(backbone_scorer(bb, model, key, progress=False).score(cases))
    assert not np.allclose(alone[0], alone[1], atol=1e-3)
    np.testing.assert_allclose(mixed, (0.3 * alone[0] + 0.9 * alone[1]) / 1.2, atol=1e-6)
    # the backbone is left without adapters
    np.testing.assert_allclose(backbone_scorer(backbone, progress=False).score(cases), untuned, atol=1e-6)


def test_eval_rows_of_every_adapter_type_on_one_backbone(tiny_model_dir, registry):
    """peft holds one adapter type per model: llm_variants attaches LoRA, AdaLoRA and prefix in turn."""
    from adaptrec.data.spec import DataSet
    from adaptrec.evaluation import run_eval
    from adaptrec.metrics import auc

    register_random(tiny_model_dir, registry, "l", LORA4, seed=1, std=0.05)
    register_random(tiny_model_dir, registry, "ada", {"type": "adalora", "init_r": 4, "target_r": 2, "tinit": 1,
                                                      "tfinal": 1}, seed=2, std=0.05)
    register_random(tiny_model_dir, registry, "p", {"type": "prefix", "num_virtual_tokens": 3}, seed=4)
    register_random(tiny_model_dir, registry, "l2", LORA2, seed=3, std=0.05)
    cases = synthetic_cases(8)
    labels = np.array([c.label for c in cases])
    alone = {}
    for ref in ("l", "ada", "p", "l2"):  # each adapter on its own backbone
        bb = fresh_backbone(tiny_model_dir)
        _, key, model = next(llm_variants(bb, registry, [ref], include_untuned=False))
        alone[ref] = backbone_scorer(bb, model, key, progress=False).score(cases)
    backbone = fresh_backbone(tiny_model_dir)
    untuned = backbone_scorer(backbone, progress=False).score(cases)

    report = run_eval(backbone, DataSet("synthetic", cases, {}, "fp"), registry=registry, adapters=["l", "ada", "p", "l2"],
                      limit=None, progress=False)
    assert [r.name for r in report.rows[2:]] == ["backbone (untuned)", "l:1", "l2:1", "ada:1", "p:1"]
    assert report.rows[2].metrics["auc"].value == pytest.approx(auc(labels, untuned))
    for row in report.rows[3:]:
        assert row.metrics["auc"].value == pytest.approx(auc(labels, alone[row.name.split(":")[0]]))
    scores = component_scores(backbone, registry, ["p", "l", "ada", "l"], cases, progress=False)
    for got, ref in zip(scores, ["p", "l", "ada", "l"]):
        np.testing.assert_allclose(got, alone[ref], atol=1e-6)
    assert not np.allclose(alone["l"], alone["ada"], atol=1e-3) and not np.allclose(alone["l"], alone["p"], atol=1e-3)
    # the backbone is left without adapters
    np.testing.assert_allclose(backbone_scorer(backbone, progress=False).score(cases), untuned, atol=1e-6)


def test_a_registered_mix_is_scored_routed_and_refused_by_attach(tiny_model_dir, registry):
    from adaptrec.adapters.files import verify_adapter_dir
    from adaptrec.data.records import Case
    from adaptrec.data.spec import DataSet
    from adaptrec.errors import AdaptrecError
    from adaptrec.evaluation import run_eval
    from adaptrec.router.policy import route

    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "p", {"type": "prefix", "num_virtual_tokens": 3}, seed=4)
    composition = Composition(("a", "p"), "mix", (0.3, 0.9))
    record = compose(fresh_backbone(tiny_model_dir), registry, composition, name="a+p", domain="arts")
    assert (record.kind, record.adapter_type, record.lineage["parents"]) == ("composed", "mix", ["a:1", "p:1"])
    assert sorted(verify_adapter_dir(record.path)["files"]) == ["mix.json"]  # hash-verified like weights

    cases = synthetic_cases(6)
    expected = mixed_scores(fresh_backbone(tiny_model_dir), registry, composition, cases, progress=False)
    from adaptrec.metrics import auc

    report = run_eval(fresh_backbone(tiny_model_dir), DataSet("synthetic", cases, {}, "x"), registry=registry,
                      adapters=["a", "a+p"], limit=None, progress=False)
    assert [r.name for r in report.rows][-2:] == ["a:1", "a+p:1"]
    assert report.rows[-1].metrics["auc"].value == pytest.approx(auc([c.label for c in cases], expected))

    registry.promote("a+p", "arts:cold")
    registry.promote("a", "arts")
    cold = route(registry, fresh_backbone(tiny_model_dir).fingerprint, Case("u", "arts", "arts product", (), '"T"'))
    assert (cold.mode, cold.adapters, cold.weights) == ("cold", ("a:1", "p:1"), (0.3, 0.9))
    with pytest.raises(AdaptrecError, match="a\\+p:1 is a score-level mix of a:1, p:1"):
        attach(fresh_backbone(tiny_model_dir), registry, ["a+p"])


def test_a_registered_mix_ranks_candidate_lists_and_eval_leaves_the_backbone_bare(tiny_model_dir, registry, tmp_path):
    """The ranking eval handed a mix to `attach` ("is a score-level mix"), after the baselines had run; an eval of
    plain adapters left its last group attached to the backbone, which a later untuned row scored with."""
    from adaptrec.data.candidates import candidate_cases
    from adaptrec.data.spec import load_spec
    from adaptrec.evaluation import rank_lists, run_rank_eval
    from adaptrec.scoring.variants import mixed_lists

    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "p", {"type": "prefix", "num_virtual_tokens": 3}, seed=4)
    composition = Composition(("a:1", "p:1"), "mix", (0.3, 0.9))
    compose(fresh_backbone(tiny_model_dir), registry, composition, name="a+p", domain="arts")
    dataset = load_spec(str(write_film_log(tmp_path, "arts", [12] * 4)[0]))
    backbone = fresh_backbone(tiny_model_dir)
    report = run_rank_eval(backbone, dataset, registry=registry, adapters=["a", "a+p"], limit=3, negatives=4,
                           progress=False)
    assert [r.name for r in report.rows][-2:] == ["a:1", "a+p:1"] and report.rows[-1].metrics
    assert not any("lora_" in name for name, _ in backbone.model.named_modules())  # was: a:1's layers stayed
    positives, candidate_lists = rank_lists(dataset, 3, 0, 4)
    lists = [candidate_cases(cl, case, dataset.catalogues) for cl, case in zip(candidate_lists, positives)]
    expected = [mixed_scores(fresh_backbone(tiny_model_dir), registry, composition, cases, one_list=True,
                             progress=False) for cases in lists]
    got = mixed_lists(fresh_backbone(tiny_model_dir), registry, composition, lists, progress=False)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-6)


def test_mix_is_a_weighted_average_and_checks_weights():
    scores = np.array([[0.2, 0.8], [0.6, 0.4]])
    np.testing.assert_allclose(mix(scores, [3, 1]), [0.3, 0.7])
    for bad in ([1, -1], [0, 0], [1]):
        with pytest.raises(CompositionError):
            mix(scores, bad)


def test_adapters_of_another_base_family_are_refused(tiny_model_dir, registry, tmp_path):
    record = register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    src = tmp_path / "foreign"
    shutil.copytree(record.path, src)
    registry.register(src, name="foreign", domain="arts", kind="trained", adapter_type="lora", adapter_config=None,
                      fingerprint=Fingerprint("e" * 64, "f" * 64, "org/other"))
    with pytest.raises(FingerprintMismatch) as e:
        with attached_sources(fresh_backbone(tiny_model_dir), registry, ["a", "foreign"]):
            pass
    assert "foreign" in _one_line(e)


@pytest.mark.parametrize("method", ["cat", "mix"])
def test_a_composition_keeps_the_family_warning_of_a_source_trained_on_another_build(tiny_model_dir, registry,
                                                                                     tmp_path, method):
    backbone = fresh_backbone(tiny_model_dir)
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    src = tmp_path / "other-build"
    shutil.copytree(register_random(tiny_model_dir, registry, "b", LORA2, seed=2).path, src)
    other = Fingerprint("e" * 64, backbone.fingerprint.family, "org/other-build")
    registry.register(src, name="c", domain="arts", kind="trained", adapter_type="lora", adapter_config=None,
                      fingerprint=other)
    same = compose(backbone, registry, Composition(("a", "b"), method, (0.6, 0.4)), name="ab", domain="arts")
    with pytest.warns(FamilyMatchWarning):
        only_other = compose(backbone, registry, Composition(("c",), method, (1.0,)), name="c2", domain="arts")
    with pytest.warns(FamilyMatchWarning):
        mixed = compose(backbone, registry, Composition(("a", "c"), method, (0.6, 0.4)), name="ac", domain="arts")
    assert same.fingerprint == backbone.fingerprint
    assert only_other.fingerprint == other  # was: the compose-time backbone's, so its own build lost the exact match
    assert mixed.fingerprint.family == backbone.fingerprint.family
    assert mixed.fingerprint.exact not in (backbone.fingerprint.exact, other.exact)
    with pytest.warns(FamilyMatchWarning):  # was: no warning, the composition claimed this exact build
        registry.load_verified("ac", backbone.fingerprint)


def test_the_untuned_row_is_refused_while_an_adapter_is_still_in_the_backbone(tiny_model_dir, registry):
    """An open Recommender (or an attach never detached) left its LoRA layers active in the backbone: the untuned
    row scored with them and was cached as the bare backbone's (was: the adapter's scores under the `base` key)."""
    from adaptrec.errors import AdaptrecError
    from adaptrec.router.recommender import Recommender
    from adaptrec.scoring.variants import variant_rows

    def untuned() -> np.ndarray:
        (_, scorer, _), = variant_rows(backbone, registry, [], progress=False)
        return scorer.score(synthetic_cases(4))

    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    backbone = fresh_backbone(tiny_model_dir)
    bare = untuned()
    recommender = Recommender(backbone, registry, "a")
    with pytest.raises(AdaptrecError, match="still holds an adapter's layers .* close it"):
        untuned()
    recommender.close()
    np.testing.assert_allclose(untuned(), bare)


def test_composed_adapter_is_registered_and_attaches_like_any_adapter(tiny_model_dir, registry):
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA2, seed=2)
    record = compose(fresh_backbone(tiny_model_dir), registry, Composition(("a", "b"), "cat", (0.6, 0.4)),
                     name="a+b", domain="office")
    assert (record.kind, record.domain, record.adapter_type) == ("composed", "office", "lora")
    assert record.lineage["parents"] == ["a:1", "b:1"]
    assert (record.lineage["method"], record.lineage["weights"]) == ("cat", [0.6, 0.4])

    model, _ = attach(fresh_backbone(tiny_model_dir), registry, ["a", "b", "a+b"])
    names = [peft_name(r) for r in ("a+b:1", "a:1", "b:1")]
    assert _max_err(delta_weights(model, names[0]), _weighted_sum(model, names[1:], (0.6, 0.4))) < 1e-5
    scores = component_scores(fresh_backbone(tiny_model_dir), registry, ["a+b"], synthetic_cases(4), progress=False)
    assert scores.shape == (1, 4) and np.isfinite(scores).all()


def test_into_base_writes_a_standalone_model_with_the_composition_merged(tiny_model_dir, registry, tmp_path):
    register_random(tiny_model_dir, registry, "a", LORA4, seed=1)
    register_random(tiny_model_dir, registry, "b", LORA2, seed=2)
    record = compose(fresh_backbone(tiny_model_dir), registry, Composition(("a", "b"), "cat", (0.6, 0.4)),
                     name="a+b", domain="office")
    out = merge_into_base(str(tiny_model_dir), registry, record.ref, tmp_path / "merged")
    assert json.loads((out / "adaptrec_merge.json").read_text())["adapter"] == "a+b:1"
    cases = synthetic_cases(4)
    merged = fresh_backbone(out)
    with_adapter = component_scores(fresh_backbone(tiny_model_dir), registry, [record.ref], cases, progress=False)[0]
    np.testing.assert_allclose(backbone_scorer(merged, progress=False).score(cases), with_adapter, atol=1e-5)
    untuned = backbone_scorer(fresh_backbone(tiny_model_dir), progress=False).score(cases)
    assert not np.allclose(with_adapter, untuned, atol=1e-4)


@pytest.mark.parametrize("target", ["embed_tokens", "lm_head"])
def test_into_base_keeps_a_tied_heads_other_half_as_it_was(tiny_model_dir, registry, tmp_path, target):
    """SmolLM2 and Gemma-3 tie the output head to the input embedding: peft merged an adapter on either in place,
    so the merged model changed both (was: logits off by tens)."""
    from peft import LoraConfig, get_peft_model
    from router_helpers import _random
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    tied = tmp_path / "tied"
    torch.manual_seed(0)
    LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir, tie_word_embeddings=True)).save_pretrained(tied)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tied)
    backbone = fresh_backbone(tied)
    model = _random(get_peft_model(backbone.model, LoraConfig(r=4, target_modules=["q_proj", target])), 1, 0.3)
    model.save_pretrained(tmp_path / "emb", save_embedding_layers=False)
    registry.register(tmp_path / "emb", name="emb", domain="arts", kind="trained", adapter_type="lora",
                      adapter_config=None, fingerprint=backbone.fingerprint)
    out = merge_into_base(str(tied), registry, "emb", tmp_path / "merged")
    cases = synthetic_cases(4)
    with_adapter = component_scores(fresh_backbone(tied), registry, ["emb"], cases, progress=False)[0]
    np.testing.assert_allclose(backbone_scorer(fresh_backbone(out), progress=False).score(cases), with_adapter,
                               atol=1e-5)


def test_what_a_delta_w_merge_would_drop_or_save_unloadable_is_refused(tiny_model_dir, registry, monkeypatch):
    """Compose copied the base module for `modules_to_save` and dropped biases; one source (or a linear merge) with
    per-module ranks was saved under one rank, which no later load could read."""
    from adaptrec.registry import store

    with monkeypatch.context() as before_the_check:  # registered by an earlier version: refused at registration now
        before_the_check.setattr(store, "base_change", lambda *args: None)
        register_peft(tiny_model_dir, registry, "head", seed=1, modules_to_save=["lm_head"])
        register_peft(tiny_model_dir, registry, "biased", seed=2, bias="lora_only")
    register_peft(tiny_model_dir, registry, "plain", seed=3, r=4)
    register_peft(tiny_model_dir, registry, "patterned", seed=4, r=4, rank_pattern={"v_proj": 2})
    register_peft(tiny_model_dir, registry, "layer1", seed=5, r=4, layers_to_transform=[1])
    register_peft(tiny_model_dir, registry, "noq0", seed=6, r=4, exclude_modules=["model.layers.0.self_attn.q_proj"])
    register_peft(tiny_model_dir, registry, "tokens", seed=7, r=4, trainable_token_indices=[1, 2])
    backbone = fresh_backbone(tiny_model_dir)
    for refs, method, why in ((("head", "plain"), "cat", "head:1 has modules_to_save"),
                              (("biased", "plain"), "cat", "biased:1 has bias"),
                              (("patterned",), "cat", "merges one source linearly"),
                              (("patterned", "plain"), "linear", "merges linear A and B separately"),
                              # (was: merged with the first source's reach, the other's ΔW outside it lost, or its
                              # token deltas dropped, and registered)
                              (("layer1", "plain"), "cat", "layer1:1, plain:1 differ in layers_to_transform"),
                              (("plain", "noq0"), "svd", "plain:1, noq0:1 differ in exclude_modules"),
                              (("plain", "tokens"), "cat", "tokens:1 has trainable_token_indices")):
        with pytest.raises(CompositionError, match=why):
            compose(backbone, registry, Composition(refs, method, (1.0,) * len(refs)), name="x", domain="arts")
    assert "x" not in {r.name for r in registry.list()}
    assert not any("lora_" in name for name, _ in backbone.model.named_modules())


def test_a_first_source_that_fails_half_loaded_leaves_no_layers_behind(tiny_model_dir, registry, monkeypatch):
    """peft injected its layers, then the load failed: the model was still the bare backbone, so the detach did
    nothing and the layers stayed in it."""
    from peft import PeftModel

    from adaptrec.adapters import merge as merge_module

    register_peft(tiny_model_dir, registry, "plain", seed=3, r=4)

    def half_loaded(model, folder, name):
        PeftModel.from_pretrained(model, str(folder), adapter_name=name)
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(merge_module, "load_peft", half_loaded)
    backbone = fresh_backbone(tiny_model_dir)
    with pytest.raises(RuntimeError, match="disk"), merge_module.attached_sources(backbone, registry, ["plain"]):
        pass
    assert not any("lora_" in name for name, _ in backbone.model.named_modules())


def test_embedding_adapters_compose_and_reach_settings_compare_as_peft_reads_them(tiny_model_dir, registry, tmp_path):
    """(was: a cat merge of two adapters on embed_tokens saved the base embedding whole and its registration was
    refused; an `exclude_modules` regex string and a list of names read as equal, so one source's ΔW was lost)"""
    from peft import LoraConfig, get_peft_model
    from router_helpers import _random

    for seed in (1, 2):
        backbone = fresh_backbone(tiny_model_dir)
        model = _random(get_peft_model(backbone.model, LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"])),
                        seed, 0.3)
        model.save_pretrained(tmp_path / f"emb{seed}", save_embedding_layers=False)
        registry.register(tmp_path / f"emb{seed}", name=f"emb{seed}", domain="arts", kind="trained",
                          adapter_type="lora", adapter_config=None, fingerprint=backbone.fingerprint)
    composed = compose(fresh_backbone(tiny_model_dir), registry, Composition(("emb1", "emb2"), "cat", (0.5, 0.5)),
                       name="emb-cat", domain="arts")
    assert composed.ref == "emb-cat:1"
    register_peft(tiny_model_dir, registry, "regex", seed=3, r=4, exclude_modules="q_proj")  # excludes nothing
    register_peft(tiny_model_dir, registry, "names", seed=4, r=4, exclude_modules=["q_proj"])  # every q_proj
    with pytest.raises(CompositionError, match="differ in exclude_modules"):
        check_merge_sources([registry.resolve("regex"), registry.resolve("names")], "cat")


def test_an_adapter_peft_cannot_attach_beside_another_is_one_error(tiny_model_dir, registry):
    """After an adapter with trainable token deltas, peft's load of a second raised a bare KeyError (eval of several
    adapters, compose)."""
    from adaptrec.adapters.attach import attach
    from adaptrec.errors import AdaptrecError

    register_peft(tiny_model_dir, registry, "tokens", seed=1, r=4, trainable_token_indices=[1, 2])
    register_peft(tiny_model_dir, registry, "plain", seed=2, r=4)
    backbone = fresh_backbone(tiny_model_dir)
    with pytest.raises(AdaptrecError, match="peft cannot load it beside the adapters attached before it"):
        attach(backbone, registry, ["tokens", "plain"])


def test_an_adapter_whose_load_rewrites_the_base_weights_is_never_registered(tiny_model_dir, registry):
    """A PiSSA-initialised config makes peft rewrite the base weights at every load, and detaching does not undo
    it: every later row (the untuned backbone included) scored on a changed base."""
    from adaptrec.errors import RegistryError

    with pytest.raises(RegistryError, match="init_lora_weights 'pissa' makes peft rewrite the base"):
        register_peft(tiny_model_dir, registry, "pissa", seed=1, init_lora_weights="pissa")
    assert registry.list() == [] and not (registry.adapters_dir / "pissa" / "1").exists()


@pytest.mark.parametrize("option, words", [({"modules_to_save": ["lm_head"]}, "modules_to_save \\['lm_head'\\] swaps"),
                                           ({"bias": "all"}, "bias 'all' writes the adapter's trained biases"),
                                           ({"layer_replication": [[0, 1], [0, 1]]}, "layer_replication adds layers"),
                                           ({"target_modules": ["q_proj", "embed_tokens"]},  # peft saves it whole
                                            "holds the base model's own weights \\(.*embed_tokens.base_layer.weight")])
def test_an_adapter_whose_load_changes_the_base_for_good_is_refused_and_never_attached(tiny_model_dir, registry,
                                                                                       monkeypatch, option, words):
    """(was: registered; eval then scored every later row, the untuned one and cached ones included, on the
    adapter's lm_head copy, its biases or its replicated layers: `unload` keeps them)"""
    from adaptrec.adapters.attach import attach
    from adaptrec.errors import AdaptrecError, RegistryError
    from adaptrec.registry import store

    with pytest.raises(RegistryError, match=words):
        register_peft(tiny_model_dir, registry, "changes", seed=1, **option)
    assert registry.list() == []
    with monkeypatch.context() as before_the_check:  # as one registered by an earlier version
        before_the_check.setattr(store, "base_change", lambda *args: None)
        register_peft(tiny_model_dir, registry, "changes", seed=1, **option)
    backbone = fresh_backbone(tiny_model_dir)
    with pytest.raises(AdaptrecError, match=words):
        attach(backbone, registry, ["changes"])
    assert not any("lora_" in name for name, _ in backbone.model.named_modules())
    from adaptrec.serve.engine import Engine, Unservable

    with pytest.raises(Unservable, match=words):  # a 409 from the server
        Engine(backbone, registry).load("changes")
