"""Routing: warm vs cold, where the cold adapter comes from, fingerprint checks, and the reason given."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from adaptrec.adapters.merge import Composition
from adaptrec.data.history_file import read_history_file
from adaptrec.data.records import Case, HistoryItem
from adaptrec.errors import DataFormatError, FingerprintMismatch
from adaptrec.fingerprint import Fingerprint
from adaptrec.registry import Registry
from adaptrec.router.policy import RoutePolicy, route
from adaptrec.router.sources import RouteError

FP = Fingerprint("e" * 64, "f" * 64, "org/base")
SAME_FAMILY = Fingerprint("d" * 64, "f" * 64, "org/base-4bit")
OTHER = Fingerprint("c" * 64, "b" * 64, "org/other")


@pytest.fixture
def registry(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4)}, src / "adapter_model.safetensors")
    (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    reg = Registry()
    for name, domain in (("arts-lora", "arts"), ("office-lora", "office")):
        reg.register(src, name=name, domain=domain, kind="trained", adapter_type="lora", adapter_config=None, fingerprint=FP)
        reg.promote(name, domain)
    reg.src = src
    return reg


def _compose_record(reg, name, fp=FP):
    return reg.register(reg.src, name=name, domain="office", kind="composed", adapter_type="lora", adapter_config=None,
                        fingerprint=fp, lineage={"parents": ["arts-lora", "office-lora"], "method": "cat", "weights": [0.5, 0.5]})


def _case(n_office: int, n_arts: int) -> Case:
    hist = [HistoryItem(f'"o{i}"', domain="office") for i in range(n_office)]
    hist += [HistoryItem(f'"a{i}"', domain="arts") for i in range(n_arts)]
    return Case("u1", "office", "office product", tuple(hist), '"target"')


def test_warm_user_gets_the_target_adapter(registry):
    _compose_record(registry, "arts+office")
    d = route(registry, FP, _case(4, 6))
    assert (d.mode, d.adapters, d.history_domains) == ("warm", ("office-lora:1",), "both")
    assert "4 office interactions >= 3" in d.reason and not d.warnings


def test_cold_user_gets_other_domain_history_and_the_composed_adapter(registry):
    _compose_record(registry, "arts+office")
    d = route(registry, FP, _case(1, 5))
    assert (d.mode, d.adapters, d.history_domains) == ("cold", ("arts+office:1",), "both")
    assert "1 office interactions < 3" in d.reason and "5 other-domain items" in d.reason
    assert "arts-lora:1, office-lora:1" in d.reason
    assert len(d.prompt_case(_case(1, 5)).history) == 6
    # the adapter promoted for office:cold wins over the newest composed one
    _compose_record(registry, "old-mix")
    registry.promote("old-mix", "office:cold")
    assert route(registry, FP, _case(1, 5)).adapters == ("old-mix:1",)
    # the threshold is configurable
    assert route(registry, FP, _case(1, 5), RoutePolicy(min_target_history=1)).mode == "warm"


def test_cold_user_without_a_composed_adapter_falls_back_and_says_so(registry):
    d = route(registry, FP, _case(0, 3))
    assert d.mode == "cold" and d.adapters == ("office-lora:1",) and "no composed adapter" in d.reason


def test_cold_user_with_an_explicit_score_level_mix(registry):
    d = route(registry, FP, _case(0, 3), cold=Composition(("arts-lora", "office-lora"), "mix", (0.7, 0.3)))
    assert d.adapters == ("arts-lora:1", "office-lora:1") and d.weights == (0.7, 0.3) and "mix" in d.reason


def test_a_cold_user_of_a_domain_without_its_own_adapter_is_served_by_a_composition(registry):
    """New-domain transfer: nothing promoted for garden, but a given mix or a promoted garden:cold adapter serves its
    cold users (was: "no adapter is promoted for domain 'garden'" before the cold branch was reached)."""
    garden = Case("u1", "garden", "garden product", (HistoryItem('"a0"', domain="arts"),), '"x"')
    d = route(registry, FP, garden, cold=Composition(("arts-lora",), "mix", (1.0,)))
    assert (d.mode, d.adapters) == ("cold", ("arts-lora:1",))
    registry.register(registry.src, name="garden-cold", domain="garden", kind="composed", adapter_type="lora",
                      adapter_config=None, fingerprint=FP, lineage={"parents": ["arts-lora"], "method": "cat"})
    registry.promote("garden-cold", "garden:cold")
    assert route(registry, FP, garden).adapters == ("garden-cold:1",)
    with pytest.raises(RouteError, match="registry promote"):  # a warm garden user needs garden's own adapter
        route(registry, FP, replace(garden, history=(HistoryItem('"g"', domain="garden"),) * 3))


def test_a_cold_start_alias_is_no_domain_to_route(registry):
    """(was: `route --domain garden:cold` served the cold-start adapter to warm users too)"""
    from adaptrec.router.policy import route_user

    registry.register(registry.src, name="garden-cold", domain="garden", kind="composed", adapter_type="lora",
                      adapter_config=None, fingerprint=FP, lineage={"parents": ["arts-lora"], "method": "cat"})
    registry.promote("garden-cold", "garden:cold")
    warm = Case("u1", "garden:cold", "garden product", (HistoryItem('"g"', domain="garden"),) * 3, '"x"')
    said = "'garden:cold' names the cold-start adapter of 'garden', not a domain: route 'garden'"
    with pytest.raises(RouteError, match=said):
        route(registry, FP, warm)
    with pytest.raises(RouteError, match=said):  # before the backbone's fingerprint is read
        route_user(registry, lambda: 1 / 0, "u1", "garden:cold", history=["g"])


def test_an_explicit_cold_mix_is_checked_against_the_backbone(registry):
    """(was: any base accepted, and the target adapter's warnings shown instead of the mix's)"""
    registry.register(registry.src, name="foreign", domain="arts", kind="trained", adapter_type="lora",
                      adapter_config=None, fingerprint=OTHER)
    registry.register(registry.src, name="cousin", domain="arts", kind="trained", adapter_type="lora",
                      adapter_config=None, fingerprint=SAME_FAMILY)
    with pytest.raises(FingerprintMismatch, match="cold-start adapter foreign:1"):
        route(registry, FP, _case(0, 3), cold=Composition(("foreign",), "mix", (1.0,)))
    d = route(registry, FP, _case(0, 3), cold=Composition(("cousin",), "mix", (1.0,)))
    assert len(d.warnings) == 1 and d.warnings[0].startswith("cousin:1 was trained on another build")


def test_the_newest_of_two_compositions_registered_in_one_second_serves(registry):
    """Registration times are kept to the microsecond (was: to the second, and a tie went to the first listed)."""
    _compose_record(registry, "aa-comp")
    _compose_record(registry, "zz-comp")  # listed after aa-comp, which a tie returned first
    assert route(registry, FP, _case(0, 3)).adapters == ("zz-comp:1",)


def test_warm_history_target_hides_other_domains(registry):
    d = route(registry, FP, _case(4, 6), RoutePolicy(warm_history="target"))
    assert [h.domain for h in d.prompt_case(_case(4, 6)).history] == ["office"] * 4


def test_fingerprints_family_warns_other_refused(registry):
    d = route(registry, SAME_FAMILY, _case(4, 0))
    assert d.mode == "warm" and "another build" in d.warnings[0]
    with pytest.raises(FingerprintMismatch) as e:  # a 409 from the server, as when a request names it (was: a 404)
        route(registry, OTHER, _case(4, 0))
    assert "office-lora:1" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(RouteError, match="registry promote"):
        route(registry, FP, Case("u", "garden", "garden product", (), '"x"'))


def test_an_adalora_export_is_no_composition_for_cold_users(registry):
    """`export --to-lora` registers kind `composed` too; as the newest one it served every cold user."""
    _compose_record(registry, "arts+office")
    registry.register(registry.src, name="office-adalora-lora", domain="office", kind="composed",
                      adapter_type="lora", adapter_config=None, fingerprint=FP,
                      lineage={"parents": ["office-lora:1"], "method": "adalora_to_lora", "weights": [1.0]})
    assert route(registry, FP, _case(1, 5)).adapters == ("arts+office:1",)


def test_cold_lookup_skips_composed_adapters_of_another_base(registry):
    _compose_record(registry, "foreign-mix", fp=OTHER)
    d = route(registry, FP, _case(0, 2))
    assert d.adapters == ("office-lora:1",)


def test_history_file_items_may_name_their_domain(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"user_id": "u9", "history": [{"title": "Pen"}, {"title": "Paint", "domain": "arts"}]}))
    case = read_history_file(path, "", "office")
    assert case.user_id == "u9" and [h.domain for h in case.history] == ["office", "arts"]


def test_a_recommender_of_several_adapters_is_refused_before_the_backbone_loads(registry, monkeypatch):
    """`load("arts,office")` attached both and scored with the first alone, under its name; a registered mix (what
    the refusal once suggested composing) loaded the backbone, then failed: it has no weights to attach."""
    import adaptrec
    from adaptrec import api

    monkeypatch.setattr(api, "_backbone", lambda *a: pytest.fail("the backbone loaded"))
    with pytest.raises(RouteError, match="'arts,office' names 2 adapters; .* --method cat"):
        adaptrec.load("arts,office")
    mix = registry.register(lambda folder: (Path(folder) / "mix.json").write_text("{}"), name="mixy", domain="arts",
                            kind="composed", adapter_type="mix", fingerprint=FP,
                            adapter_config={"sources": ["arts-lora:1", "office-lora:1"], "weights": [0.5, 0.5]},
                            lineage={"parents": ["arts-lora:1", "office-lora:1"], "method": "mix", "weights": [0.5, 0.5]})
    with pytest.raises(RouteError, match="mixy:1 is a score-level mix"):
        adaptrec.load(mix.ref)


def test_a_users_history_may_be_a_file_or_a_list_of_items(tmp_path):
    """As `predict` and `Recommender.score` take it (was: route and recommend took a file only: a list raised
    TypeError inside the path handling)."""
    from adaptrec.router.policy import user_case

    items = ["Heat (1995)", {"title": "Ran (1985)", "liked": False, "domain": "arts"}]
    (tmp_path / "h.json").write_text(json.dumps({"history": items}))
    from_file = user_case("u7", "office", history=tmp_path / "h.json")
    from_list = user_case("u7", "office", history=items)
    assert from_list.history == from_file.history and from_list.user_id == from_file.user_id == "u7"
    assert user_case("u7", "office", history=str(tmp_path / "h.json")).history == from_file.history
    with pytest.raises(DataFormatError, match="expected a list of items, got dict"):
        user_case("u7", "office", history={"history": items})
    for unordered in ({"Heat (1995)", "Ran (1985)"}, {"Heat (1995)": 1}.keys()):  # no oldest item to drop first
        with pytest.raises(DataFormatError, match="expected a list of items, got"):
            user_case("u7", "office", history=unordered)
