"""The SQLite adapter registry: versions, refs, promotion, removal, gc, verification, atomicity, concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import adaptrec.registry as registry_mod
from adaptrec.adapters import files
from adaptrec.adapters.files import FamilyMatchWarning
from adaptrec.errors import AdaptrecError, FingerprintMismatch, IntegrityError, RegistryError, RegistryUnavailable
from adaptrec.fingerprint import Fingerprint
from adaptrec.registry import AdapterRecord, Registry, parse_ref, schema_version

FP = Fingerprint(exact="e" * 64, family="f" * 64, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
WEIGHT = "base_model.model.q_proj.lora_A.weight"


def make_peft_dir(folder: Path, fill: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({WEIGHT: np.full((2, 4), fill, dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    return folder


def metric(value, data="movies:test", limit=200):
    return {"value": value, "data": data, "limit": limit}


def reg_one(reg: Registry, src: Path, name="movies-lora", domain="movies", **kw) -> AdapterRecord:
    args = dict(name=name, domain=domain, kind="trained", adapter_type="lora", adapter_config={"r": 2}, fingerprint=FP)
    args.update(kw)
    return reg.register(src, **args)


@pytest.fixture
def reg(tmp_path) -> Registry:
    return Registry(home=tmp_path / "home")


@pytest.fixture
def src(tmp_path) -> Path:
    return make_peft_dir(tmp_path / "src")


def row_count(reg: Registry) -> int:
    with sqlite3.connect(reg.db_path) as c:
        return c.execute("SELECT count(*) FROM adapters").fetchone()[0]


# ---------------------------------------------------------------- register / resolve / list / show
def test_register_stores_row_and_files(reg, src):
    rec = reg_one(reg, src, recipe_text="adapter: {type: lora}\n", metrics={"auc": metric(0.71)})
    assert isinstance(rec, AdapterRecord)
    assert (rec.name, rec.version, rec.ref, rec.kind, rec.domain) == ("movies-lora", 1, "movies-lora:1", "trained", "movies")
    assert rec.path == reg.home / "adapters" / "movies-lora" / "1"
    assert (rec.path / "adapter_model.safetensors").is_file() and (rec.path / "adaptrec.json").is_file()
    assert rec.fingerprint == FP and rec.base_model == FP.base_model
    assert rec.metrics == {"auc": {"value": 0.71, "data": "movies:test", "limit": 200}}
    assert rec.recipe_text.startswith("adapter") and len(rec.recipe_hash) == 64
    assert rec.file_hash == files.file_sha256(rec.path / "adaptrec.json")
    assert rec.created.endswith("+00:00")
    meta = json.loads((rec.path / "adaptrec.json").read_text())
    assert meta["name"] == "movies-lora" and meta["version"] == 1 and meta["base"] == FP.to_dict()
    with pytest.raises(AttributeError):
        rec.version = 5  # frozen


def test_versions_auto_increment_per_name_and_are_never_reused(reg, src):
    assert [reg_one(reg, src).version for _ in range(3)] == [1, 2, 3]
    assert reg_one(reg, src, name="books-lora", domain="books").version == 1
    reg.remove("movies-lora:3")
    assert reg_one(reg, src).version == 4
    assert [r.version for r in reg.list(name="movies-lora")] == [1, 2, 4]


def test_resolve_grammar(reg, src):
    reg_one(reg, src)
    reg_one(reg, src)
    assert reg.resolve("movies-lora").version == 2
    assert reg.resolve("movies-lora:latest").version == 2
    assert reg.resolve("movies-lora:1").version == 1
    assert parse_ref("a.b_c+d-1:12") == ("a.b_c+d-1", 12)


@pytest.mark.parametrize("ref", ["", "a/b", "../x", "a..b", ".hidden", "a b", "a:0", "a:-1", "a:x", "a:1:2", "a\\b",
                                 "a:", "x" * 200, "a:²", "a:١",  # digits int() refuses, or reads as another number
                                 "a:9223372036854775808"])  # past SQLite's integers (was: OverflowError, a 500 served)
def test_bad_refs_raise_registry_error(reg, ref):
    with pytest.raises(RegistryError, match="bad adapter (ref|name)"):
        reg.resolve(ref)


def test_unknown_refs_say_what_to_do(reg, src):
    with pytest.raises(RegistryError, match="no adapter named 'ghost'.*registry list"):
        reg.resolve("ghost")
    reg_one(reg, src)
    with pytest.raises(RegistryError, match=r"no version 7 \(it has 1\)"):
        reg.resolve("movies-lora:7")


def test_bad_names_refused_on_register_and_nothing_written(reg, src):
    for name in ["a/b", "..", "../../etc", "x:1", ""]:
        with pytest.raises(RegistryError):
            reg_one(reg, src, name=name)
    assert row_count(reg) == 0 and not reg.adapters_dir.exists()


@pytest.mark.parametrize("change, words", [
    ({"adapter_config": None, "config_text": "[]"},
     r"\(re-save the adapter\): adapter_config\.json is not a JSON object"),
    ({"fingerprint": {"exact": ["x"], "family": "f"}}, "'exact' and 'family' strings"),  # was: "restore the db"
    ({"fingerprint": {"exact": "e", "family": "f", "base_model": None}}, "'base_model', a string"),  # sqlite's error
])
def test_a_config_or_fingerprint_of_the_wrong_type_is_one_line_and_nothing_is_kept(reg, src, change, words):
    """(was: AttributeError from a list config; a database error telling the user to restore a healthy registry)"""
    from adaptrec.errors import AdaptrecError

    change = dict(change)  # the parameter's own dict stays whole for a rerun
    if "config_text" in change:
        (src / "adapter_config.json").write_text(change.pop("config_text"))
    with pytest.raises(AdaptrecError, match=words):
        reg_one(reg, src, **change)
    assert row_count(reg) == 0 and not reg.path_for("movies-lora", 1).exists()


def test_list_and_show(reg, src):
    reg_one(reg, src)
    reg_one(reg, src, name="books-lora", domain="books")
    reg_one(reg, src)
    assert [r.ref for r in reg.list()] == ["books-lora:1", "movies-lora:1", "movies-lora:2"]
    assert [r.ref for r in reg.list(domain="movies")] == ["movies-lora:1", "movies-lora:2"]
    assert reg.list(domain="nothing") == []
    reg.promote("movies-lora:1", "movies")
    shown = reg.show("movies-lora:1")
    assert shown["ref"] == "movies-lora:1" and shown["promoted_for"] == ["movies"]
    assert shown["path"] == str(reg.path_for("movies-lora", 1))
    assert shown["adapter_config"] == {"peft_type": "LORA", "r": 2}  # the file's, whatever the caller stated
    assert reg.show("movies-lora")["promoted_for"] == []
    json.dumps(shown)  # printable as JSON


def test_adapter_config_none_reads_the_folder(reg, src):
    rec = reg_one(reg, src, adapter_config=None)
    assert rec.adapter_config == {"peft_type": "LORA", "r": 2}


def test_a_stated_config_must_agree_with_the_adapter_s_own_file(reg, src):
    """A stated `adapter_config` was recorded instead of the file's: a DoRA adapter stated as plain LoRA passed the
    checks that read the row (the engine's, int8 attach's and merge's DoRA refusals) and the base-change check."""
    written = {"peft_type": "LORA", "r": 2, "use_dora": True, "target_modules": ["q_proj", "v_proj"]}
    (src / "adapter_config.json").write_text(json.dumps(written))
    with pytest.raises(RegistryError, match=r"adapter_config use_dora=False contradicts .* \(use_dora=True\)"):
        reg_one(reg, src, adapter_config={"peft_type": "LORA", "r": 2, "use_dora": False})
    assert row_count(reg) == 0 and not reg.path_for("movies-lora", 1).exists()
    stated = {"r": 2, "target_modules": {"v_proj", "q_proj"}}  # as peft's to_dict() gives them: a set
    rec = reg_one(reg, src, adapter_config=stated)  # what it states agrees: the row records the whole file
    assert rec.adapter_config == written
    (src / "adapter_config.json").write_text(json.dumps({**written, "peft_type": "ADALORA"}))
    with pytest.raises(RegistryError, match="says peft_type 'ADALORA', but the adapter is registered as lora \\(LORA"):
        reg_one(reg, src)  # (was: registered; a push published it as LoRA, and every pull of it then failed)
    assert row_count(reg) == 1


def test_home_defaults_to_adaptrec_home(tmp_path, monkeypatch, src):
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "envhome"))
    rec = reg_one(Registry(), src)
    assert (tmp_path / "envhome" / "registry.db").is_file()
    assert rec.path == tmp_path / "envhome" / "adapters" / "movies-lora" / "1"


