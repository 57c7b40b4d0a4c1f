"""Continual update: a registered adapter warm-started and trained on new data (e.g. `feedback:DOMAIN`) mixed with a
replay share of its original training data, registered as the next version of its name with its lineage."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..backbone import load_backbone
from ..config import Recipe, recipe_from_text
from ..data.records import Case
from ..data.sampling import stratified_subset
from ..errors import ConfigError, RegistryError
from ..fingerprint import digest
from ..home import adaptrec_home
from ..registry import AdapterRecord, Registry
from .cases import recipe_cases, recipe_data, training_cases
from .lineage import with_encoder
from .loop import TrainResult, train

UPDATE = "update"  # the lineage method of an updated version


@dataclass
class UpdateResult:
    record: AdapterRecord
    train: TrainResult
    new_cases: int
    replay_cases: int


def replay_mix(new: Sequence[Case], old: Sequence[Case], share: float, seed: int) -> tuple[list[Case], int]:
    """`new` plus enough of `old` (a seeded draw, without replacement, at most all of it) that old cases make up
    `share` of the mix, shuffled; and how many old ones went in."""
    if not 0 <= share < 1:
        raise ConfigError(f"--replay {share}: expected a share in [0, 1)")
    rng = random.Random(seed)
    n_old = min(len(old), round(len(new) * share / (1 - share)))
    mixed = list(new) + rng.sample(list(old), n_old)
    rng.shuffle(mixed)
    return mixed, n_old


def _window(cases: Sequence[Case]) -> dict:
    times = [c.meta["time"] for c in cases if "time" in c.meta]
    return {"cases": len(cases), **({"since": min(times), "until": max(times)} if times else {})}


def update_adapter(ref: str, data: str, replay: float = 0.2, steps: int | None = None,
                   overrides: Sequence[str] = (), registry: Registry | None = None) -> UpdateResult:
    """Warm-start from `ref`'s weights, train on `data`'s labelled cases plus a `replay` share of `ref`'s original
    training cases for `steps` optimizer steps (default: its recipe's), register the next version of its name."""
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: expected at least 1 optimizer step")
    registry = registry or Registry()
    parent = registry.resolve(ref)
    if not parent.recipe_text:
        raise RegistryError(f"{parent.ref} was not trained here (kind {parent.kind}): only an adapter with its recipe "
                            "can be updated")
    sets = [*overrides, *([f"training.max_steps={steps}"] if steps is not None else [])]
    text = parent.recipe_text + "".join(f"\n# --set {s}" for s in sets) + ("\n" if sets else "")
    recipe: Recipe = recipe_from_text(text, parent.ref)
    dataset = recipe_data(recipe, data, "--data")  # read once: feedback may arrive meanwhile
    new = [c for c in dataset.cases if c.label is not None]
    if not new:
        raise ConfigError(f"--data {data}: no labelled cases to update on")
    mixed, n_old = replay_mix(new, training_cases(recipe) if replay else [], replay, recipe.training.seed)
    val = stratified_subset(recipe_cases(recipe, recipe.data.valid, "data.valid")[0], recipe.training.val_limit,
                            recipe.data.seed)
    backbone = load_backbone(recipe.backbone.name, recipe.backbone.quantization,
                             int8_backend=recipe.backbone.int8_backend)
    registry.load_verified(parent.ref, backbone.fingerprint)
    key = digest({"parent": parent.ref, "data": dataset.fingerprint, "replay": replay,
                  "settings": recipe.model_dump(mode="json")})
    run_dir = adaptrec_home() / "runs" / f"{parent.name}-update-{key[:10]}"
    result = train(recipe, backbone, mixed, val, run_dir, resume=True, init_from=parent.path)
    lineage = {"parents": [parent.ref], "method": UPDATE, "updated_from": parent.ref, "data": data,
               "window": _window(new), "replay": replay, "replay_cases": n_old, "steps": result.steps}
    record = registry.register(result.adapter_dir, name=parent.name, domain=parent.domain, kind="trained",
                               adapter_type=recipe.adapter.type, adapter_config=None, fingerprint=backbone.fingerprint,
                               recipe_text=text, metrics={},
                               lineage=with_encoder(lineage, result.adapter_dir, registry))
    return UpdateResult(record, result, len(new), n_old)
