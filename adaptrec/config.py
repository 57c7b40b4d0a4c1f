"""Recipe schema (pydantic), YAML loading and `--set key=value` overrides, with one-line errors."""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Collection, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from accelerate.utils import LoggerType
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .adapters.base import AdapterConfig
from .errors import ConfigError, DataSpecError, RegistryError, option
from .fingerprint import digest, text_digest
from .names import check_domain, check_name
from .userfiles import MAX_SEED, NEW_SETTINGS, UserSettings, read_user_text

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # package data: shipped in the wheel


class _RepeatedKey(yaml.constructor.ConstructorError):
    """A key given twice in one mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key repeated in one mapping (PyYAML keeps the last copy silently, so a
    second `training:` section reset the first one's keys to their defaults)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()  # keys written in this mapping; those a `<<: *anchor` merge brings may be overridden
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a name, not a list or mapping",
                                                        key_node.start_mark)
            key = self.construct_object(key_node)
            if key in seen:
                raise _RepeatedKey(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class BackboneSection(UserSettings):
    name: str = "embedded:smollm2"  # embedded default, a Hub id, or a local folder
    quantization: Literal["8bit", "4bit", "none"] = "8bit"  # 8bit: frozen weights in int8
    # 8-bit kernels: auto = bitsandbytes on CUDA, adaptrec's int8 kernel on CPU (2.6x bitsandbytes there)
    int8_backend: Literal["auto", "bitsandbytes", "torch"] | None = None  # null: $ADAPTREC_INT8_BACKEND, else auto


class DataSection(UserSettings):
    train: str  # SPEC of the training cases, e.g. tallrec:movie:train
    valid: str  # SPEC used for early stopping
    test: str  # SPEC of the final evaluation
    shots: int | None = Field(64, ge=1)  # few-shot training cases (TALLRec's sampling); null: all
    seed: int = Field(0, ge=0)  # seed of the few-shot sample, the validation subset, training negatives
    # prompt wrapper; "-stats" adds a line stating the history's like-ratio ("liked 7 of the 10 items above (70%)")
    template: Literal["tallrec", "chat", "tallrec-stats", "chat-stats", "tallrec-items", "chat-items"] = "tallrec"
    max_prompt_tokens: int = Field(512, ge=32)  # longer prompts drop their oldest history items
    negatives_per_positive: int = Field(1, ge=1)  # implicit data: sampled No cases per Yes case
    # how interaction data becomes cases (data/spec.py `with_protocol`): leave_one_out (per user: last item test,
    # second last valid) or sliding (TALLRec's 10-item windows); null: as each SPEC says
    protocol: Literal["leave_one_out", "sliding"] | None = None
    history_len: int | None = Field(None, ge=1)  # at most this many latest history items per case; null: 10

    @model_serializer(mode="wrap")
    def _settings(self, handler: Callable[[DataSection], dict]) -> dict:
        """The settings without an unset `protocol` or `history_len`: the digest of a recipe without them stays."""
        data = handler(self)
        for key in ("protocol", "history_len"):
            if getattr(self, key) is None:
                data.pop(key)
        return data


class TrainingSection(UserSettings):
    lr: float = Field(1e-3, gt=0)  # higher: faster progress on small budgets, less stable
    scheduler: Literal["constant", "linear", "cosine"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(4, ge=1)  # prompts per forward; memory grows linearly
    grad_accum: int = Field(1, ge=1)  # forwards per optimizer step
    max_steps: int = Field(32, ge=1)  # optimizer steps: the compute budget
    eval_every: int = Field(8, ge=1)  # validate every N optimizer steps
    val_limit: int = Field(64, ge=2)  # validation subset size (seeded, label-stratified)
    patience: int | None = Field(3, ge=1)  # stop after N validations without AUC gain; null: never
    checkpoint_every: int = Field(8, ge=1)  # resumable checkpoint every N optimizer steps
    seed: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, ge=0)  # 0 or null: no clipping (a negative norm reversed the gradients)
    # none, or an experiment tracker accelerate supports (tensorboard, mlflow, wandb, …) that also gets the metrics
    report_to: str = "none"
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None  # null: what the accelerate config or env says

    @model_validator(mode="after")
    def _warmup_has_a_schedule(self) -> TrainingSection:
        if self.scheduler == "constant" and self.warmup_steps:  # transformers' constant schedule ignores warmup
            raise ValueError("warmup_steps needs scheduler linear or cosine; constant ignores it")
        return self

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        return "no" if value is False else value  # YAML reads an unquoted `no` as false

    @field_validator("report_to")
    @classmethod
    def _known_tracker(cls, value: str) -> str:
        known = sorted(t.value for t in LoggerType if t is not LoggerType.ALL)
        if value != "none" and value not in known:
            raise ValueError(f"expected none or a tracker accelerate supports: {', '.join(known)}")
        return value

    @model_serializer(mode="wrap")
    def _settings(self, handler: Callable[[TrainingSection], dict]) -> dict:
        """The settings without `report_to` (where metrics go changes no adapter) and without an unset
        `mixed_precision`: the settings digest, and so the run folder, stays that of the recipe without them."""
        data = handler(self)
        data.pop("report_to")
        if self.mixed_precision is None:
            data.pop("mixed_precision")
        return data


class EvaluationSection(UserSettings):
    limit: int | None = Field(200, ge=2)  # seeded, label-stratified test subset; null: the full split
    seed: int = Field(0, ge=0)
    score: Literal["pyes", "tallrec"] = "pyes"  # tallrec: TALLRec's P(Yes)-P(No) over the full vocabulary
    batch_size: int = Field(8, ge=1)


class PlainSettings(UserSettings):
    """Today's training: cross-entropy of the Yes/No answer (TALLRec)."""

    type: Literal["plain"] = "plain"