# ---------------------------------------------------------------- promote / remove / gc
def test_promote_and_promoted(reg, src):
    assert reg.promoted("movies") is None
    reg_one(reg, src)
    rec = reg.promote("movies-lora", "movies")  # bare name pins the current latest
    assert rec.ref == "movies-lora:1"
    reg_one(reg, src)
    assert reg.promoted("movies").ref == "movies-lora:1"
    reg.promote("movies-lora:2", "movies")
    assert reg.promoted("movies").ref == "movies-lora:2"
    reg.promote("movies-lora:1", "cold-start")
    assert reg.aliases() == {"cold-start": "movies-lora:1", "movies": "movies-lora:2"}
    with pytest.raises(RegistryError):
        reg.promote("ghost", "movies")


def test_promotions_tell_a_version_promoted_again_from_one_never_demoted(reg, src, monkeypatch):
    """A server's watcher compares these: the same version promoted again after a rollback is marked apart, even
    within one clock tick, and the mark stays put through other domains' decisions."""
    import adaptrec.registry.store as store

    monkeypatch.setattr(store, "_utc_now", lambda: "2026-12-07T00:00:00.000000+00:00")  # one tick for all
    reg_one(reg, src), reg_one(reg, src)
    reg.promote("movies-lora:1", "movies")
    reg.promote("movies-lora:2", "movies")
    first = reg.promotions()["movies"]
    reg.rollback("movies")
    reg.promote("movies-lora:2", "movies")
    again = reg.promotions()["movies"]
    assert first[0] == again[0] == "movies-lora:2" and again[1] != first[1]
    reg.promote("movies-lora:1", "books")
    reg.refuse("movies-lora:1", "movies", {"reason": "worse"})
    assert reg.promotions()["movies"] == again
    assert reg.aliases() == {"books": "movies-lora:1", "movies": "movies-lora:2"}


