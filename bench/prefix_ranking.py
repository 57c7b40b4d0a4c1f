"""Shared-prefix ranking at C candidates: the history prefix run once per (user, adapter) vs C full prompts.

Data: amazon:office test users with at least 20 history items (cross-domain arts + office histories:
Amazon-length prompts); candidates are other users' target items. Baseline: the engine's plain path,
C full prompts in batches. Ours: `Engine.rank` (`scoring.prefix.PrefixRanker`), one prefix forward
then C suffixes from copies of its KV cache. One LoRA adapter (r=8, q_proj + v_proj, random weights).
One case per user, each with its own history, so every prefix is computed (no reuse across users; the count of
prefix forwards is recorded and checked). Also reports the largest score difference between the two paths.

    python bench/prefix_ranking.py [--quick] [--candidates 20] [--backbone PATH --quantization none]
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402
from serve_setup import QV, amazon_cases, backbone_and_registry, parser, random_adapters  # noqa: E402

from adaptrec import scripts
from adaptrec.errors import AdaptrecError
from adaptrec.scoring.prefix import common_prefix_length  # noqa: E402
from adaptrec.serve.engine import Engine, Limits  # noqa: E402


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--candidates", type=scripts.positive_int, default=20)
    p.add_argument("--users", type=scripts.positive_int, default=3)
    p.add_argument("--batch-size", type=scripts.positive_int, default=8)
    args = p.parse_args()
    backbone, registry = backbone_and_registry(args)
    (ref,) = random_adapters(backbone, registry, 1, QV)
    engine = Engine(backbone, registry, batch_size=args.batch_size, limits=Limits(max_prompt_tokens=2048))
    users = amazon_cases(1 if args.quick else args.users, min_history=20, distinct_users=True)
    pool = [c.target for c in amazon_cases(200)]
    full_s = prefix_s = 0.0
    diffs, prompt_tokens, prefix_tokens = [], [], []
    timed_users = {u.user_id for u in users}
    warm = next((c for c in amazon_cases(200, min_history=20) if c.user_id not in timed_users), None)
    if warm is None:
        raise AdaptrecError(f"--users {args.users}: no user with >= 20 history items is left to warm up on; take fewer")
    engine.logits([(ref, engine.prompt(warm))])  # warm-up of both paths (loads the adapter) on a user not timed
    engine.rank(warm, pool[:2], ref)
    warm_runs = engine.ranker.prefix_runs

    def full_path(user, cands):
        return engine.score([replace(user, target=t) for t in cands], ref)

    def prefix_path(user, cands):
        return engine.rank(user, cands, ref)

    def timed(path, user, cands) -> tuple[float, np.ndarray]:
        start = time.perf_counter()  # both paths: render, check the limits, tokenize, forward
        scores = path(user, cands)
        return time.perf_counter() - start, scores

    for u, user in enumerate(users):
        cands = [t for t in pool if t != user.target][u : u + args.candidates]
        order = (full_path, prefix_path) if u % 2 == 0 else (prefix_path, full_path)  # in turns
        done = {path: timed(path, user, cands) for path in order}
        (full_t, full), (prefix_t, cached) = done[full_path], done[prefix_path]
        full_s += full_t
        prefix_s += prefix_t
        diffs.append(float(np.abs(full - cached).max()))
        ids = [backbone.tokenizer(engine.prompt(replace(user, target=t))).input_ids for t in cands]
        prompt_tokens.append(float(np.mean([len(x) for x in ids])))
        prefix_tokens.append(common_prefix_length(ids))
    runs = engine.ranker.prefix_runs - warm_runs
    if runs != len(users):  # each user's prefix computed once: no reuse inflates the ratio
        raise AdaptrecError(f"{runs} prefix forwards for {len(users)} users: a prefix was reused")
    report("prefix_ranking", {
        "config": {"backbone": args.backbone, "quantization": args.quantization,
                   "backend": backend(args.quantization), "candidates": args.candidates,
                   "users": len(users), "batch_size": args.batch_size, "adapter": QV,
                   "data": "amazon:office:test, users with >= 20 history items",
                   "mean_prompt_tokens": float(np.mean(prompt_tokens)), "mean_prefix_tokens": float(np.mean(prefix_tokens))},
        "prefix_forwards": runs, "order": "alternating per user, both paths warmed up on another user",
        "full_prompts_s": full_s, "shared_prefix_s": prefix_s, "max_abs_score_diff": max(diffs),
        "ratio": full_s / prefix_s, "target_ratio": 5.0,
    }, quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
