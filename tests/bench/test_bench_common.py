"""bench/common.py: every results file says what ran (machine, device, dtype, package versions); counts are >= 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from adaptrec import backbone

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import common  # noqa: E402


def test_a_results_file_records_the_machine_device_dtype_and_package_versions(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    doc = json.loads(common.report("x", {"config": {"backend": "torch-int8"}, "ratio": 1.0}).read_text())
    assert {"cpu", "arch", "device", "torch", "threads", "cpu_count"} <= set(doc["machine"])
    assert {"adaptrec", "torch", "transformers", "peft"} <= set(doc["software"]) and doc["dtype"] == "float32"
    # when, and on which commit: "Measured <date>" in the docs is checkable, and a number predating a change shows
    assert doc["measured_at"][:2] == "20" and len(doc["git_commit"]) == 40 and isinstance(doc["git_dirty"], bool)
    with pytest.raises(ValueError, match="names no backend"):
        common.report("y", {"config": {}})
    assert not (tmp_path / "y.json").exists()


def test_a_benchmark_that_pins_its_device_records_that_device(tmp_path, monkeypatch, capsys):
    """(was: `default_device()`, so CPU-only kernels timed on a GPU host were recorded as run on cuda)"""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(backbone, "default_device", lambda: "cuda")
    pinned = json.loads(common.report("x", {"config": {"backend": "torch-int8"}}, device="cpu").read_text())
    assert pinned["machine"]["device"] == "cpu"
    assert json.loads(common.report("y", {"config": {"backend": "torch-int8"}}).read_text())["machine"]["device"] == "cuda"

    import ast  # and the CPU-only benchmark pins it (was: the keyword could go without a test noticing)

    source = (Path(common.__file__).parent / "quant_backends.py").read_text()
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "report"]
    assert calls and all(any(k.arg == "device" and getattr(k.value, "value", None) == "cpu" for k in c.keywords)
                         for c in calls)


def test_a_smoke_run_never_replaces_the_result_the_docs_render(tmp_path, monkeypatch, capsys):
    """(was: `--quick` wrote bench/results/<name>.json like a full run, unmarked)"""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    full = common.report("x", {"config": {"backend": "torch-int8"}, "ratio": 2.0})
    quick = common.report("x", {"config": {"backend": "torch-int8"}, "ratio": 9.0}, quick=True)
    assert quick.name == "x.quick.json" and json.loads(quick.read_text())["quick"] is True
    assert json.loads(full.read_text())["ratio"] == 2.0 and "quick" not in json.loads(full.read_text())


def test_every_benchmark_takes_quick_and_passes_it_on():
    """A smoke run (a tiny `--backbone`, `--quick`) never lands where the docs read (was: batch_ray, quant_backends
    and train_throughput had no `--quick`, so a smoke run overwrote the rendered result)."""
    import ast

    for script in sorted(Path(common.__file__).parent.glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "report"]
        if not calls or script.name == "common.py":
            continue
        assert all(any(k.arg == "quick" for k in c.keywords) for c in calls), script.name