def test_remove_refuses_promoted_unless_force(reg, src):
    reg_one(reg, src)
    rec = reg_one(reg, src)
    reg.promote(rec.ref, "movies")
    with pytest.raises(RegistryError, match="promoted for domain.*movies.*force"):
        reg.remove("movies-lora:2")
    assert rec.path.is_dir() and reg.resolve("movies-lora:2")
    removed = reg.remove("movies-lora:2", force=True)
    assert removed == "movies-lora:2" and not rec.path.exists()
    assert reg.promoted("movies") is None
    last = reg.history("movies")[-1]  # the trail says the champion went (was: it still ended at the promotion)
    assert (last.action, last.ref, last.previous, last.evidence) == ("remove", "movies-lora:2", "movies-lora:2",
                                                                     {"forced": True})
    with pytest.raises(RegistryError, match="no version 2"):
        reg.resolve("movies-lora:2")
    assert reg.resolve("movies-lora").version == 1


def test_remove_refuses_a_source_of_a_mix_unless_force_and_verify_names_the_broken_mix(reg, src):
    """(was: removed without a word; the mix, even a promoted one, then failed every request and `verify` found
    nothing wrong)"""
    arts, office = reg_one(reg, src, name="arts-lora"), reg_one(reg, src, name="office-lora")
    sources = [arts.ref, office.ref]
    mix = reg.register(lambda folder: (Path(folder) / "mix.json").write_text("{}"), name="blend", domain="movies",
                       kind="composed", adapter_type="mix", fingerprint=FP,
                       adapter_config={"sources": sources, "weights": [0.5, 0.5]},
                       lineage={"parents": sources, "method": "mix", "weights": [0.5, 0.5]})
    with pytest.raises(RegistryError,
                       match="arts-lora:1 is a source of the score-level mix\\(es\\) blend:1.*force=True$"):
        reg.remove("arts-lora:1")
    assert reg.resolve("arts-lora:1") and reg.verify() == []
    reg.remove("arts-lora:1", force=True)
    assert reg.verify() == [(f"{mix.ref}: a mix of arts-lora:1, no longer registered; it cannot serve (remove it, "
                             "or compose it again)")]
    with sqlite3.connect(reg.db_path) as db:  # the mix's row edited by hand: its sources can no longer be read
        db.execute("UPDATE adapters SET adapter_config = '{bad' WHERE adapter_type = 'mix'")
    with pytest.raises(IntegrityError, match="row of blend:1 has an unreadable adapter_config.*remove blend:1"):
        reg.remove("office-lora:1")  # it may name office-lora:1: it is not skipped
    assert reg.remove(mix.ref) == "blend:1"  # was: the same IntegrityError, so the row could not be taken out
    assert reg.remove("office-lora:1") == "office-lora:1"  # no mix names it any more


def test_remove_refuses_what_other_versions_came_from_unless_force(reg, src):
    """The gate finds what a challenger trained on through the versions it came from: removing one of them (an
    update's parent, an export's source) made it take that data for new (was: removed without a word)."""
    root = reg_one(reg, src, lineage={"parents": [], "method": "trained", "events": ["r1/0"]})
    update = reg_one(reg, src, lineage={"parents": [root.ref], "method": "update", "updated_from": root.ref})
    export = reg_one(reg, src, name="movies-lora-export", lineage={"parents": [update.ref], "method": "export"})
    reg_one(reg, src, name="pulled-one", kind="pulled", lineage={"parents": ["movies-lora-export:1"]},
            origin={"repo": "alice/movies", "revision": "a" * 40})
    with pytest.raises(RegistryError, match="movies-lora:2 came from movies-lora:1 .*remove them first.*force=True"):
        reg.remove(root.ref)
    with pytest.raises(RegistryError, match="movies-lora-export:1 came from movies-lora:2"):
        reg.remove(update.ref)
    assert reg.remove(export.ref) == export.ref  # a pulled adapter's parents are its publisher's versions
    assert reg.remove(root.ref, force=True) == root.ref and reg.resolve(update.ref)


def test_remove_needs_a_version_and_a_known_ref(reg, src):
    reg_one(reg, src)
    with pytest.raises(RegistryError, match="movies-lora:<version>"):
        reg.remove("movies-lora")
    with pytest.raises(RegistryError, match="no adapter named"):
        reg.remove("ghost:1")
    assert reg.remove("movies-lora:latest") == "movies-lora:1"
    assert reg.list() == [] and not (reg.adapters_dir / "movies-lora").exists()


def test_gc_removes_orphans_and_stale_tmp_only(reg, src):
    keep = reg_one(reg, src)
    orphan = make_peft_dir(reg.adapters_dir / "movies-lora" / "9")
    orphan_name = make_peft_dir(reg.adapters_dir / "deleted-lora" / "1")
    stale = make_peft_dir(reg.adapters_dir / "movies-lora" / ".2.abc123.tmp")
    padded = make_peft_dir(reg.adapters_dir / "movies-lora" / f"0{keep.version}")  # (was: taken for the row's folder)
    (reg.adapters_dir / "README.txt").write_text("not ours")
    removed = reg.gc()
    assert sorted(removed) == sorted([orphan, orphan_name, stale, padded])
    assert not orphan.exists() and not stale.exists() and not (reg.adapters_dir / "deleted-lora").exists()
    assert keep.path.is_dir() and (reg.adapters_dir / "README.txt").exists()
    reg.load_verified(keep.ref, FP)
    assert reg.gc() == []


