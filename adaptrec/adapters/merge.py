"""Composing registered adapters: ΔW merging through peft's `add_weighted_adapter`, merging into the base.

What each peft method computes (peft 0.21, `tuners/lora/model.py`; checked on a tiny model in
tests/router/test_compose.py), with sᵢ the source's LoRA scaling (alphaᵢ/rᵢ; alphaᵢ/√rᵢ for rsLoRA):

* `cat`: stacks wᵢ·sᵢ·Aᵢ and Bᵢ into one adapter of rank Σrᵢ: ΔW = Σ wᵢ sᵢ Bᵢ Aᵢ exactly.
* `svd`: the same Σ wᵢ ΔWᵢ, then truncated by SVD to `svd_rank` (peft's default: the largest
  source rank, which is lossy). We default to Σrᵢ, which keeps it exact; when Σrᵢ exceeds the smallest targeted
  matrix side, one rank for every module would truncate the larger ones, so that is refused without `svd_rank`.
* `ties_svd`, `dare_linear_svd`, `dare_ties_svd`, `magnitude_prune_svd`: the named merge applied
  to the ΔWᵢ, then SVD (rank `svd_rank`, same default): true ΔW merging.
* `linear`, `ties`, `dare_linear`, `dare_ties`, `magnitude_prune`: merge the A's and the B's
  *separately* (weights √|wᵢsᵢ| on each side, the sign on A), so ΔW = (Σ√|wᵢsᵢ|Bᵢ)(Σ sign(wᵢ)√|wᵢsᵢ|Aᵢ) has
  cross terms BᵢAⱼ; they need equal ranks in every module and are refused otherwise. With one source peft merges
  linearly whatever the method, so those methods need two sources or more.
* `dare_*` draw random masks: the merge runs under `torch.manual_seed(seed)`, so it is reproducible.

AdaLoRA sources are first exported exactly to LoRA (`export.adalora_to_lora`). Prefix adapters
have no ΔW: they can only be combined by score-level mixing (`mix`), registered as a folder holding
only `mix.json` (`as_mix` reads it back); `scoring.variants` computes a mix's scores.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer

from adaptrec.atomic import atomic_dir, write_json
from adaptrec.backbone import load_backbone
from adaptrec.errors import CompositionError, option
from adaptrec.fingerprint import Fingerprint, digest
from adaptrec.names import check_distinct

from .attach import COLLAB_TYPE, attach, load_peft, peft_name, peft_type, restore
from .export import adalora_to_lora
from .files import MIX_FILE, MIX_TYPE, FamilyMatchWarning

SEPARATE_AB_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
SVD_METHODS = ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
MERGE_METHODS = ("cat",) + SVD_METHODS + SEPARATE_AB_METHODS
MIX = "mix"  # score-level: weighted average of each adapter's P(yes)
METHODS = MERGE_METHODS + (MIX,)
_PLAIN = ("cat", "svd", "linear")  # weighted sums, nothing pruned: also what peft computes for one source
_DENSITY_METHODS = tuple(m for m in MERGE_METHODS if m not in _PLAIN)
_LORA_TYPES = ("LORA", "ADALORA")


@dataclass(frozen=True)
class Composition:
    """How to combine registered adapters: refs, method (a peft merge or `mix`) and one weight per ref."""

    refs: tuple[str, ...]
    method: str
    weights: tuple[float, ...]
    svd_rank: int | None = None  # *svd methods; None: Σ of the source ranks (exact for `svd`)
    density: float | None = None  # ties/dare/magnitude_prune: share of values kept
    seed: int = 0  # dare_* masks
    extra: dict = field(default_factory=dict, compare=False)  # recorded in the lineage (e.g. the weight search)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refs", tuple(self.refs))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        check_weights(self.method, self.weights, len(self.refs))
        check_distinct(self.refs)
        if len(self.refs) == 1 and (self.method not in (*_PLAIN, MIX) or self.svd_rank is not None):
            raise CompositionError(f"{option('method', self.method)}"
                                   + (f" with {option('svd_rank', self.svd_rank)}" if self.svd_rank else "")
                                   + ": one adapter is merged linearly whatever the method (peft), which the lineage "
                                   "would not say; compose two or more, or scale one with cat")
        if self.svd_rank is not None and (self.method not in SVD_METHODS or self.svd_rank < 1):
            raise CompositionError(f"{option('svd_rank', self.svd_rank)}: a rank of at least 1, for "
                                   f"{', '.join(SVD_METHODS)} (this method is {self.method})")
        if self.density is not None and (self.method not in _DENSITY_METHODS or not 0 < self.density <= 1):
            raise CompositionError(f"{option('density', self.density)}: a share in (0, 1], for "
                                   f"{', '.join(_DENSITY_METHODS)} (this method is {self.method})")
        if self.density is None and self.method in _DENSITY_METHODS:
            object.__setattr__(self, "density", 1.0 if self.method.startswith("magnitude") else 0.5)

    def lineage(self, parents: Sequence[str]) -> dict:
        """The registry lineage: parents as resolved refs, method, weights and the merge's knobs."""
        knobs = {"svd_rank": self.svd_rank, "density": self.density, "seed": self.seed}
        return {"parents": list(parents), "method": self.method, "weights": list(self.weights),
                **{k: v for k, v in knobs.items() if v is not None}, **self.extra}


