import importlib.util
import json

import pytest
from data_markers import needs_amazon, needs_ml100k, needs_tallrec

from adaptrec.data.prompts import instruction
from adaptrec.data.spec import load_spec
from adaptrec.data.tallrec import item_popularity, load_tallrec
from adaptrec.errors import DataSpecError


@pytest.mark.parametrize("spec", ["foo", "tallrec:movie", "tallrec:music:test", "movielens:1m:test", "amazon:arts:test:warm", "amazon:games:test"])
def test_bad_specs_list_the_valid_forms(spec):
    with pytest.raises(DataSpecError, match=r"bad data SPEC.*valid forms: tallrec:movie\|book"):
        load_spec(spec)


@pytest.mark.parametrize("spec, why", [
    ("x.json[0:100][0:50]", "one \\[start:stop\\] slice per SPEC"),  # was: loaded, but read as one slice elsewhere
    ("x.json[" + "9" * 5000 + ":]", "slice bound too long"),  # was: int()'s ValueError traceback
    ("feedback:movie:" + "9" * 400, "past any time"),  # was: float() gave inf, and no case came back
])
def test_specs_python_would_misread_are_refused(spec, why):
    with pytest.raises(DataSpecError, match=why):
        load_spec(spec)


@needs_tallrec
def test_tallrec_specs_and_book_popularity_from_valid():
    movie = load_spec("tallrec:movie:test")
    assert len(movie.cases) == 1000
    assert movie.item_popularity == item_popularity(load_tallrec("movie", "train"))
    book = load_spec("tallrec:book:test")
    assert book.item_popularity == item_popularity(load_tallrec("book", "valid"))
    # keys take the targets' quoted form, so history counts reach test targets (666 of 2427 do)
    assert sum(c.target in book.item_popularity for c in book.cases) > 600
    assert all(k.startswith('""') for k in book.item_popularity)
    assert load_spec("tallrec:movie:test").fingerprint == movie.fingerprint != book.fingerprint
    with pytest.raises(DataSpecError, match="book train set is not shipped"):
        load_spec("tallrec:book:train")


@needs_tallrec
@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole not installed")
def test_movielens_spec():
    ds = load_spec("movielens:100k:test")
    assert [c.target for c in ds.cases] == [c.target for c in load_spec("tallrec:movie:test").cases]
    assert load_spec("movielens:100k:train").transductive and not ds.transductive  # train counts its own targets


@needs_amazon
def test_amazon_spec_adds_seeded_negatives():
    ds = load_spec("amazon:office:test:cold", negatives_per_positive=2, seed=0)
    assert [c.label for c in ds.cases[:3]] == [1, 0, 0] and len(ds.cases) == 3 * 950
    assert all(h.domain == "arts" for c in ds.cases for h in c.history)
    assert set(ds.catalogues) == {"office"} and len(ds.catalogues["office"]) == 19757
    again = load_spec("amazon:office:test:cold", negatives_per_positive=2, seed=0)
    assert again.cases == ds.cases and again.fingerprint == ds.fingerprint
    assert load_spec("amazon:office:test:cold", negatives_per_positive=2, seed=1).fingerprint != ds.fingerprint
    assert len(load_spec("amazon:office:test", negatives_per_positive=0).cases) == 950


