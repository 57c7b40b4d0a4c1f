"""Multi-adapter serving: the engine (one backbone, many adapters), shared-prefix ranking, the HTTP app."""

from .engine import Engine, Limits, ServeError

__all__ = ["Engine", "Limits", "ServeError"]