def check_weights(method: str, weights: Sequence[float], n: int) -> None:
    """One finite weight per adapter; `mix` needs non-negative weights with a positive sum."""
    if method not in METHODS:
        raise CompositionError(f"{option('method', method)}: expected one of {', '.join(METHODS)}")
    if n < 1:
        raise CompositionError("compose needs at least one adapter")
    if len(weights) != n or not all(math.isfinite(w) for w in weights):
        raise CompositionError(f"give {n} finite weights, one per adapter (got {list(weights)})")
    if method == MIX and (min(weights) < 0 or sum(weights) <= 0):
        raise CompositionError(f"mix weights must be >= 0 with a positive sum (got {list(weights)})")
    if not any(weights):  # was: registered an adapter that changes nothing, the untuned backbone under a name
        raise CompositionError(f"every weight is 0 (got {list(weights)}): the composition would be no adapter")


# ---------------------------------------------------------------- ΔW merging
# an activation rule, token deltas, a pooled or block-diagonal A: what A·B of a ΔW merge does not carry
_DROPPED = ("alora_invocation_tokens", "trainable_token_indices", "use_qalora", "use_bdlora")
_FIRST_SOURCES = ("exclude_modules", "layers_to_transform", "layers_pattern")  # which modules a LoRA reaches


def _reach(config: dict) -> dict:
    """What decides which modules a LoRA reaches, as peft reads it: empty is unset; one layer index or layer pattern
    is a list of one; an `exclude_modules` string is a regex, a list are names (kept apart); `layers_pattern` only
    counts beside `layers_to_transform`."""
    def normal(value, one_is_a_list: bool):
        if value in (None, [], (), "", set()):
            return None
        if isinstance(value, (list, tuple, set)):
            return sorted(value, key=str)
        return [value] if one_is_a_list else value

    reach = {key: normal(config.get(key), key != "exclude_modules") for key in _FIRST_SOURCES}
    if reach["layers_to_transform"] is None:
        reach["layers_pattern"] = None
    return reach


