"""Score-cache keys hold everything that changes a score: backbone load, adapter weights and config,
scoring path and code version; rows are never overwritten and rows of the old format are never read."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
from router_helpers import register_random

from adaptrec.adapters.attach import adapter_key
from adaptrec.adapters.files import CONFIG_FILE
from adaptrec.backbone import base_score_key, config_digest, load_backbone, tokenizer_digest
from adaptrec.data.records import Case, HistoryItem
from adaptrec.registry import Registry
from adaptrec.score_cache import TABLE, ScoreCache
from adaptrec.scoring.core import SCORING_VERSION, Scorer, backbone_scorer


def _lists() -> list[list[Case]]:
    hist = tuple(HistoryItem(f'"item {i}"', liked=i % 3 != 0) for i in range(5))
    return [[Case("u1", "movie", "movie", hist, f'"target {j}"', label=int(j == 0)) for j in range(4)]]


def test_full_and_prefix_paths_never_share_cached_rows(tiny_backbone, tmp_path):
    cache = ScoreCache(tmp_path / "c.db")
    scorer = backbone_scorer(tiny_backbone, cache=cache, progress=False)
    (prefix,) = scorer.list_logits(_lists(), shared_prefix=True)
    assert scorer.fresh == 4
    (full,) = scorer.list_logits(_lists(), shared_prefix=False)
    assert scorer.fresh == 8 and scorer.cached == 0  # the full path ran its own forwards
    np.testing.assert_allclose(full, prefix, atol=1e-4)  # fp32: the two paths agree
    assert len(cache) == 8


def test_a_prompt_ranked_in_another_list_with_another_split_point_is_scored_again(tiny_backbone, tmp_path):
    """The prefix path splits a list's prompts where they stop sharing tokens, so the same prompt splits elsewhere
    among other candidates (and can score slightly differently in 8-bit): its rows are keyed by the split."""
    cache = ScoreCache(tmp_path / "c.db")
    scorer = backbone_scorer(tiny_backbone, cache=cache, progress=False)
    (base,) = _lists()
    alike = [base[0], replace(base[1], target=base[0].target[:-1] + ' and more"')]  # shares all of base[0]'s title
    splits = [scorer.ranker.split(scorer.list_prompts([lst])[0])[1] for lst in (base[:2], alike)]
    assert splits[0] < splits[1]
    scorer.list_logits([base[:2]], shared_prefix=True)
    scorer.list_logits([alike], shared_prefix=True)
    assert scorer.fresh == 4 and scorer.cached == 0  # base[0] twice: once per split point
    scorer.list_logits([alike], shared_prefix=True)
    assert scorer.fresh == 4 and scorer.cached == 2  # the same list again: read back
    assert scorer.cache_keys(["p"], "prefix", split=3) != scorer.cache_keys(["p"], "prefix", split=4)


def test_existing_rows_are_never_replaced(tmp_path):
    cache = ScoreCache(tmp_path / "c.db")
    cache.put_many({"k": np.array([1.0, 2.0, 3.0])})
    cache.put_many({"k": np.array([9.0, 9.0, 9.0]), "j": np.array([4.0, 5.0, 6.0])})
    found = cache.get_many(["k", "j"])
    np.testing.assert_array_equal(found["k"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(found["j"], [4.0, 5.0, 6.0])


def test_a_score_that_is_no_number_is_never_kept_nor_read(tmp_path):
    """SQLite stores NaN as NULL: the row came back as [None, no, lse], a NaN on every rerun (or a TypeError on the
    shared-prefix path), and as rows are never replaced only deleting the cache helped."""
    cache = ScoreCache(tmp_path / "c.db")
    cache.put_many({"nan": np.array([np.nan, 2.0, 3.0]), "inf": np.array([1.0, np.inf, 3.0]),
                    "ok": np.array([1.0, 2.0, 3.0])})
    assert set(cache.get_many(["nan", "inf", "ok"])) == {"ok"} and len(cache) == 1
    cache._db.execute(f"INSERT INTO {TABLE} VALUES ('old', NULL, 2.0, 3.0)")  # as an older version wrote one
    assert "old" not in cache.get_many(["old"])
    assert cache.get_many(["ok"])["ok"].dtype == np.float64


def test_an_infinite_row_an_older_version_wrote_is_recomputed_and_only_earlier_tables_count_as_earlier(tmp_path):
    """(was: a row of inf, written before non-finite rows were refused, read back as P(yes) 1.0 on every rerun; and
    `cache clear scores --earlier-formats` dropped any other table, a newer version's too)"""
    cache = ScoreCache(tmp_path / "c.db")
    cache._db.execute(f"INSERT INTO {TABLE} VALUES ('old', 1e999, 1.0, 1e999)")  # SQLite's inf
    assert cache.get_many(["old"]) == {}
    with cache._db:
        cache._db.execute("CREATE TABLE logits_v9 (key TEXT PRIMARY KEY, yes REAL, no REAL, lse REAL)")
        cache._db.execute("INSERT INTO logits_v9 VALUES ('newer', 1.0, 2.0, 3.0)")
        cache._db.execute("CREATE TABLE answer_logits (key TEXT PRIMARY KEY, yes REAL, no REAL, lse REAL)")
        cache._db.execute("INSERT INTO answer_logits VALUES ('older', 1.0, 2.0, 3.0)")
    assert cache.earlier_rows() == 1 and cache.clear(earlier_only=True) == 1
    assert cache._db.execute("SELECT COUNT(*) FROM logits_v9").fetchone()[0] == 1


def test_the_untuned_key_is_the_loaded_tokenizers_whatever_joins_it_later(tiny_model_dir):
    """(was: the tokenizer's digest was taken on first use, so a collab adapter's item tokens added before it gave
    the untuned model another key, and its cached rows were scored again)"""
    from adaptrec.backbone import load_backbone

    grown = load_backbone(str(tiny_model_dir), "none", device="cpu")
    grown.tokenizer.add_tokens(["<item_1>", "<item_2>"])  # as a collab adapter's attach adds them
    assert grown.score_key == load_backbone(str(tiny_model_dir), "none", device="cpu").score_key


def test_rows_of_the_old_format_are_never_read(tiny_backbone, tmp_path):
    """A cache file written before the exact keys (table `answer_logits`) is ignored, not misread."""
    path = tmp_path / "old.db"
    scorer = backbone_scorer(tiny_backbone, progress=False)
    case = _lists()[0][0]
    old_key = ScoreCache.key(scorer.model_key, scorer.prompts([case])[0])
    now_key = scorer.cache_keys(scorer.prompts([case]), "full")[0]  # under the key looked up today too: only the
    with sqlite3.connect(path) as db:  # table keeps the old rows unread
        db.execute("CREATE TABLE answer_logits (key TEXT PRIMARY KEY, yes REAL, no REAL, lse REAL)")
        db.executemany("INSERT INTO answer_logits VALUES (?, 50.0, -50.0, 60.0)", [(old_key,), (now_key,)])
    scorer.cache = ScoreCache(path)
    assert scorer.score([case])[0] < 0.999 and scorer.fresh == 1


def test_adapter_key_covers_the_config_not_only_the_weights(tiny_model_dir, tmp_path):
    record = register_random(tiny_model_dir, Registry(), "a", {"type": "lora", "r": 4}, seed=0)
    copy = tmp_path / "copy"
    shutil.copytree(record.path, copy)
    assert adapter_key(copy) == adapter_key(record.path)
    config = json.loads((copy / CONFIG_FILE).read_text())
    (copy / CONFIG_FILE).write_text(json.dumps({**config, "base_model_name_or_path": "/elsewhere"}))
    assert adapter_key(copy) == adapter_key(record.path)  # where it came from does not change scores
    for card in ("README.md", ".gitattributes"):  # a Hub clone's card files (was: .gitattributes changed the key)
        (copy / card).write_text("from the Hub")
    assert adapter_key(copy) == adapter_key(record.path)
    for change in ({"lora_alpha": config["lora_alpha"] * 2}, {"use_rslora": True}, {"rank_pattern": {"q_proj": 2}}):
        (copy / CONFIG_FILE).write_text(json.dumps({**config, **change}))
        assert adapter_key(copy) != adapter_key(record.path), change


def test_backbone_key_holds_device_dtype_backend_and_tokenizer(tiny_model_dir):
    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    fp, tok, cfg = bb.fingerprint, tokenizer_digest(bb.tokenizer), config_digest(bb.source)
    assert bb.score_key == base_score_key(fp, "fp32", "cpu", tok, cfg)
    others = [base_score_key(fp, "bf16", "cuda", tok, cfg), base_score_key(fp, "fp32", "cuda", tok, cfg),
              base_score_key(fp, "fp32", "cpu", "another tokenizer", cfg),
              base_score_key(replace(fp, exact="0" * 64), "fp32", "cpu", tok, cfg)]  # other weights of the family
    assert len({bb.score_key, *others}) == 5


def test_the_same_weights_under_another_config_score_under_another_key(tiny_model_dir, tmp_path):
    """An edited config.json (here the norm epsilon) changes every score while the weights, and so the fingerprint,
    stay the same: a cached row of the first config must not answer for the second."""
    copy = tmp_path / "edited"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 0.1
    (copy / "config.json").write_text(json.dumps(config))
    first = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    edited = load_backbone(str(copy), quantization="none", device="cpu")
    assert first.fingerprint.exact == edited.fingerprint.exact
    assert first.score_key != edited.score_key
    same = tmp_path / "moved"  # where the folder lies and which transformers wrote it are no part of the key
    shutil.copytree(tiny_model_dir, same)
    assert load_backbone(str(same), quantization="none", device="cpu").score_key == first.score_key


def test_backbone_key_holds_the_int8_kernel_and_library_versions(tiny_model_dir, monkeypatch):
    import transformers

    import adaptrec.backbone as backbone_mod

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    fp, tok, cfg = bb.fingerprint, tokenizer_digest(bb.tokenizer), config_digest(bb.source)
    int8, fp32 = base_score_key(fp, "torch-int8", "cpu", tok, cfg), base_score_key(fp, "fp32", "cpu", tok, cfg)
    monkeypatch.setattr(backbone_mod, "KERNEL_VERSION", backbone_mod.KERNEL_VERSION + 1)
    assert base_score_key(fp, "torch-int8", "cpu", tok, cfg) != int8  # a kernel change re-keys its rows
    assert base_score_key(fp, "fp32", "cpu", tok, cfg) == fp32  # and only those
    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    assert base_score_key(fp, "fp32", "cpu", tok, cfg) != fp32
    assert bb.environment()["dtype"] == "float32" and bb.environment()["device"] == "cpu"


def test_the_bitsandbytes_key_holds_its_version_and_no_other_backend_key_reads_it(tiny_model_dir, monkeypatch):
    import importlib.metadata

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    fp, tok, cfg = bb.fingerprint, tokenizer_digest(bb.tokenizer), config_digest(bb.source)
    before = {b: base_score_key(fp, b, "cuda", tok, cfg) for b in ("bitsandbytes", "torch-int8", "fp32")}
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda p: "9.9.9" if p == "bitsandbytes" else real(p))
    after = {b: base_score_key(fp, b, "cuda", tok, cfg) for b in before}
    assert after["bitsandbytes"] != before["bitsandbytes"]  # its kernels compute that backend's scores
    assert after["torch-int8"] == before["torch-int8"] and after["fp32"] == before["fp32"]


