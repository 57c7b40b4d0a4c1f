"""The repository scripts' shared entry point and argparse types (adaptrec.scripts)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptrec import scripts
from adaptrec.errors import DataSpecError

REPO = Path(__file__).resolve().parents[1]


def test_counts_and_durations_refuse_zero():
    assert scripts.positive_int("3") == 3 and scripts.positive_float("0.5") == 0.5
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            scripts.positive_int(bad)
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            scripts.positive_float(bad)


def test_run_ends_an_adaptrec_error_with_one_line(capsys):
    def main() -> None:
        raise DataSpecError("no such data")

    with pytest.raises(SystemExit) as e:
        scripts.run(main)
    assert e.value.code == 2 and capsys.readouterr().err == "error: no such data\n"


def test_an_experiment_given_missing_data_says_so_in_one_line(tmp_path):
    """(was: a DataSpecError traceback)"""
    env = {**os.environ, "ADAPTREC_DATA": str(tmp_path / "none"), "ADAPTREC_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "amazon_encoders.py")], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: missing Amazon"), done.stderr


def test_only_code_changes_make_a_result_dirty(tmp_path):
    """A benchmark run after another found that one's result file uncommitted and marked its own result dirty,
    though the code was the commit's."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for rel in ("bench/results/x.json", "experiments/results/y.json", "docs/a.md", "adaptrec_code.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("0\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    for rel in ("bench/results/x.json", "experiments/results/y.json", "docs/a.md"):
        (tmp_path / rel).write_text("1\n")
    assert scripts.code_version(tmp_path)["git_dirty"] is False
    (tmp_path / "adaptrec_code.py").write_text("1\n")
    assert scripts.code_version(tmp_path)["git_dirty"] is True


def test_outside_a_checkout_no_commit_is_recorded(tmp_path):
    """An installed package under some other repository must not record that repository's commit."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
    inside = tmp_path / "lib" / "site-packages"
    inside.mkdir(parents=True)
    assert scripts.code_version(inside) | {"measured_at": None} == {"measured_at": None, "git_commit": None,
                                                                   "git_dirty": None}


def test_an_experiment_s_results_record_their_machine_packages_and_commit(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    import report

    page = tmp_path / "page.md"
    report.run_and_render(tmp_path / "r.json", page, lambda doc: f"{doc['n']}\n", lambda: {"n": 3})
    made = report.read_json(tmp_path / "r.json")["provenance"]
    assert {"cpu", "arch", "cpu_count", "threads", "device"} <= set(made["machine"])
    assert {"adaptrec", "torch", "transformers", "peft"} <= set(made["software"])
    assert len(made["git_commit"]) == 40 and isinstance(made["git_dirty"], bool) and page.read_text() == "3\n"