def check_merge_sources(records: Sequence, method: str | None = None) -> None:
    """`CompositionError` for a source a ΔW merge cannot take, read from its registry record alone (before any
    model loads): a prefix or collaborative adapter, or one whose DoRA magnitudes, biases, whole modules, token
    deltas, activation rule (aLoRA) or pooled or block-diagonal A (QA-LoRA, BD-LoRA) a merge of A and B would drop;
    sources that differ in which modules they reach (`exclude_modules`, `layers_to_transform`, `layers_pattern`: the
    merge keeps the first's); with the `method`,
    LoRA sources whose ranks it cannot merge (`merge` checks again once loaded, AdaLoRA sources' exported ranks
    included)."""
    for record in records:
        if peft_type(record) not in _LORA_TYPES:
            raise CompositionError(f"{record.ref} is a {record.adapter_type} adapter: it has no ΔW to merge; "
                                   f"combine it by score-level mixing ({option('method', MIX)})")
        if record.adapter_type == COLLAB_TYPE:
            raise CompositionError(f"{record.ref} is a collaborative adapter: a merged LoRA would lose its item "
                                   f"tokens; combine it by score-level mixing ({option('method', MIX)})")
        config = record.adapter_config or {}
        extra = [k for k in ("use_dora", "lora_bias", "modules_to_save", *_DROPPED) if config.get(k)]
        extra += ["bias"] if config.get("bias", "none") != "none" else []
        if extra:  # peft's weighted merge reads A and B only: DoRA's magnitudes, biases and whole modules are dropped
            raise CompositionError(f"{record.ref} has {extra[0]}, which a ΔW merge of A and B drops; combine it by "
                                   f"score-level mixing ({option('method', MIX)})")
    for key in _FIRST_SOURCES:  # peft's merged config copies these from the first source
        values = {json.dumps(_reach(r.adapter_config or {})[key], default=str) for r in records}
        if len(values) > 1:
            raise CompositionError(f"{', '.join(r.ref for r in records)} differ in {key}; a ΔW merge takes the first "
                                   "source's, so another source's ΔW outside it would be lost; combine them by "
                                   f"score-level mixing ({option('method', MIX)})")
    if method is not None and all(peft_type(r) == "LORA" for r in records):
        ranks = {r.ref: (int((r.adapter_config or {}).get("r", 8)), dict((r.adapter_config or {}).get("rank_pattern")
                                                                      or {})) for r in records}
        _check_ranks(method, ranks)


def _check_ranks(method: str, ranks: dict[str, tuple[int, dict]]) -> None:
    """`CompositionError` when `method` cannot merge sources of these (rank, rank_pattern)s, keyed by name."""
    patterned = [name for name, (_, pattern) in ranks.items() if pattern]
    if patterned and (len(ranks) == 1 or method in SEPARATE_AB_METHODS):
        raise CompositionError(f"{patterned[0]} has per-module ranks (rank_pattern); peft merges "
                               f"{'one source linearly' if len(ranks) == 1 else f'{method} A and B separately'} and "
                               "saves the result under one rank, so it would not load again; compose two or more "
                               "sources with cat or svd")
    if method in SEPARATE_AB_METHODS and len({str(r) for r in ranks.values()}) > 1:
        shown = ", ".join(f"{name} r={r}" for name, (r, _) in ranks.items())
        instead = "cat or svd" if method == "linear" else f"cat, svd or {method}_svd"
        raise CompositionError(f"{method} merges A and B separately and needs equal ranks in every module ({shown}); "
                               f"use {instead}")


@contextmanager
def attached_sources(backbone, registry, refs: Sequence[str]) -> Iterator[tuple[object, list, list[str]]]:
    """Attach the (verified) sources to one PeftModel as LoRA adapters, AdaLoRA ones exported exactly first.

    Yields the model, the records and each source's peft adapter name; detaches them on exit.
    Sources `check_merge_sources` refuses are refused.
    """
    records = [registry.load_verified(ref, backbone.fingerprint) for ref in refs]
    check_distinct([r.ref for r in records])  # `a` and `a:1` may name one version
    check_merge_sources(records)
    model, names = backbone.model, []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, record in enumerate(records):
                name = peft_name(record.ref)
                folder = record.path if peft_type(record) == "LORA" else adalora_to_lora(record.path, Path(tmp) / str(i))
                model = load_peft(model, folder, name)
                names.append(name)
        model.eval()
        yield model, records, names
    finally:
        restore(backbone, model)


def _ranks(config) -> tuple[int, dict]:
    return config.r, dict(config.rank_pattern or {})


def _rank_bounds(model, names: Sequence[str]) -> tuple[int, int]:
    """(Σ of the sources' largest ranks, the smallest targeted matrix side): ΔW's rank is at most either."""
    total = sum(max([c.r, *(c.rank_pattern or {}).values()]) for c in (model.peft_config[n] for n in names))
    sides = [min(m.in_features, m.out_features) for m in model.modules()
             if isinstance(m, LoraLayer) and any(n in m.lora_A for n in names)]
    return total, min(sides, default=total)


