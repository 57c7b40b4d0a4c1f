"""Scoring on a Ray Data actor pool: `map_batches` with a callable class whose actors each load the backbone and the
adapter once (one torch thread each) and score whole chunks of cases, cut as the local engine cuts them, so both
engines put the same prompts in the same batches and write the same rows; the driver streams the scored rows into
one output file (JSONL or Parquet) through `PredictionWriter`.

`ray.init(address=$RAY_ADDRESS)`: unset, a local Ray on every core of this machine; set, that cluster. The
driver builds the cases (`load_spec`); actors need adaptrec installed and, at `ADAPTREC_HOME`, the registry
that holds the adapter (a shared folder on a cluster).
"""

from __future__ import annotations

import math
import os
import pickle
import time
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import Sequence

import pyarrow as pa
import torch

from ..backbone import INT8_BACKEND_ENV, backbone_fingerprint, load_backbone
from ..data.records import Case
from ..errors import AdaptrecError, MissingOptionalPackage, command_line, on_command_line, option
from ..evaluation import Predictions
from ..registry import Registry
from ..score_cache import ScoreCache
from .formats import SCHEMA, PredictionWriter
from .stream import CHUNK_SIZE, adapter_scorer, add_counts, note_title_only, prediction_rows, title_only_items

CHUNKS_PER_ACTOR = 4  # the automatic chunk size gives each actor about this many chunks, to keep all busy


