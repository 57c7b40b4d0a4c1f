"""Batch scoring throughput: one process vs a Ray Data actor pool of 1 and 2 actors, on the same cases.

Every engine runs `adaptrec.write_predictions` end to end on the same seeded subset of `--data` (untuned
backbone, score cache off, JSONL output, the same `--chunk-size`): the single process loads the backbone and
scores with torch's default threads (the baseline of every ratio), then again with one thread; each Ray actor
loads its own backbone and scores with one thread. Rows/s = rows over the wall time of the call (backbone loads
and actor start-up included; `ray.init` is timed apart, once). Also reports the largest |ΔP(yes)| between each
run and the baseline (0: the same chunks give the same batches on every engine).

    python bench/batch_ray.py [--cases 100] [--actors 1 2] [--quick] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow
import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402

import adaptrec  # noqa: E402
from adaptrec import scripts
from adaptrec.backbone import EMBEDDED, library_versions, load_backbone  # noqa: E402
from adaptrec.batch import read_predictions  # noqa: E402


def timed_run(out: Path, **options) -> tuple[float, np.ndarray]:
    """(seconds, P(yes) per row) of one `write_predictions` call."""
    start = time.perf_counter()
    result = adaptrec.write_predictions(None, out=out, cache=False, **options)
    seconds = time.perf_counter() - start
    return seconds, np.array([r["p_yes"] for r in read_predictions(result.path)])


def row(engine: str, actors: int | None, threads: int, seconds: float, p_yes: np.ndarray, base: tuple) -> dict:
    """One result row; `base` is the baseline's (seconds, P(yes))."""
    return {"engine": engine, "actors": actors, "threads": threads, "seconds": seconds,
            "rows_per_s": len(p_yes) / seconds, "ratio": base[0] / seconds,
            "max_abs_p_yes_diff": float(np.abs(p_yes - base[1]).max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default=EMBEDDED, help="embedded:smollm2 (8-bit) or a model folder")
    p.add_argument("--quantization", choices=("8bit", "none"), default="8bit")
    p.add_argument("--data", default="tallrec:movie:test")
    p.add_argument("--cases", type=scripts.positive_int, default=100, help="seeded label-stratified subset of --data")
    p.add_argument("--actors", type=scripts.positive_int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=scripts.positive_int, default=8)
    p.add_argument("--chunk-size", type=scripts.positive_int, default=32)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (16 cases, 1 actor), written to bench/results/"
                   "batch_ray.quick.json, never the file docs render")
    args = p.parse_args()
    if args.quick:
        args.cases, args.actors = min(args.cases, 16), [1]
    options = dict(data=args.data, limit=args.cases, backbone=args.backbone, quantization=args.quantization,
                   batch_size=args.batch_size, chunk_size=args.chunk_size)
    out = Path(tempfile.mkdtemp(prefix="adaptrec-bench-"))
    start = time.perf_counter()
    load_backbone(args.backbone, args.quantization)  # converts an embedded backbone once, before any timing
    load_s = time.perf_counter() - start
    threads = torch.get_num_threads()
    timed_run(out / "warm.jsonl", **{**options, "limit": 8})  # untimed: the first forward and the data's hash
    base = timed_run(out / "local.jsonl", **options)
    torch.set_num_threads(1)
    rows = [row("single process", None, threads, *base, base),
            row("single process", None, 1, *timed_run(out / "local-1.jsonl", **options), base)]
    torch.set_num_threads(threads)
    start = time.perf_counter()
    ray.init(include_dashboard=False)
    init_s = time.perf_counter() - start
    try:
        for n in args.actors:
            rows.append(row("ray", n, 1, *timed_run(out / f"ray-{n}.jsonl", engine="ray", actors=n, **options), base))
    finally:
        ray.shutdown()
    report("batch_ray", {
        "config": {"backbone": args.backbone, "quantization": args.quantization, "backend": backend(args.quantization),
                   "data": f"{args.data}, seeded label-stratified subset of {len(base[1])}", "untuned": True,
                   "batch_size": args.batch_size, "chunk_size": args.chunk_size, "score_cache": False},
        "versions": {**library_versions(), "ray": ray.__version__, "pyarrow": pyarrow.__version__},
        "backbone_load_s": load_s, "ray_init_s": init_s, "rows": rows,
    }, quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
