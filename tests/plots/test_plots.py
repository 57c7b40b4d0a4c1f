"""adaptrec.plots and `adaptrec plot`: each figure from synthetic data is a PNG with the expected series and bars;
the readers pick the right rows; a missing or malformed file is one `error:` line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from matplotlib.container import BarContainer, ErrorbarContainer

from adaptrec.plots import bench, curves, shots, transfer
from adaptrec.plots.inputs import ResultFileError

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > len(PNG)


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def _headings(fig) -> list[str]:
    """The titles of a figure and of its nested subfigures (style.new_figure's heading lines)."""
    return [fig.get_suptitle(), *(h for sub in fig.subfigs for h in _headings(sub))]


def _metric(value: float, half: float = 0.05) -> dict:
    return {"value": value, "ci_low": value - half, "ci_high": value + half, "n": 200}


def _steps(n: int, every: int, start: float) -> list[dict]:
    return [{"step": s, "loss": start / s, "lr": 1e-3, **({"val_auc": 0.5 + s / 100} if s % every == 0 else {})}
            for s in range(1, n + 1)]


def _run_folder(root: Path, name: str, rows: list[dict]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _grid_row(domain: str, kind: str, shots_: int, seed: int, **extra) -> dict:
    return {"domain": domain, "type": kind, "shots": shots_, "seed": seed, "spec": f"tallrec:{domain}:test",
            "limit": 200, "auc": _metric(0.5 + shots_ / 1000 + seed / 100), "backend": "torch", "budget": 24,
            "baselines": {"backbone": _metric(0.52), "like_ratio": _metric(0.72), "popularity": _metric(0.62)}, **extra}


def _direction(source: str, target: str) -> dict:
    roles = [("a", "untuned", 0.5), ("b", "baseline:popularity", 0.8), ("d", "target:32", 0.55)]
    return {"source": source, "target": target, "spec": f"amazon:{target}:test", "users": 200,
            "rows": [{"group": g, "role": role, "name": role,
                      "metrics": {m: _metric(v, 0.03) for m in transfer.METRICS}} for g, role, v in roles]}


def test_learning_curves_draw_a_loss_and_a_validation_series_per_run(tmp_path):
    runs = {"a-123": _steps(24, 8, 0.9), "b-456": _steps(16, 4, 0.7)}
    fig = curves.plot_curves(runs, tmp_path / "c.png")
    loss_ax, val_ax = fig.axes
    assert _is_png(tmp_path / "c.png")
    assert _labels(loss_ax) == _labels(val_ax) == ["a-123", "b-456"]
    assert [len(line.get_xdata()) for line in val_ax.get_lines() if line.get_label() == "a-123"] == [3]
    stars = [line for line in val_ax.get_lines() if line.get_marker() == "*"]
    assert [(s.get_xdata()[0], s.get_ydata()[0]) for s in stars] == [(24, 0.74), (16, 0.66)]


def test_auc_by_shots_draws_a_line_and_error_bars_per_adapter_type(tmp_path):
    runs = [{**_grid_row(d, k, n, s), "kind": k} for d in ("movie", "book") for k in ("lora", "prefix")
            for n in (16, 64, 256) for s in (0, 1, 2)]
    fig = shots.plot_shots(runs, tmp_path / "s.png", reference={"movie": {16: 0.67, 64: 0.67, 256: 0.72}})
    assert _is_png(tmp_path / "s.png")
    movie, book = fig.axes
    for ax in (movie, book):
        assert [line for line in _labels(ax) if line in ("lora", "prefix")] == ["lora", "prefix"]
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 2 and all(len(c.lines[0].get_xdata()) == 9 for c in bars)  # 3 shots x 3 seeds each
    assert "TALLRec LLaMA-7B (published)" in _labels(movie) and "TALLRec LLaMA-7B (published)" not in _labels(book)


def test_a_ci_on_the_wrong_side_of_its_estimate_draws_no_bar_there_and_no_sources_is_one_error(tmp_path):
    """A percentile bootstrap can give a CI that misses its point estimate; matplotlib refuses negative error bars."""
    from adaptrec import api
    from adaptrec.errors import AdaptrecError

    run = {**_grid_row("movie", "lora", 16, 0), "kind": "lora", "auc": {"value": 0.5, "ci_low": 0.55, "ci_high": 0.6}}
    fig = shots.plot_shots([run], tmp_path / "s.png", reference={})
    assert _is_png(tmp_path / "s.png") and fig.axes
    from adaptrec.plots.style import ci_yerr

    below, above = ci_yerr([0.5], [0.55], [0.6])  # no bar below the estimate; the one above reaches the CI's top
    assert list(below) == [0] and list(above) == pytest.approx([0.1])
    with pytest.raises(AdaptrecError, match="name at least one result file"):
        api.plot("curves", [], tmp_path / "c.png")


def test_cross_domain_heatmap_has_a_cell_per_row_and_metric_and_shows_the_warning(tmp_path):
    fig = transfer.plot_transfer([_direction("arts", "office"), _direction("office", "arts")], tmp_path / "t.png",
                                 warning="Stale: scored by older code.")
    assert _is_png(tmp_path / "t.png")
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 2 and all(im.get_array().shape == (3, len(transfer.METRICS)) for im in images)
    assert images[0].get_array()[1, 0] == pytest.approx(0.3)  # popularity's AUC minus the untuned backbone's
    texts = [t.get_text() for ax in fig.axes[:2] for t in ax.texts]
    assert "0.80*" in texts and "0.55" in texts  # * where the CIs do not overlap
    assert "⚠ Stale: scored by older code." in _headings(fig)


def test_bench_bars_skip_what_was_not_measured(tmp_path):
    panels = [bench.BarPanel("speed", "prompts/s", ("fp32", "int8"), {"bare": (4.0, 6.0), "lora": (3.9, None)},
                             target=5.0, target_label="target"),
              bench.BarPanel("switch", "ms (log scale)", ("q/v",), {"": (0.002,)}, log=True)]
    fig = bench.plot_bench(panels, tmp_path / "b.png")
    assert _is_png(tmp_path / "b.png")
    counts = [sum(len(c) for c in ax.containers if isinstance(c, BarContainer)) for ax in fig.axes]
    assert counts == [3, 1] and fig.axes[1].get_xscale() == "log"


def test_the_same_data_gives_the_same_png(tmp_path):
    runs = {"a": _steps(8, 4, 0.9)}
    curves.plot_curves(runs, tmp_path / "1.png")
    curves.plot_curves(runs, tmp_path / "2.png")
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()


def test_a_users_matplotlibrc_does_not_change_the_figure(tmp_path):
    """Only the shared keys were set over the user's rcParams: a serif font, transparency or usetex changed the
    committed PNGs."""
    import matplotlib

    runs = {"a": _steps(8, 4, 0.9)}
    curves.plot_curves(runs, tmp_path / "clean.png")
    with matplotlib.rc_context({"font.family": "serif", "savefig.transparent": True, "figure.facecolor": "#ffeeee",
                                "lines.linewidth": 4.0}):
        curves.plot_curves(runs, tmp_path / "rc.png")
    assert (tmp_path / "clean.png").read_bytes() == (tmp_path / "rc.png").read_bytes()


def test_grid_reader_takes_the_most_common_backend_and_budget_and_names_random_prefix_runs(tmp_path):
    rows = [_grid_row("movie", "lora", 16, s) for s in range(3)] + [
        _grid_row("movie", "prefix", 16, 0, init="text"), _grid_row("movie", "prefix", 16, 1),
        {k: v for k, v in _grid_row("movie", "lora", 64, 0).items() if k not in ("backend", "budget")}]
    path = tmp_path / "grid.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs, chosen = shots.read_grid(path)
    assert chosen == {"backend": "torch", "budget": 24} and len(runs) == 5
    assert sorted({r["kind"] for r in runs}) == ["lora", "prefix", "prefix (random init)"]
    old, chosen = shots.read_grid(path, backend="bitsandbytes")  # rows without the fields predate them
    assert chosen == {"backend": "bitsandbytes", "budget": 24} and [r["shots"] for r in old] == [64]
    with pytest.raises(ResultFileError, match="budget 96"):
        shots.read_grid(path, budget=96)


def test_transfer_scores_of_an_older_scoring_version_get_the_stale_warning(monkeypatch, tmp_path):
    path = tmp_path / "cross.json"
    path.write_text(json.dumps({"protocol": {"negatives": 19}, "directions": [_direction("arts", "office")]}))
    directions, info = transfer.read_transfer(path)
    assert info == {"negatives": 19, "scoring_version": 1} and len(directions[0]["rows"]) == 3  # unrecorded: 1
    drawn = []
    monkeypatch.setattr(transfer, "plot_transfer", lambda directions, out, **kw: drawn.append(kw["warning"]))
    for current in (1, 2):
        transfer.from_files([path], tmp_path / "t.png", current_scoring_version=current)
    assert drawn[0] == "" and drawn[1].startswith("Stale: these scores were cached under scoring version 1;")


def test_api_plot_flags_transfer_figures_against_this_checkout_scoring_version(monkeypatch, tmp_path):
    from adaptrec import api, plots
    from adaptrec.scoring.core import SCORING_VERSION

    calls = []
    monkeypatch.setitem(plots.FIGURES, "transfer", lambda sources, out, **kw: calls.append((sources, out, kw)) or out)
    assert api.plot("transfer", ["r.json"]) == Path("transfer.png")
    assert calls == [([Path("r.json")], Path("transfer.png"), {"current_scoring_version": SCORING_VERSION})]


def test_bench_reader_skips_other_benchmarks_in_a_folder_but_not_a_named_file(tmp_path):
    machine = {"cpu_count": 2, "cuda": None, "cpu": "", "threads": 2, "torch": "2.13.0+cpu"}
    (tmp_path / "mixed_batch.json").write_text(json.dumps({
        "benchmark": "mixed_batch", "machine": machine, "config": {"batch_size": 8, "adapters": 4, "data": "d"},
        "single_adapter_prompts_per_s": 0.7, "mixed_4_adapter_prompts_per_s": 0.8, "ratio": 1.14, "target_ratio": 0.9}))
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "other", "machine": machine}))
    panels, machines, skipped = bench.read_bench([tmp_path])
    assert [p.bars for p in panels] == [2] and machines == ["2 CPU cores, torch 2.13.0+cpu, 2 threads"]
    assert skipped == ["other.json"]
    assert bench.machine_line({**machine, "cpu": "AMD EPYC"}) == "AMD EPYC, 2 CPU cores, torch 2.13.0+cpu, 2 threads"
    with pytest.raises(ResultFileError, match="'other' has no bars"):
        bench.read_bench([tmp_path / "other.json"])


