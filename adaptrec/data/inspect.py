"""A human-readable summary of a SPEC: sample prompts, label balance, history and token lengths."""

from __future__ import annotations

import copy
from statistics import median
from typing import Any, Sequence

from ..errors import ConfigError
from .prompts import ITEM_TOKEN, MATCH_TOKEN, USER_TOKEN, prompt_tokens, render_prompt
from .spec import DataSet, load_spec


def _stats(values: Sequence[int]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"min {ordered[0]} / median {median(ordered):g} / p95 {p95} / max {ordered[-1]}"


def check_soft_tokens(template: str, user_token: bool, match_token: bool) -> None:
    """`ConfigError` when the user or match token is asked for with a template that renders no soft tokens."""
    if (user_token or match_token) and not template.endswith("-items"):
        raise ConfigError("the user and match tokens belong to collab adapters: use an -items template, "
                          f"not {template!r}")


def inspect_spec(spec: str | DataSet, tokenizer: Any = None, template: str = "tallrec", n_show: int = 1,
                 user_token: bool = False, match_token: bool = False) -> str:
    """Report on `spec` (a SPEC or an already loaded DataSet): `n_show` rendered prompts, label balance,
    history-length stats, and prompt token-length stats (min/median/p95/max) when a `tokenizer` is given. An
    `-items` template renders the soft tokens a collab adapter adds: one per item id, and `<user>` / `<match>`
    with `user_token` / `match_token` (the adapter settings of those names)."""
    check_soft_tokens(template, user_token, match_token)
    ds = load_spec(spec) if isinstance(spec, str) else spec
    spec = ds.spec
    cases = ds.cases
    lines = [f"{spec}: {len(cases)} cases, {len({c.user_id for c in cases})} users, fingerprint {ds.fingerprint[:12]}"]
    if not cases:
        return lines[0]
    yes = sum(c.label == 1 for c in cases)
    no = sum(c.label == 0 for c in cases)
    lines.append(f"labels: {yes} Yes ({yes / len(cases):.1%}), {no} No, {len(cases) - yes - no} unlabelled")
    lines.append(f"history length: {_stats([len(c.history) for c in cases])}")
    if tokenizer is not None and template.endswith("-items"):  # the tokens a collab adapter adds: one per item id
        tokenizer = copy.deepcopy(tokenizer)
        ids = {i for c in cases for i in (c.target_id, *(h.item_id for h in c.history)) if i is not None}
        tokenizer.add_tokens([ITEM_TOKEN.format(i) for i in sorted(ids)]
                             + [USER_TOKEN] * user_token + [MATCH_TOKEN] * match_token)
    if tokenizer is not None:
        lengths = [prompt_tokens(tokenizer, render_prompt(c, template, tokenizer), template) for c in cases]
        lines.append(f"prompt tokens ({template}): {_stats(lengths)}")
    for case in cases[:n_show]:
        lines.append(f"--- prompt for user {case.user_id} (label {case.label}) ---")
        lines.append(render_prompt(case, template, tokenizer))
    return "\n".join(lines)
