import pytest

from adaptrec.data.candidates import (
    CandidateList,
    candidate_cases,
    make_candidate_lists,
    read_candidates,
    with_sampled_negatives,
    write_candidates,
)
from adaptrec.data.records import Case, HistoryItem
from adaptrec.errors import DataFormatError, DataSpecError

CATALOGUES = {"arts": {str(i): f'"item {i}"' for i in range(100)}}
USER_ITEMS = {f"u{u}": frozenset({str(u), str(u + 1), str(u + 2)}) for u in range(20)}


def positives():
    return [Case(user_id=f"u{u}", domain="arts", noun="arts product",
                 history=(HistoryItem(f'"item {u}"', item_id=str(u), domain="arts"),
                          HistoryItem(f'"item {u + 1}"', item_id=str(u + 1), domain="arts")),
                 target=f'"item {u + 2}"', label=1, target_id=str(u + 2)) for u in range(20)]


def test_lists_hold_target_once_and_only_unseen_negatives():
    lists = make_candidate_lists(positives(), CATALOGUES, USER_ITEMS, n_negatives=19, seed=0)
    assert len(lists) == 20
    for lst, case in zip(lists, positives()):
        assert len(lst.candidates) == 20 == len(set(lst.candidates))
        assert lst.candidates[lst.target_index] == case.target_id
        assert not (set(lst.candidates) - {case.target_id}) & USER_ITEMS[case.user_id]
        assert lst.history == (str(int(case.target_id) - 2), str(int(case.target_id) - 1))
    assert len({lst.target_index for lst in lists}) > 3  # the target's position is randomised


def test_lists_are_seeded_and_independent_of_other_cases():
    a = make_candidate_lists(positives(), CATALOGUES, USER_ITEMS, seed=1)
    assert a == make_candidate_lists(positives(), CATALOGUES, USER_ITEMS, seed=1)
    assert a != make_candidate_lists(positives(), CATALOGUES, USER_ITEMS, seed=2)
    assert make_candidate_lists(positives()[5:7], CATALOGUES, USER_ITEMS, seed=1) == a[5:7]


def test_round_trip_through_jsonl(tmp_path):
    lists = make_candidate_lists(positives(), CATALOGUES, USER_ITEMS, n_negatives=4, seed=0)
    lists.append(CandidateList("u99", "arts", "7", ("7", "8")))  # no history
    path = tmp_path / "candidates.jsonl"
    write_candidates(path, lists)
    assert read_candidates(path) == lists
    assert '"history"' not in path.read_text().splitlines()[-1]
    twice = [*lists, CandidateList("u99", "arts", "7", ("7", "9"))]  # the item consumed again: one key, two lists
    with pytest.raises(DataFormatError, match="user 'u99' has two held-out lists for item '7' in arts"):
        write_candidates(tmp_path / "twice.jsonl", twice)  # (was: written, and every read of it refused)
    assert not (tmp_path / "twice.jsonl").exists()


def test_integer_ids_read_as_strings_as_logs_and_catalogues_read_them(tmp_path):
    """(was: refused, "key 'target_id' must be a non-empty string", where a log's integer ids load)"""
    path = tmp_path / "c.jsonl"
    path.write_text('{"user_id": 8000, "domain": "arts", "target_id": 7, "candidates": [8, 7], "history": [1]}\n')
    assert read_candidates(path) == [CandidateList("8000", "arts", "7", ("8", "7"), ("1",))]


@pytest.mark.parametrize("line,match", [
    ('{"user_id": "u", "domain": "arts", "candidates": ["1"]}', r"c\.jsonl:2: missing key 'target_id'"),
    ('{"user_id": "u", "domain": "arts", "target_id": "9", "candidates": ["1"]}', r":2: key 'candidates' does not contain"),
    ('{"user_id": "u", "domain": "arts", "target_id": "1", "candidates": ["1", "1"]}', r":2: key 'candidates' repeats"),
    ('{"user_id": "u", "domain": "arts", "target_id": "1", "candidates": [true]}', r":2: key 'candidates' must be"),
    ('{"user_id": "u", "domain": "arts", "target_id": 1, "candidates": [2, 1]}',  # was: counted twice in each mean
     r"c\.jsonl:2: a second list for user 'u', domain arts, target '1' \(the first is at .*c\.jsonl:1\)"),
    ('{"user_id": "u", "domain": "arts", "target_id": "1", "candidates": ["1", "2"], "score": 1}',
     r":2: unknown key 'score'"),
    ('{"user_id": "v", "domain": "arts", "target_id": "1", "candidates": ["1"]}',  # was: HR@1 = 1 for every row
     r":2: key 'candidates' holds the target alone"),
    ('{"user_id": "u",', r":2: not valid JSON"),
])
def test_read_errors_name_file_line_and_key(tmp_path, line, match):
    path = tmp_path / "c.jsonl"
    path.write_text('{"user_id": "u", "domain": "arts", "target_id": "1", "candidates": ["1", "2"]}\n' + line + "\n")
    with pytest.raises(DataFormatError, match=match):
        read_candidates(path)


def test_labelled_negatives_for_auc():
    cases = with_sampled_negatives(positives(), CATALOGUES, USER_ITEMS, negatives_per_positive=2, seed=0)
    assert [c.label for c in cases[:6]] == [1, 0, 0, 1, 0, 0]
    pos, neg = cases[0], cases[1]
    assert neg.history == pos.history and neg.user_id == pos.user_id
    assert neg.target == CATALOGUES["arts"][neg.target_id] and neg.target_id not in USER_ITEMS[pos.user_id]
    assert neg.meta["negative_of"] == pos.target_id
    with pytest.raises(DataSpecError, match="positive"):
        with_sampled_negatives(cases, CATALOGUES, USER_ITEMS)


def test_candidate_cases_expand_a_list_in_order():
    case = positives()[0]
    lst = make_candidate_lists([case], CATALOGUES, USER_ITEMS, n_negatives=3, seed=0)[0]
    expanded = candidate_cases(lst, case, CATALOGUES)
    assert [c.target_id for c in expanded] == list(lst.candidates)
    assert [c.label for c in expanded] == [int(i == case.target_id) for i in lst.candidates]
