"""The Ray Data engine on a local 2-CPU Ray: the same rows as the single process, row for row (one Ray session)."""

from __future__ import annotations

import numpy as np
import pytest
from batch_helpers import data_file, engine_options, row_ids, row_scores
from router_helpers import device_atol, register_random

import adaptrec
from adaptrec.batch import read_predictions
from adaptrec.registry import Registry

ray = pytest.importorskip("ray")
LORA = {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def test_ray_actors_score_like_one_process(tiny_model_dir, tmp_path):
    data = data_file(tmp_path)
    ref = register_random(tiny_model_dir, Registry(), "movie-lora", LORA, seed=3, domain="movie").ref
    opts = dict(data=data, chunk_size=4, **engine_options(tiny_model_dir))
    local = read_predictions(adaptrec.write_predictions(ref, out=tmp_path / "local.jsonl", cache=False, **opts).path)
    ray.init(num_cpus=2, include_dashboard=False)
    try:  # the score cache on (was: refused, its connection made on the actor's constructor thread)
        result = adaptrec.write_predictions(ref, out=tmp_path / "ray.parquet", engine="ray", actors=2, **opts)
        assert ray.is_initialized()  # a Ray the caller started is left running
    finally:
        ray.shutdown()
    rows = read_predictions(result.path)
    assert result.n == len(local) and result.prompts_per_s is None
    assert row_ids(rows) == row_ids(local)
    np.testing.assert_allclose(row_scores(rows), row_scores(local), atol=device_atol(1e-5))
