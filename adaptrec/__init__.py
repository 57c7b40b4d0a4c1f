"""adaptrec: many small per-domain adapters on one frozen 8-bit LLM backbone for recommendation."""

import logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft, often before our backbone module) logs a missing optional CPU 4-bit
# kernel package at import; nothing here needs it.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