def test_plots_import_no_torch():
    code = "import sys, adaptrec.plots; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0


def test_cli_draws_a_run_folder_and_finds_a_run_by_name(monkeypatch, capsys, tmp_path):
    _run_folder(tmp_path / "home" / "runs", "movie-lora-0123456789", _steps(24, 8, 0.9))
    out = tmp_path / "curves.png"
    code, stdout, _ = run_cli(monkeypatch, capsys, "plot", "curves", "movie-lora", "--out", str(out))
    assert code == 0 and stdout.strip() == str(out) and _is_png(out)


def _one_error_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("kind, content, match", [
    ("transfer", None, "no such cross-domain result"),
    ("transfer", "{not json", "not valid JSON"),
    ("transfer", "[" * 100_000 + "]" * 100_000, "nested too deeply"),  # was: RecursionError's traceback
    ("bench", json.dumps({"benchmark": "mixed_batch", "machine": {}}), "lacks the field"),
    ("shots", json.dumps({"domain": "movie"}) + "\n", "lacks the field 'type'"),
    ("curves", "{}", "result.json: is no run's metrics.jsonl"),  # was: "no such run" for a file that is there
    ("curves", None, "result.json: no such run"),
])
def test_cli_missing_or_malformed_file_is_one_error_line(monkeypatch, capsys, tmp_path, kind, content, match):
    path = tmp_path / "result.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli(monkeypatch, capsys, "plot", kind, str(path), "--out", str(tmp_path / "x.png"))
    assert match in _one_error_line(code, err)
    assert not (tmp_path / "x.png").exists()


