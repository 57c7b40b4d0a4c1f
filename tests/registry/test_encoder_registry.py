"""Registered collaborative encoders: files round-trip for every kind, hashes checked, versions, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_cli
from data_markers import needs_ml100k

from adaptrec.cf.base import Interactions, PopularityEncoder
from adaptrec.cf.fit import Fitted
from adaptrec.cf.implicit_mf import ALSSettings, fit_als
from adaptrec.cf.mf import MFSettings, train_mf_bias
from adaptrec.cf.sasrec import SASRecSettings, fit_sasrec
from adaptrec.errors import IntegrityError, RegistryError
from adaptrec.registry import Registry

pytest.importorskip("implicit")
PAIRS = [(f"u{u}", f"i{(u + k) % 9}") for u in range(12) for k in range(5)]
DATA = Interactions.of(PAIRS)


def _fitted(encoder, settings: dict) -> Fitted:
    return Fitted(encoder, encoder.items, np.zeros((len(encoder.items), 1), np.float32),
                  {"data": "movielens:100k:loo", "ratings": "digest", "settings": settings})


@pytest.mark.parametrize("make", [
    lambda: (fit_als(DATA, ALSSettings(factors=4, iterations=2)), {"factors": 4}),
    lambda: (train_mf_bias([u for u, _ in PAIRS], [i for _, i in PAIRS], [1, 0] * 30, MFSettings(dim=4, epochs=3))
             .as_encoder(), {"dim": 4}),
    lambda: (fit_sasrec(DATA, SASRecSettings(dim=8, max_len=4, epochs=1)),
             {"dim": 8, "blocks": 2, "heads": 1, "max_len": 4, "dropout": 0.2, "epochs": 1, "batch_size": 128,
              "lr": 1e-3, "seed": 0}),
    lambda: (PopularityEncoder(DATA), {}),
], ids=["als", "mf-bias", "sasrec", "popularity"])
def test_a_registered_encoder_scores_as_it_did(tmp_path, make):
    encoder, settings = make()
    reg = Registry(home=tmp_path / "home")
    record = reg.register_encoder("enc", _fitted(encoder, settings), "window", {"ndcg@10": 0.5})
    loaded, again = reg.load_encoder("enc")
    assert again == record and again.ref == "enc:1"
    users, histories = ["u1", "stranger"], [["i1", "i2"], ["i3"]]
    np.testing.assert_allclose(loaded.score_catalogue(users, histories), encoder.score_catalogue(users, histories),
                               rtol=1e-6)


def test_versions_and_tampering(tmp_path):
    reg = Registry(home=tmp_path / "home")
    first = reg.register_encoder("pop", _fitted(PopularityEncoder(DATA), {}), "w", {})
    second = reg.register_encoder("pop", _fitted(PopularityEncoder(DATA), {}), "w", {})
    assert (first.version, second.version) == (1, 2)
    assert [r.ref for r in reg.encoders()] == ["pop:2", "pop:1"]
    assert reg.load_encoder("pop:1")[1] == first
    (first.path / "encoder.safetensors").write_bytes(b"not what was registered")
    with pytest.raises(IntegrityError, match="encoder pop:1"):
        reg.load_encoder("pop:1")
    with pytest.raises(RegistryError, match="no encoder 'nope'"):
        reg.load_encoder("nope")


def test_verify_and_gc_cover_encoders(tmp_path):
    """Encoders get the adapters' checks: verify re-hashes them, gc removes what a killed `train-cf` left (was:
    "all intact", and the leftovers stayed)."""
    reg = Registry(home=tmp_path / "home")
    first = reg.register_encoder("pop", _fitted(PopularityEncoder(DATA), {}), "w", {})
    assert reg.verify() == []
    unfinished, orphan = reg.encoders_dir / "pop" / ".2.abc.tmp", reg.encoders_dir / "pop" / "7"
    unfinished.mkdir()
    orphan.mkdir()
    (first.path / "encoder.safetensors").write_bytes(b"not what was registered")
    problems = reg.verify()
    assert len(problems) == 3 and problems[0].startswith("encoder pop:1: ")
    assert any("unfinished write" in p for p in problems) and any("orphan" in p and "/7" in p for p in problems)
    assert sorted(reg.gc()) == sorted([unfinished, orphan]) and first.path.is_dir()


def test_a_damaged_encoder_or_decision_row_is_one_line_and_verify_names_it(tmp_path):
    """(was: JSONDecodeError's traceback from `registry verify`, `registry encoders`, every eval reading encoders,
    `registry history` and `rollback`)"""
    import sqlite3

    reg = Registry(home=tmp_path / "home")
    reg.register_encoder("pop", _fitted(PopularityEncoder(DATA), {}), "w", {})
    good = reg.register_encoder("other", _fitted(PopularityEncoder(DATA), {}), "w", {})
    with sqlite3.connect(reg.db_path) as db:
        db.execute("UPDATE encoders SET metrics = '{' WHERE name = 'pop'")
    with pytest.raises(IntegrityError, match="row of encoder pop:1 has an unreadable column; restore registry.db"):
        reg.encoders()
    problems = reg.verify()  # the other encoder is still checked
    assert problems == ["the registry row of encoder pop:1 has an unreadable column; restore registry.db from a copy"]
    (good.path / "encoder.safetensors").write_bytes(b"changed")
    assert [p.split(":")[0] for p in reg.verify()] == ["encoder other", "the registry row of encoder pop"]


def test_an_encoder_row_edited_into_json_of_another_shape_is_one_line_and_verify_names_it(tmp_path, monkeypatch,
                                                                                        capsys):
    """(was: `metrics` edited to `[1]` gave an AttributeError traceback in `registry encoders`)"""
    import sqlite3

    reg = Registry(home=tmp_path / "home")
    reg.register_encoder("pop", _fitted(PopularityEncoder(DATA), {}), "w", {})
    with sqlite3.connect(reg.db_path) as db:
        db.execute("UPDATE encoders SET metrics = '[1]' WHERE name = 'pop'")
    monkeypatch.setenv("ADAPTREC_HOME", str(reg.home))
    problem = "the registry row of encoder pop:1 has an unreadable column; restore registry.db from a copy"
    code, _, err = run_cli(monkeypatch, capsys, "registry", "encoders")
    assert code == 2 and err == f"error: {problem}\n"
    assert reg.verify() == [problem]


@needs_ml100k
def test_train_cf_registers_a_measured_encoder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    code, out, _ = run_cli(monkeypatch, capsys, "train-cf", "als", "--data", "movielens:100k:loo", "--epochs", "2",
                           "--dim", "8")
    assert code == 0 and "registered encoder als-movielens-100k-loo:1" in out and "ndcg@10 0." in out
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "encoders", "--json")
    (row,) = json.loads(out)
    assert row["settings"]["factors"] == 8 and row["metrics"]["users"] == 943 and row["window"].startswith("every")
    code, _, err = run_cli(monkeypatch, capsys, "train-cf", "svd", "--data", "movielens:100k:loo")
    assert code == 2 and err.strip() == "error: unknown encoder 'svd'; known: mf-bias, bpr, als, lightgcn, sasrec"


@needs_ml100k
def test_registered_encoders_are_rows_of_eval_reports_on_their_own_source_only(tmp_path, tiny_model_dir, monkeypatch):
    import adaptrec
    from adaptrec.errors import AdaptrecError

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    record = adaptrec.api.train_cf("als", data="movielens:100k:loo", dim=8, epochs=2)
    common = dict(backbone=str(tiny_model_dir), quantization="none", cache=False, encoders=[record.ref])
    ranked = adaptrec.evaluate(data="movielens:100k:loo:test", limit=12, candidates=9, **common)
    labelled = adaptrec.evaluate(data="movielens:100k:loo:test", limit=24, **common)
    for report, metric in ((ranked, "ndcg@10"), (labelled, "auc")):
        row = next(r for r in report.rows if r.name == f"encoder {record.ref}")
        assert 0 <= row.metrics[metric].value <= 1 and "log_loss" not in row.metrics  # scores, not probabilities
    with pytest.raises(AdaptrecError, match="scores only that source's held-out splits"):
        adaptrec.evaluate(data="movielens:100k:test", **common)
    # the source's files changed since the fit: pairs held out now may be among what it learned
    from adaptrec.cf import fit as fit_module

    real = fit_module.source_ratings
    monkeypatch.setattr(fit_module, "source_ratings",
                        lambda source: fit_module.Ratings(real(source).rows[:-1], real(source).items))
    with pytest.raises(IntegrityError, match=f"the encoder {record.ref} learned from movielens:100k:loo when it held "
                                             "other training interactions"):
        adaptrec.evaluate(data="movielens:100k:loo:test", limit=12, **common)
    from adaptrec.registry.encoders import StaleEncoderWarning

    with pytest.warns(StaleEncoderWarning, match=f"left out {record.ref}"):  # picked by itself: left out, not fatal
        auto = adaptrec.evaluate(data="movielens:100k:loo:test", limit=12, backbone=str(tiny_model_dir),
                                 quantization="none", cache=False)
    assert not any(r.name.startswith("encoder ") for r in auto.rows)
    monkeypatch.setattr(fit_module, "source_ratings", real)
    full = adaptrec.evaluate(data="movielens:100k:loo:test", limit=12, candidates=9, full_catalogue=True, **common)
    row = next(r for r in full.rows if r.name == f"encoder {record.ref}")
    untuned = next(r for r in full.rows if r.kind == "llm")
    assert "full_ndcg@10" not in untuned.metrics and row.metrics["full_hit@10"].n == 12
    from adaptrec.cf.evaluate import full_ranks
    from adaptrec.data.spec import load_spec
    from adaptrec.evaluation import rank_lists

    ds = load_spec("movielens:100k:loo:test")
    positives, _ = rank_lists(ds, 12, 0, 9)
    encoder = Registry().load_encoder(record.ref)[0]
    r = full_ranks(encoder, [c.user_id for c in positives], [c.target_id for c in positives],
                   [[h.item_id for h in c.history] for c in positives], [ds.user_items[c.user_id] for c in positives])
    assert row.metrics["full_hit@10"].value == pytest.approx(float(np.mean(r <= 10)))
    with pytest.raises(AdaptrecError, match="^full_catalogue ranks encoder rows"):
        adaptrec.evaluate(data="movielens:100k:loo:test", full_catalogue=True, **common)
    adaptrec.api.train_cf("als", data="movielens:100k:loo", dim=8, epochs=2)  # a second version: the latest counts
    by_default = {**common, "encoders": None}
    names = [r.name for r in adaptrec.evaluate(data="movielens:100k:loo:test", limit=12, candidates=9,
                                               **by_default).rows]
    assert names.count("encoder als-movielens-100k-loo:2") == 1 and f"encoder {record.ref}" not in names
    other = adaptrec.evaluate(data="movielens:100k:test", limit=12, **by_default)  # another source: no encoder row
    assert not [r for r in other.rows if r.name.startswith("encoder")]
    none = adaptrec.evaluate(data="movielens:100k:loo:test", limit=12, **{**common, "encoders": []})
    assert not [r for r in none.rows if r.name.startswith("encoder")]


def test_an_encoder_scores_only_its_sources_held_out_splits():
    from adaptrec.cf.fit import scores_spec

    assert scores_spec("movielens:100k:loo", "movielens:100k:loo:test[0:50]")
    assert scores_spec("amazon", "amazon:office:test:cold") and scores_spec("movielens:100k", "movielens:100k:valid")
    assert not scores_spec("movielens:100k", "movielens:100k:loo:test")  # the other protocol's test pairs are training
    assert not scores_spec("movielens:100k:loo", "movielens:100k:loo:train")
    assert not scores_spec("amazon", "tallrec:movie:test")


@needs_ml100k
def test_an_mf_bias_encoder_is_measured_by_auc_on_tallrec_movie_validation(tmp_path, monkeypatch):
    import adaptrec

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    record = adaptrec.api.train_cf("mf-bias", data="movielens:100k", dim=4, epochs=3, name="mf")
    assert record.ref == "mf:1" and record.metrics["cases"] == 1000 and 0 < record.metrics["auc"] < 1
    assert record.window.startswith("ML-100K ratings before")


def test_an_encoder_name_differing_only_in_letter_case_is_refused(tmp_path):
    """On a case-insensitive file system `ALS:1` is `als:1`'s folder: registering it would delete those files."""
    reg = Registry(tmp_path)
    first = reg.register_encoder("pop", _fitted(PopularityEncoder(DATA), {}), "w", {})
    with pytest.raises(RegistryError, match="only in letter case"):
        reg.register_encoder("POP", _fitted(PopularityEncoder(DATA), {}), "w", {})
    assert [r.name for r in reg.encoders()] == ["pop"] and first.path.is_dir()