def test_scoring_keys_hold_the_path_and_code_version(tiny_backbone, monkeypatch):
    from adaptrec.scoring import core

    scorer = Scorer(tiny_backbone.model, tiny_backbone.tokenizer, "m", progress=False)
    full, prefix = scorer.cache_keys(["p"], "full"), scorer.cache_keys(["p"], "prefix", split=3)
    assert full != prefix and full != [ScoreCache.key("m", "p")]
    monkeypatch.setattr(core, "SCORING_VERSION", SCORING_VERSION + 1)  # a bump leaves every older row unread
    assert scorer.cache_keys(["p"], "full") != full and scorer.cache_keys(["p"], "prefix", split=3) != prefix


def test_chat_variant_rows_scored_with_a_second_bos_are_never_read():
    """chat-stats and chat-items prompts were once tokenized with the tokenizer's BOS added to the chat template's
    own; their rows moved to new keys, while the other templates' rows keep theirs."""
    def key(template: str) -> list[str]:
        return Scorer.cache_keys(SimpleNamespace(model_key="m", template=template, answers_keyed_apart=False), ["p"])

    old = [ScoreCache.key(f"m:full:v{SCORING_VERSION}", "p")]
    assert key("tallrec") == key("chat") == key("tallrec-items") == old
    assert key("chat-stats") != old and key("chat-items") != old
