"""A one-minute soak on the tiny model (bench/serve_soak.py runs the same for ten minutes on SmolLM2): mixed load,
adapter churn and a restart midway; every accepted request gets an answer or an enveloped error, none is dropped."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from serve_helpers import make_registry, user_case

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from serve_soak import soak  # noqa: E402

SECONDS = 60


def test_a_minute_of_mixed_load_churn_and_a_restart_drops_nothing(tiny_model_dir, tmp_path):
    registry = make_registry(tiny_model_dir, tmp_path / "home")
    cases = [user_case(n, domain) for n in (2, 5, 9) for domain in ("arts", "office")]
    args = SimpleNamespace(backbone=str(tiny_model_dir), quantization="none")
    result = soak(args, registry, ["arts-lora", "office-lora", "ada", "pre"], cases, SECONDS)
    assert result["restarts"] == 1
    assert result["dropped"] == 0, result["transport_errors"]
    assert result["unenveloped"] == 0 and result["server_errors"] == 0, result["by_status"]
    assert result["internal_errors"] == [], result["internal_errors"]
    assert set(result["by_status"]) <= {200, 403, 404, 413}, result
    assert result["served"] - result["served_after_restart"] >= 1 and result["served_after_restart"] >= 1, result
