import hashlib

import pytest
from data_markers import needs_ml100k, needs_tallrec

from adaptrec.data import movielens
from adaptrec.data.tallrec import load_tallrec
from adaptrec.errors import MissingOptionalPackage
from adaptrec.home import data_root


@needs_ml100k
@needs_tallrec
def test_rebuild_is_byte_identical_to_tallrec(tmp_path):
    paths = movielens.write_movielens_tallrec(tmp_path)
    assert sorted(p.name for p in paths) == ["test.json", "train.json", "valid.json"]
    for path in paths:
        ours = hashlib.sha256(path.read_bytes()).hexdigest()
        theirs = hashlib.sha256((data_root() / "tallrec" / "movie" / path.name).read_bytes()).hexdigest()
        assert ours == theirs, path.name


@needs_ml100k
@needs_tallrec
def test_load_movielens_matches_tallrec_but_keeps_user_and_item_ids():
    ml, tr = movielens.load_movielens("valid"), load_tallrec("movie", "valid")
    texts = [([(h.text, h.liked) for h in c.history], c.target, c.label) for c in ml]
    assert texts == [([(h.text, h.liked) for h in c.history], c.target, c.label) for c in tr]
    assert ml[0].user_id == "ml100k-910" and ml[-1].user_id == "ml100k-934"  # PROVENANCE's user blocks
    titles = movielens._titles(movielens.ml100k_dir())
    assert all(f'"{titles[h.item_id]}"' == h.text for c in ml for h in c.history)
    assert all(f'"{titles[c.target_id]}"' == c.target for c in ml)


def test_missing_recbole_says_how_to_install(monkeypatch):
    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingOptionalPackage, match=r"pip install --no-deps recbole==1\.2\.1"):
        movielens.ml100k_dir()
