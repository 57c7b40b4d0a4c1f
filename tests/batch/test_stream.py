"""`adaptrec score` / `write_predictions` on one process: chunked streaming, shards, Parquet, crash safety."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from batch_helpers import N_CASES, data_file, engine_options, reference_scores, row_ids, row_scores
from cli_runner import run_cli
from router_helpers import device_atol

import adaptrec
from adaptrec.batch import FIELDS, meta_path, read_predictions
from adaptrec.batch.formats import partial_path
from adaptrec.data.spec import load_spec
from adaptrec.scoring.core import Scorer
from adaptrec.scoring.logits import to_scores


def test_streamed_chunks_equal_the_unchunked_scores(tiny_model_dir, tmp_path):
    data = data_file(tmp_path)
    out = tmp_path / "pred.jsonl"
    result = adaptrec.write_predictions(None, data=data, out=out, chunk_size=4, **engine_options(tiny_model_dir))
    rows = read_predictions(out)
    cases = load_spec(data).cases
    assert result.n == N_CASES and result.cached == 0 and result.prompts_per_s > 0
    assert [tuple(r) for r in rows] == [FIELDS] * N_CASES
    assert [(r["case"], r["user_id"], r["target"], r["label"]) for r in rows] == \
        [(i, c.user_id, c.target, c.label) for i, c in enumerate(cases)]
    np.testing.assert_allclose(row_scores(rows), reference_scores(tiny_model_dir, data), atol=device_atol(1e-5))
    assert not partial_path(out).exists()


def test_shards_together_are_the_whole(tiny_model_dir, tmp_path):
    data = data_file(tmp_path)
    opts = dict(data=data, cache=False, chunk_size=3, **engine_options(tiny_model_dir))
    whole = read_predictions(adaptrec.write_predictions(None, out=tmp_path / "all.jsonl", **opts).path)
    parts = [read_predictions(adaptrec.write_predictions(None, out=tmp_path / f"{i}.jsonl", shard=f"{i}/2",
                                                         **opts).path) for i in range(2)]
    assert [r["case"] for r in parts[0]] == list(range(0, N_CASES, 2))
    assert [r["case"] for r in parts[1]] == list(range(1, N_CASES, 2))
    merged = sorted(parts[0] + parts[1], key=lambda r: r["case"])
    assert row_ids(merged) == row_ids(whole)
    np.testing.assert_allclose(row_scores(merged), row_scores(whole), atol=device_atol(1e-5))


def test_parquet_output_round_trips(monkeypatch, capsys, tiny_model_dir, tmp_path):
    data = data_file(tmp_path)
    common = ["score", "--data", data, "--backbone", str(tiny_model_dir), "-q", "none", "--chunk-size", "5"]
    code, out, err = run_cli(monkeypatch, capsys, *common, "--out", str(tmp_path / "p.jsonl"))
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, *common, "--out", str(tmp_path / "p.parquet"))
    assert code == 0 and f"wrote {N_CASES} predictions of the untuned backbone" in out, err
    assert f"{N_CASES} from the score cache" in out
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups == 3  # one per chunk
    assert read_predictions(tmp_path / "p.parquet") == read_predictions(tmp_path / "p.jsonl")
    meta = json.loads(meta_path(tmp_path / "p.parquet").read_text())  # was: the rows alone, no word of their source
    assert (meta["adapter"], meta["data"], meta["rows"], meta["seed"]) == (None, data, N_CASES, 0)
    assert meta["data_fingerprint"] == load_spec(data).fingerprint and meta["versions"]["adaptrec"]
    # what the rows read and ran on (was: {"batch_size": 8} for the untuned backbone, and an -items template it
    # never reads recorded as given)
    assert meta["scoring"] == {"template": "tallrec", "max_prompt_tokens": 1024, "batch_size": 8}
    from adaptrec.backbone import default_device, resolve_backend

    here = {"backend": resolve_backend("none", default_device()), "device": default_device()}
    assert (meta["environment"], meta["chunk_size"], meta["cache"]) == (here, 5, True)
    code, _, err = run_cli(monkeypatch, capsys, *common, "--template", "tallrec-items", "--out",
                           str(tmp_path / "q.jsonl"))
    assert code == 0 and json.loads(meta_path(tmp_path / "q.jsonl").read_text())["scoring"]["template"] == "tallrec"


def test_a_crash_leaves_no_file_and_a_rerun_reads_the_cache(monkeypatch, tiny_model_dir, tmp_path):
    data = data_file(tmp_path)
    out = tmp_path / "pred.parquet"
    original, calls = Scorer.logits_for_prompts, []

    def fail_on_second_chunk(self, prompts):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return original(self, prompts)

    monkeypatch.setattr(Scorer, "logits_for_prompts", fail_on_second_chunk)
    with pytest.raises(RuntimeError):
        adaptrec.write_predictions(None, data=data, out=out, chunk_size=4, **engine_options(tiny_model_dir))
    assert not out.exists() and not partial_path(out).exists()
    monkeypatch.setattr(Scorer, "logits_for_prompts", original)
    result = adaptrec.write_predictions(None, data=data, out=out, chunk_size=4, **engine_options(tiny_model_dir))
    assert result.n == N_CASES and result.cached == 4  # the first chunk came from the cache


def test_non_finite_answer_logits_are_refused_and_leave_no_file(monkeypatch, tiny_model_dir, tmp_path):
    """A diverged adapter's NaN logits were written as `"p_yes": NaN` (not JSON) into a finished output file."""
    from adaptrec.errors import AdaptrecError

    data, out = data_file(tmp_path), tmp_path / "pred.jsonl"
    original = Scorer.logits_for_prompts

    for column in (0, 2):  # the Yes logit; the log-sum-exp over the vocabulary (was: written as tallrec_score NaN)
        def diverged(self, prompts):
            logits = original(self, prompts)
            logits[-1, column] = np.nan
            return logits

        monkeypatch.setattr(Scorer, "logits_for_prompts", diverged)
        with pytest.raises(AdaptrecError, match="logits are not finite numbers .*Nothing was written"):
            adaptrec.write_predictions(None, data=data, out=out, chunk_size=4, cache=False,
                                       **engine_options(tiny_model_dir))
        assert not out.exists() and not partial_path(out).exists() and not meta_path(out).exists()


