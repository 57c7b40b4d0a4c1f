"""Continual update: a registered adapter warm-started and trained on new data (e.g. `feedback:DOMAIN`) mixed with a
replay share of its original training data, registered as the next version of its name with its lineage."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..adapters.attach import adapter_key
from ..adapters.base import check_fits, check_installed
from ..atomic import write_json
from ..backbone import EMBEDDED, backbone_config, load_backbone
from ..config import Recipe, check_new_overrides, check_new_run, recipe_from_text, step_budget
from ..data.records import Case, logged_by
from ..data.sampling import few_shot
from ..errors import AdaptrecError, ConfigError, RegistryError, option
from ..fingerprint import digest
from ..home import adaptrec_home
from ..names import served_domain
from ..online.drift import domain_cases
from ..registry import AdapterRecord, Registry
from .cases import check_prompts_fit, naming_key, recipe_cases, recipe_data, training_cases, validation_cases
from .lineage import event_keys, registered_lineage
from .loop import TrainResult, on_main_process, run_folder_held, train
from .methods import checked_method

UPDATE = "update"  # the lineage method of an updated version
REGISTERED = "registered.json"  # in a finished update's run folder: the version it registered


@dataclass
class UpdateResult:
    record: AdapterRecord
    train: TrainResult
    new_cases: int
    replay_cases: int
    replay_short: bool = False  # the parent's training data held fewer cases than the share asked for

    @property
    def replay_share(self) -> float:
        """The share of the training mix replayed."""
        return self.replay_cases / (self.new_cases + self.replay_cases)


def replay_count(new: int, share: float) -> int:
    """How many old cases make up `share` of a mix with `new` new ones (rounded)."""
    return round(new * share / (1 - share))


def check_share(share: float) -> None:
    """A one-line `ConfigError` for a replay share outside [0, 1)."""
    if not (isinstance(share, (int, float)) and not isinstance(share, bool) and 0 <= share < 1):  # NaN too
        raise ConfigError(f"{option('replay', share)}: expected a share in [0, 1)")


def replay_mix(new: Sequence[Case], old: Sequence[Case], share: float, seed: int) -> tuple[list[Case], int]:
    """`new` plus enough of `old` (a seeded draw, without replacement, at most all of it) that old cases make up
    `share` of the mix, shuffled; and how many old ones went in."""
    check_share(share)
    rng = random.Random(seed)
    n_old = min(len(old), replay_count(len(new), share))
    mixed = list(new) + rng.sample(list(old), n_old)
    rng.shuffle(mixed)
    return mixed, n_old


def _window(cases: Sequence[Case]) -> dict:
    times = [c.meta["time"] for c in cases if "time" in c.meta]
    return {"cases": len(cases), **({"since": min(times), "until": max(times)} if times else {})}


def _seen_before(cases: Sequence[Case], parent: AdapterRecord) -> list[Case]:
    """The replay pool: `parent`'s training data, without feedback events it never saw (a recipe trained on an
    open-ended `feedback:` SPEC reads more of the log now than it trained on). A parent registered before lineages
    listed events bounds them by its lineage window's end instead, when it has one."""
    seen, until = parent.trained_events, (parent.lineage or {}).get("window", {}).get("until")
    if not seen and until is not None:
        return logged_by(cases, until)
    return [c for c in cases if "event" not in c.meta or not seen or c.meta["event"] in seen]


def _replay_pool(recipe: Recipe, parent: AdapterRecord) -> list[Case]:
    """`parent`'s training cases: `_seen_before` over all of `data.train`, then its `data.shots` draw unless
    `data.train` is a feedback log whose events its lineage lists (drawn again over a log grown since, the shots
    would be another sample, and few of the parent's). Events an update trained on say nothing of data without
    events (a TALLRec file): its shots are drawn as the first run drew them."""
    pool = _seen_before(training_cases(recipe, draw=False), parent)
    shots = recipe.data.shots
    if not shots or (parent.trained_events and any("event" in c.meta for c in pool)):
        return pool
    with naming_key(recipe, "data.train"):  # data that does not grow: the parent's very draw
        return few_shot(pool, min(shots, len(pool)), recipe.data.seed)