def test_cli_run_folder_with_a_bad_metrics_line_is_one_error_line(monkeypatch, capsys, tmp_path):
    folder = _run_folder(tmp_path, "r-1", [{"step": 1, "loss": 0.5}, {"step": 2}])
    code, _, err = run_cli(monkeypatch, capsys, "plot", "curves", str(folder), "--out", str(tmp_path / "x.png"))
    assert "metrics.jsonl" in _one_error_line(code, err) and "'loss'" in err


def test_a_diverged_run_is_logged_as_json_and_drawn_with_a_gap(monkeypatch, capsys, tmp_path):
    """(was: the trainer wrote `NaN`, which the curves reader refuses: the run one most wants to see was not drawn)"""
    from adaptrec.train.loop import _append_jsonl

    folder = tmp_path / "diverged-1"
    folder.mkdir()
    for row in ({"step": 1, "loss": 0.7, "lr": 1e-3}, {"step": 2, "loss": float("nan"), "lr": 1e-3}):
        _append_jsonl(folder / "metrics.jsonl", row)
    assert "NaN" not in (folder / "metrics.jsonl").read_text()
    assert curves.read_run(folder)[1][1]["loss"] != curves.read_run(folder)[1][1]["loss"]  # NaN again
    code, _, err = run_cli(monkeypatch, capsys, "plot", "curves", str(folder), "--out", str(tmp_path / "x.png"))
    assert code == 0, err