def test_a_failed_registration_leaves_no_folder(tmp_path, monkeypatch):
    from adaptrec.registry import encoders as rows

    reg = Registry(home=tmp_path / "home")

    def refuse(conn, record):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rows, "insert", refuse)
    with pytest.raises(RuntimeError, match="disk full"):
        reg.register_encoder("pop", _fitted(PopularityEncoder(DATA), {}), "w", {})
    assert not (tmp_path / "home" / "encoders" / "pop" / "1").exists() and reg.encoders() == []


def test_bpr_folds_in_an_unseen_user_with_the_item_bias_weighed_as_for_known_users():
    from adaptrec.cf.implicit_mf import BPRSettings, fit_bpr

    encoder = fit_bpr(DATA, BPRSettings(factors=4, iterations=20))
    assert encoder.item_table.shape[1] == 4 and np.ptp(encoder.item_bias) > 0  # the bias column split off
    history = encoder.items[:3]
    assert "stranger" not in encoder.user_index
    folded = encoder.item_table[[encoder.item_index[i] for i in history]].mean(axis=0)
    # the stranger's vector is the mean of its history's factors, and the item bias enters with weight 1, as
    # implicit's constant user column gives it to every known user
    np.testing.assert_allclose(encoder.score_catalogue(["stranger"], [history])[0],
                               folded @ encoder.item_table.T + encoder.item_bias, rtol=1e-5, atol=1e-6)
    known = encoder.user_index["u3"]
    np.testing.assert_allclose(encoder.score_catalogue(["u3"], [history])[0],  # a known user ignores the history
                               encoder.user_table[known] @ encoder.item_table.T + encoder.item_bias, rtol=1e-5,
                               atol=1e-6)