def merge(model, names: Sequence[str], composition: Composition, new_name: str) -> str:
    """Add `new_name` = the composition of the attached adapters `names` (peft's add_weighted_adapter)."""
    method = composition.method
    if method == MIX:
        raise CompositionError("mix combines scores, not weights; it cannot be merged into one adapter")
    if new_name in model.peft_config:
        raise CompositionError(f"an adapter named {new_name!r} is already attached")
    _check_ranks(method, {n: _ranks(model.peft_config[n]) for n in names})
    svd_rank = None
    if method in SVD_METHODS:
        total, side = _rank_bounds(model, names)
        if composition.svd_rank is not None and composition.svd_rank > side:  # peft slices the factors to the side
            raise CompositionError(f"{option('svd_rank', composition.svd_rank)}: above the smallest targeted matrix "
                                   "side "
                                   f"({side}), so the saved adapter would not load again; use at most {side}")
        if composition.svd_rank is None and total > side:  # one rank for every module: the larger ones truncated
            raise CompositionError(f"the sources' ranks add up to {total}, above the smallest targeted matrix side "
                                   f"({side}): an {method} merge has one rank for every module, so the larger ones "
                                   f"would be truncated; use {option('method', 'cat')} (exact at any rank), or give "
                                   f"{option('svd_rank', side)} to accept the truncation")
        svd_rank = composition.svd_rank or total
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):  # manual_seed seeds CUDA's too
        torch.manual_seed(composition.seed)
        try:
            model.add_weighted_adapter(list(names), list(composition.weights), new_name, combination_type=method,
                                       svd_rank=svd_rank, density=composition.density)
        except (ValueError, TypeError, RuntimeError) as e:
            if new_name in model.peft_config:
                model.delete_adapter(new_name)
            raise CompositionError(f"peft refused the {method} merge: {str(e).splitlines()[0]}") from e
    config = model.peft_config[new_name]
    if config.use_rslora:  # copied from the first source: the merged A·B already carry every source's scaling
        config.use_rslora = False
        for module in model.modules():
            if isinstance(module, LoraLayer) and new_name in module.scaling:
                module.scaling[new_name] = config.lora_alpha / module.r[new_name]
    model.eval()  # peft builds the new adapter's layers (dropout included) in training mode
    return new_name


def compose(backbone, registry, composition: Composition, *, name: str, domain: str, metrics: dict | None = None):
    """Merge registered LoRA/AdaLoRA adapters into one and register it (kind `composed`); returns its record.

    A score-level `mix` is registered too, as a folder holding only `mix.json` (sources and weights):
    eval, routing and serving expand it into its sources (`as_mix`)."""
    if composition.method == MIX:
        return _register_mix(backbone, registry, composition, name=name, domain=domain, metrics=metrics)
    with attached_sources(backbone, registry, composition.refs) as (model, records, names), \
            tempfile.TemporaryDirectory() as tmp:
        merged = merge(model, names, composition, peft_name(f"{name}+composed"))
        # peft writes a named adapter into tmp/<name>/; a merged embedding layer's LoRA matrices only, not the base's
        model.save_pretrained(tmp, selected_adapters=[merged], save_embedding_layers=False)
        lineage = composition.lineage([r.ref for r in records])
        if composition.method in SVD_METHODS:  # the rank applied, the default one included
            lineage["svd_rank"] = model.peft_config[merged].r
        return registry.register(
            Path(tmp) / merged, name=name, domain=domain, kind="composed", adapter_type="lora", adapter_config=None,
            fingerprint=composed_fingerprint(records, backbone.fingerprint), metrics=metrics, lineage=lineage,
        )


def composed_fingerprint(records, backbone_fp: Fingerprint) -> Fingerprint:
    """The base a composition of `records` (verified against `backbone_fp`) records: the backbone's when every source
    was trained on it, the sources' one build when they share another, else a build of no backbone, so that every
    later load keeps the family warning its sources gave here."""
    builds = {r.fingerprint.exact: r.fingerprint for r in records}
    if set(builds) == {backbone_fp.exact}:
        return backbone_fp
    if len(builds) == 1:
        return next(iter(builds.values()))
    return replace(backbone_fp, exact=digest({"composed_of": sorted(builds)}))