def test_a_killed_pulls_download_is_reported_and_removed_once_stale(reg, src):
    """A pull killed mid-download left `$ADAPTREC_HOME/tmp/pull-*` (up to the pull's size limit) that neither
    `verify` nor `gc` ever looked at; a pull still running (a fresh folder) is left alone."""
    import os
    import time

    from adaptrec.registry.store import STALE_SCRATCH_S

    killed, running = reg.scratch_dir / "pull-abc", reg.scratch_dir / "pull-def"
    for folder in (killed, running):
        (folder / "download").mkdir(parents=True)
        (folder / "download" / "adapter_model.safetensors").write_bytes(b"x" * 100)
    old = time.time() - STALE_SCRATCH_S - 60
    os.utime(killed, (old, old))
    assert [line for line in reg.verify() if "pull-" in line] == \
        [(f"{killed}: a work folder a killed process left (a pull's download or a registration's copy) (remove it "
          "with `adaptrec registry gc`)")]
    assert reg.gc() == [killed] and not killed.exists() and running.is_dir()


def test_a_dead_processs_work_folder_goes_at_once_and_a_live_ones_stays(reg, src):
    """A killed pull's download (up to the pull's size limit) waited a day before `gc` removed it; a work folder
    whose lock is held stays however old it is."""
    import os

    from adaptrec.atomic import work_dir

    dead = reg.scratch_dir / "pull-dead"
    dead.mkdir(parents=True)
    (reg.scratch_dir / "pull-dead.lock").touch()  # its process gone: nothing holds the lock
    with work_dir(reg.scratch_dir, "pull-") as live:
        os.utime(live, (0, 0))  # however old
        assert [line.split(":")[0] for line in reg.verify()] == [str(dead)]
        assert reg.gc() == [dead] and live.is_dir()
    assert not reg.scratch_dir.exists() or list(reg.scratch_dir.iterdir()) == []


def test_a_registration_copies_its_files_without_the_write_lock(reg, src, monkeypatch):
    """The whole copy (fsync and hashes included) ran under the write lock: on a slow disk every promote, gc and
    other registration waited on it, and timed out behind a large pull."""
    import adaptrec.adapters.files as files_mod

    first = reg_one(reg, src)
    promoted = []
    real = files_mod._copy_file

    def copy(a, b):  # another writer, mid-copy
        promoted.append(Registry(reg.home, timeout=0.1).promote(first.ref, "movies").ref)
        real(a, b)

    monkeypatch.setattr(files_mod, "_copy_file", copy)
    second = reg_one(reg, src)
    assert promoted and set(promoted) == {first.ref} and reg.resolve(second.ref).version == 2


def test_gc_and_verify_pass_over_a_folder_named_with_a_non_ascii_digit(reg, src):
    """`'²'.isdigit()` is true and `int('²')` raises (was: a ValueError from gc and verify)."""
    keep = reg_one(reg, src)
    odd = reg.adapters_dir / "movies-lora" / "²"
    odd.mkdir()
    assert reg.verify() == [] and reg.gc() == [] and odd.is_dir() and keep.path.is_dir()


def test_verify_reports_no_orphan_for_a_version_registered_while_it_runs(reg, src, monkeypatch):
    """A version registered while verify re-hashes the others is no orphan (was: the rows were read before)."""
    from adaptrec.registry import store

    reg_one(reg, src)
    real, registered = store.verified_files, []

    def hash_then_register(rec):
        if not registered:
            registered.append(reg_one(Registry(home=reg.home), src))
        return real(rec)
    monkeypatch.setattr(store, "verified_files", hash_then_register)
    assert reg.verify() == [] and registered[0].ref == "movies-lora:2"


def test_verify_passes_over_a_registration_in_flight(reg, src):
    """(was: the in-flight registration's `.tmp` folder reported as "an unfinished write", exit status 1; then
    verify waited for the registration's copy, which held the write lock)"""
    import threading

    writing, release = threading.Event(), threading.Event()

    def slow_writer(folder):
        make_peft_dir(Path(folder))
        writing.set()
        assert release.wait(30)

    other = threading.Thread(target=lambda: reg_one(Registry(home=reg.home), slow_writer))
    other.start()
    assert writing.wait(30)
    found = []
    checker = threading.Thread(target=lambda: found.append(reg.verify()))
    checker.start()
    checker.join(30)
    done = not checker.is_alive()  # the copy holds no write lock: verify does not wait for it
    release.set()
    other.join(30)
    assert done and found == [[]] and not other.is_alive() and reg.resolve("movies-lora:1")


# ---------------------------------------------------------------- verification on load
def test_load_verified_ok_and_tamper_detected(reg, src):
    rec = reg_one(reg, src)
    assert reg.load_verified("movies-lora", FP).ref == rec.ref
    w = rec.path / "adapter_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="adapter_model.safetensors"):
        reg.load_verified(rec.ref, FP)


