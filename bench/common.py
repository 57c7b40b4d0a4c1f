"""Shared bits of the benchmarks: argument defaults, timing, JSON output."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from adaptrec.atomic import write_json
from adaptrec.backbone import default_device, environment_summary, resolve_backend

RESULTS = Path(__file__).resolve().parent / "results"


def backend(quantization: str) -> str:
    """The kernels a default load of `quantization` runs on this machine (bitsandbytes, torch-int8, fp32...)."""
    return resolve_backend(quantization, default_device())


def report(name: str, payload: dict) -> Path:
    """Print the payload and write it to bench/results/<name>.json with the machine it ran on."""
    payload = {"benchmark": name, "machine": {**environment_summary(), "processor": platform.processor()}, **payload}
    out = RESULTS / f"{name}.json"
    write_json(out, payload)
    print(json.dumps(payload, indent=2))
    return out