def _until(new: Sequence[Case]) -> float | None:
    """When the newest of the `new` cases was logged (None: no case has a time)."""
    return max((c.meta["time"] for c in new if "time" in c.meta), default=None)


def _held_out(cases: Sequence[Case], new: Sequence[Case], trained: Sequence[Case]) -> list[Case]:
    """Validation `cases` without feedback logged after the newest of the `new` cases (checkpoints are not picked on
    events the update could not have seen: the window a gate compares on comes later) and without the cases it
    trains on, `trained` (new, replayed and the method's own), by logged event or by what they show (`Case.shown`)."""
    events, shown = set(event_keys(trained)), {c.shown for c in trained}
    return [c for c in logged_by(cases, _until(new)) if c.meta.get("event") not in events and c.shown not in shown]


def update_adapter(ref: str, data: str, replay: float = 0.2, steps: int | None = None,
                   overrides: Sequence[str] = (), registry: Registry | None = None) -> UpdateResult:
    """Warm-start from `ref`'s weights, train on `data`'s labelled cases plus a `replay` share of `ref`'s original
    training cases for `steps` optimizer steps (default: its recipe's), register the next version of its name."""
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ConfigError(f"{option('steps', steps)}: expected at least 1 optimizer step")
    check_share(replay)  # before any data is read
    registry = registry or Registry()
    parent = registry.resolve(ref)
    if not parent.recipe_text:
        raise RegistryError(f"{parent.ref} was not trained here (kind {parent.kind}): only an adapter with its recipe "
                            "can be updated")
    if parent.kind == "composed":  # an export keeps its source's recipe, which builds the source's adapter type
        source = ", ".join((parent.lineage or {}).get("parents") or ["its source"])
        raise RegistryError(f"{parent.ref} was derived from {source} ({(parent.lineage or {}).get('method')}), not "
                            f"trained: update {source}, then derive it again")

    def with_sets(sets: Sequence[str]) -> str:  # the parent's recipe text with these overrides recorded
        return parent.recipe_text + "".join(f"\n# --set {s}" for s in sets) + ("\n" if sets else "")

    check_new_overrides(recipe_from_text(parent.recipe_text, parent.ref), overrides, option("overrides", flag="--set"))
    pulled = parent.pulled_backbone(EMBEDDED)
    if pulled is not None:  # its recipe's backbone is the publisher's word: the one its pull was checked against
        overrides = [f"backbone.name={pulled[0]}", f"backbone.quantization={pulled[1]}", *overrides]
    warmup = recipe_from_text(with_sets(overrides), parent.ref).training.warmup_steps
    sets = [*overrides, *(step_budget(steps, overrides, warmup) if steps is not None else [])]
    text = with_sets(sets)
    recipe: Recipe = recipe_from_text(text, parent.ref)
    check_new_run(recipe, stored=True)
    if recipe.method.type == "distill":  # the teacher scores its own view of each training case: none is new feedback
        raise ConfigError(f"{parent.ref} was distilled (method: distill), and its teacher's view of the cases "
                          f"({recipe.method.teacher_data}) holds none of the new feedback; update it without the "
                          f"teacher: {option('overrides', flag='--set')} 'method={{type: plain}}'")
    dataset = recipe_data(recipe, data, option("data"))  # read once: feedback may arrive meanwhile
    # a log may hold several domains: the parent's only, as its gate reads (was: another domain's, trained on unsaid);
    # labelled files name their cases' domain themselves, which a recipe's `domain:` need not match
    cases = dataset.cases
    if data.startswith("feedback:") or any(c.domain == served_domain(parent.domain) for c in cases):
        cases = domain_cases(cases, parent.domain, data)
    new = [c for c in cases if c.label is not None]
    if not new:
        raise ConfigError(f"{option('data', data)}: no labelled cases to update on")
    old = _replay_pool(recipe, parent) if replay else []
    mixed, n_old = replay_mix(new, old, replay, recipe.training.seed)
    # e.g. a ranking loss on feedback of one label per request, refused before the backbone loads; its partners are
    # read once, logged no later than the new cases, and trained on: none validates
    method = checked_method(recipe, mixed, until=_until(new))
    own = method.own_cases()
    try:
        val = validation_cases(recipe, _held_out(recipe_cases(recipe, recipe.data.valid, "data.valid")[0], new,
                                                 [*mixed, *own]))
    except ConfigError as e:
        raise ConfigError(f"{e} (left once the update's own training cases, new, replayed and the method's, and "
                          "feedback logged after them are set aside)") from None
    try:  # target modules the parent's recipe misspelled beside a right one (peft trained the right one)
        check_fits(recipe.adapter, backbone_config(recipe.backbone.name), recipe.training.max_steps)
    except ConfigError as e:
        raise ConfigError(f"{parent.ref}: {e}; update it with {option('overrides', flag='--set')} "
                          "'adapter.target_modules=[...]' naming the modules it trained") from None
    check_installed(recipe.adapter)  # a collab adapter's encoder library, before the backbone loads
    backbone = load_backbone(recipe.backbone.name, recipe.backbone.quantization,
                             int8_backend=recipe.backbone.int8_backend)
    check_prompts_fit(recipe, backbone.tokenizer, training=[*mixed, *own], validation=val)
    registry.load_verified(parent.ref, backbone.fingerprint)
    key = digest({"parent": parent.ref, "data": dataset.fingerprint, "replay": replay,
                  "settings": recipe.model_dump(mode="json"), "replayed": event_keys(old), "valid": event_keys(val)})
    run_dir = adaptrec_home() / "runs" / f"{parent.name}-update-{key[:10]}"
    with run_folder_held(run_dir):  # through registering: a second run of the same update waits its turn
        result = train(recipe, backbone, mixed, val, run_dir, resume=True, method=method, init_from=parent.path,
                       start_over=f"remove {run_dir} to start the update over")

        def register() -> AdapterRecord:
            record = _registered(registry, run_dir, parent, result.adapter_dir)
            if record is None:
                lineage = {"parents": [parent.ref], "method": UPDATE, "updated_from": parent.ref, "data": data,
                           "window": _window(new), "replay": replay, "replay_cases": n_old,
                           "replay_share": round(n_old / len(mixed), 4), "steps": result.steps,
                           "events": (result.lineage or {}).get("events", [])}  # the method's own cases' events
                record = registry.register(result.adapter_dir, name=parent.name, domain=parent.domain,
                                           kind="trained", adapter_type=recipe.adapter.type, adapter_config=None,
                                           fingerprint=backbone.fingerprint, recipe_text=text, metrics={},
                                           lineage=registered_lineage(lineage, mixed, result.adapter_dir, registry,
                                                                      parent, val, result.setup))
            write_json(run_dir / REGISTERED, {"record": record.ref})
            return record

        # other processes of a multi-process launch take the version the main one registered
        record = on_main_process(register) or _registered(registry, run_dir, parent, result.adapter_dir)
        if record is None:
            raise ConfigError(f"{run_dir}: the main process registered no version; its error says why")
    return UpdateResult(record, result, len(new), n_old, n_old < replay_count(len(new), replay))