def test_consistently_rewritten_metadata_is_caught_by_row_hash(reg, src):
    rec = reg_one(reg, src)
    meta = json.loads((rec.path / "adaptrec.json").read_text())
    meta["base"]["exact"] = "forged"  # hashes of the other files still match
    (rec.path / "adaptrec.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="adaptrec.json is missing or differs"):
        reg.load_verified(rec.ref, FP)
    meta["files"]["../../elsewhere/big.bin"] = "0" * 64  # a forged list is refused before it is read
    (rec.path / "adaptrec.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="adaptrec.json is missing or differs"):
        reg.load_verified(rec.ref, FP)


def test_missing_folder_is_an_integrity_error(reg, src):
    import shutil

    rec = reg_one(reg, src)
    shutil.rmtree(rec.path)
    with pytest.raises(IntegrityError, match="missing"):
        reg.load_verified(rec.ref, FP)


def test_family_match_warns_and_none_match_refuses(reg, src):
    rec = reg_one(reg, src)
    requantized = Fingerprint(exact="1" * 64, family=FP.family, base_model="HuggingFaceTB/SmolLM2-135M-Instruct@int8")
    with pytest.warns(FamilyMatchWarning, match="int8"):
        assert reg.load_verified(rec.ref, requantized).ref == rec.ref
    with pytest.raises(FingerprintMismatch, match=r"SmolLM2-135M-Instruct.*gpt2"):
        reg.load_verified(rec.ref, Fingerprint(exact="2" * 64, family="3" * 64, base_model="gpt2"))


# ---------------------------------------------------------------- atomicity
def test_crash_mid_copy_leaves_no_row_no_folder(reg, src, monkeypatch):
    real = files._copy_file
    calls = []

    def crashing_copy(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError("simulated crash mid-copy")
        real(a, b)

    monkeypatch.setattr(files, "_copy_file", crashing_copy)
    with pytest.raises(OSError, match="simulated"):
        reg_one(reg, src)
    assert len(calls) == 2
    assert row_count(reg) == 0
    assert not (reg.adapters_dir / "movies-lora").exists() and not reg.scratch_dir.exists()  # no folder, no copy
    monkeypatch.setattr(files, "_copy_file", real)
    assert reg_one(reg, src).version == 1  # the version was not consumed


def test_an_interrupt_once_commit_returned_keeps_the_committed_adapter_s_files(reg, src, monkeypatch):
    """A Ctrl-C handled just after COMMIT removed the folder of the row it had committed: `resolve` found a version
    whose files were gone, and `gc` cannot mend that (it removes folders without rows, not rows without folders)."""
    real_connect = sqlite3.connect

    class InterruptedAfterCommit(sqlite3.Connection):
        def execute(self, sql, *args):
            out = super().execute(sql, *args)
            if sql == "COMMIT":
                raise KeyboardInterrupt
            return out

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=InterruptedAfterCommit, **k))
    with pytest.raises(KeyboardInterrupt):
        reg_one(reg, src)
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert row_count(reg) == 1
    assert reg.load_verified("movies-lora:1", FP).path.is_dir()  # hashes checked: the files are whole


def test_failure_after_files_written_removes_the_folder(reg, src, monkeypatch):
    def failing_insert(conn, values):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(Registry, "_insert", staticmethod(failing_insert))
    with pytest.raises(RegistryUnavailable, match="simulated"):  # one line naming the database, no traceback
        reg_one(reg, src)
    assert row_count(reg) == 0
    assert not reg.path_for("movies-lora", 1).exists()
    assert list((reg.adapters_dir / "movies-lora").iterdir()) == []


def test_a_failure_after_the_folders_rename_removes_it(reg, src, monkeypatch):
    """(was: an fsync of the parent failing after the rename, or a Ctrl-C there, left adapters/NAME/VERSION with
    no row)"""
    import errno

    from adaptrec.registry import store

    real = store.fsync_dir

    def failing(folder):
        if Path(folder) == reg.adapters_dir / "movies-lora":
            raise OSError(errno.EIO, "Input/output error (simulated)")
        return real(folder)

    monkeypatch.setattr(store, "fsync_dir", failing)
    with pytest.raises(OSError, match="simulated"):
        reg_one(reg, src)
    assert row_count(reg) == 0 and not reg.path_for("movies-lora", 1).exists()


@pytest.mark.parametrize("what", ["registry", "score cache"])
def test_a_damaged_database_is_one_line_naming_it(tmp_path, monkeypatch, capsys, what):
    from cli_runner import run_cli

    from adaptrec.score_cache import ScoreCache

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path))
    if what == "registry":
        (tmp_path / "registry.db").write_text("not a database, " * 100)
        code, _, err = run_cli(monkeypatch, capsys, "registry", "list")
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert "registry.db is not a readable registry database" in err
    else:
        (tmp_path / "score_cache.db").write_text("not a database, " * 100)
        with pytest.raises(AdaptrecError, match="cannot use the score cache .*score_cache.db"):
            ScoreCache.default()


def test_a_score_cache_damaged_past_its_first_pages_is_one_line_when_read(tmp_path):
    """It opens (its schema page is whole); the damage shows at the first read (was: sqlite3's `database disk image
    is malformed` traceback)."""
    from adaptrec.score_cache import ScoreCache

    path, keys = tmp_path / "score_cache.db", [ScoreCache.key("m", str(i)) for i in range(20000)]
    cache = ScoreCache(path)
    cache.put_many({k: np.array([0.1, 0.2, 0.3]) for k in keys})
    cache.close()
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\xa5" * 200_000)
    with pytest.raises(AdaptrecError, match="cannot use the score cache .*malformed.*while no adaptrec process uses "
                                            "it, delete it with its -wal and -shm files"):
        ScoreCache(path).get_many(keys)


def test_a_score_cache_held_by_another_process_is_not_to_be_deleted(tmp_path, monkeypatch):
    """Every database error advised deleting the cache, "database is locked" too: deleting a file another process
    writes loses its rows and breaks its connection."""
    from adaptrec import score_cache

    monkeypatch.setattr(score_cache, "TIMEOUT_S", 0.1)
    held = sqlite3.connect(tmp_path / "score_cache.db", isolation_level=None)
    cache = score_cache.ScoreCache(tmp_path / "score_cache.db")
    held.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AdaptrecError, match="locked\\); another process held it over 0.1 s: retry") as e:
            cache.put_many({"k": np.array([0.1, 0.2, 0.3])})
        assert "delete" not in str(e.value)
    finally:
        held.execute("ROLLBACK")


