"""Fitted encoders kept on disk under `$ADAPTREC_HOME/cache/encoders/<key>/`, keyed by everything that determines
a fit: its kind, its settings (seed included), its training interactions in their order and the catalogue, the
source code of the modules that fit it and the versions of the libraries they call. The collaborative adapter's
recipe, an experiment's baseline rows and `train-cf` then share one fit: LightGCN on Amazon takes minutes here,
loading its files milliseconds. Own code, not `functools.cache` or joblib's Memory: the entry is the registry's
safetensors format, its hashes checked on load, written atomically."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from adaptrec.atomic import atomic_dir, write_json
from adaptrec.errors import AdaptrecError, IntegrityError
from adaptrec.fingerprint import digest
from adaptrec.home import adaptrec_home

from .base import Encoder
from .files import file_hashes, load_checked, save_encoder

HASHES = "hashes.json"
_CODE = ("base.py", "fit.py", "files.py", "implicit_mf.py", "lightgcn.py", "mf.py", "sasrec.py")
_LIBRARIES = ("torch", "numpy", "scipy", "implicit", "torch_geometric")
# read once, when the fitting modules are loaded: the code this process runs, even if the files change under it
_CODE_DIGESTS = {name: hashlib.sha256((Path(__file__).parent / name).read_bytes()).hexdigest() for name in _CODE}


def fits_folder() -> Path:
    """Where every fit is kept, one folder per `fit_key`."""
    return adaptrec_home() / "cache" / "encoders"


def fit_key(kind: str, settings: dict, rows: list, items: list[str]) -> str:
    """The cache key of fitting `kind` with `settings` on training `rows` (in their order: SASRec reads each
    user's sequence, the others index users and items as they come) over catalogue `items`."""
    from importlib.metadata import PackageNotFoundError, version

    libraries = {}
    for package in _LIBRARIES:
        try:
            libraries[package] = version(package)
        except PackageNotFoundError:
            libraries[package] = None
    return digest({"kind": kind, "settings": settings, "rows": digest([list(r) for r in rows]), "items": digest(items),
                   "code": _CODE_DIGESTS, "libraries": libraries})


def cached_fit(key: str, settings: dict, fit: Callable[[], Encoder]) -> Encoder:
    """The encoder kept under `key`, or `fit()` kept there now. A damaged entry is fitted again.

    The fit runs with every random generator restored after it (the fits seed torch, which seeds CUDA's too and
    restores only the CPU's): a collab recipe trains on the same draws whether its encoder was fitted or kept. A fit
    with non-finite item vectors is refused, not kept."""
    folder = fits_folder() / key
    if folder.is_dir():
        try:
            kept = load_checked(folder, json.loads((folder / HASHES).read_text()), "the fit kept in the cache")
            if np.isfinite(kept.item_table).all():  # a diverged fit kept before they were refused: fitted again
                return kept
        except (IntegrityError, OSError, ValueError):  # damaged: files or their hashes unreadable or changed
            pass
        shutil.rmtree(folder, ignore_errors=True)
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        encoder = fit()
    if not np.isfinite(encoder.item_table).all():
        raise AdaptrecError(f"the encoder fit with {settings} gave non-finite item vectors (it diverged); not kept: "
                            "try fewer epochs or another seed")
    try:
        with atomic_dir(folder) as tmp:
            save_encoder(encoder, tmp, settings)
            write_json(tmp / HASHES, file_hashes(tmp))
    except OSError:  # another process kept the same fit first, or the home is read-only: the fit stands
        pass
    return encoder