def require_ray() -> ModuleType:
    """The `ray` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name in ("ray", "ray.data"):  # not installed, or without `data`
            raise MissingOptionalPackage(f"{option('engine', 'ray')} needs Ray Data: "
                                         "pip install 'adaptrec[ray]' (in a checkout: make install)") from None
        why = str(e).splitlines()[0] if str(e) else type(e).__name__  # (a library it needs, built for another one)
        raise MissingOptionalPackage(f"{option('engine', 'ray')}: Ray is installed but does not import ({why})") from None
    return ray


# rows, or one row naming the actor's AdaptrecError; a chunk's first row carries its `title_only_items`
ACTOR_SCHEMA = SCHEMA.append(pa.field("error", pa.string())).append(pa.field("title_only", pa.list_(pa.int64())))


class ScoreActor:
    """One Ray actor: the backbone with the adapter active, scoring pickled chunks of (position, case) pairs.

    An `AdaptrecError` (in setting up or scoring) comes back as a row with its message in `error`: raised, Ray
    would wrap it in its own exceptions (with a remote traceback) and lose its type on the way to the driver. `flags`:
    the driver runs under the command line, so messages spell options as its flags."""

    def __init__(self, backbone: str, quantization: str, home: str, adapter: str | None, cache: bool,
                 scorer_options: dict, flags: bool = False, int8_backend: str | None = None,
                 expected: str | None = None):
        os.environ["ADAPTREC_HOME"] = home  # the driver's registry, score cache and converted backbones
        torch.set_num_threads(1)
        self.spelling = command_line if flags else nullcontext
        self.failure: str | None = None
        try:
            with self.spelling():
                loaded = load_backbone(backbone, quantization, int8_backend=int8_backend)
                if expected is not None and loaded.fingerprint.exact != expected:
                    raise AdaptrecError(f"a Ray actor loaded {backbone} as another build than the one the driver "
                                        "checked (a Hub id's newer revision, or a folder that differs on its node): "
                                        f"give {option('backbone', flag='--backbone')} a folder every node shares")
                self.scorer = adapter_scorer(loaded, Registry(Path(home)), adapter,
                                             cache=ScoreCache.default() if cache else None, progress=False,
                                             **scorer_options)
        except AdaptrecError as e:
            self.failure = str(e)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        try:
            with self.spelling():
                for blob in batch["chunk"].to_pylist() if self.failure is None else ():
                    chunk = pickle.loads(blob)
                    shown = self.scorer.fitted([c for _, c in chunk])
                    scored = prediction_rows(chunk, self.scorer.logits_for_prompts(self.scorer.rendered(shown)))
                    if scored:
                        scored[0]["title_only"] = title_only_items(self.scorer, shown)
                    rows += scored
        except AdaptrecError as e:
            self.failure = str(e)
        if self.failure is not None:
            rows = [{"error": self.failure}]
        return pa.Table.from_pylist(rows, schema=ACTOR_SCHEMA)


def checked_rows(table: pa.Table) -> tuple[list[dict], list[int] | None]:
    """The prediction rows of an actor's table and their `title_only_items` summed; the actor's error, raised here,
    if it sent one."""
    failures = [e for e in table.column("error").to_pylist() if e is not None]
    if failures:
        raise AdaptrecError(failures[0])
    counted = None
    for counts in table.column("title_only").to_pylist():
        counted = add_counts(counted, counts)
    return table.drop_columns(["error", "title_only"]).to_pylist(), counted


def _init_ray(ray: ModuleType) -> bool:
    """Connect to `$RAY_ADDRESS` (or start a local Ray) unless connected already; True if this call did."""
    if ray.is_initialized():
        return False
    ray.init(address=os.environ.get("RAY_ADDRESS"))
    return True


def ray_predictions(backbone: str, quantization: str, registry: Registry, adapter: str | None,
                    cases: Sequence[tuple[int, Case]], out: Path, *, actors: int | None = None, cache: bool = True,
                    chunk_size: int | None = None, meta: dict | None = None, **scorer_options) -> Predictions:
    """Score (position, case) pairs on `actors` Ray actors (default: one per CPU Ray sees) and write them to `out`
    in case order. `chunk_size`: cases per unit of work (default: `CHUNK_SIZE`, smaller when needed
    for about `CHUNKS_PER_ACTOR` chunks per actor). A Ray started here is shut down at the end; one already running is
    left as it was."""
    ray = require_ray()
    fingerprint = backbone_fingerprint(backbone, quantization)  # a bad backbone fails here, before any actor starts
    if adapter:  # so do an unknown ref, changed files and another base; every actor loads this exact version
        adapter = registry.load_verified(adapter, fingerprint).ref
    if not cases:  # e.g. a shard past the last case: an empty file, no Ray needed
        with PredictionWriter(Path(out), meta):
            return Predictions(Path(out), 0, None)
    started = _init_ray(ray)
    context = ray.data.DataContext.get_current()
    preserve = context.execution_options.preserve_order
    try:
        context.execution_options.preserve_order = True  # rows come back in case order, as the local engine's
        actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        chunk_size = chunk_size or max(1, min(CHUNK_SIZE, math.ceil(len(cases) / (actors * CHUNKS_PER_ACTOR))))
        meta = {**(meta or {}), "chunk_size": chunk_size}  # the size the chunks were cut to
        start = time.perf_counter()
        chunks = [{"chunk": pickle.dumps(cases[b : b + chunk_size])} for b in range(0, len(cases), chunk_size)]
        pool = ray.data.ActorPoolStrategy(size=min(actors, len(chunks)))  # an actor per chunk at most
        local = Path(backbone).expanduser()  # a relative folder names the driver's, not an actor's working folder
        setup = dict(backbone=str(local.resolve()) if local.is_dir() else backbone, quantization=quantization,
                     home=str(registry.home), adapter=adapter, cache=cache, scorer_options=scorer_options,
                     flags=on_command_line(), int8_backend=os.environ.get(INT8_BACKEND_ENV),  # the driver's kernels
                     expected=fingerprint.exact)  # every actor scores on the build the driver checked
        scored = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map_batches(
            ScoreActor, batch_size=1, batch_format="pyarrow", compute=pool, num_cpus=1, fn_constructor_kwargs=setup)
        counted = None
        with PredictionWriter(Path(out), meta) as writer:
            for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows, counts = checked_rows(table)
                writer.write(rows)
                counted = add_counts(counted, counts)
            note_title_only(writer, counted)  # in the meta, written when the file is complete
        return Predictions(Path(out), writer.n, None, rows_per_s=writer.n / max(time.perf_counter() - start, 1e-9))
    finally:
        context.execution_options.preserve_order = preserve
        if started:
            ray.shutdown()
