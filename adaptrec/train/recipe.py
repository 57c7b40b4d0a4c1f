"""The main job for one recipe: train an adapter, evaluate it beside the baselines, register it."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from adaptrec.scoring.core import Scorer, backbone_scorer
from adaptrec.scoring.variants import UNTUNED

from ..adapters.attach import adapter_key
from ..adapters.base import check_installed, tuner_for
from ..atomic import write_json
from ..backbone import load_backbone
from ..config import Recipe, load_recipe, recipe_digest, recipe_from_text
from ..data.prompts import plain_template
from ..data.spec import NEGATIVES_AVOID, is_leave_one_out, with_protocol
from ..errors import ConfigError
from ..evaluation import EvalReport, baseline_rows, encoder_rows, labelled_cases, llm_row, new_report
from ..fingerprint import digest
from ..home import adaptrec_home
from ..registry import AdapterRecord, Registry
from ..registry.encoders import current_encoders
from ..score_cache import ScoreCache
from .cases import check_prompts_fit, naming_key, recipe_data, training_cases, validation_cases
from .checkpoint import latest_checkpoint
from .lineage import registered_lineage
from .loop import TrainResult, on_main_process, run_folder_held, train
from .methods import checked_method
from .methods.features import FeatureBlend, blend_row
from .update import UPDATE, registered_before


@dataclass
class RecipeResult:
    train: TrainResult
    report: EvalReport | None  # None on the other processes of a multi-process launch: the main one evaluated
    record: AdapterRecord
    backbone: object  # the loaded backbone the adapter was trained on (its tokenizer holds any added tokens)


class NothingToResumeWarning(UserWarning):
    """A resume found no checkpoint of these settings: the run trains from step 0."""


def check_resumable(recipe: Recipe) -> None:
    """`NothingToResumeWarning` when the run folder of `recipe`'s settings holds neither a checkpoint nor a finished
    run: a resume with other overrides than the run it means to continue trains another run from scratch."""
    run_dir = run_dir_for(recipe)
    if latest_checkpoint(run_dir) is None and not (run_dir / "report.json").is_file():
        warnings.warn(f"nothing to resume in {run_dir}: training from step 0 (a run resumes only with the recipe "
                      "and --set overrides it was started with)", NothingToResumeWarning, stacklevel=3)


def run_dir_for(recipe: Recipe) -> Path:
    """The run folder of these settings (comments and layout of the recipe file do not change it). Leave-one-out
    training data also keys it by how its negatives are drawn (`NEGATIVES_AVOID`), so a run begun under the earlier
    rule is neither resumed nor reused under this one."""
    key = recipe_digest(recipe)
    if _leave_one_out(recipe):
        key = digest({"settings": key, "negatives_avoid": NEGATIVES_AVOID})
    return adaptrec_home() / "runs" / f"{recipe.name}-{key[:10]}"


def _leave_one_out(recipe: Recipe) -> bool:
    """Whether `recipe` trains on leave-one-out data, whose negatives were once drawn under another rule."""
    with naming_key(recipe, "data.train"):
        return is_leave_one_out(with_protocol(recipe.data.train, recipe.data.protocol, "train"))


def run_recipe(recipe: Recipe, text: str, resume: bool = False, restart: bool = False) -> RecipeResult:
    """Train per `recipe`, evaluate on its test subset (untuned backbone and baselines beside it), register; resuming
    a finished run keeps the version it registered."""
    run_dir = run_dir_for(recipe)
    with run_folder_held(run_dir):
        return _run_recipe(recipe, text, run_dir, resume, restart)


def _run_recipe(recipe: Recipe, text: str, run_dir: Path, resume: bool, restart: bool) -> RecipeResult:
    check_installed(recipe.adapter)  # an encoder's library: not found after the backbone loaded, nor after a restart
    d, ev = recipe.data, recipe.evaluation
    train_cases = training_cases(recipe)
    method = checked_method(recipe, train_cases)  # e.g. a ranking loss on one case per user: before the backbone
    own = method.own_cases() if method is not None else ()  # loads; its data read once, for training too
    val_cases = validation_cases(recipe)
    test = recipe_data(recipe, d.test, "data.test", seed=ev.seed)
    cases = labelled_cases(test, ev.limit, ev.seed)  # refused before training when AUC cannot be measured on it
    registry = Registry()  # the encoder rows of the report: loaded (hashes checked) before any training
    encoders = {f"encoder {r.ref}": registry.load_encoder(r.ref)[0]
                for r in current_encoders(registry.encoders_for(test.spec))}  # a stale one: left out, with a warning

    backbone = load_backbone(recipe.backbone.name, recipe.backbone.quantization, int8_backend=recipe.backbone.int8_backend)
    check_prompts_fit(recipe, backbone.tokenizer, training=[*train_cases, *own], validation=val_cases, test=cases)
    if restart:  # deletes the run it will not train again, once all else passed (was: first, so a refusal left none):
        # once, by the main process, every rank waiting (was: by every rank, one failing)
        on_main_process(lambda: shutil.rmtree(run_dir) if run_dir.exists() else None)
    result = train(recipe, backbone, train_cases, val_cases, run_dir, resume=resume, method=method)

    def evaluate_and_register() -> tuple[EvalReport, AdapterRecord]:
        report = new_report(backbone, test, cases, ev.limit, ev.seed, ev.score,
                            prompt={"template": d.template, "max_prompt_tokens": d.max_prompt_tokens})
        report.rows.extend(baseline_rows(test, cases, report.metric_names, ev.seed))
        report.rows.extend(encoder_rows(encoders, cases, report.metric_names, ev.seed))
        model = result.model
        model.load_adapter(str(result.adapter_dir), adapter_name="best", is_trainable=False)
        model.set_adapter("best")
        tuner_for(model).load_extra(model, result.adapter_dir, backbone.tokenizer)
        model.eval()
        cache = ScoreCache.default()

        def scorer(tag: str, template: str = d.template) -> Scorer:
            return backbone_scorer(backbone, model, tag, template=template, max_prompt_tokens=d.max_prompt_tokens,
                                   batch_size=ev.batch_size, cache=cache)

        with model.disable_adapter():  # the untuned backbone has no item tokens: its prompts name items by title only
            untuned = scorer("base", plain_template(d.template))
            report.rows.append(llm_row(UNTUNED, untuned, cases, ev.score, report.metric_names, ev.seed))
        adapter_scorer = scorer(adapter_key(result.adapter_dir))
        adapter_row = llm_row(recipe.name, adapter_scorer, cases, ev.score, report.metric_names, ev.seed)
        report.rows.append(adapter_row)
        blend = result.method_info.get("blend")
        if blend:  # the `blend` method: the LLM score calibrated with the like-ratio/popularity features
            report.rows.append(blend_row(f"{recipe.name} + feature blend", FeatureBlend(**blend), adapter_scorer, cases,
                                         test.item_popularity, report.metric_names, ev.seed))

        metrics = {name: {"value": v.value, "ci": [v.ci_low, v.ci_high], "data": test.spec, "limit": ev.limit,
                          "seed": ev.seed, "score": ev.score} for name, v in adapter_row.metrics.items()}
        finished = _registered(registry, run_dir, recipe, backbone.fingerprint, result.adapter_dir) if resume else None
        record = (finished if finished is not None
                  else registry.register(
                      result.adapter_dir, name=recipe.name, domain=recipe.domain, kind="trained",
                      adapter_type=recipe.adapter.type, adapter_config=None, fingerprint=backbone.fingerprint,
                      recipe_text=text, metrics=metrics,
                      lineage=registered_lineage(result.lineage, train_cases, result.adapter_dir, registry,
                                                 valid=val_cases, setup=result.setup)))
        adapter_row.name = f"{record.ref} ({recipe.adapter.type}, {len(train_cases)} shots, {result.steps} steps)"
        write_json(run_dir / "report.json", {"record": record.ref, "train": result.summary(),
                                             "eval": report.to_dict()})
        return report, record

    done = on_main_process(evaluate_and_register)
    if done is not None:
        return RecipeResult(result, *done, backbone)
    # another process of a multi-process launch: the main one evaluated and registered (or failed, and said why)
    record = _registered(registry, run_dir, recipe, backbone.fingerprint, result.adapter_dir)
    if record is None:
        raise ConfigError(f"{run_dir}: the main process registered no version; its error says why")
    return RecipeResult(result, None, record, backbone)



def _registered(registry: Registry, run_dir: Path, recipe: Recipe, fingerprint, adapter_dir: Path
                ) -> AdapterRecord | None:
    """The record a finished run in `run_dir` registered (`registered_before`: its report.json, written last, names
    it), trained with these settings for this exact backbone and holding `adapter_dir`'s files (the run's best
    adapter now): resuming a finished run trains nothing new, so it registers no new version."""
    settings = recipe_digest(recipe)
    return registered_before(registry, run_dir / "report.json", recipe.name, adapter_dir,
                             lambda r: _trained_with(r, settings, fingerprint))


def _trained_with(record: AdapterRecord, digest: str, fingerprint) -> bool:
    """Whether `record` was trained here from a recipe with settings `digest` on exactly this backbone: not pulled
    (its recipe text is the publisher's word), nor a continual update (whose recipe names data it never trained on)."""
    return (record.kind == "trained" and bool(record.recipe_text) and (record.lineage or {}).get("method") != UPDATE
            and fingerprint.match(record.fingerprint) == "exact" and _settings(record) == digest)


def _settings(record: AdapterRecord) -> str | None:
    """The settings digest of the recipe a registered adapter was trained with; None if that text no longer validates."""
    try:
        return recipe_digest(recipe_from_text(record.recipe_text, record.ref))
    except ConfigError:  # written for an older schema: not the same settings
        return None


def train_or_reuse(registry: Registry, fingerprint, recipe_name: str, sets: Sequence[str],
                   log: Callable[[str], None] = print) -> AdapterRecord:
    """The registered adapter trained with these recipe settings on this backbone, trained (`run_recipe`) if there is none."""
    recipe, text = load_recipe(recipe_name, list(sets))
    settings = recipe_digest(recipe)
    # on leave-one-out data the settings do not say how negatives were drawn: only the run folder's version is reused
    for record in [] if _leave_one_out(recipe) else reversed(registry.list(name=recipe.name)):
        if _trained_with(record, settings, fingerprint):
            log(f"  reusing {record.ref} (same recipe settings)")
            return record
    log(f"  training {recipe.name} ({recipe.data.shots} shots, {recipe.training.max_steps} steps)")
    return run_recipe(recipe, text, resume=True).record
