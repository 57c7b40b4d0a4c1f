"""Run the `adaptrec` CLI in-process, as `main()` does for a user (errors become exit codes)."""

from __future__ import annotations

import sys

import pytest

from adaptrec.cli import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `adaptrec ARGS...`."""
    monkeypatch.setattr(sys, "argv", ["adaptrec", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err
