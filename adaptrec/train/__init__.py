"""Training: the Accelerate loop (`Trainer`), its losses, checkpoints, and the recipe runner (train, evaluate,
register). `adaptrec.train(recipe, ...)` calls `adaptrec.api.train`."""

import sys

from .. import CallablePackage

sys.modules[__name__].__class__ = CallablePackage
