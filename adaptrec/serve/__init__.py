"""Multi-adapter serving: the engine (one backbone, many adapters), shared-prefix ranking, the HTTP app.
`adaptrec.serve(...)` calls `adaptrec.api.serve`."""

import sys

from .. import CallablePackage
from .engine import Engine, Limits, ServeError

__all__ = ["Engine", "Limits", "ServeError"]

sys.modules[__name__].__class__ = CallablePackage
