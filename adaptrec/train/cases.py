"""The data a recipe names: a SPEC loaded with the recipe's negatives and seed, its labelled cases few-shot drawn
like TALLRec; a bad SPEC, a missing file or too few cases is a ConfigError naming the recipe file and the key."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from ..config import Recipe
from ..data.prompts import has_item_token, prompt_tokens, render_prompt
from ..data.records import Case
from ..data.sampling import few_shot, stratified_subset
from ..data.spec import DataSet, load_spec, with_protocol
from ..errors import AdaptrecError, ConfigError
from ..fingerprint import digest

SOFT_TOKEN_ROOM = 6  # the target's item token, the match and user tokens, each with its space: tokens a bare -items
# prompt holds once a collab adapter has added them to the tokenizer


def digest_cases(cases: Sequence[Case]) -> str:
    """sha256 of `cases` in order (users, histories, targets, labels): what a resumed run must step through again."""
    return digest([[c.user_id, c.domain, c.noun, [[h.text, h.liked, h.item_id, h.domain] for h in c.history],
                    c.target, c.label, c.target_id] for c in cases])


@contextmanager
def naming_key(recipe: Recipe, key: str) -> Iterator[None]:
    """Turn a data error into a one-line ConfigError naming the recipe file and `key`."""
    try:
        yield
    except AdaptrecError as e:
        raise ConfigError(f"{recipe._source}: {key}: {e}") from None


def recipe_data(recipe: Recipe, spec: str, key: str, *, seed: int | None = None) -> DataSet:
    """Load `spec` (the recipe's `key`; `data.train|valid|test` in the form `data.protocol` asks for, a log's
    leave-one-out part named by the key), with `data.history_len`, `data.negatives_per_positive` and `seed`
    (default `data.seed`)."""
    d = recipe.data
    with naming_key(recipe, key):
        if key in ("data.train", "data.valid", "data.test"):  # not --data, teacher or extra data: those stay as given
            spec = with_protocol(spec, d.protocol, key.removeprefix("data."))
        return load_spec(spec, negatives_per_positive=d.negatives_per_positive, seed=d.seed if seed is None else seed,
                         history_len=d.history_len)


def recipe_cases(recipe: Recipe, spec: str, key: str, *, shots: int | None = None,
                 seed: int | None = None) -> tuple[list[Case], DataSet]:
    """The labelled cases of `spec`, few-shot drawn (TALLRec's draw) when `shots` is set, and the data set they come
    from; `seed` (default `data.seed`) seeds both the load and the draw."""
    seed = recipe.data.seed if seed is None else seed
    data = recipe_data(recipe, spec, key, seed=seed)
    cases = [c for c in data.cases if c.label is not None]
    with naming_key(recipe, key):
        return (few_shot(cases, shots, seed) if shots else cases), data


def training_cases(recipe: Recipe, draw: bool = True) -> list[Case]:
    """The labelled cases `recipe` trains on: `data.train`, `data.shots` of them when set (and `draw`); none is a
    ConfigError."""
    cases = recipe_cases(recipe, recipe.data.train, "data.train", shots=recipe.data.shots if draw else None)[0]
    if not cases:
        raise ConfigError(f"{recipe._source}: data.train: {recipe.data.train} has no labelled cases to train on")
    return cases


def validation_cases(recipe: Recipe, cases: Sequence[Case] | None = None) -> list[Case]:
    """The seeded, label-stratified `training.val_limit` subset of `cases` (default: `data.valid`'s labelled
    cases) that early stopping reads; a ConfigError unless it holds both labels, since AUC needs them."""
    if cases is None:
        cases = recipe_cases(recipe, recipe.data.valid, "data.valid")[0]
    subset = stratified_subset(cases, recipe.training.val_limit, recipe.data.seed)
    labels = {c.label for c in subset}
    if len(labels) < 2:
        what = "no labelled cases" if not subset else f"all {len(subset)} cases labelled {labels.pop()}"
        raise ConfigError(f"{recipe._source}: data.valid: the validation subset of {recipe.data.valid} (training."
                          f"val_limit {recipe.training.val_limit}) has {what}; AUC needs liked and disliked cases")
    return subset


def check_prompts_fit(recipe: Recipe, tokenizer, **parts: Sequence[Case]) -> None:
    """ConfigError naming `data.max_prompt_tokens` when a case of `parts` (name -> cases) exceeds it without any
    history (instruction, question and target title alone): scoring would refuse that case mid-run, after training.
    An `-items` prompt is counted with room for the soft tokens a collab adapter adds once it is built."""
    d = recipe.data
    room = SOFT_TOKEN_ROOM if d.template.endswith("-items") else 0
    for part, cases in parts.items():
        for case in cases:
            bare = prompt_tokens(tokenizer, render_prompt(replace(case, history=()), d.template, tokenizer), d.template)
            bare += room if case.target_id is not None and not has_item_token(tokenizer, case.target_id) else 0
            if bare > d.max_prompt_tokens:
                raise ConfigError(f"{recipe._source}: data.max_prompt_tokens {d.max_prompt_tokens}: a {part} case of "
                                  f"user {case.user_id!r} takes {bare} tokens with no history at all; raise it")