def test_path_specs(tmp_path):
    rec = {"instruction": instruction("movie"), "output": "Yes.",
           "input": 'User Preference: "A"\nUser Unpreference: \nWhether the user will like the target movie "B"?'}
    (tmp_path / "train.json").write_text(json.dumps([rec, rec]))
    (tmp_path / "test.json").write_text(json.dumps([rec]))
    ds = load_spec(str(tmp_path / "test.json"))
    assert len(ds.cases) == 1 and ds.item_popularity == {'"A"': 2.0, '"B"': 2.0}  # from train.json
    # the fingerprint follows the files' contents, under the same SPEC: the test file's label, the popularity file
    (tmp_path / "test.json").write_text(json.dumps([{**rec, "output": "No."}]))
    relabelled = load_spec(str(tmp_path / "test.json")).fingerprint
    (tmp_path / "train.json").write_text(json.dumps([rec]))
    current = load_spec(str(tmp_path / "test.json")).fingerprint
    assert len({ds.fingerprint, relabelled, current}) == 3
    import os

    test, before = tmp_path / "test.json", (tmp_path / "test.json").stat()  # a rewrite keeping mtime and size
    test.write_text(test.read_text().replace('\\"A\\"', '\\"C\\"'))  # (`cp -p`, `rsync -t`): was the cached hash
    os.utime(test, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert test.stat().st_size == before.st_size and load_spec(str(test)).fingerprint != current

    items = [{"item_id": str(i), "title": f"t{i}", "domain": "movie"} for i in range(40)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    log = [{"user_id": "u", "item_id": str(i), "domain": "movie", "position": i} for i in range(12)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    ds = load_spec(str(tmp_path / "log.jsonl"), negatives_per_positive=1, seed=0)
    assert [c.label for c in ds.cases] == [1, 0, 1, 0]  # implicit log: 2 windows + sampled negatives
    assert all(int(c.target_id) >= 12 for c in ds.cases if c.label == 0)
    (tmp_path / "items.jsonl").unlink()
    with pytest.raises(DataSpecError, match="items.jsonl"):
        load_spec(str(tmp_path / "log.jsonl"))


@needs_tallrec
def test_slices_are_disjoint_and_keyed_apart():
    whole = load_spec("tallrec:book:valid")
    head, tail = load_spec("tallrec:book:valid[:1200]"), load_spec("tallrec:book:valid[1200:]")
    assert head.cases + tail.cases == whole.cases and len(head.cases) == 1200
    assert len({whole.fingerprint, head.fingerprint, tail.fingerprint}) == 3


def test_history_len_is_refused_where_the_latest_items_are_unknown(tmp_path):
    """TALLRec-style cases list every like before every dislike: `history[-N:]` would keep dislikes, not the
    latest items."""
    rec = {"instruction": instruction("movie"), "output": "Yes.",
           "input": 'User Preference: "A", "B", "C"\nUser Unpreference: "D", "E"\nWhether the user will like the '
                    'target movie "T"?'}
    (tmp_path / "test.json").write_text(json.dumps([rec]))
    for spec in (str(tmp_path / "test.json"), f"{tmp_path / 'test.json'}[0:1]", "tallrec:movie:test",
                 "movielens:100k:train"):
        with pytest.raises(DataSpecError, match="list every liked item before every disliked one"):
            load_spec(spec, history_len=2)
    with pytest.raises(DataSpecError, match="keep at least 1"):
        load_spec(str(tmp_path / "test.json"), history_len=0)


def test_popularity_counted_from_the_cases_themselves_is_labelled_transductive(tmp_path):
    items = [{"item_id": str(i), "title": f"film {i}"} for i in range(14)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    rows = [{"user_id": "u", "item_id": str(i), "domain": "movie", "position": i} for i in range(12)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_spec(str(tmp_path / "log.jsonl")).transductive  # its windows' targets are rows it counts
    assert not load_spec(f"{tmp_path / 'log.jsonl'}:loo:test").transductive  # training interactions only
    assert load_spec(f"{tmp_path / 'log.jsonl'}:loo:train").transductive  # which hold these cases' targets (was: not)


@needs_amazon
@needs_ml100k
def test_train_parts_count_their_own_targets_in_popularity():
    """(was: labelled plain popularity, as if it had not seen the labels it ranks)"""
    assert load_spec("amazon:office:train").transductive and not load_spec("amazon:office:test").transductive
    assert load_spec("movielens:100k:loo:train").transductive
    assert not load_spec("movielens:100k:loo:valid").transductive


def _tallrec_file(path):
    rec = {"instruction": instruction("movie"), "output": "Yes.",
           "input": 'User Preference: "A"\nUser Unpreference: \nWhether the user will like the target movie "B"?'}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([rec, rec]))
    return path


@pytest.mark.parametrize("spec, why", [
    ("x.json[0:0]", "the slice keeps none of its 2 cases"),  # was: 0 cases, and a later "no labelled cases"
    ("x.json[5:]", "the slice keeps none of its 2 cases"),
    ("x.json[٠:١]", "not recognised"),  # was: Arabic-Indic digits read as a slice
    ("x.json[0:1]\n", "not recognised"),  # was: a trailing newline taken by `$`
    ("feedback:moive", "no request of domain 'moive' is logged"),  # was: 0 cases, a typo unnoticed
])
def test_slices_that_keep_nothing_and_spellings_the_grammar_does_not_hold_are_refused(spec, why, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tallrec_file(tmp_path / "x.json")
    with pytest.raises(DataSpecError, match=why):
        load_spec(spec)


def test_a_data_file_is_read_as_a_file_whatever_its_path_holds(tmp_path, monkeypatch):
    """A `:` in its path defeated the test-split and overlap checks (`runs/10:00/test.json` was not a test split);
    an existing `feedback:x/test.json` read as a domain's feedback; a Path was a TypeError."""
    from pathlib import Path

    from adaptrec.online.gate import _spec_range
    from adaptrec.router.weights import _names_a_test_split

    monkeypatch.chdir(tmp_path)
    for name in ("runs/10:00/test.json", "feedback:x/test.json"):
        _tallrec_file(tmp_path / name)
        assert len(load_spec(name).cases) == 2 and len(load_spec(Path(name)).cases) == 2
        assert _names_a_test_split(f"{name}[0:1]")
    assert _spec_range("runs/10:00/test.json[0:1]", str(tmp_path)) == (str(tmp_path / "runs/10:00/test.json"), 0, 1)
    assert not _names_a_test_split("test.jsonl:loo:train") and _names_a_test_split("runs/a:b.jsonl:loo:test")
    with pytest.raises(DataSpecError, match="expected a data SPEC .* got int"):
        load_spec(3)


def test_a_file_spelt_like_a_builtin_spec_is_checked_as_that_file(tmp_path, monkeypatch):
    """The slice, history_len and protocol checks took an existing `feedback:x/test.json` for feedback (was: a slice
    keeping none of its cases gave 0 cases, history_len was taken, leave_one_out called its splits fixed)."""
    from adaptrec.data.spec import with_protocol

    monkeypatch.chdir(tmp_path)
    _tallrec_file(tmp_path / "feedback:x/test.json")
    with pytest.raises(DataSpecError, match="the slice keeps none of its 2 cases"):
        load_spec("feedback:x/test.json[5000:]")
    with pytest.raises(DataSpecError, match="list every liked item before every disliked one"):
        load_spec("feedback:x/test.json", history_len=3)
    (tmp_path / "feedback:x/log.jsonl").write_text("")
    assert with_protocol("feedback:x/log.jsonl", "leave_one_out", "test") == "feedback:x/log.jsonl:loo:test"
    with pytest.raises(DataSpecError, match="its splits are fixed"):  # no such file: the feedback of a domain
        with_protocol("feedback:y/log.jsonl", "leave_one_out", "test")


@pytest.mark.parametrize("spec, words", [
    ("a\x00.json", r"'a\\x00\.json': no such TALLRec file \(a path cannot hold a NUL byte\)"),
    ("~a\x00/x.json", r"no home folder for '~a\\x00'"),
    ("~no-such-user-here/x.json", r"no home folder for '~no-such-user-here'"),
    ("a\ud800.json", r"'a\\ud800\.json': no such TALLRec file \(not a path the file system can take\)"),
])
def test_a_path_pathlib_cannot_take_is_one_line(spec, words):
    """(was: ValueError: embedded null byte, or RuntimeError: Could not determine home directory)"""
    with pytest.raises(DataSpecError, match=words):
        load_spec(spec)


@pytest.mark.parametrize("n", [-1, 1.5, True, "2"])
def test_negatives_per_positive_is_a_whole_number(n, tmp_path):
    """(was: -1 a bare ValueError from the sampler, 1.5 drew 2 negatives a positive)"""
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"item_id": str(i), "title": f"t{i}"}) + "\n"
                                                  for i in range(14)))
    (tmp_path / "log.jsonl").write_text("".join(json.dumps({"user_id": "u", "item_id": str(i), "domain": "movie",
                                                            "position": i}) + "\n" for i in range(12)))
    with pytest.raises(DataSpecError, match=f"negatives_per_positive {n!r}: give a whole number, 0 or more"):
        load_spec(f"{tmp_path / 'log.jsonl'}:loo:test", negatives_per_positive=n)


def test_reading_feedback_on_a_home_that_served_nothing_makes_no_log():
    """`feedback:DOMAIN` created an empty online.db (and could not be read on a read-only home) before saying that
    nothing was logged."""
    import os
    from pathlib import Path

    with pytest.raises(DataSpecError, match="no request of domain 'movie' is logged .*no request log yet"):
        load_spec("feedback:movie")
    assert not (Path(os.environ["ADAPTREC_HOME"]) / "online.db").exists()
