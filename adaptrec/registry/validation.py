"""Checks of what a caller hands the registry (names, domains, metrics, fingerprints, lineage, source folders)
and of a registered version's files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from adaptrec.adapters.check import peft_type_problem, read_config
from adaptrec.adapters.files import METADATA_FILE, MIX_TYPE, file_sha256, required_files, verify_adapter_dir
from adaptrec.errors import AdaptrecError, IntegrityError, RegistryError
from adaptrec.fingerprint import Fingerprint
from adaptrec.userfiles import finite_number

from .records import KINDS, AdapterRecord, parse_ref

_LINEAGE_HELP = "{'parents': ['name:version', ...], 'method': ..., 'weights': [...]}"


def check_metrics(metrics: dict | None) -> dict:
    """{metric: {"value": number, "data": SPEC, "limit": int | None, ...extra protocol keys}}."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise RegistryError("metrics must be a mapping {metric: {'value': ..., 'data': SPEC, 'limit': N}}")
    out = {}
    for key, m in metrics.items():
        example = f"{{'{key}': {{'value': 0.71, 'data': 'movies:test', 'limit': 500}}}}"
        if not isinstance(key, str) or not key:
            raise RegistryError(f"bad metric name {key!r}: use names like 'auc' or 'ndcg@10'")
        if not isinstance(m, dict):
            raise RegistryError(f"metric '{key}' must record its value with the data SPEC and limit it was measured "
                                f"on, e.g. {example}")
        value, data, limit = m.get("value"), m.get("data"), m.get("limit")
        if not finite_number(value):
            raise RegistryError(f"metric '{key}' needs a finite numeric 'value', e.g. {example}")
        if not isinstance(data, str) or not data:
            raise RegistryError(f"metric '{key}' needs 'data': the data SPEC it was measured on, e.g. {example}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise RegistryError(f"metric '{key}': 'limit' must be a positive int or None (all cases), e.g. {example}")
        try:
            json.dumps(m, allow_nan=False)  # a NaN would push, and every pull refuse its adaptrec.json
        except (TypeError, ValueError):
            raise RegistryError(f"metric '{key}' holds values that are not JSON (NaN or infinity included)") from None
        out[key] = {**m, "limit": limit}
    return out


def as_fingerprint(fp: Fingerprint | dict) -> Fingerprint:
    """`fp` as a `Fingerprint` (a dict needs 'exact' and 'family' strings, and 'base_model' a string if given)."""
    if isinstance(fp, Fingerprint):
        return fp
    if isinstance(fp, dict) and all(isinstance(fp.get(k), str) and fp[k] for k in ("exact", "family")) \
            and isinstance(fp.get("base_model", ""), str):
        return Fingerprint.from_dict(fp)
    raise RegistryError("fingerprint must be the backbone's Fingerprint (backbone.fingerprint), "
                        "or a dict with 'exact' and 'family' strings (and 'base_model', a string)")


def check_lineage(lineage: dict | None, kind: str) -> dict | None:
    """`lineage` with its shape checked; a pulled adapter's parents (named by its publisher, not necessarily
    present here) become explicit `name:version` refs, other kinds' parents are resolved by the registry."""
    if lineage is None:
        if kind == "composed":
            raise RegistryError(f"a composed adapter needs lineage={_LINEAGE_HELP}")
        return None
    if not isinstance(lineage, dict):
        raise RegistryError(f"lineage must be a mapping {_LINEAGE_HELP}")
    parents = lineage.get("parents", [])
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RegistryError("lineage 'parents' must be a list of refs such as ['movies-lora:2', 'books-lora:1']")
    refs = [parse_ref(p) for p in parents]
    if kind == "pulled":
        for p, (n, v) in zip(parents, refs):
            if v is None:
                raise RegistryError(f"lineage parent {p!r} needs an explicit version, e.g. '{n}:1'")
        parents = [f"{n}:{v}" for n, v in refs]
    method = lineage.get("method")
    if kind == "composed":
        if not parents:
            raise RegistryError("a composed adapter needs at least one lineage parent ('name:version')")
        if not isinstance(method, str) or not method:
            raise RegistryError("a composed adapter needs lineage 'method' "
                                "(how the parents were combined, e.g. 'linear')")
    _check_weights(lineage.get("weights"), len(parents))
    _check_read_keys(lineage)
    try:
        json.dumps(lineage, allow_nan=False)
    except (TypeError, ValueError):
        raise RegistryError("lineage holds values that are not JSON (NaN or infinity included)") from None
    return {**lineage, "parents": parents}


def _check_read_keys(lineage: dict) -> None:
    """The shape of the lineage keys other commands read (the gate, updates, pushes, cards): a pulled adapter's
    lineage is its publisher's file, so a wrong type would fail later, far from its cause."""
    def window(w: Any) -> bool:  # the gate reads both bounds of a window with either
        if not isinstance(w, dict):
            return False
        bounds = ("since", "until") if "until" in w or "since" in w else ()
        return all(isinstance(w.get(k), (int, float)) and not isinstance(w.get(k), bool) for k in bounds)

    keys = (lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v), "a list of event keys")
    shapes = {"events": keys, "valid_events": keys,
              "teacher_backbone": (lambda v: v is None or (isinstance(v, dict)
                                                           and isinstance(v.get("base_model", ""), str)),
                                   "a mapping with a 'base_model' string"),
              "window": (window, "a mapping with numeric 'since' and 'until'"),
              "earlier_windows": (lambda v: isinstance(v, list) and all(map(window, v)), "a list of windows"),
              **{k: (lambda v: isinstance(v, str), "a string") for k in ("updated_from", "data", "workdir")}}
    for key, (fits, expected) in shapes.items():
        if key in lineage and not fits(lineage[key]):
            raise RegistryError(f"lineage {key!r} must be {expected}, got {type(lineage[key]).__name__}")