def test_the_smoothed_loss_steps_over_a_null_loss_instead_of_ending_there():
    """(was: a cumulative sum, so one NaN made every later window NaN: the thick line ended at the first null)"""
    smoothed = curves._trailing_mean([1.0, float("nan"), 3.0, 3.0, 3.0], 2)
    assert smoothed[0] == 1.0 and smoothed[1] == 1.0 and list(smoothed[2:]) == [3.0, 3.0, 3.0]
    assert np.isnan(curves._trailing_mean([float("nan"), float("nan"), 2.0], 2)[:2]).all()


def test_two_run_folders_of_one_name_are_both_drawn(monkeypatch, tmp_path):
    """(was: keyed by the folder's name, the second replaced the first without a word)"""
    first = _run_folder(tmp_path / "a", "movie-lora-1", _steps(8, 4, 0.9))
    second = _run_folder(tmp_path / "b", "movie-lora-1", _steps(8, 4, 0.8))
    drawn = {}
    monkeypatch.setattr(curves, "plot_curves", lambda runs, out, **kw: drawn.update(runs))
    curves.from_files([first, second], tmp_path / "c.png")
    assert list(drawn) == ["movie-lora-1", str(second)]


def test_report_figures_redraws_every_docs_figure_and_keeps_the_curves_without_their_runs(monkeypatch, tmp_path):
    """`python experiments/report.py figures` from the committed results (the run folders are not committed)."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import report

    if not (ROOT / "experiments" / "results" / "cross_domain.json").is_file():
        pytest.skip("the committed results are not in this checkout")
    monkeypatch.setattr(report, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(report, "RUNS", tmp_path / "runs")
    lines = report.figures()
    kept = {Path(line.split()[1].rstrip(":")).name for line in lines[1:] if line.startswith("kept ")}  # no JSON yet
    assert lines[0].startswith("kept ") and all(line.startswith(("wrote ", "kept ")) for line in lines[1:])
    assert kept == {f"performance_{name.replace('-', '_')}.png" for name in report.missing_results()} - {
        "performance_serve_soak.png"}  # serve-soak: a table only
    drawn = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert drawn == sorted(p.name for p in (ROOT / "docs" / "figures").glob("*.png")
                           if p.name != "learning_curves.png" and p.name not in kept)
    assert all(_is_png(tmp_path / "figures" / name) for name in drawn)


def test_the_curves_read_a_recipes_own_run_folders_not_a_longer_names(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import report

    monkeypatch.setattr(report, "RUNS", tmp_path)
    for i, name in enumerate(("movie-collab-0123456789", "movie-collab-match-abcdef0123", "movie-collab-aaaaaaaaaa")):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (i, i))
    os.utime(tmp_path / "movie-collab-match-abcdef0123", (9, 9))  # the newest folder is another recipe's
    assert [p.name for p in report.run_folders("movie-collab")] == ["movie-collab-0123456789",
                                                                    "movie-collab-aaaaaaaaaa"]


# ---------------------------------------------------------------- synthetic bench/results documents
MACHINE = {"cpu_count": 2, "cuda": None, "cpu": "", "threads": 2, "torch": "2.13.0+cpu"}


def _load_run(direct: float, served: float | None) -> dict:
    return {"requests": 8, "errors": 0 if served else 8, "direct_requests_per_s": direct,
            "served_requests_per_s": served or 0.0, "direct_mean_s": 1 / direct, "served_mean_s": served and 1 / served,
            "served_p50_s": served and 0.4, "served_p99_s": served and 1.2}


def _serve_load_doc() -> dict:
    """bench/serve_load.py's shape: 3 repeats with 4 clients; the last repeat's 1-client run answered nothing."""
    repeats = [{"4_clients": _load_run(d, s), "1_client": _load_run(2.0, one), "throughput_ratio": s / d,
                "latency_ratio_1_client": one and 2.0 / one}
               for d, s, one in ((3.0, 3.1, 1.9), (2.0, 2.2, 2.0), (4.0, 3.8, None))]
    return {"benchmark": "serve_load", "machine": MACHINE,
            "config": {"backbone": "b", "clients": 4, "requests": 8, "repeats": 3}, "repeats": repeats,
            "target": {"min_throughput_ratio": 0.95, "median_throughput_ratio": 1.0, "max_latency_ratio_1_client": 1.1}}


def _many_adapters_doc() -> dict:
    run = {"requests_per_s": 2.0, "p50_s": 1.5, "p99_s": 3.0, "sent": 12, "errors": 0}
    return {"benchmark": "many_adapters", "machine": MACHINE,
            "config": {"adapters": 1000, "resident_cap": 16, "alpha": 1.0, "clients": 4, "requests": 12},
            "registration_ms_per_adapter": 50.0, "one_adapter": run,
            "many_adapters": {**run, "requests_per_s": 1.7, "distinct_adapters": 9},
            "engine_load": {"adapters": 20, "load_ms": {"mean": 30.0}, "verify_ms": {"mean": 12.0},
                            "unload_ms": {"mean": 0.2}}, "ratio": 0.85, "target_ratio": 0.8}


def _quant_doc(torchao: dict | None) -> dict:
    variant = {"prompts_per_s": 4.0}
    backends = {n: {"bare": variant, "lora": variant} for n in ("fp32", "bitsandbytes", "torch-int8")}
    backends["quantize_dynamic"] = {"bare": variant}
    if torchao is not None:
        backends["torchao"] = torchao
    return {"benchmark": "quant_backends", "backends": backends, "target_ratio": 1.5,
            "config": {"timed_prompts": 16, "mean_prompt_tokens": 229.0, "batch_size": 8, "repeats": 3}}


def _bar_counts(fig) -> list[int]:
    return [sum(len(c) for c in ax.containers if isinstance(c, BarContainer)) for ax in fig.axes]


def test_serve_load_panels_draw_each_repeats_ratio_against_the_per_repeat_targets(tmp_path):
    """(was: absolute bars against lines at the median direct run, so a repeat meeting its own ratio target could
    read as missing it, and the throughput line was labelled with the per-repeat minimum as if it were the median)"""
    throughput, latency = bench.PANELS["serve_load"](_serve_load_doc())
    assert throughput.categories == latency.categories == ("repeat 1", "repeat 2", "repeat 3")
    assert throughput.series[""] == pytest.approx((3.1 / 3.0, 2.2 / 2.0, 3.8 / 4.0))
    assert throughput.target == 0.95 and throughput.target_label == (  # the median's verdict said too (was: only the
        "target: each repeat ≥ 0.95× (the line), their median ≥ 1× (it is 1.033: met)")  # line, which a missed one passes)
    missed = _serve_load_doc()
    for rep in missed["repeats"]:
        rep["throughput_ratio"] = 0.97
    assert bench.PANELS["serve_load"](missed)[0].target_label.endswith("(it is 0.970: missed)")
    assert latency.target == 1.1 and latency.series[""][2] is None
    fig = bench.plot_bench([throughput, latency], tmp_path / "s.png")
    assert _is_png(tmp_path / "s.png") and _bar_counts(fig) == [3, 2]


def test_the_mixed_batch_panel_judges_the_median_paired_ratio_the_benchmark_judges():
    """The bars are each arm's median, which can clear the line while the paired ratios the target is on do not."""
    doc = {"config": {"batch_size": 8, "adapters": 4, "data": "d"}, "single_adapter_prompts_per_s": 1.0,
           "mixed_4_adapter_prompts_per_s": 0.95, "ratio": 0.88, "target_ratio": 0.9}
    (panel,) = bench.PANELS["mixed_batch"](doc)
    assert panel.series[""] == (1.0, 0.95) and "(it is 0.880: missed)" in panel.target_label


