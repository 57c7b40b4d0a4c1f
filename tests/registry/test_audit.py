"""The champion audit trail: every promotion, refusal and rollback recorded; rollback walks back through champions."""

from __future__ import annotations

import pytest
from test_registry import reg_one

from adaptrec.errors import RegistryError
from adaptrec.registry import Registry


@pytest.fixture
def reg(tmp_path) -> Registry:
    return Registry(tmp_path / "home")


@pytest.fixture
def versions(reg, tmp_path):
    from test_registry import make_peft_dir

    src = make_peft_dir(tmp_path / "src")
    return [reg_one(reg, src).ref for _ in range(3)]


def test_every_decision_is_recorded_with_its_evidence(reg, versions, monkeypatch):
    monkeypatch.setenv("ADAPTREC_USER", "alice")
    v1, v2, v3 = versions
    reg.promote(v1, "movies")
    reg.promote(v2, "movies", evidence={"test": "non-inferiority", "diff": 0.01})
    reg.refuse(v3, "movies", {"test": "non-inferiority", "diff": -0.2})
    trail = reg.history("movies")
    assert [(d.action, d.ref, d.previous) for d in trail] == [
        ("promote", v1, None), ("promote", v2, v1), ("refuse", v3, v2)]
    assert trail[1].evidence == {"test": "non-inferiority", "diff": 0.01}
    assert {d.by for d in trail} == {"alice"} and all(d.at for d in trail)
    assert reg.promoted("movies").ref == v2  # a refusal leaves the champion
    assert reg.history("books") == []


def test_a_decision_with_damaged_evidence_is_one_line(reg, versions):
    import sqlite3

    from adaptrec.errors import IntegrityError

    reg.promote(versions[0], "movies", evidence={"diff": 0.01})
    with sqlite3.connect(reg.db_path) as db:  # edited by hand (was: JSONDecodeError's traceback)
        db.execute("UPDATE decisions SET evidence = '{'")
    for call in (lambda: reg.history("movies"), lambda: reg.rollback("movies")):
        with pytest.raises(IntegrityError, match=r"decision 1 \(promote movies-lora:1 in movies\) has unreadable "):
            call()


def test_evidence_of_another_json_shape_is_read_as_given_and_unparseable_evidence_is_one_line(reg, versions):
    """(was: `[1]` read as the evidence, an AttributeError traceback in `registry history` and `rollback`; the API
    stores what a caller gives, so such a row is read, not refused)"""
    import sqlite3

    from adaptrec.errors import IntegrityError
    from adaptrec.registry import audit

    reg.promote(versions[0], "movies")
    reg.promote(versions[1], "movies", evidence=["manual", "ticket"])
    assert reg.history("movies")[-1].evidence == {"evidence": ["manual", "ticket"]}
    assert reg.rollback("movies").ref == versions[0] and not [p for p in reg.verify() if "decision" in p]
    with sqlite3.connect(reg.db_path) as db:
        db.execute("UPDATE decisions SET evidence = '{' WHERE seq = 1")
    with pytest.raises(IntegrityError, match=r"decision 1 \(promote .* in movies\) has unreadable evidence"):
        reg.history("movies")
    with sqlite3.connect(reg.db_path) as db:
        assert len(audit.damaged(db)) == 1
    assert [p for p in reg.verify() if "decision" in p] == audit.damaged(sqlite3.connect(reg.db_path))


def test_rollback_walks_back_through_earlier_champions(reg, versions):
    v1, v2, v3 = versions
    for v in versions:
        reg.promote(v, "movies")
    assert reg.rollback("movies").ref == v2
    assert reg.rollback("movies").ref == v1  # not back to v3
    assert reg.promoted("movies").ref == v1
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback("movies")
    assert [d.action for d in reg.history("movies")] == ["promote"] * 3 + ["rollback"] * 2


def test_rollback_skips_a_removed_champion_and_remembers_it(reg, versions):
    v1, v2, v3 = versions
    for v in versions:
        reg.promote(v, "movies")
    reg.remove(v2)
    assert reg.rollback("movies").ref == v1
    assert reg.history("movies")[-1].evidence == {"rolled_back": v3, "skipped": [v2]}
    reg.promote(v3, "movies")
    assert reg.rollback("movies").ref == v1


def test_a_rollback_never_restores_the_champion_that_serves(reg, versions):
    """Promote v1, v2; remove v2; promote v1 again (was: the rollback "restored" v1 over v1)."""
    v1, v2, _ = versions
    reg.promote(v1, "movies")
    reg.promote(v2, "movies")
    reg.remove(v2, force=True)
    reg.promote(v1, "movies")
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback("movies")
    assert reg.promoted("movies").ref == v1 and reg.history("movies")[-1].action == "promote"


def test_a_rollback_past_the_serving_champion_leaves_a_trail_that_replays(reg, versions):
    """Promote v3, v1, v2; remove v2; promote v1; roll back to v3 (was: the replayed stack kept v1, so a second
    rollback "restored" v3 over v3)."""
    v1, v2, v3 = versions
    for v in (v3, v1, v2):
        reg.promote(v, "movies")
    reg.remove(v2, force=True)
    reg.promote(v1, "movies")
    assert reg.rollback("movies").ref == v3
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback("movies")
    assert reg.promoted("movies").ref == v3


def test_promoting_the_champion_again_does_not_stack_it(reg, versions):
    v1, v2, _ = versions
    reg.promote(v1, "movies")
    reg.promote(v2, "movies")
    reg.promote(v2, "movies")
    assert reg.rollback("movies").ref == v1


def test_a_decision_names_the_champion_it_was_made_against(reg, versions):
    v1, v2, v3 = versions
    reg.promote(v1, "movies")
    with pytest.raises(RegistryError, match="changed to"):
        reg.promote(v2, "movies", expect=v3)
    with pytest.raises(RegistryError, match="changed to"):
        reg.refuse(v2, "movies", {}, expect=None)
    reg.promote(v2, "movies", expect=v1)
    assert [d.ref for d in reg.history("movies")] == [v1, v2]


def test_rollback_skips_a_champion_whose_files_changed(reg, versions):
    """(was: restored, and reported as serving again, though its hashes no longer matched: a server refused it)"""
    v1, v2, v3 = versions
    for v in versions:
        reg.promote(v, "movies")
    weights = reg.resolve(v2).path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert reg.rollback("movies").ref == v1
    assert reg.history("movies")[-1].evidence == {"rolled_back": v3, "skipped": [v2]}


def test_a_promotion_over_a_champion_of_another_base_model_warns(reg, versions, tmp_path):
    """(was: silent; a server on the champion's backbone then refused the new one)"""
    import warnings

    from test_registry import make_peft_dir

    from adaptrec.fingerprint import Fingerprint
    from adaptrec.registry.store import OtherBaseWarning

    reg.promote(versions[0], "movies")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.promote(versions[1], "movies")  # the same base: no word
    other = reg_one(reg, make_peft_dir(tmp_path / "other"), name="movies-big",
                    fingerprint=Fingerprint("c" * 64, "d" * 64, "meta-llama/Llama-3-8B"))
    with pytest.warns(OtherBaseWarning, match="movies-big:1 was made for meta-llama/Llama-3-8B, the champion it "
                                              "replaced for 'movies' \\(movies-lora:2\\)"):
        reg.promote(other.ref, "movies")
    assert reg.promoted("movies").ref == other.ref  # a move to another backbone stays possible
