import json

import pytest
from data_markers import needs_tallrec

from adaptrec.data.prompts import instruction, render_input
from adaptrec.data.tallrec import (
    item_popularity,
    load_tallrec,
    parse_record,
    read_tallrec_json,
    split_items,
    tallrec_path,
)
from adaptrec.errors import DataFormatError, DataSpecError

FILES = [("movie", "train"), ("movie", "valid"), ("movie", "test"), ("book", "valid"), ("book", "test")]


def record(inp, out="Yes.", noun="book"):
    return {"instruction": instruction(noun), "input": inp, "output": out}


@needs_tallrec
@pytest.mark.parametrize("domain,split", FILES)
def test_every_shipped_record_round_trips(domain, split):
    records = json.loads(tallrec_path(domain, split).read_text())
    cases = load_tallrec(domain, split)
    assert len(cases) == len(records)
    for case, rec in zip(cases, records):
        assert render_input(case) == rec["input"]
        assert instruction(case.noun) == rec["instruction"]
        assert case.label == (1 if rec["output"] == "Yes." else 0)
    if domain == "movie":  # TALLRec movie windows are exactly 10 items: the split is right
        assert {len(c.history) for c in cases} == {10}
    assert cases[3].user_id == f"{domain}-{split}-3"


def test_parser_handles_commas_quotes_and_book_quirk():
    inp = ('User Preference: "Foo, "Bar" Baz" written by A. Author, "Plain, Title" written by B\n'
           'User Unpreference: \n'
           'Whether the user will like the target book ""Why?" written by C"?')
    case = parse_record(record(inp, "No."), domain="book", user_id="x")
    assert [h.text for h in case.history] == ['"Foo, "Bar" Baz" written by A. Author', '"Plain, Title" written by B']
    assert all(h.liked for h in case.history)
    assert case.target == '""Why?" written by C"'  # kept verbatim, extra quotes included
    assert case.label == 0 and case.noun == "book"
    assert render_input(case) == inp
    assert split_items('"Clockwork Orange, A (1971)", "Mary Poppins (1964)"') == [
        '"Clockwork Orange, A (1971)"', '"Mary Poppins (1964)"']


def test_history_is_preferences_then_unpreferences():
    inp = 'User Preference: "A"\nUser Unpreference: "B", "C"\nWhether the user will like the target movie "D"?'
    case = parse_record(record(inp, noun="movie"), domain="movie", user_id="x")
    assert [(h.text, h.liked) for h in case.history] == [('"A"', True), ('"B"', False), ('"C"', False)]


@pytest.mark.parametrize("bad,match", [
    ({"instruction": instruction("movie"), "input": "nope", "output": "Yes."}, "three-line"),
    (record('User Preference: \nUser Unpreference: \nWhether the user will like the target book "X"?', "Maybe"), "output"),
    (record('User Preference: \nUser Unpreference: \nWhether the user will like the target movie "X"?'), "instruction"),
    ({"input": "x"}, "missing key"),
    (["input", "output"], "expected an object with input, output and instruction, got list"),  # (was: "missing key
    # list indices must be integers")
    (record('User Preference: "A\ud800"\nUser Unpreference: \nWhether the user will like the target movie "X"?',
           noun="movie"), "'input' holds a lone UTF-16 surrogate"),  # (was: a tokenizer's traceback)
])
def test_bad_records_raise_format_errors(bad, match):
    with pytest.raises(DataFormatError, match=match):
        parse_record(bad, domain="book", user_id="x")


def test_missing_book_train_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTREC_DATA", str(tmp_path))
    with pytest.raises(DataSpecError, match=r"book/train\.json.*PROVENANCE"):
        load_tallrec("book", "train")
    with pytest.raises(DataSpecError, match="domains"):
        load_tallrec("music", "test")


def test_read_file_infers_domain_and_popularity_normalises_book_quirk(tmp_path):
    recs = [
        record('User Preference: "T" written by A\nUser Unpreference: \nWhether the user will like the target book ""U" written by B"?'),
        record('User Preference: "U" written by B\nUser Unpreference: \nWhether the user will like the target book ""T" written by A"?'),
    ]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(recs))
    cases = read_tallrec_json(path)
    assert [c.user_id for c in cases] == ["book-mine-0", "book-mine-1"] and cases[0].domain == "book"
    assert item_popularity(cases) == {'""U" written by B"': 2.0, '""T" written by A"': 2.0}
    assert item_popularity(cases, targets=False) == {'""U" written by B"': 1.0, '""T" written by A"': 1.0}
    assert all(c.meta["liked_first"] for c in cases)  # truncation keeps both lists' shares
    path.write_text("[]")
    with pytest.raises(DataFormatError, match="non-empty"):
        read_tallrec_json(path)
