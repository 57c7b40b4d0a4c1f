import json
from collections import Counter

import pytest
from data_markers import needs_amazon

from adaptrec.data.amazon import amazon_item_counts, amazon_items, amazon_popularity, amazon_user_items, load_amazon
from adaptrec.errors import DataSpecError
from adaptrec.home import data_root

ROOT = data_root() / "amazon_arts_office"
pytestmark = needs_amazon


def raw_lines(name):
    return [json.loads(line) for line in (ROOT / name).read_text().splitlines()]


def test_case_counts_follow_the_upstream_case_rule():
    # PROVENANCE: test has 950 Office case-1 targets, 50 Arts case-1 and 1000 Arts case-2 targets
    assert len(load_amazon("office", "test")) == 950
    assert len(load_amazon("arts", "test")) == 1050
    cases = load_amazon("arts", "valid")
    assert {c.meta["case"] for c in cases} == {1, 2}
    assert all(c.label == 1 and c.noun == "arts product" for c in cases)


def test_history_is_every_item_but_the_two_targets_in_position_order():
    user_rows = [r for r in raw_lines("interactions.jsonl") if r["user_id"] == "8000"]
    targets = {r["item_id"] for r in raw_lines("targets.jsonl") if r["user_id"] == "8000"}
    merged = sorted((p, i) for r in user_rows for i, p in zip(r["items"], r["positions"]))
    expected = [i for p, i in merged if p < merged[-1][0]]
    case = next(c for c in load_amazon("office", "test") if c.user_id == "8000")
    assert [h.item_id for h in case.history] == expected
    assert len(case.history) == len(merged) - 2
    assert case.target_id in targets and case.target == amazon_items("office")[case.target_id]
    assert case.history[0].text.startswith('"') and case.history[0].domain == "arts"


def test_views_and_max_history():
    both = load_amazon("office", "test")
    cold = load_amazon("office", "test", history_domains="other")
    own = load_amazon("office", "test", history_domains="target")
    for b, c, o in zip(both, cold, own):
        assert all(h.domain == "arts" for h in c.history) and all(h.domain == "office" for h in o.history)
        assert len(c.history) + len(o.history) == len(b.history)
    short = load_amazon("office", "test", max_history=3)
    assert all(s.history == b.history[-3:] for s, b in zip(short, both))
    assert [c.activity for c in cold] == [c.activity for c in short] == [len(b.history) for b in both]
    with pytest.raises(DataSpecError):
        load_amazon("office", "test", history_domains="all")


def test_popularity_counts_train_users_only():
    train = set(json.loads((ROOT / "splits.json").read_text())["train"])
    titles = {r["item_id"]: r["title"] for r in raw_lines("items_arts.jsonl")}
    expected = Counter(f'"{titles[i]}"' for r in raw_lines("interactions.jsonl")
                       if r["domain"] == "arts" and r["user_id"] in train for i in r["items"])
    assert amazon_popularity("arts") == {k: float(v) for k, v in expected.items()}
    ids = Counter(i for r in raw_lines("interactions.jsonl") if r["domain"] == "arts" and r["user_id"] in train
                  for i in r["items"])
    assert amazon_item_counts("arts") == ids


def test_user_items_include_targets():
    items = amazon_user_items()
    for t in raw_lines("targets.jsonl")[:200]:
        assert t["item_id"] in items[t["user_id"]]


def test_encoders_learn_from_train_users_only():
    from adaptrec.data.amazon import _raw, train_interactions

    users = {u for u, _, _ in train_interactions()}
    raw = _raw()
    assert users == set(raw.splits["train"]) and not users & (raw.splits["valid"] | raw.splits["test"])


