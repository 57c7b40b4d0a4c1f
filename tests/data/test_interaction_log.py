import json

import pytest

from adaptrec.data.interaction_log import cases_from_log, log_item_counts, read_catalogue, read_log, text_counts
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
    floats = [{**row, "label": float(row["label"])} for row in labelled]  # a float column's 1.0 is the label 1
    assert [type(r.label) for r in read_log(write_jsonl(tmp_path / "f.jsonl", floats))] == [int] * 3
    assert text_counts(log_item_counts(rows, catalogue), lambda i: catalogue[i].text) == {
        '"film 3"': 1.0, '"film 1"': 1.0, '"film 2"': 1.0}


@pytest.mark.parametrize("bad,match", [
    ({"item_id": "1", "domain": "movie"}, r"log\.jsonl:2: missing key 'user_id'"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "label": 2}, r":2: key 'label' must be 0 or 1"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "rating": "5"}, r":2: key 'rating' must be a finite number"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "timestamp": 10 ** 400}, r":2: key 'timestamp' must be a finite"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "label": 1, "rating": 5}, r":2: key 'rating': give 'label'"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "stars": 5}, r":2: unknown key 'stars'"),
    ({"user_id": "a", "item_id": "1", "domain": "movie", "position": 1}, r":2: order key"),
    ({"user_id": "u\ud800", "item_id": "1", "domain": "movie"}, r":2: key 'user_id' must be a non-empty string"),
    ({"user_id": "a", "item_id": "1", "domain": "mo\ud800vie"}, r":2: key 'domain' must be a non-empty string"),
])  # a lone surrogate: JSONL wrote it, Parquet's writer and the tokenizer failed with tracebacks
def test_log_errors_name_file_line_and_key(tmp_path, bad, match):
    path = write_jsonl(tmp_path / "log.jsonl", [{"user_id": "a", "item_id": "0", "domain": "movie"}, bad])
    with pytest.raises(DataFormatError, match=match):
        read_log(path)


