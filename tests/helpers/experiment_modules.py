"""The experiment scripts under experiments/ (outside the package), importable by the tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
if str(EXPERIMENTS) not in sys.path:
    sys.path.insert(0, str(EXPERIMENTS))

cross_domain = importlib.import_module("cross_domain")
methods_grid = importlib.import_module("methods_grid")
collab_movie = importlib.import_module("collab_movie")
ml100k_loo = importlib.import_module("ml100k_loo")
amazon_collab = importlib.import_module("amazon_collab")
online_replay = importlib.import_module("online_replay")
demo = importlib.import_module("demo")