def refuse_nested_mix(records) -> None:
    """A mix's sources are adapters with weights: a mix among them is refused."""
    nested = [r.ref for r in records if r.adapter_type == MIX_TYPE]
    if nested:
        raise CompositionError(f"{', '.join(nested)} is itself a mix: mix its sources instead")


def _register_mix(backbone, registry, composition: Composition, *, name: str, domain: str, metrics: dict | None):
    records = [registry.load_verified(r, backbone.fingerprint) for r in composition.refs]
    refuse_nested_mix(records)
    spec = {"sources": [r.ref for r in records], "weights": list(composition.weights)}
    return registry.register(lambda folder: write_json(Path(folder) / MIX_FILE, spec), name=name, domain=domain,
                             kind="composed", adapter_type=MIX_TYPE, adapter_config=spec,
                             fingerprint=composed_fingerprint(records, backbone.fingerprint),
                             metrics=metrics, lineage=composition.lineage(spec["sources"]))


def as_mix(record) -> Composition | None:
    """The score-level composition a registered `mix` entry stands for; None for an adapter with weights."""
    if record.adapter_type != MIX_TYPE:
        return None
    config = record.adapter_config or {}
    return Composition(tuple(config["sources"]), MIX, tuple(config["weights"]))


def merge_into_base(backbone_name: str, registry, ref: str, out_dir: Path) -> Path:
    """A standalone model: adapter `ref` merged into the backbone's full-precision source weights (safetensors).

    The weights are loaded unquantized (not dequantized from int8, which would add its rounding), so the
    adapter's 8-bit fingerprint matches only by family here. Re-quantizing the result to 8-bit is lossy:
    the merged ΔW is rounded with the base weights. `out_dir` must not exist; it is written atomically.
    """
    if registry.resolve(ref).adapter_type == COLLAB_TYPE:
        raise CompositionError(f"{ref} is a collaborative adapter: its item tokens and projector wrap the input "
                               "embedding, which a merged standalone model cannot hold")
    base = load_backbone(backbone_name, quantization="none", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FamilyMatchWarning)  # expected: the adapter was made on the quantized build
        model, (record,) = attach(base, registry, [ref])
    _untie_what_it_changes(model)
    merged = model.merge_and_unload()
    with atomic_dir(Path(out_dir)) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        base.tokenizer.save_pretrained(tmp)
        write_json(tmp / "adaptrec_merge.json", {"base_model": base.fingerprint.base_model, "adapter": record.ref,
                                                 "adapter_base": record.fingerprint.to_dict(), "lineage": record.lineage})
    return Path(out_dir)


def _untie_what_it_changes(model) -> None:
    """Give a tied output head (SmolLM2, Gemma-3: one tensor with the input embedding) a copy of its own when the
    adapter changes either: peft merges in place, which would change both where the adapter changes one."""
    inner = model.get_base_model()
    layers = [inner.get_input_embeddings(), inner.get_output_embeddings()]
    if layers[1] is None or not any(isinstance(m, BaseTunerLayer) for m in layers):
        return
    embedding, head = (m.get_base_layer() if isinstance(m, BaseTunerLayer) else m for m in layers)
    if head.weight is embedding.weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        for config in {id(c): c for c in (inner.config, inner.config.get_text_config())}.values():
            config.tie_word_embeddings = False  # or a load of the merged model would tie them again


def delta_weights(model, adapter: str) -> dict[str, torch.Tensor]:
    """ΔW of every module `adapter` touches (scaling included), keyed by module name."""
    return {name: m.get_delta_weight(adapter).detach() for name, m in model.named_modules()
            if isinstance(m, LoraLayer) and adapter in m.lora_A}


def parse_weights(text: str | None, n: int, name: str = "weights") -> tuple[float, ...]:
    """`"0.6,0.4"` -> (0.6, 0.4); None -> equal weights 1/n; `name`: the option that gave them."""
    if text is None:
        return (1.0 / n,) * n
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise CompositionError(f"{option(name, text)}: expected comma-separated numbers, e.g. 0.6,0.4") from None