def test_raw_line_separators_inside_json_strings_are_read_and_lines_are_counted_at_newlines(tmp_path):
    """JSON allows U+2028, U+2029 and U+0085 raw in strings (`ensure_ascii=False` writes them so); str.splitlines
    breaks lines there (was: a valid catalogue refused as "not valid JSON", and later errors named wrong lines)."""
    titles = ["a\u2028b", "c\u2029d", "e\u0085f"]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"item_id": str(i), "title": t}, ensure_ascii=False) + "\r\n"
                            for i, t in enumerate(titles)) + '{"item_id": "3"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"items\.jsonl:4: missing key 'title'"):
        read_catalogue(path)
    path.write_text("".join(json.dumps({"item_id": str(i), "title": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(titles)), encoding="utf-8")
    assert [read_catalogue(path)[str(i)].title for i in range(3)] == titles


@pytest.mark.parametrize("title", ["A\ud800", "   ", "Heat\n(1995)", 7])
def test_a_title_no_prompt_can_hold_is_refused_in_one_line(tmp_path, title):
    """(was: a lone surrogate loaded, then failed `data inspect` and scoring with a tokenizer's traceback; a blank
    title or one with a line break went into prompts, splitting TALLRec's three-line input)"""
    path = write_jsonl(tmp_path / "items.jsonl", [{"item_id": "1", "title": "x"}, {"item_id": "2", "title": title}])
    with pytest.raises(DataFormatError, match=r"items\.jsonl:2: key 'title' must be one non-blank line of text"):
        read_catalogue(path)


def test_a_file_saved_with_a_byte_order_mark_reads_as_without(tmp_path, catalogue):
    """Editors on Windows write UTF-8 with a BOM (was: 'line 1: not valid JSON (Unexpected UTF-8 BOM)')."""
    rows = [{"user_id": "a", "item_id": str(i), "domain": "movie"} for i in range(3)]
    path = write_jsonl(tmp_path / "log.jsonl", rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert [r.item_id for r in read_log(path)] == ["0", "1", "2"]


def test_catalogue_errors(tmp_path, catalogue):
    path = write_jsonl(tmp_path / "cat.jsonl", [{"item_id": "1", "title": "x"}, {"item_id": "1", "title": "y"}])
    with pytest.raises(DataFormatError, match=r"cat\.jsonl:2: key 'item_id': '1' appears twice"):
        read_catalogue(path)
    rows = read_log(write_jsonl(tmp_path / "log.jsonl", [{"user_id": "a", "item_id": "77", "domain": "movie"}]))
    with pytest.raises(DataFormatError, match=r"log\.jsonl:1: key 'item_id': '77' is not in the catalogue"):
        cases_from_log(rows, catalogue)
    books = read_catalogue(write_jsonl(tmp_path / "books.jsonl", [{"item_id": "1", "title": "x", "domain": "book"}]))
    rows = read_log(write_jsonl(tmp_path / "log.jsonl", [{"user_id": "a", "item_id": "1", "domain": "movie"}]))
    with pytest.raises(DataFormatError, match=r"log\.jsonl:1: key 'domain': 'movie', but the catalogue lists item "
                                              r"'1' in domain 'book'"):
        cases_from_log(rows, books)


def test_leave_one_out_spec_of_a_log_gives_every_user_with_three_interactions_a_case(tmp_path, catalogue):
    """`PATH.jsonl:loo:PART`: per user the last interaction is the test target, the second last the validation
    target; short users still get cases (sliding 10-item windows give none here); popularity and the training
    part never hold a held-out pair; each case keeps its target's domain."""
    from adaptrec.data.spec import load_spec
    from adaptrec.errors import DataSpecError

    rows = [{"user_id": u, "item_id": str(i), "domain": "book" if i == 8 else "movie", "position": k}
            for u, items in (("a", [0, 1, 2, 8]), ("b", [3, 4, 5]), ("c", [6, 7])) for k, i in enumerate(items)]
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    write_jsonl(tmp_path / "items.jsonl", [{"item_id": str(i), "title": f"film {i}"} for i in range(10)])
    test = load_spec(f"{log}:loo:test", negatives_per_positive=1, seed=0)
    positives = [c for c in test.cases if c.label == 1]
    assert [(c.user_id, c.target_id, c.domain) for c in positives] == [("a", "8", "book"), ("b", "5", "movie")]
    assert [h.item_id for h in positives[0].history] == ["0", "1", "2"] and len(test.cases) == 4
    valid = [c for c in load_spec(f"{log}:loo:valid").cases if c.label == 1]
    assert [(c.user_id, c.target_id) for c in valid] == [("a", "2"), ("b", "4")]
    train = load_spec(f"{log}:loo:train", negatives_per_positive=0)
    held_out = {(c.user_id, c.target_id) for c in positives + valid}
    assert not held_out & {(c.user_id, c.target_id) for c in train.cases}
    assert not held_out & {(c.user_id, h.item_id) for c in train.cases for h in c.history}
    assert set(test.item_popularity) == {f'"film {i}"' for i in (0, 1, 3, 6, 7)}  # training interactions only
    assert test.item_counts == {i: 1.0 for i in ("0", "1", "3", "6", "7")}  # the same, per item id
    # negatives avoid what the user had touched by the end of the part, not what comes later
    wide = load_spec(f"{log}:loo:train", negatives_per_positive=8, seed=0)
    train_negatives = {c.target_id for c in wide.cases if c.user_id == "a" and not c.held_out_positive}
    assert {"2", "8"} <= train_negatives  # a's later (valid, test) targets can be a training "No"
    assert not train_negatives & {"0", "1"} and wide.user_items["a"] == {"0", "1"}
    assert load_spec(f"{log}:loo:valid").user_items["a"] == {"0", "1", "2"}
    assert load_spec(f"{log}:loo:test").user_items["a"] == {"0", "1", "2", "8"}
    with pytest.raises(DataSpecError, match="no user has more than 10"):
        load_spec(str(log))
    with pytest.raises(DataSpecError, match="not recognised"):
        load_spec(f"{log}:loo:holdout")
    short = write_jsonl(tmp_path / "short.jsonl", [r for r in rows if r["user_id"] == "b"])  # 3 interactions
    assert [c.target_id for c in load_spec(f"{short}:loo:valid").cases if c.label == 1] == ["4"]
    train_words = "no user has 2 interactions before their last two, other than repeats of those two, so leave-one-out"
    with pytest.raises(DataSpecError, match=f"{train_words} has no train case"):
        load_spec(f"{short}:loo:train")  # (was: "no user has 3", which b has)
    b = [r for r in rows if r["user_id"] == "b"]
    again = write_jsonl(tmp_path / "again.jsonl", [*b[1:], *[{**r, "position": r["position"] + 100} for r in b[1:]]])
    with pytest.raises(DataSpecError, match=f"{train_words} has no train case"):  # 4 interactions, 2 items
        load_spec(f"{again}:loo:train")  # (was: "no user has 4 interactions", which b now has)


def test_recipe_protocol_and_history_len_turn_a_log_into_its_leave_one_out_parts(tmp_path):
    """`data.protocol: leave_one_out` reads a log recipe's train/valid/test keys as the log's leave-one-out parts,
    `data.history_len` cuts every case's history; without the keys a recipe's settings digest is unchanged."""
    from adaptrec.config import load_recipe, recipe_digest
    from adaptrec.errors import ConfigError
    from adaptrec.train.cases import recipe_data

    rows = [{"user_id": u, "item_id": str(i), "domain": "movie", "position": k}
            for u, items in (("a", [0, 1, 2, 3, 4, 5]), ("b", [6, 7, 8])) for k, i in enumerate(items)]
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    write_jsonl(tmp_path / "items.jsonl", [{"item_id": str(i), "title": f"film {i}"} for i in range(10)])
    data = [f"data.train={log}", f"data.valid={log}", f"data.test={log}"]
    plain, _ = load_recipe("movie-lora", data)
    recipe, _ = load_recipe("movie-lora", [*data, "data.protocol=leave_one_out", "data.history_len=2"])
    test = recipe_data(recipe, recipe.data.test, "data.test")
    assert test.spec == f"{log}:loo:test"
    assert [(c.user_id, c.target_id, [h.item_id for h in c.history]) for c in test.cases if c.label == 1] == \
        [("a", "5", ["3", "4"]), ("b", "8", ["6", "7"])]
    assert recipe_data(recipe, recipe.data.valid, "data.valid").spec == f"{log}:loo:valid"
    assert recipe_data(recipe, f"{log}:loo:train", "--data").spec == f"{log}:loo:train"  # other keys: as given
    assert "protocol" not in plain.model_dump()["data"] and recipe_digest(plain) != recipe_digest(recipe)
    with pytest.raises(ConfigError, match="no user has more than 10"):  # the log's sliding windows, as before
        recipe_data(plain, plain.data.test, "data.test")
    sliding, _ = load_recipe("movie-lora", [*data, "data.protocol=sliding", f"data.test={log}:loo:test"])
    with pytest.raises(ConfigError, match="data.test: .*leave-one-out SPEC, but the protocol is sliding"):
        recipe_data(sliding, sliding.data.test, "data.test")


@pytest.mark.parametrize("spec, protocol, part, expected", [
    ("movielens:100k:test", "leave_one_out", None, "movielens:100k:loo:test"),
    ("movielens:100k:loo:valid", "leave_one_out", "test", "movielens:100k:loo:valid"),
    ("movielens:100k:train[0:50]", "leave_one_out", None, "movielens:100k:loo:train[0:50]"),
    ("log.jsonl", "leave_one_out", "valid", "log.jsonl:loo:valid"),
    ("tallrec:movie:test", "sliding", None, "tallrec:movie:test"),
    ("amazon:office:test", None, None, "amazon:office:test"),
    ("amazon:office:test", "leave_one_out", None, "its splits are fixed"),
    ("log.jsonl", "leave_one_out", None, "name its leave-one-out part"),
    ("log.parquet:loo:test[0:9]", "sliding", None, "a leave-one-out SPEC"),
    ("feedback:loo:1700000000", "sliding", None, "feedback:loo:1700000000"),  # a domain called loo: was refused
    ("feedback:loo:1700000000", "leave_one_out", None, "its splits are fixed"),  # was: kept, as if leave-one-out
])
def test_with_protocol(spec, protocol, part, expected):
    from adaptrec.data.spec import with_protocol
    from adaptrec.errors import DataSpecError

    if expected.startswith(("its", "name", "a ")):
        with pytest.raises(DataSpecError, match=expected):
            with_protocol(spec, protocol, part)
    else:
        assert with_protocol(spec, protocol, part) == expected


@pytest.mark.parametrize("key", ["timestamp", "rating"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_log_number_json_does_not_allow_is_refused(tmp_path, key, value):
    """`json` reads NaN and Infinity: a NaN timestamp put a user's latest item into the test history (its sort key
    compares false both ways); a NaN rating read as disliked."""
    path = tmp_path / "log.jsonl"
    path.write_text(f'{{"user_id": "a", "item_id": "0", "domain": "movie", "{key}": 1}}\n'
                    f'{{"user_id": "a", "item_id": "1", "domain": "movie", "{key}": {value}}}\n')
    with pytest.raises(DataFormatError, match=rf"log\.jsonl:2: not valid JSON \({value} is not a number JSON allows"):
        read_log(path)


def test_a_parquet_log_with_a_nan_timestamp_is_refused(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["a", "a"], "item_id": ["0", "1"], "domain": ["movie"] * 2,
                             "timestamp": [1.0, float("nan")]}), path)
    with pytest.raises(DataFormatError, match=r"log\.parquet:row 2: key 'timestamp' must be a finite number"):
        read_log(path)


@pytest.mark.parametrize("folder", ["log.jsonl", "items.jsonl"])
def test_a_folder_named_as_a_log_or_its_catalogue_is_called_a_folder(tmp_path, folder):
    """(was: "no such interaction log" for a folder log; "needs its catalogue" for a folder catalogue)"""
    from adaptrec.data.spec import load_spec
    from adaptrec.errors import DataSpecError

    write_jsonl(tmp_path / "log.jsonl", [{"user_id": "a", "item_id": "1", "domain": "movie"}])
    write_jsonl(tmp_path / "items.jsonl", [{"item_id": "1", "title": "x"}])
    (tmp_path / folder).unlink()
    (tmp_path / folder).mkdir()
    with pytest.raises(DataSpecError, match=f"{folder}: the file is a directory; give a regular file"):
        load_spec(str(tmp_path / "log.jsonl"))


def test_a_history_cut_to_its_latest_items_keeps_the_rest_as_items_the_user_has(tmp_path):
    """`history_len` dropped the older items without a trace: retrieval could offer them back (was: no
    `hidden_history`, as a cold view or `load_amazon(max_history=...)` records)."""
    from adaptrec.data.records import HIDDEN_HISTORY
    from adaptrec.data.spec import load_spec
    from adaptrec.router.retrieval import Retriever

    write_jsonl(tmp_path / "items.jsonl", [{"item_id": str(i), "title": f"film {i}"} for i in range(20)])
    log = write_jsonl(tmp_path / "log.jsonl", [{"user_id": "a", "item_id": str(i), "domain": "movie",
                                                "timestamp": i} for i in range(14)])
    case = load_spec(str(log), history_len=2, negatives_per_positive=0).cases[-1]  # target 13, history 3..12
    assert [h.item_id for h in case.history] == ["11", "12"]
    assert case.meta[HIDDEN_HISTORY] == [str(i) for i in range(3, 11)]
    catalogue = {str(i): f'"film {i}"' for i in range(20)}
    assert {str(i) for i in range(3, 13)} <= Retriever(catalogue).seen(case)


def test_a_repeated_interaction_is_refused_naming_both_lines(tmp_path):
    """A row logged twice (a concatenated or retried export) put the held-out target into its own history."""
    rows = [{"user_id": "u", "item_id": str(i), "domain": "movie", "position": i} for i in range(5)]
    with pytest.raises(DataFormatError, match=r"log.jsonl:6: the same interaction as .*log.jsonl:5 .*item '4', "
                                              "position 4"):
        read_log(write_jsonl(tmp_path / "log.jsonl", [*rows, rows[-1]]))
    again = [{"user_id": "u", "item_id": "1", "domain": "movie"}] * 2  # no order key: a second purchase, kept
    assert len(read_log(write_jsonl(tmp_path / "implicit.jsonl", again))) == 2