def test_a_failed_registration_removes_its_folder_while_it_still_holds_the_write_lock(reg, src, monkeypatch):
    """Removed after the lock is released, the folder could be another writer's: it takes the same version (the
    failed one allocated nothing) and writes its folder at the same path before this one deletes it."""
    from adaptrec.registry import store

    def failing_insert(conn, values):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    removed = []

    def rmtree_checking_the_lock(path, *args, **kwargs):
        if Path(path) == reg.path_for("movies-lora", 1):  # (not the work folder, gone after the lock)
            other = sqlite3.connect(reg.db_path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
            removed.append(path)
        real_rmtree(path, *args, **kwargs)

    real_rmtree = store.shutil.rmtree
    monkeypatch.setattr(Registry, "_insert", staticmethod(failing_insert))
    monkeypatch.setattr(store.shutil, "rmtree", rmtree_checking_the_lock)
    with pytest.raises(RegistryUnavailable, match="simulated"):
        reg_one(reg, src)
    assert removed and not reg.path_for("movies-lora", 1).exists()


def test_pickle_refused_on_register_leaves_nothing(reg, src):
    (src / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(IntegrityError, match="pickle"):
        reg_one(reg, src)
    assert row_count(reg) == 0 and not reg.path_for("movies-lora", 1).exists()


def test_folder_left_by_a_killed_process_is_replaced(reg, src, tmp_path):
    # a process killed between the rename and the commit leaves a folder with no row
    leftover = make_peft_dir(reg.path_for("movies-lora", 1), fill=9.0)
    rec = reg_one(reg, make_peft_dir(tmp_path / "fresh", fill=2.0))
    assert rec.path == leftover
    assert load_file(str(rec.path / "adapter_model.safetensors"))[WEIGHT][0, 0] == 2.0
    reg.load_verified(rec.ref, FP)


# ---------------------------------------------------------------- concurrency
N_PROCS, N_EACH = 3, 4


def _register_worker(home: str, src_root: str, wid: int, barrier) -> None:
    reg = Registry(home=Path(home), timeout=120)
    barrier.wait()
    for i in range(N_EACH):
        tag = wid * 100 + i
        src = make_peft_dir(Path(src_root) / f"w{wid}-{i}", fill=float(tag))
        reg_one(reg, src, metrics={"tag": metric(tag)})


def test_concurrent_writers_from_several_processes_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_PROCS)
    home = tmp_path / "home"
    procs = [
        ctx.Process(target=_register_worker, args=(str(home), str(tmp_path / "src"), w, barrier)) for w in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * N_PROCS

    reg = Registry(home=home)
    recs = reg.list(name="movies-lora")
    assert [r.version for r in recs] == list(range(1, N_PROCS * N_EACH + 1))
    tags = set()
    for r in recs:
        reg.load_verified(r.ref, FP)  # every folder intact and matching its row
        tag = r.metrics["tag"]["value"]
        assert load_file(str(r.path / "adapter_model.safetensors"))[WEIGHT][0, 0] == float(tag)
        tags.add(tag)
    assert tags == {w * 100 + i for w in range(N_PROCS) for i in range(N_EACH)}
    assert reg.gc() == []


# ---------------------------------------------------------------- metadata validation
def test_metrics_must_carry_their_protocol_and_update_merges(reg, src):
    # each message shows a whole example metric: the patterns name the rule, not words every message holds
    with pytest.raises(RegistryError, match="must record its value with the data SPEC"):
        reg_one(reg, src, metrics={"auc": 0.7})
    with pytest.raises(RegistryError, match="needs 'data': the data SPEC"):
        reg_one(reg, src, metrics={"auc": {"value": 0.7, "limit": 10}})
    with pytest.raises(RegistryError, match="needs a finite numeric 'value'"):
        reg_one(reg, src, metrics={"auc": {"value": float("nan"), "data": "movies:test"}})
    with pytest.raises(RegistryError, match="'limit' must be a positive int"):
        reg_one(reg, src, metrics={"auc": {"value": 0.7, "data": "movies:test", "limit": 0}})
    # a NaN elsewhere was kept, pushed, and refused by every pull (adaptrec.json is strict JSON)
    with pytest.raises(RegistryError, match="metric 'auc' holds values that are not JSON \\(NaN"):
        reg_one(reg, src, metrics={"auc": {**metric(0.7), "std": float("nan")}})
    with pytest.raises(RegistryError, match="lineage holds values that are not JSON \\(NaN"):
        reg_one(reg, src, lineage={"log_loss": float("inf")})
    assert row_count(reg) == 0

    rec = reg_one(reg, src, metrics={"auc": metric(0.7), "ndcg@10": metric(0.3)})
    new = reg.update_metrics(rec.ref, {"auc": metric(0.75, limit=None), "hit@5": {**metric(0.5), "seed": 0}})
    assert new.metrics == {
        "auc": {"value": 0.75, "data": "movies:test", "limit": None},
        "ndcg@10": metric(0.3),
        "hit@5": {**metric(0.5), "seed": 0},
    }
    assert reg.resolve(rec.ref).metrics == new.metrics
    reg.load_verified(rec.ref, FP)  # the row update does not touch the files


def test_lineage_and_origin_rules(reg, src):
    a = reg_one(reg, src)
    b = reg_one(reg, src, name="books-lora", domain="books")
    with pytest.raises(RegistryError, match="lineage"):
        reg_one(reg, src, name="mix", domain="cold", kind="composed")
    with pytest.raises(RegistryError, match="no adapter named 'ghost'"):
        reg_one(reg, src, name="mix", domain="cold", kind="composed", lineage={"parents": ["ghost:1"], "method": "linear"})
    with pytest.raises(RegistryError, match="weights"):
        reg_one(reg, src, name="mix", domain="cold", kind="composed",
                lineage={"parents": [a.ref, b.ref], "method": "linear", "weights": [1.0]})
    mix = reg_one(reg, src, name="mix", domain="cold", kind="composed",
                  lineage={"parents": ["movies-lora", "books-lora:latest"], "method": "linear", "weights": [0.7, 0.3]})
    assert mix.lineage == {"parents": ["movies-lora:1", "books-lora:1"], "method": "linear", "weights": [0.7, 0.3]}

    with pytest.raises(RegistryError, match="origin"):
        reg_one(reg, src, name="hub-lora", kind="pulled")
    pulled = reg_one(reg, src, name="hub-lora", kind="pulled", origin={"repo": "user/adapters", "revision": "a" * 40},
                     lineage={"parents": ["upstream:3"]})
    assert pulled.origin["repo"] == "user/adapters" and pulled.lineage["parents"] == ["upstream:3"]
    with pytest.raises(RegistryError, match="kind"):
        reg_one(reg, src, kind="merged")
    with pytest.raises(RegistryError, match="fingerprint"):
        reg_one(reg, src, fingerprint={"exact": "x"})


# ---------------------------------------------------------------- schema
def test_schema_version_is_set(reg):
    with sqlite3.connect(reg.db_path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == schema_version() == len(registry_mod.MIGRATIONS) >= 1


def test_an_appended_migration_upgrades_an_existing_registry(tmp_path, src, monkeypatch):
    home = tmp_path / "home"
    old = Registry(home=home)
    rec = reg_one(old, src)
    before = schema_version()

    def m_next(conn):
        conn.execute("ALTER TABLE adapters ADD COLUMN notes TEXT NOT NULL DEFAULT ''")

    monkeypatch.setattr(registry_mod.schema, "MIGRATIONS", [*registry_mod.MIGRATIONS, m_next])
    new = Registry(home=home)
    Registry(home=home)  # second open: nothing left to apply (m_next would fail if re-run)
    with sqlite3.connect(home / "registry.db") as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == before + 1
        cols = [r[1] for r in c.execute("PRAGMA table_info(adapters)")]
    assert "notes" in cols
    assert new.resolve(rec.ref) == rec  # existing rows survive and still load


def test_newer_schema_is_refused(tmp_path):
    home = tmp_path / "home"
    Registry(home=home)
    with sqlite3.connect(home / "registry.db") as c:
        c.execute(f"PRAGMA user_version = {schema_version() + 5}")
    with pytest.raises(RegistryError, match="upgrade adaptrec"):
        Registry(home=home)


def test_names_differing_only_in_case_are_refused(reg, src):
    """They would share one folder on a case-insensitive file system."""
    reg_one(reg, src, name="movies-lora")
    before = row_count(reg)
    with pytest.raises(RegistryError, match="only in letter case"):
        reg_one(reg, src, name="Movies-LoRA")
    assert row_count(reg) == before and not (reg.adapters_dir / "Movies-LoRA").exists()


def test_a_folder_holding_a_symlink_is_refused(reg, src, tmp_path):
    """Registering would copy whatever the link points to; nothing is written."""
    (tmp_path / "elsewhere.safetensors").write_bytes((src / "adapter_model.safetensors").read_bytes())
    (src / "extra.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    before = row_count(reg)
    with pytest.raises(IntegrityError, match="symbolic link"):
        reg_one(reg, src)
    assert row_count(reg) == before


def test_verify_rehashes_every_version_and_reports_orphans(reg, src, monkeypatch, capsys):
    from cli_runner import run_cli

    a, b = reg_one(reg, src), reg_one(reg, src, name="books-lora")
    assert reg.verify() == []
    monkeypatch.setenv("ADAPTREC_HOME", str(reg.home))
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "verify")
    assert code == 0 and "checked 2 version(s) and 0 encoder(s): all intact" in out
    (b.path / "adapter_model.safetensors").write_bytes(b"tampered")
    orphan = reg.adapters_dir / "movies-lora" / "7"
    orphan.mkdir()
    (reg.adapters_dir / ".half.tmp").mkdir()
    problems = reg.verify()
    assert len(problems) == 3
    assert any(p.startswith("books-lora:1") for p in problems) and any("orphan" in p and "/7" in p for p in problems)
    assert any("unfinished write" in p for p in problems) and not any(p.startswith(a.ref) for p in problems)
    code, out, err = run_cli(monkeypatch, capsys, "registry", "verify")
    assert code == 1 and "3 problem(s)" in out and err.count("problem: ") == 3


@pytest.mark.parametrize("column, value", [("metrics", "[1]"), ("adapter_config", "null"), ("lineage", "[1]"),
                                           ("origin", "3"), ("claimed_metrics", "\"x\"")])
def test_a_row_edited_into_json_of_another_shape_is_one_line_naming_it_and_verify_reports_it(reg, src, monkeypatch,
                                                                                            capsys, column, value):
    """(was: `metrics` edited to `[1]` gave an AttributeError traceback in `registry list`, and `verify` said all
    intact)"""
    from cli_runner import run_cli

    reg_one(reg, src, metrics={"auc": metric(0.7)})
    reg_one(reg, src, name="books-lora", domain="books")
    with sqlite3.connect(reg.db_path) as db:
        db.execute(f"UPDATE adapters SET {column} = ? WHERE name = 'movies-lora'", (value,))
    words = f"the registry row of movies-lora:1 has an unreadable {column} column"
    monkeypatch.setenv("ADAPTREC_HOME", str(reg.home))
    for args in (["registry", "list"], ["registry", "show", "movies-lora:1"]):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and err.startswith(f"error: {words}") and len(err.strip().splitlines()) == 1
    assert [p.split(";")[0] for p in reg.verify()] == [words]
    assert reg.remove("movies-lora:1") == "movies-lora:1" and reg.verify() == []


def test_a_schema_4_trail_moves_whole_and_then_records_removals(tmp_path, src):
    """Migration 5 rebuilds `decisions` so that a forced removal can be recorded: rows and numbering are kept."""
    from adaptrec.registry import schema

    home = tmp_path / "old"
    reg = Registry(home=home)
    rec = reg_one(reg, src)
    with sqlite3.connect(home / "registry.db") as c:  # roll back to schema 4 with a two-decision trail
        c.execute("DROP TABLE decisions")
        schema._m3_promotion_audit(c)
        for action in ("promote", "refuse"):
            c.execute("INSERT INTO decisions (domain, action, ref, previous, evidence, by_whom, at) "
                      "VALUES ('movies', ?, ?, NULL, '{}', 'me', 'then')", (action, rec.ref))
        c.execute("INSERT INTO aliases VALUES ('movies', ?, ?, 'then')", (rec.name, rec.version))
        c.execute("PRAGMA user_version = 4")
    reg = Registry(home=home)
    assert [(d.seq, d.action) for d in reg.history("movies")] == [(1, "promote"), (2, "refuse")]
    reg.remove(rec.ref, force=True)
    assert [(d.seq, d.action) for d in reg.history("movies")][-1] == (3, "remove")


def test_pulled_metrics_are_claims_and_an_old_registry_moves_them(tmp_path, src):
    """Schema 1 stored a pulled adapter's published metrics as measured ones; migration 2 moves them to
    `claimed_metrics`, and later pulls store them there."""
    home = tmp_path / "old"
    Registry(home=home)  # create, then roll the file back to schema 1 with a pulled row in the old layout
    with sqlite3.connect(home / "registry.db") as c:
        c.execute("ALTER TABLE adapters DROP COLUMN claimed_metrics")
        c.execute("DROP TABLE decisions")  # migration 3's
        c.execute("DROP TABLE encoders")  # migration 4's
        c.execute("INSERT INTO adapters (name, version, domain, kind, adapter_type, adapter_config, base_exact, "
                  "base_family, base_model, metrics, file_hash, created) VALUES ('p', 1, 'movies', 'pulled', 'lora', "
                  "'{}', 'e', 'f', 'm', ?, 'h', 'now')", (json.dumps({"auc": metric(0.9)}),))
        c.execute("PRAGMA user_version = 1")
    record = Registry(home=home).resolve("p:1")
    assert record.metrics == {} and record.claimed_metrics["auc"]["value"] == 0.9
    fresh = Registry(home=tmp_path / "new")
    pulled = reg_one(fresh, src, kind="pulled", origin={"repo": "a/b", "revision": "c" * 40},
                     claimed_metrics={"auc": metric(0.8)})
    assert pulled.metrics == {} and pulled.claimed_metrics["auc"]["value"] == 0.8


def test_a_version_removed_while_it_is_checked_is_no_tampering(reg, src, monkeypatch):
    """A `remove` by another process while `verify` or a load hashed the version said its folder "was modified,
    re-register the adapter": `registry verify` failed on a healthy registry."""
    from adaptrec.registry import store

    first = reg_one(reg, src)
    reg_one(reg, src)
    real = store.verified_files

    def removed_meanwhile(rec):
        if rec.ref != first.ref:  # the latest, removed as it is checked
            Registry(reg.home).remove(rec.ref)
        return real(rec)

    monkeypatch.setattr(store, "verified_files", removed_meanwhile)
    assert reg.verify() == []
    third = reg_one(reg, src)
    with pytest.raises(RegistryError, match=f"^{third.ref} was removed while its files were being checked$"):
        reg.load_verified(third.ref, FP)
    (first.path / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(IntegrityError):  # still registered: a change is still a change
        reg.load_verified(first.ref, FP)


def test_a_work_folder_whose_process_finished_as_it_was_checked_is_not_dead(reg, monkeypatch):
    """The owner unlinked and released its lock between gc's open and flock of it: the free lock of a file no longer
    at that path read as a dead process, so verify reported a healthy registration's folder."""
    import os

    from adaptrec import atomic

    folder = reg.scratch_dir / "pull-done"
    folder.mkdir(parents=True)
    lock = reg.scratch_dir / "pull-done.lock"
    lock.touch()
    real_open = os.open

    def open_then_finish(path, flags, *args):
        fd = real_open(path, flags, *args)
        os.unlink(path)  # the owner's work ends just then
        return fd

    monkeypatch.setattr(atomic.os, "open", open_then_finish)
    assert atomic.abandoned(folder) is None
    monkeypatch.setattr(atomic.os, "open", real_open)
    lock.touch()
    assert atomic.abandoned(folder) is True  # a lock file still there and free: its process is gone