def test_split_lists_and_targets_that_disagree_are_refused(tmp_path):
    """Encoders learn from splits.json's train users and cases come from targets.jsonl's split field: a test user
    also listed under train put test targets into encoder training, unchecked."""
    import shutil

    from adaptrec.data.amazon import _load
    from adaptrec.errors import DataFormatError

    folder = tmp_path / "amazon_arts_office"
    shutil.copytree(ROOT, folder)
    splits = json.loads((ROOT / "splits.json").read_text())
    test_user = min(splits["test"])
    (folder / "splits.json").write_text(json.dumps({**splits, "train": [*splits["train"], test_user]}))
    with pytest.raises(DataFormatError, match=f"user '{test_user}' is in both 'train' and 'test'"):
        _load(folder)
    moved = {**splits, "train": [*splits["train"], test_user], "test": [u for u in splits["test"] if u != test_user]}
    (folder / "splits.json").write_text(json.dumps(moved))
    with pytest.raises(DataFormatError, match=f"a test target of user '{test_user}', whom splits.json lists under 'train'"):
        _load(folder)


def _tiny_amazon(folder, interactions=None, targets=None, splits=None):
    """A two-domain Amazon folder of one test user (interactions, targets, splits.json overridable)."""
    folder.mkdir()
    for domain, prefix in (("arts", "a"), ("office", "o")):
        (folder / f"items_{domain}.jsonl").write_text("".join(
            json.dumps({"item_id": f"{prefix}{i}", "title": f"{domain} {i}"}) + "\n" for i in range(3)))
    rows = interactions or [{"user_id": "u1", "domain": "arts", "items": ["a0", "a1"], "positions": [0, 2]},
                            {"user_id": "u1", "domain": "office", "items": ["o0"], "positions": [1]}]
    (folder / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    targets = targets or [{"user_id": "u1", "split": "test", "domain": "arts", "item_id": "a1", "case": 0}]
    (folder / "targets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in targets))
    (folder / "splits.json").write_text(splits if splits is not None else
                                        json.dumps({"train": [], "valid": [], "test": ["u1"]}))
    return folder


@pytest.mark.parametrize("change, words", [
    ({"interactions": [{"user_id": "u1", "domain": "arts", "items": ["a0", "a1"], "positions": [0, "2"]}]},
     r"interactions\.jsonl:1: key 'positions' must be a list of integers"),
    ({"interactions": [{"user_id": "u1", "domain": "books", "items": ["a0"], "positions": [0]}]},
     r"interactions\.jsonl:1: key 'domain' must be one of arts, office, got 'books'"),
    ({"interactions": [{"user_id": "u1", "domain": "arts", "items": ["a0", "zz"], "positions": [0, 1]}]},
     r"interactions\.jsonl:1: item 'zz' is not in items_arts\.jsonl"),
    ({"targets": [{"user_id": "u1", "split": "test", "domain": "arts", "item_id": "o0", "case": 0}]},
     r"targets\.jsonl:1: item 'o0' is not in items_arts\.jsonl"),
    ({"targets": [{"user_id": "u1", "split": "dev", "domain": "arts", "item_id": "a1", "case": 0}]},
     r"targets\.jsonl:1: key 'split' must be one of train, valid, test, got 'dev'"),
    ({"splits": json.dumps(["u1"])}, r"splits\.json: expected \{split: \[user id, \.\.\.\]\}"),
    ({"splits": "{bad"}, r"splits\.json: not valid JSON"),
])
def test_a_malformed_amazon_folder_is_one_line_naming_file_and_line(tmp_path, change, words):
    """(was: TypeError, KeyError, AttributeError or JSONDecodeError tracebacks from a folder under $ADAPTREC_DATA)"""
    from adaptrec.data.amazon import _load
    from adaptrec.errors import DataFormatError

    assert _load(_tiny_amazon(tmp_path / "good")).targets[0]["item_id"] == "a1"
    with pytest.raises(DataFormatError, match=words):
        _load(_tiny_amazon(tmp_path / "bad", **change))


def test_a_view_records_the_earlier_items_it_hid(tmp_path, monkeypatch):
    """What a cold or shortened view leaves out of the prompt the user has all the same: retrieval must not offer it
    (was: recorded nowhere, so `recommend` on a `:cold` SPEC offered the user's own hidden items)."""
    from adaptrec.data import amazon

    raw = amazon._load(_tiny_amazon(tmp_path / "a"))
    monkeypatch.setattr(amazon, "_raw", lambda: raw)
    cold, = amazon.load_amazon("arts", "test", history_domains="other")
    assert [h.item_id for h in cold.history] == ["o0"] and cold.meta[amazon.HIDDEN_HISTORY] == ("a0",)
    short, = amazon.load_amazon("arts", "test", max_history=1)
    assert [h.item_id for h in short.history] == ["o0"] and short.meta[amazon.HIDDEN_HISTORY] == ("a0",)
    whole, = amazon.load_amazon("arts", "test")
    assert [h.item_id for h in whole.history] == ["a0", "o0"] and whole.meta[amazon.HIDDEN_HISTORY] == ()


def _append(path, *rows):
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


_ARTS = {"user_id": "u1", "domain": "arts", "items": ["a0", "a1"], "positions": [0, 2]}
_OFFICE = {"user_id": "u1", "domain": "office", "items": ["o0"], "positions": [1]}
_TARGET = {"user_id": "u1", "split": "test", "domain": "arts", "item_id": "a1", "case": 0}


@pytest.mark.parametrize("change, words", [
    ({"items_arts.jsonl": {"item_id": "a0", "title": "another title"}},
     r"items_arts\.jsonl:4: key 'item_id': 'a0' appears twice"),
    ({"items_office.jsonl": {"item_id": "o9", "title": "t", "brand": "b"}},
     r"items_office\.jsonl:4: unknown key 'brand'"),
    ({"interactions.jsonl": _ARTS},
     r"interactions\.jsonl:3: the same interaction as .*interactions\.jsonl:1 \(user 'u1', item 'a0', position 0\)"),
    ({"interactions.jsonl": {**_OFFICE, "user_id": "u2", "rating": 5}}, r"interactions\.jsonl:3: unknown key 'rating'"),
    ({"targets.jsonl": {**_TARGET, "item_id": "a0"}},
     r"targets\.jsonl:2: a second target for user 'u1', case 0 \(first at .*targets\.jsonl:1\)"),
    ({"targets.jsonl": {**_TARGET, "case": 1, "note": "x"}}, r"targets\.jsonl:2: unknown key 'note'"),
])
def test_repeated_ids_rows_and_unknown_keys_are_refused(tmp_path, change, words):
    """(was: read silently: the last title of an item won, a repeated target counted its user twice, a repeated
    interaction row repeated the history, an unknown key was ignored)"""
    from adaptrec.data.amazon import _load
    from adaptrec.errors import DataFormatError

    folder = _tiny_amazon(tmp_path / "a")
    for name, row in change.items():
        _append(folder / name, row)
    with pytest.raises(DataFormatError, match=words):
        _load(folder)


def test_an_item_bought_again_later_is_two_interactions(tmp_path):
    """The real data repeats items inside 1,271 (user, domain) lines, at different positions: those stay."""
    from adaptrec.data.amazon import _load

    again = {**_ARTS, "items": ["a0", "a2", "a0", "a1"], "positions": [0, 2, 3, 4]}
    raw = _load(_tiny_amazon(tmp_path / "a", interactions=[again, _OFFICE]))
    assert [item for _, _, item in raw.events["u1"]] == ["a0", "o0", "a2", "a0", "a1"]


def test_an_edited_file_is_read_again(tmp_path, monkeypatch):
    """(was: the parsed folder was remembered by its path alone, so cases stayed stale under a new fingerprint)"""
    from adaptrec.data.spec import load_spec

    folder = _tiny_amazon(tmp_path / "amazon_arts_office")
    monkeypatch.setenv("ADAPTREC_DATA", str(tmp_path))
    before = load_spec("amazon:arts:test", negatives_per_positive=0)
    assert [c.target for c in before.cases] == ['"arts 1"']
    items = folder / "items_arts.jsonl"
    items.write_text(items.read_text().replace('"arts 1"', '"arts one, renamed"'))
    after = load_spec("amazon:arts:test", negatives_per_positive=0)
    assert after.fingerprint != before.fingerprint and [c.target for c in after.cases] == ['"arts one, renamed"']
