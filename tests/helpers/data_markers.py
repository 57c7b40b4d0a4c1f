"""Skip markers for tests that read the shared datasets (`$ADAPTREC_DATA`, absent on e.g. a lent GPU box)."""

from __future__ import annotations

import importlib.util

import pytest

from adaptrec.home import data_root

needs_tallrec = pytest.mark.skipif(not (data_root() / "tallrec").is_dir(), reason=f"no TALLRec data under {data_root()}")
needs_amazon = pytest.mark.skipif(not (data_root() / "amazon_arts_office").is_dir(),
                                  reason=f"no Amazon Arts-Office data under {data_root()}")
needs_ml100k = pytest.mark.skipif(importlib.util.find_spec("recbole") is None,
                                  reason="recbole (MovieLens-100K) not installed (make install)")
