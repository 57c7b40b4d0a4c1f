"""The built wheel, installed --no-deps into a fresh venv and run outside the checkout, ships its recipes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from persistent_home import PERSISTENT_HOME
from synthetic import write_tallrec_files

from adaptrec.config import RECIPES_DIR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The `adaptrec` script of a fresh venv holding only the wheel; its dependencies come from this venv."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a clean copy: an in-tree build would leave build/ behind, and could pick up stale files from it
    shutil.copytree(REPO / "adaptrec", src / "adaptrec", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("adaptrec-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # a plain path line: this venv's packages become importable, its editable adaptrec finder is not run
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "venv" / "bin" / "adaptrec"


def _run(script: Path, cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ADAPTREC_DATA", "PYTHONPATH")}
    return {**env, **extra}


def test_the_wheel_lists_and_shows_its_recipes(installed, tmp_path):
    out = _run(installed, tmp_path, _env(ADAPTREC_HOME=str(tmp_path / "home")), "recipes", "list")
    assert out.returncode == 0, out.stderr
    assert "movie-lora" in out.stdout.split() and "office-lora" in out.stdout.split()
    shown = _run(installed, tmp_path, _env(ADAPTREC_HOME=str(tmp_path / "home")), "recipes", "show", "movie-lora")
    assert shown.returncode == 0 and shown.stdout == (RECIPES_DIR / "movie-lora.yaml").read_text()


@pytest.mark.integration
def test_dry_run_from_the_wheel_resolves_data_and_backbone_and_names_what_to_set(installed, tmp_path):
    missing = _run(installed, tmp_path, _env(ADAPTREC_HOME=str(PERSISTENT_HOME)), "train", "movie-lora", "--dry-run")
    assert missing.returncode == 2 and missing.stdout == ""
    (line,) = missing.stderr.splitlines()
    assert line.startswith("error: ") and "data.train: missing TALLRec file" in line and "$ADAPTREC_DATA" in line
    assert str(PERSISTENT_HOME / "data" / "tallrec") in line  # the wheel's default, not a guess from the cwd

    write_tallrec_files(tmp_path / "data" / "tallrec" / "movie", {"train": 80, "valid": 60, "test": 220})
    env = _env(ADAPTREC_HOME=str(PERSISTENT_HOME), ADAPTREC_DATA=str(tmp_path / "data"))
    plan = _run(installed, tmp_path, env, "train", "movie-lora", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "64 labelled cases (64 shots)" in plan.stdout and "200 cases" in plan.stdout
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in plan.stdout and "nothing trained" in plan.stdout
