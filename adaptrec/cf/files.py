"""An encoder as files: `encoder.safetensors` (its tensors) and `encoder.json` (kind, ids in table order,
settings). Safetensors only, so loading an encoder never runs pickled code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from adaptrec.atomic import write_json
from adaptrec.errors import IntegrityError
from adaptrec.fingerprint import file_sha256

from .base import Encoder, FactorEncoder, PopularityEncoder
from .sasrec import SASRecEncoder, SASRecNet, SASRecSettings

TENSORS, META = "encoder.safetensors", "encoder.json"
FILES = (TENSORS, META)
KINDS = ("mf-bias", "bpr", "als", "lightgcn", "sasrec", "popularity")


def save_encoder(encoder: Encoder, folder: Path, settings: dict) -> None:
    """Write `encoder` into `folder` (which exists); `settings` are the ones it was fitted with."""
    from safetensors.torch import save_file

    meta = {"kind": encoder.kind, "items": encoder.items, "settings": settings}
    if isinstance(encoder, FactorEncoder):
        users = sorted(encoder.user_index, key=encoder.user_index.get)
        tensors = {"user_table": encoder.user_table, "item_table": encoder.item_table, "item_bias": encoder.item_bias,
                   "user_bias": encoder.user_bias, "bias": np.array([encoder.bias], np.float32)}
        meta["users"] = users
    elif isinstance(encoder, PopularityEncoder):
        tensors = {"counts": encoder.counts}
    elif isinstance(encoder, SASRecEncoder):
        tensors = {f"net.{k}": v.detach().numpy() for k, v in encoder.net.state_dict().items()}
    else:
        raise TypeError(f"no file format for {type(encoder).__name__}")
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, str(Path(folder) / TENSORS))
    write_json(Path(folder) / META, meta)


def file_hashes(folder: Path) -> dict[str, str]:
    """The sha256 of each of an encoder's files in `folder`."""
    return {name: file_sha256(Path(folder) / name) for name in FILES}


def load_checked(folder: Path, hashes: Mapping[str, str], what: str) -> Encoder:
    """`load_encoder` after each file's sha256 is checked against `hashes`: `IntegrityError` naming the first file
    that is missing or differs from `what`."""
    for name in FILES:
        path = Path(folder) / name
        if not path.is_file() or file_sha256(path) != hashes.get(name):
            raise IntegrityError(f"{path} is missing or differs from {what}")
    return load_encoder(folder)


def load_encoder(folder: Path) -> Encoder:
    """The encoder saved in `folder` (hashes are the caller's to verify)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
        tensors = load_file(str(folder / TENSORS))
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{folder}: not a readable encoder ({e})") from None
    kind = meta.get("kind")
    if kind not in KINDS:
        raise IntegrityError(f"{folder / META}: unknown encoder kind {kind!r}")
    if kind == "popularity":
        encoder = PopularityEncoder.__new__(PopularityEncoder)
        encoder.items, encoder.counts = meta["items"], tensors["counts"].numpy()
        return encoder
    if kind == "sasrec":
        settings = SASRecSettings(**meta["settings"])
        with torch.random.fork_rng():  # its random initialisation is overwritten: leave the caller's RNG as it was
            net = SASRecNet(len(meta["items"]), settings)
        net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
        return SASRecEncoder(meta["items"], net, settings.max_len)
    return FactorEncoder(kind, meta["users"], meta["items"], tensors["user_table"].numpy(),
                         tensors["item_table"].numpy(), tensors["item_bias"].numpy(), tensors["user_bias"].numpy(),
                         float(tensors["bias"][0]))
