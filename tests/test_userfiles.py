"""Files a user names that are not UTF-8 text or not regular files: one `error:` line, exit status 2."""

from __future__ import annotations

import json
import os

import pytest
from cli_runner import run_cli

from adaptrec.data.candidates import read_candidates
from adaptrec.data.history_file import read_history_file
from adaptrec.data.interaction_log import read_log
from adaptrec.data.tallrec import read_tallrec_json
from adaptrec.errors import AdaptrecError

LATIN1 = "User Preference: caf\xe9".encode("latin-1")


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["latin1", "fifo", "directory"])
def test_recipes_that_are_not_utf8_files_are_one_error_line(tmp_path, fifo, monkeypatch, capsys, kind):
    path = {"latin1": tmp_path / "r.yaml", "fifo": fifo, "directory": tmp_path}[kind]
    if kind == "latin1":
        path.write_bytes(b"name: caf" + "\xe9".encode("latin-1") + b"\n")
    code, _, err = run_cli(monkeypatch, capsys, "train", str(path))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert {"latin1": "not UTF-8", "fifo": "not a regular file", "directory": "a directory"}[kind] in lines[0]


@pytest.mark.parametrize("reader", [lambda p: read_history_file(p, "Heat (1995)", "movie"), read_candidates])
def test_history_and_candidate_files_refuse_bad_bytes_and_pipes(tmp_path, fifo, reader):
    """Each refusal is an AdaptrecError (the CLI's one `error:` line, exit status 2) that names the file."""
    bad, folder = tmp_path / "bad.json", tmp_path / "folder.json"
    bad.write_bytes(LATIN1)
    folder.mkdir()
    for path, why in ((bad, "not UTF-8 text"), (fifo, "not a regular file"), (folder, "a directory")):
        with pytest.raises(AdaptrecError, match=why) as refused:
            reader(path)  # a FIFO would block a plain read forever
        assert str(path) in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("kind", ["latin1", "fifo", "directory", "number input", "list output"])
def test_tallrec_files_that_are_not_utf8_text_records_are_one_error_line(tmp_path, monkeypatch, capsys, kind):
    from adaptrec.data.prompts import instruction

    path = tmp_path / "cases.json"
    record = {"instruction": instruction("movie"), "input": "User Preference: \nUser Unpreference: \n"
              "Whether the user will like the target movie \"Heat (1995)\"?", "output": "Yes."}
    if kind == "latin1":
        path.write_bytes(LATIN1)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        key, value = ("input", 5) if kind == "number input" else ("output", ["Yes."])
        path.write_text(json.dumps([{**record, key: value}]))
    code, _, err = run_cli(monkeypatch, capsys, "data", "inspect", str(path))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert {"latin1": "not UTF-8", "fifo": "not a regular file", "directory": "a directory",
            "number input": "'input' is int, expected text", "list output": "'output' is list"}[kind] in lines[0]


HUGE, DEEP = '{"user_id": ' + "1" * 5000 + "}", "[" * 50000 + "]" * 50000


@pytest.mark.parametrize("text", [HUGE, DEEP], ids=["5000-digit number", "50000 nested lists"])
@pytest.mark.parametrize("reader", [lambda p: read_history_file(p, "Heat (1995)", "movie"), read_candidates,
                                    read_log, read_tallrec_json],
                         ids=["history", "candidates", "log", "tallrec"])
def test_json_that_python_cannot_take_as_it_is_is_one_error_line(tmp_path, reader, text):
    """(was: a ValueError or RecursionError traceback)"""
    path = tmp_path / "user.json"
    path.write_text(text)
    with pytest.raises(AdaptrecError, match="not valid JSON") as refused:
        reader(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("obj, named", [
    ({"history": [{"title": "Heat (1995)", "like": False}]}, "history[0]: unknown key 'like'"),
    ({"history": [], "nun": "movie"}, "unknown key 'nun'"),
    ({"history": [], "noun": ["x"]}, "noun: expected the item kind as text"),
    # was: accepted, then a tokenizer or score-cache traceback after the backbone loaded
    ({"history": [{"title": "Heat \ud800"}]}, "history[0].title: 'Heat \\\\ud800' holds a lone UTF-16"),
    ({"history": [{"title": "   "}]}, "history[0].title: expected the item's title, got '   '"),
    ({"history": [{"title": "Heat", "domain": "mo\udcffvie"}]}, "history[0].domain: "),
    ({"history": [], "user_id": {"a": 1}}, "user_id: expected a user id"),
])
def test_a_history_file_refuses_typos_and_a_noun_that_is_not_text(tmp_path, obj, named):
    """A typo'd `liked` left the item liked; a list noun was rendered into the prompt; text no tokenizer takes."""
    path = tmp_path / "history.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(AdaptrecError, match=named.replace("[", r"\[").replace("]", r"\]")):
        read_history_file(path, "Heat (1995)", "movie")


def test_a_history_file_reads_integer_ids_as_text(tmp_path):
    """Catalogues number their items: `"item_id": 6` was refused while an integer `user_id` was read (the README's
    `--item-id 6` example names the history's ids)."""
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"user_id": 12, "history": [{"title": "Heat (1995)", "item_id": 6}]}))
    case = read_history_file(path, "Ran (1985)", "movie", item_id="7")
    assert (case.user_id, case.history[0].item_id) == ("12", "6")
    import numpy as np

    from adaptrec.data.history_file import parse_items

    assert parse_items([{"title": "x", "item_id": np.int64(6)}, {"title": "y", "item_id": 7}]) == [("x", "6"), ("y", "7")]
