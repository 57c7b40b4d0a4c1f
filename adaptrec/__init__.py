"""adaptrec: many small per-domain adapters on one frozen 8-bit LLM backbone for recommendation.

The Python API (`adaptrec.train`, `load`, `evaluate`, `compose`, `registry`, ...) lives in `adaptrec.api`
and is exported here lazily: `import adaptrec` imports no torch until a function is called.
"""

import importlib
import logging
import types

__version__ = "0.1.0"

_API = ("train", "load", "evaluate", "compose", "registry", "recipes", "recipe_text", "plan", "predict",
        "write_predictions", "export_lora", "export_vllm", "route", "recommend", "push", "pull", "inspect_data", "plot",
        "train_cf", "update", "promote_if_better", "drift", "serve", "stores", "clear_cache")
__all__ = ["__version__", *_API]

# bitsandbytes (imported by peft, often before our backbone module) logs a missing optional CPU 4-bit
# kernel package at import; nothing here needs it.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


class CallablePackage(types.ModuleType):
    """A subpackage named like an API function (`adaptrec.train`, `adaptrec.registry`): calling it calls the function.

    Python binds `adaptrec.train` to the subpackage once it is imported, so the package itself must answer the call."""

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(".api", __name__), self.__name__.rpartition(".")[2])(*args, **kwargs)


def __getattr__(name: str):
    if name in ("train", "registry", "serve"):  # subpackages that are also API functions (see CallablePackage)
        return importlib.import_module(f".{name}", __name__)
    if name in _API:  # PEP 562 lazy export; the root package itself stays below every layer that imports it
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'adaptrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
