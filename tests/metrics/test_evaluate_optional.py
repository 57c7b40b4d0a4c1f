"""`evaluate` is the optional extra `metrics`: only `adaptrec.metrics.evaluate_modules` needs it, and says so."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from adaptrec.errors import MissingOptionalPackage

WRAPPERS = "adaptrec.metrics.evaluate_modules"


def test_the_wrappers_name_the_extra_when_evaluate_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "evaluate", None)  # `import evaluate` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, WRAPPERS, raising=False)
    with pytest.raises(MissingOptionalPackage, match=r"pip install 'adaptrec\[metrics\]'") as e:
        __import__(WRAPPERS)
    assert "\n" not in str(e.value)


def test_no_other_module_needs_evaluate_to_import():
    """Every adaptrec module but the wrappers imports with `evaluate` absent (a fresh process, so nothing is cached)."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        sys.modules["evaluate"] = None
        import adaptrec
        for info in pkgutil.walk_packages(adaptrec.__path__, "adaptrec.",
                                          onerror=lambda name: print(name, "did not import")):
            if info.name != {WRAPPERS!r}:
                try:
                    importlib.import_module(info.name)
                except ImportError as e:
                    if "evaluate" in str(e):
                        print(info.name, e)
        assert sys.modules["evaluate"] is None
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
