"""The Python API: everything the `adaptrec` command does, callable from a notebook (the CLI calls these).

    import adaptrec
    result = adaptrec.train("movie-lora", overrides=["training.max_steps=16"], promote=True)
    rec = adaptrec.load("movie")            # the adapter promoted for a domain, or NAME[:VERSION]
    rec.score(["Heat (1995)", {"title": "Jumanji (1995)", "liked": False}], ["Casino (1995)"])
    rec.rank(history, candidates, k=5)      # [(candidate as given, score), ...], best first
    report = adaptrec.evaluate(["movie-lora"], data="tallrec:movie:test", limit=200)
    report.to_pandas()

Imports sit inside the functions so that `import adaptrec` and `adaptrec --help` stay fast: torch loads on first use.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .errors import AdaptrecError, ConfigError, RegistryError, option
from .userfiles import MAX_SEED, check_output_file

if TYPE_CHECKING:
    from .adapters.vllm import VllmExport
    from .caches import Store
    from .data.history_file import HistoryEntry
    from .evaluation import EvalReport, Predictions
    from .hub import PullResult, PushResult
    from .online.gate import GateResult
    from .registry import AdapterRecord, Registry
    from .registry.encoders import EncoderRecord
    from .router.policy import Decision
    from .router.recommender import Recommender
    from .router.retrieval import UserRecommendation
    from .router.weights import ComposeResult
    from .train.plan import RecipePlan
    from .train.recipe import RecipeResult
    from .train.update import UpdateResult

EMBEDDED = "embedded:smollm2"  # the default backbone (`backbone.EMBEDDED`, spelled here to keep imports light)
SCORE_MODES = ("pyes", "tallrec")
RETRIEVE = 20  # candidates `recommend` retrieves by default
MAX_ENCODER_DIM = 4096  # an encoder's vector size: its tables grow with it times users and items


def _backbone(name: str, quantization: str):
    from .backbone import load_backbone

    return load_backbone(name, quantization)


def _made_for(refs: Sequence[str], backbone: str | None, quantization: str | None) -> tuple[str, str]:
    """The backbone to load: as given, else the one the first adapter's recipe trained on (a pulled one: the one its
    pull was checked against; a composition or mix: its first source's), else the embedded default; the
    quantization: as given, else the recipe's (the pull's) when that is its backbone, else 8bit."""
    _not_empty(backbone=backbone, quantization=quantization)
    if not refs or (backbone is not None and quantization is not None):
        return backbone or EMBEDDED, quantization or "8bit"
    from .config import recipe_from_text
    from .router.sources import resolve_sources

    reg = registry()
    record = reg.resolve(resolve_sources(reg, refs[:1])[0])
    made, seen = None, set()
    while made is None and record is not None and record.ref not in seen:
        seen.add(record.ref)
        made = record.pulled_backbone(EMBEDDED)  # (name, quantization) it was made on, or None
        if made is None and record.recipe_text:
            try:
                section = recipe_from_text(record.recipe_text, record.ref).backbone
                made = section.name, section.quantization
            except ConfigError:  # a recipe of an older schema: no usable backbone setting
                break
        elif made is None:  # a composition or mix: its first source's (whose build its fingerprint names)
            record = _first_parent(reg, record)
    name = backbone or (made[0] if made else EMBEDDED)
    own = made is not None and made[0] == name  # another backbone named: the build it was made on says nothing
    return name, quantization or (made[1] if own else "8bit")


def _first_parent(reg: Registry, record):
    """The version `record` was composed from first; None when it has none or that one was removed."""
    parents = (record.lineage or {}).get("parents") or []
    try:
        return reg.resolve(parents[0]) if parents else None
    except RegistryError:
        return None


def _champion_made_for(reg: Registry, domain: str, backbone: str | None,
                       quantization: str | None) -> tuple[str, str]:
    """`_made_for` the domain's promoted adapter (its cold-start one when it has none): the backbone routing serves
    it on unless another is named."""
    from .names import COLD_SUFFIX

    champion = reg.promoted(domain) or reg.promoted(domain + COLD_SUFFIX)
    return _made_for([champion.ref] if champion else [], backbone, quantization)


def registry(home: str | Path | None = None) -> Registry:
    """The adapter registry under `home` (default `$ADAPTREC_HOME`); `adaptrec.registry(home)` does the same."""
    from .registry import Registry

    return Registry(Path(home) if home is not None else None)


def recipes() -> dict[str, str]:
    """The recipes shipped with the package: name -> one-line description."""
    from .config import recipe_summaries

    return recipe_summaries()


def recipe_text(name_or_path: str) -> str:
    """The text of a shipped recipe (by name) or a recipe file."""
    from .config import resolve_recipe_path
    from .userfiles import read_user_text

    return read_user_text(resolve_recipe_path(name_or_path), "recipe", ConfigError)


def plan(recipe: str | Path, overrides: Sequence[str] = (), *, resume: bool = False,
         restart: bool = False) -> RecipePlan:
    """What `train` would do, checked without training: the recipe validated, its data and backbone resolved, and
    the run options as `train` checks them."""
    from .config import load_recipe
    from .train.plan import plan_recipe

    _check_run_options(resume, restart)
    return plan_recipe(load_recipe(str(recipe), _as_list(overrides))[0])


def _check_run_options(resume: bool, restart: bool) -> None:
    if resume and restart:  # a restart would discard what the resume continues
        raise AdaptrecError(f"{option('resume')} and {option('restart')} exclude each other: continue the run, or "
                            "start it over")


def train(recipe: str | Path, overrides: Sequence[str] = (), *, promote: bool = False, resume: bool = False,
          restart: bool = False) -> RecipeResult:
    """Train an adapter from a recipe (a shipped name or a file), evaluate it beside the baselines, register it.

    `overrides`: dotted `key=value` settings (`training.lr=1e-4`); `promote`: make it serve its domain."""
    from .config import load_recipe

    _check_run_options(resume, restart)
    parsed, text = load_recipe(str(recipe), _as_list(overrides))  # refused before peft imports
    from .train.recipe import check_resumable, run_recipe

    if resume:
        check_resumable(parsed)
    result = run_recipe(parsed, text, resume=resume, restart=restart)
    if promote and result.report is not None:  # once, by the main process of a multi-process launch
        registry().promote(result.record.ref, parsed.domain)
    return result


def load(ref: str | None = None, *, backbone: str | None = None, quantization: str | None = None,
         template: str | None = None, batch_size: int = 8, score: str = "pyes") -> Recommender:
    """A Recommender for a registered adapter (NAME[:VERSION], or a domain: its promoted adapter); None: untuned.

    `backbone`/`quantization` default to those the adapter was trained on (else the embedded default, 8bit),
    `template` and the prompt length to those it was trained with (else `tallrec` and 1024 tokens)."""
    from .data.prompts import TEMPLATES
    from .router.recommender import Recommender
    from .router.sources import one_source
    from .scoring.core import PROMPT_TOKENS

    _check_choice("score", score, SCORE_MODES)
    _at_least(batch_size=(batch_size, 1))
    reg = registry()
    source = one_source(reg, ref)  # a wrong or multiple ref: refused before the backbone loads
    trained = _scoring_options(reg, source)
    template = template or trained.get("template", "tallrec")
    _check_choice("template", template, TEMPLATES)
    bb = _backbone(*_made_for([ref] if ref else [], backbone, quantization))
    return Recommender(bb, registry(), ref, template=template,
                       max_prompt_tokens=trained.get("max_prompt_tokens", PROMPT_TOKENS), batch_size=batch_size,
                       mode=score)


def evaluate(refs: Sequence[str] = (), *, data: str, limit: int | None = 200, seed: int = 0, candidates: int = 0,
             candidates_file: Path | None = None, score: str = "pyes", template: str | None = None, batch_size: int = 8,
             backbone: str | None = None, quantization: str | None = None, cache: bool = True,
             encoders: Sequence[str] | None = None, full_catalogue: bool = False) -> EvalReport:
    """Adapters (and the untuned backbone) beside the non-LLM baselines on one seeded subset of a data SPEC.

    `candidates` > 0: the ranking protocol (each held-out item among that many sampled negatives; `limit` counts
    held-out items, a seeded subset); `candidates_file`: rank each held-out item among the candidates a file gives
    instead (docs/data.md; `limit`: the file's first lists).
    `backbone`: default the one the first adapter was trained on; `template` and the prompt length: those the adapters
    were trained with (`variants.sources_prompt`: templates that differ are refused unless `template` names one; the
    shortest length), else `tallrec` and 1024 tokens. `cache`: read and write the score cache
    under `$ADAPTREC_HOME`. `encoders`: registered collaborative encoders (`adaptrec train-cf`) to add as rows; each
    must have learned from the SPEC's own source (its held-out pairs are then outside the encoder's training data).
    None: the latest version of every registered encoder that may score the SPEC; (): none. `full_catalogue`:
    encoder rows also rank each held-out item among every item of their catalogue (ranking protocol only)."""
    from .data.prompts import TEMPLATES
    from .names import check_distinct
    from .router.sources import resolve_sources

    data = _spec_text(data, "data")
    _check_choice("score", score, SCORE_MODES)
    if template is not None:
        _check_choice("template", template, TEMPLATES)
    _at_least(limit=(limit, 0), seed=(seed, 0), candidates=(candidates, 0), batch_size=(batch_size, 1))
    if candidates and candidates_file:  # the file's lists would replace the sampled ones without a word
        raise AdaptrecError(f"{option('candidates', candidates)} and {option('candidates_file')}: sampled lists, or "
                            "given ones")
    reg = registry()
    refs = list(resolve_sources(reg, refs)) if refs else []  # every ref (or domain), before peft, data or backbone
    check_distinct(refs, "name each adapter once (a name, its version or its domain)")  # (was: two identical rows)
    from .data.spec import load_spec
    from .evaluation import labelled_cases, ranked_users, run_eval, run_rank_eval
    from .online.gate import saw_data
    from .score_cache import ScoreCache
    from .scoring.variants import sources_prompt
    from .text_encoder import minilm_if_installed

    _check_collab_sources(reg, refs, data)
    prompt = {"template": "tallrec", **sources_prompt([reg.resolve(r) for r in refs], template,
                                                      remedy=f"pass {option('template')} to read them through one")}
    from .registry.encoders import check_same_ratings, current_encoders

    loaded, named, read = {}, encoders is not None, {}
    encoders = None if encoders is None else _as_list(encoders)
    if not named:  # those registered for this source, a stale one left out with a warning; one named is refused
        encoders = [r.ref for r in current_encoders(reg.encoders_for(data))]
    if full_catalogue and not ((candidates or candidates_file) and encoders):
        raise AdaptrecError(f"{option('full_catalogue')} ranks encoder rows: use it with {option('candidates')} or "
                            f"{option('candidates_file')}, and a registered encoder (`adaptrec train-cf`) that may "
                            "score this SPEC")
    for ref in encoders:  # checked before any data or backbone loads
        encoder, record = reg.load_encoder(ref)
        _check_encoder_source(record.data, data)
        if named:
            check_same_ratings(record.data, record.data_fingerprint, f"the encoder {record.ref}", read)
        loaded[f"encoder {record.ref}"] = encoder
    dataset = load_spec(data, seed=seed)
    if candidates or candidates_file:  # the data is checked before the backbone loads
        scored = ranked_users(dataset, limit or None, seed, candidates, candidates_file)[0]
    else:
        scored = labelled_cases(dataset, limit or None, seed)
    common = dict(registry=reg, adapters=list(refs), limit=limit or None, seed=seed, mode=score, encoders=loaded,
                  **prompt, batch_size=batch_size, cache=ScoreCache.default() if cache else None)
    shown: dict = {}  # each training SPEC's cases loaded once for all refs
    seen = {ref for ref in refs if saw_data(reg, reg.resolve(ref), data, scored, shown)}  # its numbers: not held out
    bb = _backbone(*_made_for(list(refs), backbone, quantization))
    if candidates or candidates_file:
        report = run_rank_eval(bb, dataset, negatives=candidates, candidates_file=candidates_file,
                               item_encoder=minilm_if_installed(), full_catalogue=full_catalogue, **common)
    else:
        report = run_eval(bb, dataset, **common)
    for row in report.rows if seen else ():
        if row.name in seen:
            row.name = f"{row.name} (trained or selected on this data)"
    return report


def train_cf(kind: str, *, data: str, name: str | None = None, dim: int | None = None, epochs: int | None = None,
             seed: int = 0) -> EncoderRecord:
    """Fit a collaborative encoder on `data`'s training interactions (cf/fit.py), measure it alone on the source's
    validation part, and register it as the next version of `name` (default `KIND-SOURCE`, `:` as `-`)."""
    from .cf import unfit_pairing
    from .cf.evaluate import validation_metrics
    from .cf.fit import WINDOWS, fit_encoder
    from .names import check_name

    data = _spec_text(data, "data")
    _not_empty(name=name)
    name = name or f"{kind}-{data.replace(':', '-')}"
    check_name(name, "encoder")  # before the fit, not after minutes of it
    _at_least(seed=(seed, 0), dim=(dim, 1), epochs=(epochs, 1))
    if dim is not None and dim > MAX_ENCODER_DIM:  # was: numpy's allocation error as a traceback
        raise ConfigError(f"{option('dim', dim)}: at most {MAX_ENCODER_DIM} (the encoders default to 32 or 64)")
    if why := unfit_pairing(kind, data):  # before the fit
        raise ConfigError(why)
    fitted = fit_encoder(kind, data, dim, epochs, seed)
    # validated on the same candidate lists (seed 0) whatever the fit's seed: fits at two seeds compare on one draw
    return registry().register_encoder(name, fitted, WINDOWS[data], validation_metrics(fitted.encoder, data))


def _check_encoder_source(source: str, spec: str, what: str = "the encoder") -> None:
    """An encoder scores only the held-out splits of the source it learned from (`cf.fit.HELD_OUT`)."""
    from .cf.fit import HELD_OUT, scores_spec

    if source not in HELD_OUT:
        raise AdaptrecError(f"{what} learned from {source!r}, not a source adaptrec knows the held-out splits of "
                            f"({', '.join(HELD_OUT)}): it cannot be scored on {spec}")
    if not scores_spec(source, spec):
        raise AdaptrecError(f"{what} learned from {source}; it scores only that source's held-out splits "
                            f"({HELD_OUT[source]}), not {spec} (its pairs may be in the encoder's training data)")


def _check_collab_sources(reg, refs: Sequence[str], spec: str) -> None:
    """A collaborative adapter (alone or among a mix's sources) scores only the held-out splits of the source its
    encoder learned from: on any other SPEC its item table may hold the very pairs it is scored on. Its files are
    checked against their hashes first (a changed `collab.json` is an `IntegrityError` naming it)."""
    from .adapters.attach import COLLAB_TYPE
    from .adapters.collab import encoder_of
    from .adapters.merge import as_mix
    from .registry import verified_files
    from .registry.encoders import check_same_ratings

    read: dict[str, str] = {}  # each source's interactions read once
    for ref in refs:
        record = reg.resolve(ref)
        composition = as_mix(record)
        for r in [reg.resolve(s) for s in composition.refs] if composition else [record]:
            if r.adapter_type != COLLAB_TYPE:
                continue
            verified_files(r)  # (was: a damaged collab.json read unchecked, a JSONDecodeError traceback)
            encoder = encoder_of(r.path)
            if encoder is not None:
                _check_encoder_source(encoder["data"], spec, f"{r.ref}'s encoder")
                if "ratings" in encoder:
                    check_same_ratings(encoder["data"], encoder["ratings"], f"{r.ref}'s encoder", read,
                                       remedy=f"train {r.ref.split(':')[0]} again with --restart (its item table "
                                       "is in its folder)")


def update(ref: str, *, data: str, replay: float = 0.2, steps: int | None = None,
           overrides: Sequence[str] = ()) -> UpdateResult:
    """Continual update (docs/online.md): warm-start from `ref`, train on `data` plus a `replay` share of its original
    training data for `steps` steps, register the next version of its name with lineage `updated_from`."""
    from .train.update import update_adapter

    data = _spec_text(data, "data")
    return update_adapter(ref, data, replay=replay, steps=steps, overrides=_as_list(overrides),
                          registry=registry())


def promote_if_better(ref: str, *, data: str, domain: str | None = None, margin: float | None = None,
                      limit: int | None = None, seed: int = 0, cache: bool = True, backbone: str | None = None,
                      quantization: str | None = None) -> GateResult:
    """The promotion gate (docs/online.md): score `ref` and the champion of `domain` (default: `ref`'s domain) on the
    same cases of `data` (a seeded `limit` of them), promote `ref` when the paired user-clustered test passes,
    record the decision either way. `margin`: default `online.gate.MARGIN` (0.005)."""
    from .data.spec import load_spec
    from .evaluation import select_cases
    from .online.drift import domain_cases
    from .online.gate import MARGIN, plan_gate, run_gate
    from .score_cache import ScoreCache

    data = _spec_text(data, "data")
    _at_least(limit=(limit, 0), seed=(seed, 0))
    margin = MARGIN if margin is None else margin
    reg = registry()
    record = reg.resolve(ref)
    _not_empty(domain=domain)
    domain = domain or record.domain
    dataset = load_spec(data, seed=seed)
    own = replace(dataset, cases=domain_cases(dataset.cases, domain, data))  # a log may hold several domains:
    cases = select_cases(own, limit, seed)  # the limit counts this one's
    plan = plan_gate(reg, record.ref, domain, cases, data, margin, limit, dataset.fingerprint)  # no model loads
    # read before the backbone loads; a first promotion scores nothing and needs none
    options = {r.ref: _scoring_options(reg, r.ref) for r in (plan.challenger, plan.champion)} if plan.champion else {}
    bb = _backbone(*_made_for([record.ref], backbone, quantization)) if plan.champion is not None else None
    return run_gate(bb, reg, plan, seed, options=options.__getitem__, cache=ScoreCache.default() if cache else None)


def drift(domain: str, *, before: str, after: str, adapter: str | None = None, limit: int | None = None,
          seed: int = 0, cache: bool = True, plot: str | Path | None = None, backbone: str | None = None,
          quantization: str | None = None) -> dict:
    """Compare two windows (SPECs) of `domain` under its champion (or `adapter`): score distribution (PSI, KS),
    calibration (reliability, ECE), and AUC beside the like-ratio and popularity rows (docs/online.md); `plot`: also
    draw them to this PNG. The report is a JSON-ready dict; each window's entry names its `spec`, `limit` and
    `seed` say which subset of each was scored, `scoring` the adapter's prompt settings and `environment` the
    backbone's build (backend, dtype, device, versions)."""
    from .data.spec import load_spec
    from .online.drift import champion_ref, domain_cases, labelled_windows
    from .online.drift import drift as compare_windows
    from .score_cache import ScoreCache

    before = _spec_text(before, "before")
    after = _spec_text(after, "after")
    if plot is not None and (not Path(plot).parent.is_dir() or Path(plot).is_dir()
                             or Path(plot).suffix.lower() != ".png"):  # before scoring, not after
        raise ConfigError(f"{option('plot', plot)}: expected a .png file to write in an existing folder")
    _at_least(limit=(limit, 0), seed=(seed, 0))
    reg = registry()
    _not_empty(adapter=adapter)
    ref = champion_ref(reg, domain, adapter)  # pinned: an update registered meanwhile scores neither window
    specs = {"before": before, "after": after}
    loaded = {flag: domain_cases(load_spec(spec, seed=seed).cases, domain, spec, flag) for flag, spec in specs.items()}
    windows = labelled_windows(loaded["before"], loaded["after"], limit, seed)
    options = _scoring_options(reg, ref)
    bb = _backbone(*_made_for([ref], backbone, quantization))
    report = compare_windows(bb, reg, domain, *windows, adapter=ref, seed=seed,
                             cache=ScoreCache.default() if cache else None, **options)
    report["before"]["spec"], report["after"]["spec"] = before, after
    report.update(limit=limit, seed=seed, scoring=options, environment=bb.environment())
    if plot is not None:
        from .plots.drift import plot_drift

        plot_drift(report, Path(plot))
    return report


def _scoring_options(reg: Registry, ref: str | None) -> dict:
    """`scoring.variants.trained_prompt` of the adapter `ref` ({} for none); called before a backbone loads, so a
    stored recipe that no longer validates is refused without that wait."""
    from .scoring.variants import trained_prompt

    return trained_prompt(reg.resolve(ref)) if ref else {}


def write_predictions(ref: str | None, *, data: str, out: Path, limit: int | None = None, seed: int = 0,
                      template: str | None = None, batch_size: int = 8, backbone: str | None = None,
                      quantization: str | None = None, shard: str | None = None, engine: str = "local",
                      actors: int | None = None, chunk_size: int | None = None, cache: bool = True) -> Predictions:
    """P(yes) and TALLRec's score for every case of a SPEC (or a seeded subset), scored `chunk_size` cases at a
    time (default 256) and streamed to `out`: JSONL, or Parquet when it ends in `.parquet`; complete or absent, and
    `<out>.meta.json` beside it records what produced the rows (`batch.meta_path`).

    `shard` "i/n": only the cases at positions i, i+n, i+2n, ... (the n shards together hold every case once).
    `engine` "ray": chunks scored on a Ray Data pool of `actors` actors (default one per CPU; `$RAY_ADDRESS` names
    a cluster; default chunks small enough to give each actor several). The same chunk size gives the same rows
    on both engines. `cache`: read and write the score cache under `$ADAPTREC_HOME`, so a rerun resumes cheaply.
    `template` defaults to the adapter's own, as its prompt length does (`tallrec` for the untuned backbone);
    `backbone`/`quantization` to those it was trained on (else the embedded default, 8bit)."""
    from .router.sources import one_source

    reg = registry()  # the cheapest check first, before peft and transformers are imported:
    ref = one_source(reg, ref)  # NAME[:VERSION], or a domain's champion: one adapter, pinned for every chunk
    from .backbone import default_device, library_versions, resolve_backend
    from .batch import (
        CHUNK_SIZE,
        ENGINES,
        WHOLE,
        Shard,
        adapter_scorer,
        batch_cases,
        check_format,
        meta_path,
        stream_predictions,
    )
    from .batch.ray_engine import ray_predictions, require_ray
    from .data.prompts import TEMPLATES
    from .data.spec import load_spec
    from .score_cache import ScoreCache
    from .scoring.core import PROMPT_TOKENS
    from .scoring.variants import row_template

    data = _spec_text(data, "data")
    _check_choice("engine", engine, ENGINES)
    if template is not None:
        _check_choice("template", template, TEMPLATES)  # before the backbone loads, in this process or in actors
    part = Shard.parse(shard) if shard is not None else WHOLE
    _at_least(chunk_size=(chunk_size, 1), actors=(actors, 1))
    if actors is not None and engine != "ray":
        raise AdaptrecError(f"{option('actors', actors)}: only {option('engine', 'ray')} runs actors (this run's "
                            f"engine is {engine})")
    _at_least(limit=(limit, 0), seed=(seed, 0), batch_size=(batch_size, 1))
    check_output_file(out, option("out", out))
    check_format(out, option("out", out))
    check_output_file(meta_path(Path(out)), f"{option('out', out)} (its record {meta_path(Path(out))})")
    if engine == "ray":
        require_ray()  # missing Ray fails before the data loads
    backbone, quantization = _made_for([ref] if ref else [], backbone, quantization)
    dataset = load_spec(data, seed=seed)
    check_output_file(out, option("out", out), inputs=dataset.sources)  # was: the data file replaced by its scores
    cases = batch_cases(dataset, limit, seed, part)
    options = {**_scoring_options(reg, ref), **({"template": template} if template else {}),
               "batch_size": batch_size}
    scored = {"template": row_template(reg, ref, options.get("template", "tallrec")),  # what the rows read
              "max_prompt_tokens": options.get("max_prompt_tokens", PROMPT_TOKENS), "batch_size": batch_size}
    meta = {"adapter": ref, "data": data, "data_fingerprint": dataset.fingerprint, "limit": limit, "seed": seed,
            "shard": shard, "backbone": backbone, "quantization": quantization, "engine": engine,
            "scoring": scored, "chunk_size": chunk_size or CHUNK_SIZE, "cache": cache,  # Ray: its own, below
            "environment": None if engine == "ray" else {"backend": resolve_backend(quantization, default_device()),
                                                         "device": default_device()},  # Ray: each actor's
            "versions": library_versions()}  # beside the rows: what produced them
    if engine == "ray":
        written = ray_predictions(backbone, quantization, reg, ref, cases, Path(out), actors=actors,
                                  cache=cache, chunk_size=chunk_size, meta=meta, **options)
    else:
        scorer = adapter_scorer(_backbone(backbone, quantization), reg, ref,
                                cache=ScoreCache.default() if cache else None, **options)
        written = stream_predictions(scorer, cases, Path(out), chunk_size or CHUNK_SIZE, meta)
    return replace(written, adapter=ref)


def predict(ref: str, history: Path | Sequence[HistoryEntry], item: str, *, item_id: str | int | None = None,
            template: str | None = None, backbone: str | None = None, quantization: str | None = None) -> float:
    """P(yes) that a user with `history` (a history JSON file, or a list of items) likes `item` (catalogue id
    `item_id`, text or an integer: a collaborative adapter embeds it); `template` defaults to the adapter's own."""
    from .data.history_file import checked_text, id_text, parse_history, read_history_file
    from .router.sources import one_source

    checked_text(item, option("item"), "the target item's title")
    if item_id is not None:  # was: '' accepted, as no id at all; an integer refused, as history items take it
        item_id = id_text(item_id, option("item_id"), "the target item's catalogue id")
    reg = registry()
    domain = reg.resolve(one_source(reg, ref)).domain  # a ref or a domain, as `load` takes it
    options = {"template": template, "backbone": backbone, "quantization": quantization}
    if isinstance(history, (str, Path)):  # read (and refused) before the backbone loads
        case = read_history_file(Path(history), item, domain, item_id)
        return float(load(ref, **options).score_cases([case], _depth=2)[0])
    history = parse_history(history, domain)  # refused before the backbone loads; read once (a generator too)
    target = item if item_id is None else {"title": item, "item_id": item_id}
    return float(load(ref, **options).score(history, [target])[0])


def export_lora(ref: str, name: str | None = None) -> AdapterRecord:
    """Convert a registered AdaLoRA adapter to an exactly equivalent plain LoRA and register it (NAME-lora)."""
    from .registry.derive import register_lora_export

    return register_lora_export(registry(), ref, name)


def compose(sources: str | Sequence[str], *, name: str, method: str = "cat", weights: str | Sequence[float] | None = None,
            domain: str | None = None, search_data: str | None = None, shots: int | None = None,
            budget: int | None = None, l1: float | None = None, seed: int = 0, svd_rank: int | None = None,
            density: float | None = None,
            promote_cold: bool = False, into_base: Path | None = None, backbone: str | None = None,
            quantization: str | None = None) -> ComposeResult:
    """Combine adapters (peft ΔW merge, or score-level `mix`) with given weights, or weights learned on `shots`
    labelled cases of `search_data`; register the result, optionally serve cold users of its domain with it, and
    optionally write a standalone full-precision model with it merged in (`into_base`). The search's own settings
    (`shots`, default 32; `budget`, default 20 loss evaluations; `l1`, default 0.05) need `search_data`. `backbone`
    and `quantization` default to the first source's own (`_made_for`)."""
    from .adapters.merge import MIX, merge_into_base
    from .names import COLD_SUFFIX
    from .router.sources import resolve_sources
    from .router.weights import search_and_compose

    search_data = _spec_text(search_data, "search_data")
    search = {option: value for option, value in (("shots", shots), ("budget", budget), ("l1", l1))
              if value is not None}  # the others: the search's own defaults
    if search and search_data is None:  # nothing would read them: the weights would be given or equal, not learned
        these, them = ("these", "them") if len(search) > 1 else ("this", "it")
        raise AdaptrecError(f"compose {', '.join(search)}: only the weight search reads {these}; give search_data, or "
                            f"drop {them}")
    _at_least(seed=(seed, 0))
    _not_empty(domain=domain)
    reg = registry()
    refs = resolve_sources(reg, sources)  # bad names, input mistakes: refused before the backbone loads
    backbone, quantization = _made_for(refs, backbone, quantization)
    if not name:
        raise AdaptrecError(f"compose: pass {option('name')} for the composed adapter's registry entry")
    if into_base:  # checked before anything is registered (was: registered and promoted, then refused)
        named = option("into_base", into_base)
        if method == MIX:
            raise AdaptrecError(f"{named}: a score-level mix has no weights to merge into the base; use a ΔW method")
        if Path(into_base).exists():
            raise AdaptrecError(f"{named}: already exists; name a folder that does not exist yet")
        check_output_file(into_base, named)
    result = search_and_compose(lambda: _backbone(backbone, quantization), reg, refs, method, name=name, domain=domain,
                                weights=weights, search_data=search_data, **search, seed=seed, svd_rank=svd_rank,
                                density=density)
    if into_base:
        merge_into_base(backbone, reg, result.record.ref, Path(into_base))
    if promote_cold:  # once everything asked for is done
        reg.promote(result.record.ref, result.record.domain + COLD_SUFFIX)
    return result


def route(user: str, domain: str, *, data: str | None = None, history: Path | Sequence[HistoryEntry] | None = None,
          min_target_history: int = 3, cold_mix: str | None = None, cold_weights: str | None = None,
          backbone: str | None = None, quantization: str | None = None) -> Decision:
    """Which adapter(s) serve `user` in `domain` (warm: the domain's adapter; cold: the composed one) and why.
    `history`: a history file, or a list of items as `predict` takes them. `backbone` and `quantization` default to
    the domain's champion's own (`_champion_made_for`)."""
    from .backbone import backbone_fingerprint
    from .data.spec import load_spec
    from .names import check_domain
    from .router.policy import RoutePolicy, check_cold_options, no_history, route_user
    from .router.sources import RouteError

    data = _spec_text(data, "data")
    check_domain(domain)  # an empty one would be blamed on the history
    _check_user(user)
    _at_least(min_target_history=(min_target_history, 0))
    if data is None and history is None:  # before the backbone's fingerprint (its first use converts it)
        raise no_history()
    if data is not None and history is not None:  # the SPEC would be loaded, then ignored
        raise RouteError(f"{option('data')} and {option('history')} both give the user's history: pass one")
    check_cold_options(cold_mix, cold_weights)
    dataset = load_spec(data) if data else None
    policy = RoutePolicy(min_target_history=min_target_history)
    reg = registry()
    backbone, quantization = _champion_made_for(reg, domain, backbone, quantization)
    decision, _ = route_user(reg, lambda: backbone_fingerprint(backbone, quantization), user, domain,
                             dataset=dataset, history=history, policy=policy, cold_mix=cold_mix,
                             cold_weights=cold_weights)
    return decision


def recommend(user: str, domain: str, *, data: str, history: Path | Sequence[HistoryEntry] | None = None,
              candidates_file: Path | None = None, retrieve: int | None = None, top_k: int = 10,
              min_target_history: int = 3, cold_mix: str | None = None, cold_weights: str | None = None,
              template: str | None = None, batch_size: int = 8, backbone: str | None = None,
              quantization: str | None = None) -> UserRecommendation:
    """Route the user, retrieve `retrieve` candidates (default 20) with MiniLM (or read them from a candidates file),
    re-rank; `template` defaults to the one the routed adapters were trained with (their prompt length too).
    `history`: a history file, or a list of items as `predict` takes them; default the user's case in `data`.
    `backbone` and `quantization` default to the domain's champion's own (`_champion_made_for`)."""
    from .backbone import backbone_fingerprint
    from .data.prompts import TEMPLATES
    from .data.spec import load_spec
    from .names import check_domain
    from .router.policy import RoutePolicy, check_cold_options
    from .router.retrieval import recommend_user

    data = _spec_text(data, "data")
    check_domain(domain)
    _check_user(user)
    if template is not None:
        _check_choice("template", template, TEMPLATES)
    if retrieve is not None and candidates_file is not None:  # was: `retrieve` ignored without a word
        raise AdaptrecError(f"{option('retrieve', retrieve)} and {option('candidates_file')}: retrieve candidates, "
                            "or read them from the file")
    retrieve = RETRIEVE if retrieve is None else retrieve
    _at_least(retrieve=(retrieve, 1), top_k=(top_k, 1), batch_size=(batch_size, 1),
              min_target_history=(min_target_history, 0))
    check_cold_options(cold_mix, cold_weights)  # before the backbone's fingerprint
    dataset = load_spec(data)
    reg = registry()
    backbone, quantization = _champion_made_for(reg, domain, backbone, quantization)
    return recommend_user(lambda: _backbone(backbone, quantization),
                          lambda: backbone_fingerprint(backbone, quantization),
                          reg, user, domain, dataset, history=history,
                          candidates_file=candidates_file, policy=RoutePolicy(min_target_history=min_target_history),
                          cold_mix=cold_mix, cold_weights=cold_weights, n_retrieve=retrieve, top_k=top_k,
                          template=template, batch_size=batch_size)


def push(ref: str, *, repo: str | None = None, to: str | Path | None = None, public: bool = False,
         revision: str | None = None) -> PushResult:
    """Publish an adapter to the Hub (`repo`, private unless `public`) or to an offline mirror folder (`to`)."""
    from .hub import push_to_hub, push_to_mirror

    _not_empty(repo=repo, to=None if to is None else str(to), revision=revision)
    if to is not None:
        if public:
            raise AdaptrecError(f"hub push: {option('public', True)} applies to Hub repos; a mirror folder's access is "
                                "its file permissions")
        return push_to_mirror(ref, Path(to), repo=repo, revision=revision)
    if not repo:
        raise AdaptrecError(f"hub push: name the Hub repo ({option('repo')}, ORG/NAME) or an offline mirror folder "
                            f"({option('to')})")
    return push_to_hub(ref, repo, private=not public, revision=revision)


def pull(source: str, *, name: str | None = None, force: bool = False, backbone: str = EMBEDDED,
         quantization: str = "8bit") -> PullResult:
    """Download from the Hub or a mirror, verify (safetensors only, hashes, base family) and register as `pulled`."""
    from .hub import pull as hub_pull

    return hub_pull(source, name=name, backbone=backbone, quantization=quantization, force=force)


def inspect_data(spec: str, *, template: str = "tallrec", show: int = 1, backbone: str | None = None,
                 user_token: bool = False, match_token: bool = False) -> str:
    """A rendered prompt, token-length stats and the label balance of a data SPEC (`user_token`, `match_token`: as
    a collab adapter with those settings renders it)."""
    from .backbone import load_tokenizer
    from .data.inspect import check_soft_tokens, inspect_spec
    from .data.prompts import TEMPLATES
    from .data.spec import load_spec

    spec = _spec_text(spec, "spec")
    _check_choice("template", template, TEMPLATES)
    _at_least(show=(show, 0))
    check_soft_tokens(template, user_token, match_token)
    dataset = load_spec(spec)  # a bad SPEC fails here, before any tokenizer is loaded
    return inspect_spec(dataset, load_tokenizer(backbone or EMBEDDED), template, show, user_token, match_token)


def serve(*, host: str = "127.0.0.1", port: int = 8000, preload: Sequence[str] = (), max_resident: int = 8,
          limits: "Limits | None" = None, max_batch: int | None = None, max_padding: float = 0.1,
          max_wait_ms: float = 0.0, allow_any_adapter: bool = False, request_log: bool = True,
          exploration: dict[str, float] | None = None, watch_promotions: float = 1.0, template: str = "tallrec",
          registry_home: Path | None = None, backbone: str = EMBEDDED, quantization: str = "8bit") -> None:
    """Serve every registered adapter over HTTP on one backbone (docs/serving.md); blocks until stopped.
    `max_batch` None: 1 on CPU (merging requests does not pay there), 16 on an accelerator. The process keeps
    glibc's malloc on one arena afterwards (`serve.app.one_malloc_arena`; glibc cannot read the old setting back)."""
    from .data.online_log import LOG_FILE
    from .data.prompts import TEMPLATES
    from .serve.app import ServeOptions, UnservedExplorationWarning, check_address
    from .serve.app import serve as run_server
    from .serve.engine import Engine, Limits

    _check_choice("template", template, TEMPLATES)  # before the backbone loads (every request would be refused)
    _at_least(max_resident=(max_resident, 1), port=(port, 0))
    if limits is not None and not isinstance(limits, Limits):
        raise AdaptrecError(f"{option('limits', limits)}: expected an adaptrec.serve.engine.Limits")
    if exploration and not request_log:  # the server would rank greedily and say nothing
        raise AdaptrecError(f"exploration of {', '.join(exploration)} ({option('exploration', flag='--explore')}) logs "
                            "each shown item's propensity for its feedback, so it needs the request log: "
                            f"{option('request_log', True)}")
    if registry_home is not None and not Path(registry_home).is_dir():  # a typo would serve an empty new registry
        raise AdaptrecError(f"{option('registry_home', registry_home, flag='--registry')}: no such folder")
    check_address(host, port)
    options = ServeOptions(max_batch=1 if max_batch is None else max_batch, max_padding=max_padding,
                           max_wait_ms=max_wait_ms,
                           allow_any_adapter=allow_any_adapter, request_log=request_log,
                           exploration=exploration or {}, watch_promotions=watch_promotions,  # checked here
                           # beside the registry served: `ADAPTREC_HOME=DIR adaptrec update …` reads its feedback
                           online_log=None if registry_home is None else Path(registry_home) / LOG_FILE)
    options.token()  # one no request could present: refused before the backbone loads
    reg = registry(registry_home)
    if unserved := sorted(d for d in options.exploration if not reg.list(domain=d)):
        import warnings

        warnings.warn(f"{option('exploration', flag='--explore')}: no adapter is registered for "
                      f"{', '.join(map(repr, unserved))}; nothing is explored there until one is promoted",
                      UnservedExplorationWarning, stacklevel=2)
    preload = _as_list(preload)
    preloaded = {reg.resolve(ref).ref for ref in preload}  # a misspelt preload: refused before the backbone loads
    if len(preloaded) > max_resident:  # was: the first ones evicted as the last loaded
        raise AdaptrecError(f"{option('preload')} names {len(preloaded)} adapters, more than "
                            f"{option('max_resident', max_resident)} keeps loaded: raise it, or preload fewer")
    model = _backbone(backbone, quantization)
    engine = Engine(model, reg, max_resident=max_resident, template=template, limits=limits or Limits())
    for ref in preload:
        engine.preload(ref)
    if max_batch is None:
        options = replace(options, max_batch=1 if str(model.device).startswith("cpu") else 16)
    run_server(engine, host, port, options)


def parse_exploration(items: Sequence[str]) -> dict[str, float]:
    """`["movie=0.1", ...]` -> {"movie": 0.1}; a one-line error for anything else (the rate's range is `serve`'s
    to check)."""
    out = {}
    for item in items:
        domain, sep, value = item.partition("=")
        named = option("exploration", item, flag="--explore")
        try:
            epsilon = float(value) if sep and domain else None
        except ValueError:
            epsilon = None
        if epsilon is None:
            raise ConfigError(f"{named}: expected DOMAIN=EPSILON with EPSILON in [0, 1], e.g. movie=0.1")
        if domain in out:  # was: the last one kept without a word
            raise ConfigError(f"{named}: {domain} is given a rate twice")
        out[domain] = epsilon
    return out


def export_vllm(ref: str, out: str | Path) -> VllmExport:
    """Write a registered LoRA or AdaLoRA adapter to folder `out` as a LoRA folder vLLM loads (checked against
    vLLM's loading rules; prefix-tuning and collaborative adapters are refused). See docs/serving.md."""
    from .registry.derive import write_vllm_export

    reg = registry()
    try:  # the template and length its requests should render; unknown for a recipe of an older schema
        prompt = _scoring_options(reg, ref)
    except ConfigError:
        prompt = {}
    return replace(write_vllm_export(reg, ref, out), prompt=prompt)


def stores() -> list[Store]:
    """What `$ADAPTREC_HOME` holds, store by store (entries, bytes, whether it is a cache `clear_cache` clears)."""
    from .caches import stores

    return stores()


def clear_cache(name: str, earlier_only: bool = False) -> tuple[int, int]:
    """Clear one cache of `$ADAPTREC_HOME`: `scores`, `encoders` or `embeddings` (what it held is recomputed when
    next needed); `earlier_only`: only the score rows earlier key formats wrote, which nothing reads. Returns
    (entries removed, bytes freed)."""
    from .caches import clear

    return clear(name, earlier_only)


def plot(kind: str, sources: str | Path | Sequence[str | Path], out: str | Path | None = None, **options) -> Path:
    """Draw a PNG from result files and return its path (default ./KIND.png): `curves` (run folders or run names),
    `shots` (the TALLRec grid's JSONL), `transfer` (the cross-domain JSON), `bench` (bench/results JSONs or their
    folder), `drift` (an `adaptrec drift --json` report); one source or a list of them. `options` go to that kind's
    `adaptrec.plots.<kind>.from_files` (`title`, …); one it does not take is one error line."""
    import inspect

    from .plots import FIGURES

    _check_choice("kind", kind, tuple(FIGURES))
    takes = [n for n, p in inspect.signature(FIGURES[kind]).parameters.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(takes))
    if unknown:  # was: a TypeError traceback, or (drift) taken and ignored
        raise AdaptrecError(f"plot {kind}: no option {', '.join(map(repr, unknown))} (it takes: "
                            f"{', '.join(takes) or 'none'})")
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else sources  # not its letters, one by one
    if not sources:
        raise AdaptrecError(f"plot {kind}: name at least one result file or folder to draw")
    target = Path(out) if out is not None else Path(f"{kind}.png")
    named = option("out", target) if out is not None else str(target)  # the default: its path
    check_output_file(target, named, inputs=sources)
    if target.suffix.lower() != ".png":  # the figure is a PNG whatever the name says
        raise AdaptrecError(f"{named}: name a .png file")
    if kind == "transfer":  # scores cached by older scoring code are flagged on the figure
        from .scoring.core import SCORING_VERSION

        options.setdefault("current_scoring_version", SCORING_VERSION)
    return FIGURES[kind]([Path(s) for s in sources], target, **options)


def _spec_text(value, name: str):
    """A data SPEC argument as text: a path (`PATH.json` is a SPEC) as its string; None stays None; anything else is
    one AdaptrecError line."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise AdaptrecError(f"{option(name, value)}: expected a data SPEC (text, or a path)")


# counts whose None means all, or the default; any other count None (a seed, a batch size) would draw unseeded or
# fail after the backbone loaded
_MAY_BE_NONE = frozenset({"limit", "dim", "epochs", "chunk_size", "actors"})


def _not_empty(**values: str | None) -> None:
    """One AdaptrecError line for an option given as blank text: a default stands only for an option left out
    (was: `--backbone ''` loaded the embedded default, `--domain ''` registered for the first source's domain)."""
    for name, value in values.items():
        if isinstance(value, str) and not value.strip():
            raise AdaptrecError(f"{option(name, value)}: blank; leave it out for the default")


def _at_least(**values: tuple[int | None, int]) -> None:
    """One AdaptrecError line for the first count that is not an integer >= its minimum (None only for the counts
    where it means all, or the default: `_MAY_BE_NONE`), or a seed past `MAX_SEED`."""
    for name, (value, low) in values.items():
        if value is None and name in _MAY_BE_NONE:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise AdaptrecError(f"{option(name, value)}: expected an integer >= {low}")
        if name == "seed" and value > MAX_SEED:
            raise AdaptrecError(f"{option(name, value)}: expected at most {MAX_SEED} (2**32 - 1)")


def _as_list(values: str | Sequence[str]) -> list[str]:
    """`values` as a list: one text is one item (was: split into its letters)."""
    return [values] if isinstance(values, str) else list(values)


def _check_user(user: str) -> None:
    """A user id with a printable character (was: '' accepted, routed as a user no data holds)."""
    if not isinstance(user, str) or not user.strip():
        raise AdaptrecError(f"{option('user', user)}: name the user (an id in the data, or any name with a history)")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdaptrecError(f"{option(name, value)}: expected one of {', '.join(choices)}")
