import json

import pytest

from adaptrec.data.interaction_log import cases_from_log, log_popularity, read_catalogue, read_log
from adaptrec.errors import DataFormatError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def catalogue(tmp_path):
    return read_catalogue(write_jsonl(tmp_path / "items.jsonl", [{"item_id": str(i), "title": f"film {i}"} for i in range(10)]))


def test_sliding_window_ordered_by_timestamp_with_rating_threshold(tmp_path, catalogue):
    rows = [{"user_id": "a", "item_id": str(i), "domain": "movie", "rating": r, "timestamp": 100 - i}
            for i, r in enumerate([5, 1, 4, 3, 2])]  # file order is reverse time order
    rows.insert(2, {"user_id": "b", "item_id": "9", "domain": "movie", "rating": 5, "timestamp": 1})
    cases = cases_from_log(read_log(write_jsonl(tmp_path / "log.jsonl", rows)), catalogue, history_len=3)
    assert len(cases) == 2 and {c.user_id for c in cases} == {"a"}
    first = cases[0]  # time order: items 4,3,2,1,0
    assert [h.item_id for h in first.history] == ["4", "3", "2"]
    assert [h.liked for h in first.history] == [False, False, True]  # ratings 2, 3, 4 against "> 3"
    assert first.target_id == "1" and first.target == '"film 1"' and first.label == 0
    assert cases[1].label == 1 and first.noun == "movie"


def test_labels_position_and_implicit_rows(tmp_path, catalogue):
    labelled = [{"user_id": "a", "item_id": str(i), "domain": "movie", "label": i % 2, "position": i} for i in range(3)]
    cases = cases_from_log(read_log(write_jsonl(tmp_path / "l.jsonl", labelled)), catalogue, history_len=2)
    assert [h.liked for h in cases[0].history] == [False, True] and cases[0].label == 0
    implicit = [{"user_id": "a", "item_id": str(i), "domain": "movie"} for i in (3, 1, 2)]
    rows = read_log(write_jsonl(tmp_path / "i.jsonl", implicit))
    cases = cases_from_log(rows, catalogue, history_len=2)
    assert [h.item_id for h in cases[0].history] == ["3", "1"] and cases[0].label == 1  # file order kept
    assert log_popularity(rows, catalogue) == {'"film 3"': 1.0, '"film 1"': 1.0, '"film 2"': 1.0}


@pytest.mark.parametrize("bad,match", [
    ({"item_id": "1", "domain": "movie"}, r"log\.jsonl:2: missing key 'user_id'"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "label": 2}, r":2: key 'label' must be 0 or 1"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "rating": "5"}, r":2: key 'rating' must be a number"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "label": 1, "rating": 5}, r":2: key 'rating': give 'label'"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "stars": 5}, r":2: unknown key 'stars'"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "position": 1}, r":2: order key"),
])
def test_log_errors_name_file_line_and_key(tmp_path, bad, match):
    path = write_jsonl(tmp_path / "log.jsonl", [{"user_id": "a", "item_id": "0", "domain": "movie"}, bad])
    with pytest.raises(DataFormatError, match=match):
        read_log(path)


def test_catalogue_errors(tmp_path, catalogue):
    path = write_jsonl(tmp_path / "cat.jsonl", [{"item_id": "1", "title": "x"}, {"item_id": "1", "title": "y"}])
    with pytest.raises(DataFormatError, match=r"cat\.jsonl:2: key 'item_id': '1' appears twice"):
        read_catalogue(path)
    rows = read_log(write_jsonl(tmp_path / "log.jsonl", [{"user_id": "a", "item_id": "77", "domain": "movie"}]))
    with pytest.raises(DataFormatError, match=r"log\.jsonl:1: key 'item_id': '77' is not in the catalogue"):
        cases_from_log(rows, catalogue)