def _check_weights(weights: Any, n_parents: int) -> None:
    """Lineage weights are None or one finite number per parent."""
    if weights is None:
        return
    if (
        not isinstance(weights, list)
        or len(weights) != n_parents
        or not all(map(finite_number, weights))
    ):
        raise RegistryError(f"lineage 'weights' must be {n_parents} finite numbers, one per parent")


def check_type(kind: str, adapter_type: str, adapter_config: dict | None) -> None:
    """A known kind, a named peft tuner and a config dict (or None)."""
    if kind not in KINDS:
        raise RegistryError(f"bad adapter kind {kind!r}: use one of {', '.join(KINDS)}")
    if not isinstance(adapter_type, str) or not adapter_type:
        raise RegistryError("adapter_type must name the peft tuner, e.g. 'lora', 'adalora' or 'prefix'")
    if adapter_config is not None and not isinstance(adapter_config, dict):
        raise RegistryError("adapter_config must be a dict (peft config.to_dict()) or None to read adapter_config.json")


def check_origin(origin: dict | None, kind: str) -> dict | None:
    """`origin` if it is a mapping, naming the Hub repo and revision of a pulled adapter."""
    if origin is not None and not isinstance(origin, dict):
        raise RegistryError("origin must be a mapping such as {'repo': 'user/adapters', 'revision': '<commit>'}")
    if kind == "pulled" and not (origin and origin.get("repo") and origin.get("revision")):
        raise RegistryError("a pulled adapter needs origin={'repo': <hub repo>, 'revision': <commit sha>}")
    return origin


def check_recipe(recipe_text: str | None) -> str | None:
    """`recipe_text` if it is text or None."""
    if recipe_text is not None and not isinstance(recipe_text, str):
        raise RegistryError("recipe_text must be the recipe's YAML text (a str) or None")
    return recipe_text


def check_source(src: Any, adapter_type: str) -> None:
    """A source folder must exist and hold the type's required files; any other source must be able to write
    one. (`write_adapter_dir` checks every file again as it copies.)"""
    if isinstance(src, (str, os.PathLike)):
        folder = Path(src)
        if not folder.is_dir():
            raise AdaptrecError(f"adapter source folder {folder} does not exist; pass the folder save_pretrained wrote")
        required = required_files(adapter_type)
        missing = [rel for rel in required if not (folder / rel).is_file()]
        if missing:
            raise IntegrityError(f"adapter source {folder} lacks {', '.join(missing)}; an adapter folder needs "
                                 f"{', '.join(required)} (peft's save_pretrained writes the first two)")
    elif not (hasattr(src, "save_pretrained") or callable(src)):
        raise AdaptrecError(f"cannot write an adapter from {type(src).__name__}; "
                            "pass a folder, a callable writer(folder), or a peft model")


def registered_config(adapter_type: str, stated: dict | None, folder: Path, src: Any) -> dict:
    """The config a row records: a mix's spec as given; a peft adapter's `adapter_config.json` in the folder just
    written from `src` (errors name `src`: re-save it), which each key the caller `stated` must match (the DoRA,
    base-change and load-path checks read the row: a stated config that left out `use_dora` passed them)."""
    if adapter_type == MIX_TYPE and stated is not None:
        return stated
    config = read_config(folder, f"{src} (re-save the adapter)")
    problem = peft_type_problem(config, adapter_type)
    if problem is not None:  # a pull refuses it, a push would publish it
        raise RegistryError(f"{src}: {problem}; register it as the type it is")
    differs = [key for key, value in (stated or {}).items() if _as_written(config.get(key)) != _as_written(value)]
    if differs:
        key = differs[0]
        raise RegistryError(f"adapter_config {key}={stated[key]!r} contradicts the adapter's adapter_config.json "
                            f"({key}={config.get(key)!r}); pass adapter_config=None to read the file")
    return config


def _as_written(value: Any) -> Any:
    """A config value as its JSON file holds it, order aside: peft's `to_dict()` gives sets (`target_modules`)
    where the file has lists."""
    if isinstance(value, (set, frozenset, list, tuple)):
        items = [_as_written(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) or all(
            isinstance(v, str) for v in items) else items
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    return value


def verified_files(rec: AdapterRecord) -> dict:
    """The metadata of `rec`'s folder after re-hashing every file, `adaptrec.json` against the row first (a forged
    one never decides which files are read); IntegrityError naming what changed otherwise."""
    try:
        registered = file_sha256(rec.path / METADATA_FILE) == rec.file_hash
    except OSError:
        registered = False
    if not registered:
        raise IntegrityError(
            f"{rec.path / METADATA_FILE} is missing or differs from the copy registered as {rec.ref}; the folder was "
            "modified, re-register the adapter"
        )
    return verify_adapter_dir(rec.path)
