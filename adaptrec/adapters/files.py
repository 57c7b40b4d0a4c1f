"""Adapter folders on disk: plain peft layout plus `adaptrec.json` (metadata and a sha256 per file).

    <folder>/adapter_model.safetensors   the weights (safetensors only; pickle formats are refused)
    <folder>/adapter_config.json         the peft config, as peft writes it
    <folder>/adaptrec.json               name, domain, adapter_type, base fingerprint, recipe,
                                         metrics, lineage, origin, and `files`: {relpath: sha256}
                                         of every other file in the folder

Folders are written atomically (temporary sibling, then one rename) and every load goes through
`verify_adapter_dir` (hashes) and `check_base` (base-model fingerprint).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Union

from adaptrec.atomic import atomic_dir, write_json
from adaptrec.errors import AdaptrecError, FingerprintMismatch, IntegrityError
from adaptrec.fingerprint import Fingerprint, file_sha256

METADATA_FILE = "adaptrec.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE)
MIX_FILE = "mix.json"  # a score-level mix has no weights: its sources and their weights
MIX_TYPE = "mix"


COLLAB_FILES = ("collab.safetensors", "collab.json")  # adapters/collab.py: the item table, projector and id map


def required_files(adapter_type: str | None) -> tuple[str, ...]:
    """Files an adapter folder must hold: peft's two (with a collaborative adapter's own), or a mix's spec."""
    if adapter_type == MIX_TYPE:
        return (MIX_FILE,)
    return (*REQUIRED_FILES, *COLLAB_FILES) if adapter_type == "collab" else REQUIRED_FILES


# Files a published adapter of each type may carry beside adaptrec.json (a pull refuses any other name).
PUBLISHED_FILES = {"lora": REQUIRED_FILES, "adalora": REQUIRED_FILES, "prefix": REQUIRED_FILES,
                   "collab": (*REQUIRED_FILES, *COLLAB_FILES)}
CARD_FILES = ("README.md", ".gitattributes")  # the model card and the Hub's own file, never loaded


def published_files(adapter_type: str | None) -> tuple[str, ...] | None:
    """The allow-list of an adapter type's published files; None for a type that cannot be published."""
    files = PUBLISHED_FILES.get(adapter_type or "")
    return None if files is None else (*files, METADATA_FILE, *CARD_FILES)
FORMAT_VERSION = 1
# weight formats that unpickle (and so can run code) on load
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
_CHUNK = 1 << 20

# a folder to copy, a callable that writes the peft files into the folder it is given,
# or anything with `save_pretrained(folder)` (a peft model)
Source = Union[str, os.PathLike, Callable[[Path], Any], Any]


class FamilyMatchWarning(UserWarning):
    """An adapter made for another build of the same base family (e.g. other quantization) is loaded."""


def _is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def _refuse_pickle(rel: str, where: Path) -> None:
    raise IntegrityError(
        f"{where}: '{rel}' is a pickle-format weight file, which adaptrec never loads; "
        "save adapters with safetensors (peft: save_pretrained(..., safe_serialization=True))"
    )