def test_the_switch_panels_judge_the_request_and_show_the_selection_without_a_target():
    """(was: the target, ≥ 15×, was on the selection alone: a dict lookup against peft's walk over every layer, a
    ratio no change could bring under it)"""
    row = {"targets": ["q_proj", "v_proj"], "peft_request_ms": 536.0, "engine_request_ms": 552.0,
           "peft_set_adapter_ms": 4.4, "engine_switch_ms": 0.003, "request_ratio": 0.97}
    doc = {"config": {"adapters": 4, "request_batch": 2}, "rows": [row], "ratio": 0.97, "target_ratio": 1.0}
    request, selection = bench.PANELS["swap_latency"](doc)
    assert request.series["adaptrec engine"] == (552.0,) and "it is 0.97×: missed" in request.title
    assert selection.log and "no target" in selection.title and selection.target is None


def test_many_adapters_panels_draw_throughput_latency_and_log_scale_costs(tmp_path):
    panels = bench.PANELS["many_adapters"](_many_adapters_doc())
    assert [p.bars for p in panels] == [2, 4, 4] and panels[0].target == pytest.approx(1.6)
    assert panels[2].log and panels[2].series[""] == (50.0, 30.0, 12.0, 0.2)
    fig = bench.plot_bench(panels, tmp_path / "m.png")
    assert _is_png(tmp_path / "m.png") and fig.axes[2].get_xscale() == "log"