@pytest.mark.parametrize("shard", ["2/2", "1/0", "a/b", "1-2", "-1/2", "9" * 5000 + "/" + "9" * 5001])
def test_bad_shard_is_one_line_error(monkeypatch, capsys, tmp_path, shard):
    data = data_file(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "score", "--data", data, "--out", str(tmp_path / "p.jsonl"),
                           "--shard", shard)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --shard"), err
    assert not (tmp_path / "p.jsonl").exists()


def test_ray_engine_without_ray_names_the_extra(monkeypatch, capsys, tmp_path):
    data = data_file(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = run_cli(monkeypatch, capsys, "score", "--data", data, "--out", str(tmp_path / "p.jsonl"),
                           "--engine", "ray")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "pip install 'adaptrec[ray]'" in lines[0], err


def test_a_ray_that_fails_to_import_says_so_not_that_it_is_missing(monkeypatch):
    """A Ray whose import failed inside (a library built for another version) was reported as not installed, so a
    reinstall changed nothing and the cause stayed hidden."""
    import importlib.abc

    from adaptrec.batch.ray_engine import require_ray
    from adaptrec.errors import MissingOptionalPackage

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "ray":
                raise ImportError("libgomp.so.1: cannot open shared object file")

    for name in [m for m in sys.modules if m.split(".")[0] == "ray"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(MissingOptionalPackage, match="Ray is installed but does not import \\(libgomp"):
        require_ray()


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is an optional extra"))])
def test_a_shard_past_the_last_case_writes_an_empty_file(tiny_model_dir, tmp_path, engine):
    """No case, no forward: the Ray engine writes the empty file without starting Ray."""
    out = tmp_path / "empty.parquet"
    result = adaptrec.write_predictions(None, data=data_file(tmp_path), out=out, shard=f"{N_CASES}/{N_CASES + 1}",
                                        engine=engine, **engine_options(tiny_model_dir))
    assert result.n == 0 and read_predictions(out) == []


@pytest.mark.parametrize("name", ["p.jsonl", "p.parquet"])
def test_a_second_writer_of_the_same_output_is_refused_while_the_first_writes(tmp_path, name):
    """Both wrote one `.partial` file: the first to finish renamed a mix of their rows into place."""
    from adaptrec.batch.formats import PredictionWriter
    from adaptrec.errors import AdaptrecError

    out = tmp_path / name
    partial_path(out).write_bytes(b"left by a crashed run")
    row = {"case": 0, "user_id": "u", "domain": "d", "target": "t", "label": 1, "p_yes": 0.5, "tallrec_score": 0.5}
    with PredictionWriter(out) as first:
        first.write([row])
        with pytest.raises(AdaptrecError, match="another run is writing this output"), PredictionWriter(out):
            pass
        first.write([{**row, "case": 1}])
    assert [r["case"] for r in read_predictions(out)] == [0, 1] and not partial_path(out).exists()


ROW = {"case": 0, "user_id": "u", "domain": "d", "target": "t", "label": 1, "p_yes": 0.5, "tallrec_score": 0.5}


def test_a_file_s_provenance_always_describes_its_rows(tmp_path):
    """Written once the rows are in place; a failed rerun keeps the old file and its own record."""
    from adaptrec.batch.formats import PredictionWriter

    out = tmp_path / "p.jsonl"
    with PredictionWriter(out, {"adapter": "a:1"}) as first:
        first.write([ROW])
    with pytest.raises(RuntimeError), PredictionWriter(out, {"adapter": "a:2"}) as failed:
        failed.write([ROW, ROW])
        raise RuntimeError("killed")
    assert json.loads(meta_path(out).read_text()) == {"adapter": "a:1", "rows": 1} and len(read_predictions(out)) == 1
    with PredictionWriter(out, {"adapter": "a:2"}) as second:
        second.write([ROW, ROW])
    assert json.loads(meta_path(out).read_text()) == {"adapter": "a:2", "rows": 2} and len(read_predictions(out)) == 2


def test_an_output_that_is_a_folder_is_refused_before_scoring(tmp_path):
    from adaptrec.batch.formats import PredictionWriter
    from adaptrec.errors import AdaptrecError

    (tmp_path / "p.jsonl").mkdir()
    with pytest.raises(AdaptrecError, match="is a folder"), PredictionWriter(tmp_path / "p.jsonl"):
        pytest.fail("rows were written before the rename could fail")
    assert not partial_path(tmp_path / "p.jsonl").exists()


def test_a_failed_rename_leaves_no_partial_file(monkeypatch, tmp_path):
    from adaptrec.batch import formats

    def refuse(src, dst):
        raise OSError("disk full")

    out = tmp_path / "p.jsonl"
    monkeypatch.setattr(formats.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"), formats.PredictionWriter(out) as writer:
        writer.write([ROW])
    assert not out.exists() and not partial_path(out).exists()


def test_an_upper_case_parquet_suffix_writes_parquet(tmp_path):
    from adaptrec.batch.formats import PredictionWriter

    with PredictionWriter(tmp_path / "p.PARQUET") as writer:
        writer.write([ROW])
    assert pq.read_table(tmp_path / "p.PARQUET").to_pylist() == [ROW]


def test_actors_without_the_ray_engine_are_refused(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "score", "--data", data_file(tmp_path), "--out",
                           str(tmp_path / "p.jsonl"), "--actors", "8")
    assert code == 2 and err.strip() == "error: --actors 8: only --engine ray runs actors (this run's engine is local)"


def test_no_cache_neither_reads_nor_writes_the_score_cache(monkeypatch, capsys, tiny_model_dir, tmp_path):
    common = ["score", "--data", data_file(tmp_path), "--backbone", str(tiny_model_dir), "-q", "none"]
    for name in ("a.jsonl", "b.jsonl"):
        code, out, err = run_cli(monkeypatch, capsys, *common, "--out", str(tmp_path / name), "--no-cache")
        assert code == 0 and "0 from the score cache" in out, err
    code, out, err = run_cli(monkeypatch, capsys, *common, "--out", str(tmp_path / "c.jsonl"))
    assert code == 0 and "0 from the score cache" in out, err  # the --no-cache runs wrote nothing there


def test_a_shard_of_a_growing_feedback_log_is_refused(monkeypatch, capsys, tmp_path):
    """Shards of `feedback:DOMAIN` ran at different times over a log that had grown meanwhile: each split its own
    case list, so together they missed cases. A full window (`[0:N]` with N cases logged) is fixed."""
    from synthetic import log_feedback, synthetic_cases

    from adaptrec.batch import Shard, batch_cases

    log_feedback(synthetic_cases(6, seed=1))
    for spec in ("feedback:movie", "feedback:movie:1000", "feedback:movie[0:10]"):
        code, _, err = run_cli(monkeypatch, capsys, "score", "--data", spec, "--out", str(tmp_path / "p.jsonl"),
                               "--shard", "0/2")
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "grows between the shards' runs" in lines[0], err
    assert "e.g. feedback:movie[0:6]" in lines[0]
    code, _, err = run_cli(monkeypatch, capsys, "score", "--data", "feedback:movie[2:10]", "--out",
                           str(tmp_path / "p.jsonl"), "--shard", "0/2")
    assert code == 2 and "e.g. feedback:movie[2:6]" in err  # the window it named, as far as it is logged
    assert [i for i, _ in batch_cases(load_spec("feedback:movie[0:6]"), None, 0, Shard(1, 2))] == [1, 3, 5]
    assert len(batch_cases(load_spec("feedback:movie"), None, 0)) == 6  # unsharded: whatever is logged now


def test_a_re_label_between_the_shards_runs_keeps_every_case_of_a_full_window_once():
    """(was: a re-label moved its pair to the end of the log, so the window `[0:4]` shifted between the shards'
    runs: one case twice, two lost, one from outside the window)"""
    from synthetic import log_feedback, synthetic_cases

    from adaptrec.batch import Shard, batch_cases
    from adaptrec.data.online_log import OnlineLog

    log_feedback(synthetic_cases(6, seed=1))
    window = [c.meta["event"] for c in load_spec("feedback:movie[0:4]").cases]
    first = batch_cases(load_spec("feedback:movie[0:4]"), None, 0, Shard(0, 2))
    relabelled = first[0][1]
    OnlineLog().add_feedback(relabelled.meta["request_id"], relabelled.target, label=1 - relabelled.label)
    second = batch_cases(load_spec("feedback:movie[0:4]"), None, 0, Shard(1, 2))
    assert sorted(c.meta["event"] for _, c in first + second) == sorted(window)
    assert load_spec("feedback:movie[0:1]").cases[0].label == 1 - relabelled.label  # the latest label wins


def test_a_limit_of_a_feedback_window_or_a_window_past_the_log_is_refused_for_a_shard(monkeypatch, capsys, tmp_path):
    """(was: `--limit` drew each shard's subset per label, so a re-label between the shards' runs scored one case
    twice and lost others; a window past the log was offered as an empty one, e.g. `[500:500]`)"""
    from synthetic import log_feedback, synthetic_cases

    from adaptrec.batch import Shard, batch_cases

    log_feedback(synthetic_cases(6, seed=1))
    refusal = "--shard with --limit 3 over feedback:movie[0:6]: the subset is drawn per label"
    for spec, extra, words in (("feedback:movie[0:6]", ("--limit", "3"), refusal),
                               ("feedback:movie[0:6]", ("--limit", "3"), "e.g. feedback:movie[0:3]"),
                               ("feedback:movie[8:12]", (), "no feedback is logged from position 8 on yet")):
        code, _, err = run_cli(monkeypatch, capsys, "score", "--data", spec, "--out", str(tmp_path / "p.jsonl"),
                               "--shard", "0/2", *extra)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert len(batch_cases(load_spec("feedback:movie[0:6]"), 6, 0, Shard(0, 2))) == 3  # a limit holding every case
    assert len(batch_cases(load_spec("feedback:movie[0:6]"), 3, 0)) == 3  # unsharded: the subset as before


def test_a_domain_scores_with_its_champion(tiny_model_dir, tmp_path):
    """`score DOMAIN`, as `eval` and `load` take it (was: accepted by the early check, then "no adapter named
    'movie'" after the backbone loaded)."""
    from router_helpers import register_random

    from adaptrec.registry import Registry

    registry = Registry()
    record = register_random(tiny_model_dir, registry, "m-lora", {"type": "lora", "r": 2}, seed=1, domain="movie")
    registry.promote(record.ref, "movie")
    data, opts = data_file(tmp_path), engine_options(tiny_model_dir)
    by_domain = read_predictions(adaptrec.write_predictions("movie", data=data, out=tmp_path / "d.jsonl", **opts).path)
    by_ref = read_predictions(adaptrec.write_predictions(record.ref, data=data, out=tmp_path / "r.jsonl", **opts).path)
    assert row_scores(by_domain).tolist() == row_scores(by_ref).tolist()


def test_an_adapter_is_scored_with_its_own_template_unless_one_is_given(tiny_model_dir, tmp_path):
    """(was: `score ADAPTER` used the tallrec template and 1024 prompt tokens whatever the adapter trained with)"""
    from router_helpers import register_peft

    from adaptrec.backbone import load_backbone
    from adaptrec.batch import adapter_scorer
    from adaptrec.config import RECIPES_DIR
    from adaptrec.registry import Registry

    registry, data = Registry(), data_file(tmp_path)
    plain = register_peft(tiny_model_dir, registry, "plain", seed=1, domain="movie")
    recipe = ((RECIPES_DIR / "movie-lora.yaml").read_text().replace("template: tallrec ", "template: tallrec-stats ")
              .replace("max_prompt_tokens: 512 ", "max_prompt_tokens: 140 "))  # cuts history here
    assert "template: tallrec-stats" in recipe and "max_prompt_tokens: 140 " in recipe
    stats = registry.register(plain.path, name="stats", domain="movie", kind="trained", adapter_type="lora",
                              adapter_config=None, fingerprint=plain.fingerprint, recipe_text=recipe)
    opts = dict(data=data, cache=False, **engine_options(tiny_model_dir))
    own = row_scores(read_predictions(adaptrec.write_predictions(stats.ref, out=tmp_path / "own.jsonl", **opts).path))
    given = row_scores(read_predictions(adaptrec.write_predictions(stats.ref, out=tmp_path / "given.jsonl",
                                                                   template="tallrec", **opts).path))
    scorer = adapter_scorer(load_backbone(str(tiny_model_dir), "none"), registry, stats.ref,
                            template="tallrec-stats", max_prompt_tokens=140)
    expected = to_scores(scorer.logits_for_prompts(scorer.prompts(load_spec(data).cases)), "pyes")
    np.testing.assert_allclose(own[:, 0], expected, atol=device_atol(1e-5))
    assert np.abs(own[:, 0] - given[:, 0]).max() > 1e-4  # the template changes the prompts