def recorded_version(registry: Registry, path: Path) -> AdapterRecord | None:
    """The version a finished run's JSON file `path` names (`{"record": ref}`), while it is still registered; None
    when the run has not finished or the version was removed since."""
    try:
        return registry.resolve(json.loads(path.read_text())["record"])
    except (OSError, ValueError, KeyError, TypeError, AdaptrecError):
        return None


def registered_before(registry: Registry, path: Path, name: str, adapter_dir: Path,
                      same: Callable[[AdapterRecord], bool]) -> AdapterRecord | None:
    """The version of `name` a finished run registered, while it is still registered, `same` and holding the files
    of `adapter_dir`: the one its JSON file `path` names, else (a crash between registering and writing that file)
    any such version of the name. Running the same job again registers no duplicate."""
    named = recorded_version(registry, path)
    candidates = [named] if named is not None else registry.list(name=name)
    key = adapter_key(adapter_dir)
    return next((r for r in candidates if r.name == name and same(r) and adapter_key(r.path) == key), None)


def _registered(registry: Registry, run_dir: Path, parent: AdapterRecord, adapter_dir: Path) -> AdapterRecord | None:
    """The version this finished update registered before: `registered_before`, updated from `parent`."""
    return registered_before(registry, run_dir / REGISTERED, parent.name, adapter_dir,
                             lambda r: (r.lineage or {}).get("updated_from") == parent.ref)