def _files_in(folder: Path) -> list[str]:
    """Relative POSIX paths of every file under `folder`, sorted, `adaptrec.json` excluded; a symbolic link
    (whose target would be copied from wherever it points) or a special file is an IntegrityError."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            kind = "a symbolic link" if p.is_symlink() else "a special file"
            raise IntegrityError(f"{p}: {kind} in the adapter folder; copy the real file there instead")
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if rel != METADATA_FILE:
                out.append(rel)
    return out


def _copy_file(src: Path, dst: Path) -> None:
    """Stream `src` to `dst` and fsync it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, _CHUNK)
        fo.flush()
        os.fsync(fo.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_safetensors(path: Path, rel: str) -> None:
    """Cheap structural check: an 8-byte little-endian header length, then a JSON object."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise IntegrityError(f"'{rel}' is not a safetensors file (too short); re-save the adapter")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 1024 * 1024):
            raise IntegrityError(f"'{rel}' is not a safetensors file (bad header length); re-save the adapter")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        raise IntegrityError(f"'{rel}' is not a safetensors file (bad header); re-save the adapter")


def _refuse_pickles(rels: list[str], where: Path) -> None:
    """Refuse the folder `where` if any of `rels` is a pickle-format file."""
    for rel in rels:
        if _is_pickle(Path(rel)):
            _refuse_pickle(rel, where)


def _source_dir(src: Source) -> Path | None:
    """The source folder (it exists and holds no pickle-format file), or None for a writer or a model."""
    if not isinstance(src, (str, os.PathLike)):
        return None
    src_dir = Path(src)
    if not src_dir.is_dir():
        raise AdaptrecError(f"adapter source folder {src_dir} does not exist; pass the folder save_pretrained wrote")
    _refuse_pickles(_files_in(src_dir), src_dir)
    return src_dir


def _fill(tmp: Path, src: Source, src_dir: Path | None) -> None:
    """Put the peft files into `tmp`: copied from `src_dir`, or written by the model or the writer."""
    if src_dir is not None:
        for rel in _files_in(src_dir):
            _copy_file(src_dir / rel, tmp / rel)
    elif hasattr(src, "save_pretrained"):
        src.save_pretrained(str(tmp))
        if getattr(src, "adaptrec_tuner", None):  # a type's own files beside peft's (a collab adapter's item table)
            from .base import tuner_for

            tuner_for(src).save_extra(src, tmp)
    elif callable(src):
        src(tmp)
    else:
        raise AdaptrecError(
            f"cannot write an adapter from {type(src).__name__}; "
            "pass a folder, a callable writer(folder), or a peft model"
        )


def _hash_written(tmp: Path, dest: Path, adapter_type: str | None, fsync: bool) -> dict[str, str]:
    """{relpath: sha256} of the files written into `tmp` (fsynced first when `fsync`), after checking them:
    no pickle-format file, the required files present, the weights a safetensors file."""
    rels = _files_in(tmp)
    _refuse_pickles(rels, dest)
    required = required_files(adapter_type)
    missing = [r for r in required if r not in rels]
    if missing:
        raise IntegrityError(
            f"adapter source lacks {', '.join(missing)}; an adapter folder needs "
            f"{', '.join(required)} (peft's save_pretrained writes the first two)"
        )
    if WEIGHTS_FILE in rels:
        _check_safetensors(tmp / WEIGHTS_FILE, WEIGHTS_FILE)
    files = {}
    for rel in rels:
        if fsync:
            _fsync_file(tmp / rel)
        files[rel] = file_sha256(tmp / rel)
    return files


def stage_adapter_files(src_dir_or_writer: Source, folder: Path, adapter_type: str | None,
                        shown: Path | None = None) -> dict[str, str]:
    """Write the peft files of `src_dir_or_writer` (see `write_adapter_dir`) into the empty `folder`, fsynced, and
    return {relpath: sha256}, checked as `_hash_written` checks them (errors name `shown`, default `folder`); an
    `adaptrec.json` in the source is left out (`finish_adapter_dir` writes the folder's own)."""
    src_dir = _source_dir(src_dir_or_writer)
    _fill(folder, src_dir_or_writer, src_dir)
    (folder / METADATA_FILE).unlink(missing_ok=True)
    # files copied from a folder are already fsynced
    return _hash_written(folder, shown or folder, adapter_type, fsync=src_dir is None)


def finish_adapter_dir(folder: Path, metadata: dict, files: dict[str, str]) -> dict:
    """Write `folder`'s `adaptrec.json` (`metadata` with `format` and the staged `files`), fsync the folder and return
    the metadata written."""
    try:
        json.dumps(metadata)
    except TypeError as e:
        raise AdaptrecError(f"adapter metadata is not JSON-serialisable: {e}") from None
    meta = {**metadata, "format": FORMAT_VERSION, "files": files}
    write_json(folder / METADATA_FILE, meta)
    _fsync_dir(folder)
    return meta


def write_adapter_dir(src_dir_or_writer: Source, dest: Path, metadata: dict) -> dict:
    """Write an adapter folder at `dest` atomically and return the metadata written (with `files`).

    `src_dir_or_writer` is a folder holding peft files, a callable `writer(folder)` that writes
    them, or an object with `save_pretrained(folder)` (a peft model). An `adaptrec.json` in the
    source is ignored and rewritten. `dest` must not exist; a failure at any point leaves nothing
    at `dest` (only, after a hard kill, a `.<name>.*.tmp` sibling that `Registry.gc()` removes).
    """
    dest = Path(dest)
    if dest.exists():
        raise AdaptrecError(f"{dest} already exists; remove it or choose another folder")
    with atomic_dir(dest) as tmp:
        files = stage_adapter_files(src_dir_or_writer, tmp, metadata.get("adapter_type"), shown=dest)
        meta = finish_adapter_dir(tmp, metadata, files)
    _fsync_dir(dest.parent)
    return meta


def read_metadata(path: Path) -> dict:
    """The parsed `adaptrec.json` of an adapter folder (no hash checks: use `verify_adapter_dir`)."""
    path = Path(path)
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise IntegrityError(f"{path} has no {METADATA_FILE}: not an adaptrec adapter folder (or a half-copied one)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{meta_path} is not valid JSON ({e}); restore the adapter from its source") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise IntegrityError(f"{meta_path} has no 'files' table; restore the adapter from its source")
    return meta


def verify_adapter_dir(path: Path) -> dict:
    """Recompute every file's sha256 against `adaptrec.json`; return the metadata.

    Raises `IntegrityError` naming the file when one is missing, altered, unlisted, or pickle-format.
    """
    path = Path(path)
    if not path.is_dir():
        raise IntegrityError(f"adapter folder {path} is missing; run `adaptrec registry gc` and re-register it")
    meta = read_metadata(path)
    listed: dict = meta["files"]
    present = _files_in(path)
    _refuse_pickles(present, path)
    for rel in present:
        if rel not in listed:
            raise IntegrityError(f"{path}: file '{rel}' is not listed in {METADATA_FILE}; remove it or re-register the adapter")
    root = path.resolve()
    for rel, expected in sorted(listed.items()):
        f = (path / rel).resolve()
        if root not in f.parents:
            raise IntegrityError(f"{path}: {METADATA_FILE} lists '{rel}', outside the adapter folder; the folder was tampered with")
        if not f.is_file():
            raise IntegrityError(f"{path}: file '{rel}' is missing; restore the adapter from its source")
        if file_sha256(f) != expected:
            raise IntegrityError(f"{path}: file '{rel}' does not match its recorded sha256 (corrupted or modified); restore the adapter from its source")
    for rel in required_files(meta.get("adapter_type")):
        if rel not in listed:
            raise IntegrityError(f"{path}: '{rel}' is missing; restore the adapter from its source")
    return meta


def check_base(metadata: dict, backbone_fp: Fingerprint) -> str:
    """Compare the adapter's base fingerprint with the loaded backbone's.

    "exact": fine. "family": same architecture and tokenizer, other weights or quantization:
    returns "family" after a `FamilyMatchWarning`. "none": raises `FingerprintMismatch`.
    """
    base = metadata.get("base")
    if not isinstance(base, dict) or "exact" not in base or "family" not in base:
        raise IntegrityError(f"adapter '{metadata.get('name', '?')}' records no base fingerprint; re-register it")
    adapter_fp = Fingerprint.from_dict(base)
    label = metadata.get("name", "?")
    if "version" in metadata:
        label = f"{label}:{metadata['version']}"
    match = backbone_fp.match(adapter_fp)
    if match == "family":
        warnings.warn(
            f"adapter '{label}' was trained on {adapter_fp.base_model or '?'} (exact {adapter_fp.exact[:12]}) "
            f"but the backbone is {backbone_fp.base_model or '?'} (exact {backbone_fp.exact[:12]}): same family, "
            "so it loads, but scores may shift; retrain on this backbone for exact results",
            FamilyMatchWarning,
            stacklevel=2,
        )
    elif match == "none":
        raise FingerprintMismatch(
            f"adapter '{label}' was made for base model {adapter_fp.base_model or '?'} (family {adapter_fp.family[:12]}), "
            f"not the loaded backbone {backbone_fp.base_model or '?'} (family {backbone_fp.family[:12]}); "
            "load that base model or pick an adapter trained on this one"
        )
    return match
