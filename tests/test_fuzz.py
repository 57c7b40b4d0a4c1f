"""Property tests for every parser of user input: whatever the bytes, the answer is a result or one
AdaptrecError naming the file (never another exception, never a traceback), and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptrec.config import load_recipe
from adaptrec.data.candidates import read_candidates
from adaptrec.data.history_file import read_history_file
from adaptrec.data.interaction_log import read_log
from adaptrec.data.spec import load_spec
from adaptrec.errors import AdaptrecError
from adaptrec.hub.pulling import _read_manifest

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
KEYS = ["user_id", "item_id", "domain", "label", "rating", "position", "timestamp", "title", "history", "liked",
        "candidates", "target_id", "files", "base", "adapter_type", "format", "noun"]
OBJECTS = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6)  # objects that look almost right


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _one_error(call, where: Path | None) -> None:
    """`call()` returns, or raises one AdaptrecError whose message names `where`."""
    try:
        call()
    except AdaptrecError as e:
        assert str(e).strip(), "an empty error message"
        if where is not None:
            assert str(where) in str(e), str(e)


@FUZZ
@given(spec=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:[]-_.", max_size=30))
def test_spec_strings(spec):
    _one_error(lambda: load_spec(spec), None)


@FUZZ
@given(raw=st.one_of(st.dictionaries(st.sampled_from(["name", "domain", "backbone", "adapter", "data", "training",
                                                       "evaluation", "method", "extra"]), JSON, max_size=6), JSON),
       sets=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz._=0123456789[], ", max_size=20), max_size=3))
def test_recipes_and_overrides(tmp_path, raw, sets):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw))
    before = _files(tmp_path)
    _one_error(lambda: load_recipe(str(path), sets), path)
    assert _files(tmp_path) == before


@FUZZ
@given(data=st.one_of(OBJECTS, JSON, st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_history_files(tmp_path, data):
    path = tmp_path / "history.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    _one_error(lambda: read_history_file(path, "Heat (1995)", "movie"), path)


@FUZZ
@given(lines=st.lists(st.one_of(OBJECTS.map(json.dumps), st.text(max_size=20)), max_size=5))
def test_interaction_logs_and_candidate_files(tmp_path, lines):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines))
    _one_error(lambda: read_log(path), path)
    _one_error(lambda: read_candidates(path), path)


@FUZZ
@given(meta=st.one_of(OBJECTS, JSON), listing=st.lists(st.text(max_size=12), max_size=4))
def test_hub_manifests(tmp_path, meta, listing):
    path = tmp_path / "adaptrec.json"
    path.write_text(json.dumps(meta))
    _one_error(lambda: _read_manifest(path, listing, "fuzz-repo"), Path("fuzz-repo"))
