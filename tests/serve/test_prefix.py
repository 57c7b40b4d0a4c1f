"""Shared-prefix ranking: same scores as full prompts, the prefix runs once, the cached prefix is never mutated."""

from __future__ import annotations

import numpy as np
import pytest
from router_helpers import fresh_backbone
from serve_helpers import candidates, make_registry, user_case

from adaptrec.scoring.prefix import common_prefix_length
from adaptrec.scoring.variants import component_scores
from adaptrec.serve.engine import Engine, LimitExceeded, Limits


def test_common_prefix_leaves_every_sequence_a_token():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[7, 1], [8, 1]]) == 0


@pytest.fixture(scope="module", params=["none", "8bit"])
def quantization(request) -> str:
    """fp32, and the CPU int8 backend (per-token activation scales: the cached prefix agrees there too)."""
    return request.param


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory, quantization):
    registry = make_registry(tiny_model_dir, tmp_path_factory.mktemp("prefix-home"), quantization)
    user = user_case(9)
    cands = candidates(user, 7)
    plain = component_scores(fresh_backbone(tiny_model_dir, quantization), registry, ["arts-lora", "office-lora", "pre"],
                             cands, progress=False)
    return registry, user, cands, plain


def test_prefix_cached_ranking_agrees_with_full_prompts(tiny_model_dir, setup, quantization):
    registry, user, cands, plain = setup
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry, batch_size=3)  # 7 candidates: 3 suffix batches
    ranker = engine.ranker
    targets = [c.target for c in cands]
    first = engine.rank(user, targets, "arts-lora")
    np.testing.assert_allclose(first, plain[0], atol=1e-4)
    assert np.ptp(plain[0]) > 1e-4  # candidates really score differently
    np.testing.assert_allclose(engine.rank(user, targets, "office-lora"), plain[1], atol=1e-4)
    assert ranker.prefix_runs == 2  # one prefix per (user, adapter)
    again = engine.rank(user, targets[::-1], "arts-lora")  # the cached prefix was copied, never extended in place
    np.testing.assert_allclose(again, first[::-1], atol=1e-6)
    assert ranker.prefix_runs == 2


def test_prefix_tuned_adapters_take_the_plain_path(tiny_model_dir, setup, quantization):
    registry, user, cands, plain = setup
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry)
    np.testing.assert_allclose(engine.rank(user, [c.target for c in cands], "pre"), plain[2], atol=1e-4)
    assert engine.ranker.prefix_runs == 0


def test_candidate_limit(tiny_model_dir, setup, quantization):
    registry, user, _, _ = setup
    engine = Engine(fresh_backbone(tiny_model_dir, quantization), registry, limits=Limits(max_candidates=2))
    with pytest.raises(LimitExceeded, match="3 candidates"):
        engine.rank(user, ['"a"', '"b"', '"c"'], "arts-lora")