class JointSettings(UserSettings):
    """L = L_rec + text_weight * L_text (causal-LM loss on the domain's item text)."""

    type: Literal["joint"]
    rec_loss: Literal["yesno", "pairwise", "listwise"] = "yesno"  # ranking losses compare a query's candidates
    text_weight: float = Field(0.1, ge=0)  # λ: higher teaches the domain's language more, the preference less
    text_source: Literal["titles", "attributes"] = "titles"  # attributes: Amazon title + category/brand words
    text_batch_size: int = Field(4, ge=1)  # item texts per micro-batch for L_text


class DistillSettings(UserSettings):
    """KL(teacher || student) at a temperature plus alpha * the hard Yes/No loss."""

    type: Literal["distill"]
    teacher: str = Field(min_length=1)  # registry ref of the teacher adapter (name or name:version), or "backbone"
    teacher_data: str = Field(min_length=1)  # SPEC of the teacher's view of the training cases (e.g. full history)
    # teacher's backbone (embedded:gemma3-270m, Hub id, folder), quantized like the student's; null: the student's
    teacher_backbone: str | None = Field(None, min_length=1)
    temperature: float = Field(2.0, gt=0)  # higher: softer targets, more of the teacher's ranking information
    alpha: float = Field(0.5, ge=0)  # weight of the hard-label loss


class MultitaskSettings(UserSettings):
    """One adapter on several domains; the noun in each prompt's instruction tags its domain."""

    type: Literal["multitask"]
    extra_train: list[str] = Field(min_length=1)  # SPECs of the other domains' training data (data.shots each)
    weights: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # per-domain loss weight (1)
    ratios: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # sampling ratio (by case count)


class BlendSettings(UserSettings):
    """Plain training, then a logistic regression on [logit P(yes), like-ratio, log popularity]."""

    type: Literal["blend"]
    features: list[Literal["llm", "like_ratio", "popularity"]] = Field(
        ["llm", "like_ratio", "popularity"], min_length=1)
    fit_on: Literal["shots", "valid"] = "shots"  # valid: cases the adapter never trained on (less over-confident)
    l2: float = Field(1.0, ge=0)  # ridge penalty (C = 1/l2): higher shrinks the coefficients towards 0


MethodSection = Annotated[
    PlainSettings | JointSettings | DistillSettings | MultitaskSettings | BlendSettings, Field(discriminator="type")]


