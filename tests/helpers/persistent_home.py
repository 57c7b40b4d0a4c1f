"""Where integration tests keep the converted SmolLM2 across runs (unit tests get a fresh home each)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PERSISTENT_HOME = Path(os.environ.get("ADAPTREC_TEST_HOME", REPO / ".adaptrec_home"))
