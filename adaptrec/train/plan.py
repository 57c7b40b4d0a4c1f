"""`adaptrec train --dry-run`: a recipe checked end to end without training — settings, data, backbone, the
adapter's fit to the backbone, method's data and teacher, the tracker, run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..adapters.base import check_fits, check_installed
from ..adapters.prefix import init_text_ids
from ..backbone import backbone_config, backbone_fingerprint, default_device, load_tokenizer, resolve_backend
from ..config import Recipe
from ..errors import AdaptrecError, ConfigError
from ..evaluation import labelled_cases
from ..fingerprint import Fingerprint
from .cases import check_prompts_fit, recipe_data, training_cases, validation_cases
from .loop import check_tracker
from .methods import check_method
from .recipe import run_dir_for


@dataclass(frozen=True)
class RecipePlan:
    recipe: Recipe
    fingerprint: Fingerprint  # the backbone the adapter will be made for
    backend: str  # the kernels the load will use
    train_cases: int
    valid_cases: int  # after the validation subset is drawn
    test_cases: int  # after the evaluation subset is drawn
    run_dir: Path

    def describe(self) -> str:
        r, t = self.recipe, self.recipe.training
        ranks = getattr(r.method, "rec_loss", "yesno") != "yesno"  # a ranking loss batches users' candidate lists
        unit = "users (each with their candidates)" if ranks else "prompts"
        lines = [
            f"recipe {r.name} ({r._source}): a {r.adapter.type} adapter for domain {r.domain}, method {r.method.type}",
            f"backbone {r.backbone.name} ({r.backbone.quantization}, {self.backend}): {self.fingerprint.base_model}, "
            f"weights {self.fingerprint.exact[:12]}",
            f"train {r.data.train}: {self.train_cases} labelled cases" + (f" ({r.data.shots} shots)" if r.data.shots else ""),
            f"valid {r.data.valid}: {self.valid_cases} cases, validated every {t.eval_every} steps",
            f"test {r.data.test}: {self.test_cases} cases (seed {r.evaluation.seed})",
            f"training: up to {t.max_steps} steps of {t.batch_size} x {t.grad_accum} {unit} per process, lr {t.lr:g} "
            f"({t.scheduler}), checkpoint every {t.checkpoint_every}",
            f"run folder {self.run_dir}",
            "dry run: nothing trained, nothing registered",
        ]
        return "\n".join(lines)


def plan_recipe(recipe: Recipe) -> RecipePlan:
    """Resolve everything `run_recipe` needs before its first step; any problem is a one-line error."""
    d, ev, b = recipe.data, recipe.evaluation, recipe.backbone
    train = training_cases(recipe)
    valid = validation_cases(recipe)
    test = recipe_data(recipe, d.test, "data.test", seed=ev.seed)
    try:
        fingerprint = backbone_fingerprint(b.name, b.quantization)
        backend = resolve_backend(b.quantization, default_device(), b.int8_backend)
    except AdaptrecError as e:
        raise ConfigError(f"{recipe._source}: backbone: {e}") from None
    try:  # target modules the backbone lacks: found on a weightless copy of it
        check_installed(recipe.adapter)
        check_fits(recipe.adapter, backbone_config(b.name), recipe.training.max_steps)
        tokenizer = load_tokenizer(b.name)
        if getattr(recipe.adapter, "init", None) == "text":  # prefix tuning started from the backbone's key/values
            init_text_ids(recipe.adapter, tokenizer)
    except ConfigError as e:
        raise ConfigError(f"{recipe._source}: {e}") from None
    own = check_method(recipe, train, fingerprint)
    tested = labelled_cases(test, ev.limit, ev.seed)
    check_prompts_fit(recipe, tokenizer, training=[*train, *own], validation=valid, test=tested)
    check_tracker(recipe)
    return RecipePlan(recipe, fingerprint, backend, len(train), len(valid), len(tested), run_dir_for(recipe))
