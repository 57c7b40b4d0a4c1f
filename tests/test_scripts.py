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