class Recipe(UserSettings):
    _source: str = PrivateAttr("recipe")  # the file it was read from, for error messages
    name: str = Field(pattern=r"^[A-Za-z0-9._+-]+$")  # registry name of the adapter (new runs: `names.check_name`)
    domain: str  # the domain this adapter serves
    backbone: BackboneSection = BackboneSection()
    adapter: AdapterConfig
    data: DataSection
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    method: MethodSection = PlainSettings()

    @model_validator(mode="after")
    def _collab_reads_item_tokens(self) -> "Recipe":
        if self.adapter.type == "collab" and not self.data.template.endswith("-items"):
            raise ValueError(f"data.template {self.data.template!r}: a collab adapter reads item tokens, so use "
                             "tallrec-items or chat-items")
        return self


def _named(item: str) -> str:
    """An override as the caller gave it: a `--set` item, or an item of `overrides`."""
    return f"{option('overrides', flag='--set')} {item!r}"


def _parse_override(item: str, source: str) -> tuple[list[str], object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"{source}: {_named(item)}: expected key=value, e.g. training.lr=1e-4")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except (yaml.YAMLError, RecursionError):  # not a YAML value: the text itself
        parsed = value
    return key.split("."), parsed


def _check_written_values(overrides: Sequence[str], source: str) -> None:
    """ConfigError for an override written now whose value YAML would read other than as written: a `#` after a
    space starts a comment (the rest of the value dropped), a key repeated in a mapping (the last kept)."""
    for item in overrides:
        value = item.partition("=")[2]
        if item.splitlines() != [item]:  # the recorded recipe keeps each override on one comment line (any break
            # `str.splitlines` makes: \n, \r, \x0c, \x1c, \x85, U+2028 …, as `recipe_from_text` splits it)
            raise ConfigError(f"{source}: {_named(item)}: holds a line break, which the recipe adaptrec records "
                              "cannot keep on its one --set line; write the value into the recipe file instead")
        try:
            node = yaml.compose(value, Loader=_UniqueKeyLoader)
            yaml.load(value, Loader=_UniqueKeyLoader)
        except _RepeatedKey as e:
            raise ConfigError(f"{source}: {_named(item)}: {e.problem}") from None
        except (yaml.YAMLError, RecursionError):  # not a YAML value (`!Top picks`): read as the text itself
            continue
        dropped = (value if node is None else value[node.end_mark.index:]).strip()
        if dropped:
            raise ConfigError(f"{source}: {_named(item)}: YAML reads {dropped!r} as a comment and drops it; quote "
                              "the value (key=\"…\")")


def apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    """Set dotted keys (`training.lr=1e-4`); values are read as YAML scalars or lists."""
    for item in overrides:
        path, value = _parse_override(item, source)
        node = raw
        for part in path[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise ConfigError(f"{source}: {_named(item)}: {part!r} is not a section")
            node = node[part]
        node[path[-1]] = value
    return raw


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped inside the package (`adaptrec/recipes/*.yaml`)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_summaries() -> dict[str, str]:
    """Each shipped recipe's one-line description: its first comment line, after `NAME — `."""
    out = {}
    for name in shipped_recipes():
        first = (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8").partition("\n")[0]
        out[name] = first.removeprefix("#").strip().removeprefix(name).strip().removeprefix("—").strip()
    return out


def resolve_recipe_path(name_or_path: str) -> Path:
    """A path, or the name of a shipped recipe (`movie-lora` means the package's recipes/movie-lora.yaml)."""
    path, shipped = Path(name_or_path), RECIPES_DIR / f"{name_or_path}.yaml"
    if path.exists() and not (path.is_dir() and shipped.is_file()):  # a pipe or folder is refused when read
        return path
    if shipped.is_file():
        return shipped
    close = get_close_matches(name_or_path, shipped_recipes(), 1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{name_or_path}: no such recipe file ({hint}shipped recipes: {', '.join(shipped_recipes())})")


MAX_ERRORS = 5  # a recipe's mistakes named one per line, up to this many
MAX_SHOWN = 80  # characters of a refused value echoed back
# the refused value's repr, bounded as it is built: YAML aliases nested ten deep (a few hundred bytes of a stored
# or pulled recipe) spell a value whose whole repr would take gigabytes and minutes
_SHOWN = reprlib.Repr()  # keyword arguments from Python 3.12 on
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 3, 6, 6, MAX_SHOWN, MAX_SHOWN


def _shown(value) -> str:
    """`value`'s repr, bounded (`_SHOWN`) and cut to `MAX_SHOWN` characters."""
    given = _SHOWN.repr(value)
    return f"{given[:MAX_SHOWN]}{'…' * (len(given) > MAX_SHOWN)}"


def _known_keys(loc: Sequence) -> list[str]:
    """The keys the section at pydantic's `loc` (a union member named by its `type` tag) takes; [] if not a section."""
    model = Recipe
    for part in loc:
        members = [m for m in get_args(model) if isinstance(m, type) and issubclass(m, BaseModel)] or [model]
        tagged = [m for m in members if part in get_args(m.model_fields.get("type", Field()).annotation or object)]
        model = tagged[0] if tagged else next((m.model_fields[part].annotation for m in members
                                               if isinstance(m, type) and part in getattr(m, "model_fields", {})), None)
    members = [m for m in get_args(model) if isinstance(m, type) and issubclass(m, BaseModel)] or [model]
    return sorted({k for m in members if isinstance(m, type) and issubclass(m, BaseModel) for k in m.model_fields})


def _types_of(section: str) -> list[str]:
    """The `type` values a discriminated section (`adapter`, `method`) takes."""
    members = get_args(Recipe.model_fields[section].annotation)
    return [get_args(member.model_fields["type"].annotation)[0] for member in members]


def _describe_error(err: dict, raw: dict, set_keys: Collection[str] = ()) -> str:
    """`key: message (got value)` for one pydantic error, keys spelled as the recipe spells them; an unknown key
    with the closest known one, and said to come from `--set` when an override (`set_keys`) wrote it."""
    loc = list(err["loc"])
    if loc[:1] in (["adapter"], ["method"]) and len(loc) > 1 and loc[1] == (raw.get(loc[0]) or {}).get("type"):
        del loc[1]  # pydantic names the union member ("adapter.lora.r", "adapter.prefix"); users wrote "adapter.r"
    key = ".".join(str(p) for p in loc)
    if err["type"] == "union_tag_not_found" and key in ("adapter", "method"):  # pydantic: "Unable to extract tag"
        return f"{key}: name its type first ({key}.type: one of {', '.join(_types_of(key))})"
    if err["type"] == "extra_forbidden":
        close = get_close_matches(str(loc[-1]), _known_keys(err["loc"][:-1]), 1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        written = [k for k in set_keys if k == key or k.startswith(f"{key}.") or key.startswith(f"{k}.")]
        where = f"; from --set {written[0]}=…" if written else ""
        return f"{key}: unknown key (got {_shown(err['input'])}{where}){hint}"
    given, message = _SHOWN.repr(err["input"]), err["msg"].removeprefix("Value error, ")
    named = err["type"] == "missing" or isinstance(err["input"], dict) or given in message  # said already
    value = "" if named else f" (got {_shown(err['input'])})"
    return f"{key}: {message}{value}" if key else message  # a validator's own message without pydantic's prefix


def _validate(text: str, overrides: list[str], source: str, new: bool = False) -> Recipe:
    """The recipe that YAML `text` with `overrides` applied describes; one-line ConfigError otherwise. `new`: a
    recipe a run starts from now, not a stored text (`UserSettings`)."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    if not raw and not overrides:  # was: one error line per missing section
        raise ConfigError(f"{source}: the recipe is empty; start from a shipped one (`adaptrec recipes show "
                          "movie-lora`)")
    if new:
        _check_written_values(overrides, source)
    raw = apply_overrides(raw, overrides, source)
    try:
        recipe = Recipe.model_validate(raw, context={NEW_SETTINGS: new})
    except ValidationError as e:
        set_keys = {o.partition("=")[0].strip() for o in overrides}
        lines = [f"{source}: {_describe_error(err, raw, set_keys)}" for err in e.errors()[:MAX_ERRORS]]
        if len(e.errors()) > MAX_ERRORS:
            lines[-1] += f" (+{len(e.errors()) - MAX_ERRORS} more)"
        raise ConfigError("\n".join(lines)) from None
    recipe._source = source
    return recipe


_SET_PREFIX = "# --set "


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> tuple[Recipe, str]:
    """Validated recipe and the exact text it came from (with overrides appended as `# --set` comment lines)."""
    path = resolve_recipe_path(name_or_path)
    text = read_user_text(path, "recipe", ConfigError)
    reserved = next((n for n, line in enumerate(text.splitlines(), 1) if line.startswith(_SET_PREFIX)), None)
    if reserved is not None:  # `recipe_from_text` would read it back as an override
        raise ConfigError(f"{path} line {reserved}: comments starting {_SET_PREFIX.strip()!r} are where adaptrec "
                          "records --set overrides; reword it")
    recipe = _validate(text, overrides or [], str(path), new=True)
    check_new_run(recipe)
    if overrides:
        text += "".join(f"\n{_SET_PREFIX}{o}" for o in overrides) + "\n"
    return recipe, text


def check_new_run(recipe: Recipe, stored: bool = False) -> None:
    """ConfigError for settings no new run may start with; checked where a run starts (`load_recipe`, `update`), not
    on stored texts, so versions registered before a check was added still load and score:

    - a `name` or `domain` the registry would refuse only after the run trained;
    - a setting nothing reads under the others (`_ignored_setting`): it would change the run folder, not the run;
    - a seed past `MAX_SEED`, which numpy's `RandomState` refuses (earlier versions took up to 2**64 - 1);

    the last two only for settings written now: with `stored` (an update of a registered version) the settings it
    was trained with stand;
    - a warm-up gives the first optimizer step learning rate 0 and reaches `training.lr` only once it is over: one
      as long as the run (or longer) never trains at the rate the recipe names, and with one step not at all;
    - a collab adapter's encoder must be able to learn what `adapter.encoder_data` holds (`cf.unfit_pairing`), and
      trains on it: the recipe's valid and test data must be
      held-out splits of that source, or their pairs would train the encoder; its projector trains alone for
      `adapter.projector_steps`, which must leave the LoRA part steps of its own.
    """
    try:
        check_name(recipe.name)
        check_domain(recipe.domain)
    except RegistryError as e:
        raise ConfigError(f"{recipe._source}: {e}") from None
    if not stored and (why := _ignored_setting(recipe) or _seed_too_large(recipe)):
        raise ConfigError(f"{recipe._source}: {why}")
    t = recipe.training
    if t.warmup_steps and t.max_steps == 1:
        raise ConfigError(f"{recipe._source}: training: warmup_steps gives the first optimizer step learning rate 0, "
                          "and max_steps 1 has no other: the adapter would not train; set warmup_steps 0")
    if t.warmup_steps >= t.max_steps:
        raise ConfigError(f"{recipe._source}: training: warmup_steps {t.warmup_steps} of max_steps {t.max_steps}: "
                          "the learning rate would never reach training.lr; set warmup_steps below max_steps (or 0)")
    if recipe.adapter.type == "collab" and recipe.adapter.projector_steps >= t.max_steps:
        raise ConfigError(f"{recipe._source}: adapter.projector_steps {recipe.adapter.projector_steps} of "
                          f"training.max_steps {t.max_steps}: the LoRA part would never train; set projector_steps "
                          "below max_steps (0: both train from the start)")
    if recipe.adapter.type == "collab":
        from .cf import unfit_pairing
        from .cf.fit import HELD_OUT, scores_spec

        source, encoder = recipe.adapter.encoder_data, recipe.adapter.encoder
        if why := unfit_pairing(encoder, source):  # as `train-cf` refuses it (a stored version may hold it)
            default = " (the default)" if encoder == type(recipe.adapter).model_fields["encoder"].default else ""
            raise ConfigError(f"{recipe._source}: adapter: encoder {encoder}{default} on encoder_data {source}: {why}")
        for part in ("valid", "test"):
            spec = _under_protocol(recipe, part)
            if not scores_spec(source, spec):
                raise ConfigError(f"{recipe._source}: data.{part} {spec!r} is not held out of adapter.encoder_data "
                                  f"{source!r} (its held-out SPECs match {HELD_OUT[source]}): its pairs would train "
                                  "the encoder")


def _under_protocol(recipe: Recipe, part: str) -> str:
    """`data.<part>`'s SPEC under `data.protocol`; a ConfigError naming the key when it has no such form."""
    from .data.spec import with_protocol

    try:
        return with_protocol(getattr(recipe.data, part), recipe.data.protocol, part)
    except DataSpecError as e:
        raise ConfigError(f"{recipe._source}: data.{part}: {e}") from None


def _specs(recipe: Recipe) -> list[str]:
    """Every data SPEC the recipe trains, validates and tests on: its own under `data.protocol`, a multitask
    method's other domains as given (as they load)."""
    m = recipe.method
    own = [_under_protocol(recipe, part) for part in ("train", "valid", "test")]
    return own + list(m.extra_train if isinstance(m, MultitaskSettings) else [])  # read as given


def _seed_too_large(recipe: Recipe) -> str | None:
    """Why a seed of the recipe is past `MAX_SEED`; None when none is."""
    seeds = {f"{section}.seed": getattr(recipe, section).seed for section in ("data", "training", "evaluation")}
    return next((f"{key} {value}: at most {MAX_SEED} (2**32 - 1), the largest seed every random generator takes"
                 for key, value in seeds.items() if value > MAX_SEED), None)


def _ignored_setting(recipe: Recipe) -> str | None:
    """Why a setting the recipe names does nothing under its other settings; None when each is read."""
    from .data.spec import draws_negatives

    b, a, d = recipe.backbone, recipe.adapter, recipe.data
    if b.int8_backend is not None and b.quantization != "8bit":
        return (f"backbone.int8_backend {b.int8_backend!r} picks the 8-bit kernels, and quantization "
                f"{b.quantization!r} runs none; drop it or quantize 8bit")
    if a.type == "prefix" and a.init == "random" and "init_text" in a.model_fields_set:
        return "adapter.init_text is read with init: text only; drop it or set init: text"
    if d.negatives_per_positive != 1 and not any(map(draws_negatives, _specs(recipe))):
        return ("data.negatives_per_positive is read by implicit data (Amazon, interaction logs, leave-one-out), and "
                "this recipe's data is labelled (TALLRec-style cases or feedback); drop it")
    if d.template.endswith("-items") and a.type != "collab":
        return (f"data.template {d.template!r} puts a collaborative adapter's item tokens in the prompt, and a "
                f"{a.type} adapter has none (it would read {d.template.removesuffix('-items')!r} prompts); use "
                f"{d.template.removesuffix('-items')!r}")
    return None


def recipe_from_text(text: str, source: str = "<recipe text>") -> Recipe:
    """The recipe a text from `load_recipe` (e.g. a registry row's `recipe_text`) describes, overrides included."""
    overrides = [line[len(_SET_PREFIX):] for line in text.splitlines() if line.startswith(_SET_PREFIX)]
    return _validate(text, overrides, source)


def check_new_overrides(recipe: Recipe, overrides: Sequence[str], source: str) -> None:
    """`overrides` checked as settings written now (`UserSettings`: no true/false for a number) over `recipe`, read
    from a stored text whose own values are not held to that (an update's `--set` over its parent's recipe)."""
    if overrides:
        _validate(yaml.safe_dump(recipe.model_dump(mode="json")), list(overrides), source, new=True)


def step_budget(steps: int, overrides: Sequence[str] = (), warmup: int = 0) -> list[str]:
    """`--set` items for a budget of `steps` optimizer steps: `training.max_steps`, and for one step, or no more
    than the recipe's `warmup` steps, also `training.warmup_steps=0` unless `overrides` sets it (a warm-up's first
    step has learning rate 0, and the rate reaches `training.lr` only once the warm-up is over)."""
    sets = [f"training.max_steps={steps}"]
    if (steps == 1 or steps <= warmup) and not any(s.startswith("training.warmup_steps=") for s in overrides):
        sets.append("training.warmup_steps=0")
    return sets


def recipe_digest(recipe: Recipe) -> str:
    """sha256 of the recipe's settings: equal for texts that differ only in comments, layout or key order."""
    return digest(recipe.model_dump(mode="json"))


recipe_hash = text_digest
