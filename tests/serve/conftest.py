"""Fixtures of the serving tests."""

from __future__ import annotations

import pytest
from serve_helpers import make_registry


@pytest.fixture(scope="module")
def home(tiny_model_dir, tmp_path_factory):
    """A registry of the random serving adapters (`serve_helpers.ADAPTERS`) on the tiny Llama, one per test module."""
    home = tmp_path_factory.mktemp("serve-home")
    make_registry(tiny_model_dir, home)
    return home
