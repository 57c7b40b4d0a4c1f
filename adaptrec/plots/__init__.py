"""Figures of result files as PNGs (matplotlib on the Agg canvas, no torch): `adaptrec plot …` and the figures under
docs/figures/ (`python experiments/report.py figures`).

Each module draws one kind from plain data (`plot_*`: lists and dicts, returns the matplotlib Figure), reads its files
(`read_*`) and joins the two (`from_files(sources, out, **options)`), over the shared look in `style`:

    curves    learning curves from run folders' metrics.jsonl
    shots     test AUC against shots per adapter type, from the TALLRec grid's JSONL
    transfer  the cross-domain matrix as a heat map, from the cross-domain experiment's JSON
    bench     latency and throughput bars from bench/results/*.json
    drift     two windows' reliability curves and AUCs, from `adaptrec drift --json`'s report (also drawn by
              `adaptrec drift --plot`)
"""

from __future__ import annotations

from . import bench, curves, drift, shots, transfer

FIGURES = {"curves": curves.from_files, "shots": shots.from_files, "transfer": transfer.from_files,
           "bench": bench.from_files, "drift": drift.from_files}