@pytest.mark.parametrize("torchao, categories, lora", [
    (None, 4, (4.0, 4.0, 4.0, None)),
    ({"bare": {"prompts_per_s": 6.0}, "lora": {"prompts_per_s": 5.5}}, 5, (4.0, 4.0, 4.0, 5.5, None)),
    ({"bare": {"prompts_per_s": 6.0}, "lora": {"skipped": "peft refused"}}, 5, (4.0, 4.0, 4.0, None, None)),
    ({"bare": {"skipped": "torchao not installed"}, "lora": {"skipped": "torchao not installed"}}, 4,
     (4.0, 4.0, 4.0, None)),
])
def test_quant_backends_panel_draws_torchao_only_where_measured(torchao, categories, lora):
    (panel,) = bench.PANELS["quant_backends"](_quant_doc(torchao))
    assert len(panel.categories) == categories and ("torchao int8" in panel.categories) == (categories == 5)
    assert panel.series["with LoRA"] == lora


def test_report_performance_figures_keep_missing_results_and_skip_table_only_regions(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import report

    results = tmp_path / "results"
    results.mkdir()
    (results / "serve_load.json").write_text(json.dumps(_serve_load_doc()))
    (results / "serve_soak.json").write_text(json.dumps({"benchmark": "serve_soak", "machine": MACHINE}))
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "BENCH_RESULTS", results)
    monkeypatch.setattr(report, "FIGURES", tmp_path / "figures")
    lines = report.performance_figures()
    assert "wrote figures/performance_serve_load.png from serve_load.json" in lines
    assert "kept figures/performance_many_adapters.png: no many_adapters.json under results yet" in lines
    assert not any("serve_soak" in line for line in lines)
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["performance_serve_load.png"]


def test_a_metric_without_a_ci_is_apart_from_nothing():
    """A CI not computed (one user) read as the value alone: a zero-width interval marked `*` (CIs apart) against
    any untuned row it differed from."""
    from adaptrec.plots.inputs import metric_value

    base = metric_value({"value": 0.5, "ci_low": 0.45, "ci_high": 0.55})
    lone = metric_value({"value": 0.7, "ci_low": None, "ci_high": None})
    direction = {"rows": [{"role": "untuned", "metrics": {"auc": base}}, {"role": "lora", "metrics": {"auc": lone}}]}
    diff, apart = transfer._differences(direction, ["auc"])
    assert diff[1, 0] == pytest.approx(0.2) and apart[1, 0] == 0
    from matplotlib.figure import Figure

    from adaptrec.plots.style import ci_yerr

    bars = Figure().subplots().errorbar([0], [lone["value"]], yerr=ci_yerr([lone["value"]], [lone["ci_low"]],
                                                                             [lone["ci_high"]]))
    segments = bars.lines[2][0].get_segments()  # no drawable bar: empty, or with NaN ends
    assert not any(seg.size and np.isfinite(seg).all() for seg in segments)
    assert any(seg.size for seg in Figure().subplots().errorbar([0], [base["value"]], yerr=ci_yerr(
        [base["value"]], [base["ci_low"]], [base["ci_high"]])).lines[2][0].get_segments())  # one with a CI: drawn


