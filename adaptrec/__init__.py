"""adaptrec: many small per-domain adapters on one frozen 8-bit LLM backbone for recommendation."""

__version__ = "0.1.0"
