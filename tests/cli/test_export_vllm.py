"""`adaptrec export ADAPTER --to vllm --out DIR`: a checked LoRA folder for vLLM, or one line saying why not."""

from __future__ import annotations

import json

import pytest
from cli_runner import run_cli
from router_helpers import register_random

from adaptrec.adapters.vllm import check_vllm_lora
from adaptrec.registry import Registry


def _export(monkeypatch, capsys, ref: str, out) -> tuple[int, str, str]:
    return run_cli(monkeypatch, capsys, "export", ref, "--to", "vllm", "--out", str(out))


def _one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_registered_lora_is_copied_after_checking(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from adaptrec.config import RECIPES_DIR

    recipe = (RECIPES_DIR / "movie-lora.yaml").read_text() + "# --set data.max_prompt_tokens=300\n"
    rec = register_random(tiny_model_dir, Registry(), "movie-lora", {"type": "lora", "r": 4}, seed=1,
                          recipe_text=recipe)
    out = tmp_path / "vllm" / "movie"
    code, stdout, err = _export(monkeypatch, capsys, "movie-lora", out)
    assert code == 0, err
    assert "--max-lora-rank 8" in stdout and f"--lora-modules movie-lora={out}" in stdout
    assert "render its requests' prompts with template 'tallrec', cut to 300 tokens" in stdout  # (was: unsaid)
    assert check_vllm_lora(out) == [] and check_vllm_lora(rec.path) == []  # the registry folder already is one
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / name).read_bytes() == (rec.path / name).read_bytes()
    line = _one_line_error(*_export(monkeypatch, capsys, "movie-lora", out)[::2])
    assert "already exists" in line
    code, stdout, err = run_cli(monkeypatch, capsys, "export", "movie-lora", "--to", "vllm", "--out",
                                str(tmp_path / "again"), "--json")  # was: text only
    assert code == 0 and json.loads(stdout) == {"path": str(tmp_path / "again"), "rank": 4, "max_lora_rank": 8,
                                                "prompt": {"template": "tallrec", "max_prompt_tokens": 300}}


def test_prefix_tuning_is_refused_in_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    register_random(tiny_model_dir, Registry(), "movie-prefix", {"type": "prefix", "num_virtual_tokens": 2,
                                                                  "init": "random"}, seed=2)
    out = tmp_path / "out"
    line = _one_line_error(*_export(monkeypatch, capsys, "movie-prefix", out)[::2])
    assert "movie-prefix:1 is a prefix-tuning adapter" in line and "LoRA adapters only" in line
    assert not out.exists()


def test_a_tampered_registry_folder_is_refused(tiny_model_dir, tmp_path, monkeypatch, capsys):
    rec = register_random(tiny_model_dir, Registry(), "movie-lora", {"type": "lora", "r": 2}, seed=3)
    config = rec.path / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": 2', '"r": 3'))
    out = tmp_path / "out"
    line = _one_line_error(*_export(monkeypatch, capsys, "movie-lora", out)[::2])
    assert "sha256" in line and not out.exists()


@pytest.mark.parametrize("args", [["--to", "vllm"], ["--to", "tgi", "--out", "x"],
                                  ["--to", "vllm", "--out", "x", "--to-lora"], []])
def test_bad_option_combinations_are_one_line_errors(monkeypatch, capsys, args):
    line = _one_line_error(*run_cli(monkeypatch, capsys, "export", "movie-lora", *args)[::2])
    assert "--to" in line