def test_api_plot_refuses_an_option_its_figure_does_not_take(tmp_path):
    """(was: a TypeError traceback; the drift figure took any option and ignored it)"""
    from adaptrec import api
    from adaptrec.errors import AdaptrecError

    with pytest.raises(AdaptrecError, match=r"^plot drift: no option 'title' \(it takes: none\)$"):
        api.plot("drift", [tmp_path / "r.json"], tmp_path / "d.png", title="X")
    with pytest.raises(AdaptrecError, match=r"^plot bench: no option 'bogus' \(it takes: title, subtitle\)$"):
        api.plot("bench", [tmp_path / "b.json"], tmp_path / "b.png", bogus=1)


def test_a_long_target_label_wraps_inside_the_figure(tmp_path):
    """(was: one legend line running off the right edge of docs/figures/performance_serving.png)"""
    label = "target: the median of the repeats' paired ratios >= 0.9x one adapter (it is 0.973: met); the bars are " \
            "each arm's median"
    for series in ({"": (1.16, 1.17)}, {"peft set_adapter": (1.0, 2.0), "adaptrec engine": (1.1, 2.1),
                                        "adaptrec engine, mixed": (1.2, 2.2)}):
        fig = bench.plot_bench([bench.BarPanel("mixed", "prompts/s", ("one", "mixed"), series, target=1.0,
                                               target_label=label)], tmp_path / "b.png")
        legend = fig.axes[0].get_legend()
        assert legend.get_texts()[0].get_text().replace("\n", " ") == label
        fig.canvas.draw()
        assert legend.get_window_extent().x1 <= fig.bbox.x1


def test_drift_markers_are_sized_relative_to_the_fullest_bin(tmp_path):
    """(was: 2 points² a case: a window of thousands drew inch-wide blobs over the curves)"""
    from adaptrec.plots.drift import plot_drift

    def window(counts: list[int]) -> dict:
        k = len(counts)
        return {"reliability": {"mean_score": [(i + 0.5) / k for i in range(k)], "like_rate": [0.5] * k,
                                "count": counts, "ece": 0.1}, "auc": {"adapter": _metric(0.6)}}

    report = {"domain": "movie", "adapter": "movie-lora:1", "before": window([500, 2000]), "after": window([1000, 4]),
              "change": {"psi": 0.1, "psi_p": 0.2, "ks": 0.1, "ks_p": 0.3, "ece_change": 0.0, "auc_change": 0.0}}
    fig = plot_drift(report, tmp_path / "d.png")
    sizes = [s for c in fig.axes[0].collections for s in c.get_sizes()]
    assert max(sizes) == pytest.approx(128) and min(sizes) == pytest.approx(8 + 120 * 4 / 2000)


def test_the_best_validation_star_skips_a_missing_value(tmp_path):
    """(was: a NaN first value won `max`, so the star was drawn nowhere and the best step went unmarked)"""
    rows = [{"step": s, "loss": 1.0, "val_auc": v} for s, v in ((1, float("nan")), (2, 0.6), (3, 0.7))]
    fig = curves.plot_curves({"run": rows}, tmp_path / "c.png")
    stars = [line for line in fig.axes[1].get_lines() if line.get_marker() == "*"]
    assert [(s.get_xdata()[0], s.get_ydata()[0]) for s in stars] == [(3, 0.7)]


def test_one_missing_cell_keeps_the_heat_map_s_colour_scale(tmp_path):
    """(was: a NaN made the limit NaN, so every colour fell back to ±0.1 and saturated)"""
    direction = _direction("arts", "office")
    direction["rows"][2]["metrics"]["auc"] = {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    fig = transfer.plot_transfer([direction], tmp_path / "t.png")
    assert fig.axes[0].get_images()[0].get_clim() == pytest.approx((-0.3, 0.3))


def test_shots_sit_on_a_log_axis(tmp_path):
    """(was: evenly spaced categories under a "log scale" label: 16, 32 and 256 one step apart each)"""
    runs = [{**_grid_row("movie", "lora", n, 0), "kind": "lora"} for n in (16, 32, 256)]
    fig = shots.plot_shots(runs, tmp_path / "s.png", reference={})
    assert list(fig.axes[0].get_xticks()) == [4, 5, 8]
    bad = tmp_path / "g.jsonl"
    bad.write_text(json.dumps(_grid_row("movie", "lora", 0, 0)) + "\n")
    with pytest.raises(ResultFileError, match="shots must be at least 1"):
        shots.read_grid(bad)
