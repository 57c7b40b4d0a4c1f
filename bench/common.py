"""Shared bits of the benchmarks: argument defaults, timing, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from adaptrec import scripts
from adaptrec.atomic import write_json
from adaptrec.backbone import default_device, load_dtype, resolve_backend

RESULTS = Path(__file__).resolve().parent / "results"


def sync() -> None:
    """Wait for the CUDA work queued so far, so a timed block ends when its kernels do (a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def backend(quantization: str) -> str:
    """The kernels a default load of `quantization` runs on this machine (bitsandbytes, torch-int8, fp32...)."""
    return resolve_backend(quantization, default_device())


STARTED = scripts.code_version(Path(__file__).resolve().parents[1])  # when the benchmark started, on which code


def report(name: str, payload: dict, device: str | None = None, quick: bool = False) -> Path:
    """Print the payload and write it to bench/results/<name>.json with the machine, device, dtype and package
    versions it ran on (the dtype from `config.backend`, which every benchmark names), when and on which commit it
    started. `device`: where it ran, for a benchmark that pins one (default: where a load goes when none is named).
    `quick`: a smoke run (`--quick`), written to <name>.quick.json and marked so: never the result docs render."""
    config = payload.get("config", {})
    if "backend" not in config:
        raise ValueError(f"bench {name}: config names no backend, so its results could not say what ran")
    payload = {"benchmark": name, **STARTED, "machine": scripts.machine(device), "software": scripts.software(),
               "dtype": str(load_dtype(config["backend"])).removeprefix("torch."), **({"quick": True} if quick else {}),
               **payload}
    out = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    write_json(out, payload)
    print(json.dumps(payload, indent=2))
    return out
