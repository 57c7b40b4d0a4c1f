"""Interaction logs, catalogues and candidate files read from Parquet the same as from JSONL."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adaptrec.data.candidates import read_candidates
from adaptrec.data.interaction_log import cases_from_log, read_catalogue, read_log
from adaptrec.data.spec import load_spec
from adaptrec.errors import DataFormatError, DataSpecError


def _write_both(folder, name: str, rows: list[dict]) -> tuple:
    jsonl, parquet = folder / f"{name}.jsonl", folder / f"{name}.parquet"
    jsonl.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    return jsonl, parquet


def test_log_and_catalogue_from_parquet_give_the_same_cases(tmp_path):
    log = [{"user_id": f"u{u}", "item_id": str(i % 7), "domain": "movie", "rating": float(1 + (u + i) % 5),
            "timestamp": 100 - i} for u in range(2) for i in range(12)]
    items = [{"item_id": str(i), "title": f"Film {i}", "domain": "movie" if i % 2 else None} for i in range(7)]
    (log_j, log_p), (items_j, items_p) = _write_both(tmp_path, "log", log), _write_both(tmp_path, "items", items)
    assert read_log(log_p) == read_log(log_j) and read_catalogue(items_p) == read_catalogue(items_j)
    cases = cases_from_log(read_log(log_p), read_catalogue(items_p))
    assert len(cases) == 4 and cases == cases_from_log(read_log(log_j), read_catalogue(items_j))
    from_spec = load_spec(str(log_p))  # a SPEC too: items.parquet beside log.parquet
    assert [c.target_id for c in from_spec.cases] == [c.target_id for c in load_spec(str(log_j)).cases]
    items_p.unlink()
    with pytest.raises(DataSpecError, match=r"needs its catalogue .*items\.parquet"):
        load_spec(str(log_p))


def test_candidates_from_parquet(tmp_path):
    rows = [{"user_id": "u1", "domain": "office", "target_id": "3", "candidates": ["1", "3", "2"], "history": ["9"]},
            {"user_id": "u2", "domain": "office", "target_id": "1", "candidates": ["1", "4"], "history": None}]
    jsonl, parquet = _write_both(tmp_path, "candidates", rows)
    assert read_candidates(parquet) == read_candidates(jsonl)
    assert read_candidates(parquet)[1].history is None


def test_parquet_errors_name_file_and_row(tmp_path):
    bad = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pylist([{"user_id": "u", "item_id": "1", "domain": "movie", "label": 2}]), bad)
    with pytest.raises(DataFormatError, match=r"log\.parquet:row 1: key 'label' must be 0 or 1"):
        read_log(bad)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DataFormatError, match="not a readable Parquet file") as err:
        read_log(junk)
    assert "\n" not in str(err.value)
