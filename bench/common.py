"""Shared bits of the benchmarks: argument defaults, timing, JSON output."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from adaptrec.atomic import write_json
from adaptrec.backbone import default_device, environment_summary, library_versions, load_dtype, resolve_backend

RESULTS = Path(__file__).resolve().parent / "results"
OPTIONAL = ("bitsandbytes", "torchao", "ray", "accelerate")  # recorded when installed: some benchmarks run on them


def sync() -> None:
    """Wait for the CUDA work queued so far, so a timed block ends when its kernels do (a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def backend(quantization: str) -> str:
    """The kernels a default load of `quantization` runs on this machine (bitsandbytes, torch-int8, fp32...)."""
    return resolve_backend(quantization, default_device())


def cpu_model() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software() -> dict[str, str]:
    """The versions of the packages that can change a benchmark's numbers."""
    optional = {}
    for package in OPTIONAL:
        try:
            optional[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {**library_versions(), **optional}


def code_version() -> dict:
    """When, and on which commit of this checkout (and whether it had uncommitted changes), a result was measured:
    what tells a number from before a change from one after it. Changes to results and docs do not count: a
    benchmark run after another has that one's result file to commit, not different code."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results", ":(exclude)docs")
    return {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": commit,
            "git_dirty": None if status is None else bool(status)}


STARTED = code_version()  # when the benchmark started, and on which code: a long run's checkout may change meanwhile


def report(name: str, payload: dict, device: str | None = None, quick: bool = False) -> Path:
    """Print the payload and write it to bench/results/<name>.json with the machine, device, dtype and package
    versions it ran on (the dtype from `config.backend`, which every benchmark names), when and on which commit it
    started. `device`: where it ran, for a benchmark that pins one (default: where a load goes when none is named).
    `quick`: a smoke run (`--quick`), written to <name>.quick.json and marked so: never the result docs render."""
    config = payload.get("config", {})
    if "backend" not in config:
        raise ValueError(f"bench {name}: config names no backend, so its results could not say what ran")
    machine = {**environment_summary(), "cpu": cpu_model(), "arch": platform.machine(),
               "device": device or default_device()}
    payload = {"benchmark": name, **STARTED, "machine": machine, "software": software(),
               "dtype": str(load_dtype(config["backend"])).removeprefix("torch."), **({"quick": True} if quick else {}),
               **payload}
    out = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    write_json(out, payload)
    print(json.dumps(payload, indent=2))
    return out
