"""Evaluation tables on the tiny model: AUC and ranking protocols, baselines beside LLM rows."""

from __future__ import annotations

import numpy as np
import pytest
from data_markers import needs_amazon, needs_ml100k, needs_tallrec
from synthetic import write_film_log

from adaptrec.data.spec import load_spec
from adaptrec.errors import DataSpecError
from adaptrec.evaluation import rank_lists, run_eval, run_rank_eval
from adaptrec.metrics import auc


@needs_tallrec
def test_auc_table_has_baselines_and_the_backbone_on_one_subset(tiny_backbone):
    ds = load_spec("tallrec:movie:test")
    report = run_eval(tiny_backbone, ds, limit=12, seed=3, progress=False)
    names = [r.name for r in report.rows]
    assert names == ["like_ratio", "popularity", "backbone (untuned)"]
    assert report.n == 12 and 0 < report.yes_share < 1
    like = report.rows[0].metrics["auc"].value
    chosen = [c for c in ds.cases if c.label is not None]
    from adaptrec.evaluation import select_cases
    subset = select_cases(ds, 12, 3)
    expected = auc(np.array([c.label for c in subset]), np.array([c.like_ratio if c.history else 0.5 for c in subset]))
    assert like == pytest.approx(expected) and len(chosen) == 1000
    assert "log_loss" not in report.rows[1].metrics  # popularity is not a probability
    md = report.markdown()
    assert "seeded label-stratified subset of 12 (seed 3)" in md and "| like_ratio |" in md
    env = report.to_dict()["environment"]  # what produced the scores travels with them (eval --json, grids)
    assert (env["backend"], env["dtype"], env["device"]) == ("fp32", "float32", "cpu") and env["adaptrec"]
    assert report.to_dict()["data_fingerprint"] == ds.fingerprint  # which data the SPEC held (was: not recorded)
    frame = report.to_pandas()  # a table alone would not say what it was measured on (was: attrs empty)
    assert frame.attrs["spec"] == report.spec and (frame.attrs["n"], frame.attrs["seed"]) == (12, 3)
    assert list(frame["model"]) == [r.name for r in report.rows] and report._repr_markdown_() == md
    # the prompts the LLM rows read, which eval takes from the adapters' recipes
    assert frame.attrs["template"] == "tallrec" and report.to_dict()["prompt"]["max_prompt_tokens"] == 1024
    assert "LLM prompts: template tallrec, at most 1024 tokens" in md
    stats = run_eval(tiny_backbone, ds, limit=12, seed=3, progress=False, template="tallrec-stats", max_prompt_tokens=512)
    assert stats.prompt == {"template": "tallrec-stats", "max_prompt_tokens": 512}


def test_a_limit_above_the_data_reads_as_all_of_it_and_the_frame_names_its_users():
    from adaptrec.evaluation import EvalReport

    def report(n, limit, negatives=None, available=None):
        return EvalReport("x:y:test", n, limit, 0, 0.5, "pyes", ("auc",), negatives=negatives, users=3,
                          available=available)

    assert "all 40 cases" in report(40, 200).protocol and "subset" not in report(40, 200).protocol
    assert "subset of 40 (seed 0)" in report(40, 40, available=90).protocol and "all 40 cases" in report(40, None).protocol
    assert "all 40 cases" in report(40, 40, available=40).protocol  # the limit took every case there was
    assert "all 40 held-out items of 3 users," in report(40, 200, negatives=9).protocol
    assert "40 held-out items of 3 users (seed 0)" in report(40, 40, negatives=9, available=41).protocol
    assert report(40, 40).to_pandas().attrs["users"] == 3


@needs_amazon
def test_ranking_table_for_implicit_data(tiny_backbone):
    ds = load_spec("amazon:office:test")
    report = run_rank_eval(tiny_backbone, ds, limit=3, seed=0, negatives=4, progress=False)
    assert report.n == 3 and report.negatives == 4
    assert [r.name for r in report.rows] == ["like_ratio", "popularity", "backbone (untuned)"]
    # all-positive histories give every candidate one like-ratio: shown as not applicable, not as a worst rank
    assert report.rows[0].metrics == {} and "not applicable" in report.rows[0].note
    assert "| like_ratio | n/a |" in report.markdown() and "1 held-out item + 4 sampled negatives" in report.markdown()
    pop, llm = report.rows[1].metrics, report.rows[2].metrics  # beyond accuracy: top 10 of each 5-item list
    assert pop["itemcoverage@10"].value == llm["itemcoverage@10"].value  # both show every candidate
    assert 0 < pop["itemcoverage@10"].value <= 15 / len(ds.catalogues["office"])
    assert 0 <= pop["giniindex@10"].value < 1 and pop["averagepopularity@10"].ci_low is None
    assert "itemcoverage@10, averagepopularity@10, giniindex@10: one number for the whole set" in report.markdown()
    # no item encoder given: the table says why it has no diversity column (was: the column gone without a word)
    assert "diversity@10" not in report.metric_names and "diversity@10 left out: no item text encoder" in \
        report.markdown() and report.to_dict()["remarks"]


def test_beyond_accuracy_of_a_ranking_row():
    from adaptrec.data.candidates import CandidateList
    from adaptrec.data.spec import DataSet
    from adaptrec.evaluation import beyond_accuracy

    catalogue = {str(i): f'"item {i}"' for i in range(10)}
    catalogue["1"] = catalogue["2"]  # two items share a title: popularity counts each item id, not the title
    counts = {str(i): i / 45 for i in range(10)}
    title_counts = {f'"item {i}"': (1 + 2) / 45 if i == 2 else i / 45 for i in range(10) if i != 1}
    ds = DataSet("x", [], title_counts, "fp", {"office": catalogue}, {}, item_counts=counts)
    lists = [CandidateList(f"u{u}", "office", "0", ("0", "1", "2", "3"), None) for u in range(2)]
    rows = np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.1, 0.8, 0.0]])  # top 2: (0, 1) and (0, 2)
    got = beyond_accuracy(ds, lists, rows, k=2)
    assert got["itemcoverage@2"].value == pytest.approx(3 / 10)
    assert got["averagepopularity@2"].value == pytest.approx(((0 + 1) / 2 + (0 + 2) / 2) / 2 / 45)
    assert got["giniindex@2"].value == pytest.approx(np.sum((2 * np.arange(8, 11) - 11) * np.array([1, 1, 2])) / 4 / 10)
    vectors = {i: np.eye(10)[int(i)] for i in catalogue}
    assert got["itemcoverage@2"] == beyond_accuracy(ds, lists, rows, k=2, embeddings=vectors)["itemcoverage@2"]
    assert beyond_accuracy(ds, lists, rows, k=2, embeddings=vectors)["diversity@2"].value == pytest.approx(1.0)
    single = [CandidateList(f"u{u}", "office", "0", ("0",), None) for u in range(2)]  # one-item lists: no pairs
    assert "diversity@2" not in beyond_accuracy(ds, single, np.array([[0.5], [0.5]]), k=2, embeddings=vectors)
    both = DataSet("x", [], title_counts, "fp", {"office": catalogue, "arts": catalogue}, {}, item_counts=counts)
    two = [CandidateList("u0", "office", "0", ("0", "1", "2", "3"), None),
           CandidateList("u1", "arts", "0", ("0", "1", "2", "3"), None)]  # one catalogue listed under two domains
    assert beyond_accuracy(both, two, rows, k=2)["itemcoverage@2"].value == pytest.approx(3 / 10)  # (was: 3 / 20)


def test_a_report_of_one_user_says_it_has_no_intervals():
    """Feedback sent without user ids is all the one user "anonymous" (was: "95% bootstrap CIs over users (1)")."""
    from adaptrec.evaluation import EvalReport

    report = EvalReport("feedback:movie", 12, None, 0, 0.5, "pyes", ("auc",), users=1)
    assert "no CIs: one user" in report.protocol and "over users" not in report.protocol


@needs_tallrec
def test_ranking_needs_implicit_data(tiny_backbone):
    with pytest.raises(DataSpecError, match="implicit"):
        run_rank_eval(tiny_backbone, load_spec("tallrec:movie:test"), limit=2)


@needs_amazon
def test_rank_lists_are_nested_so_a_larger_run_extends_a_smaller_one():
    ds = load_spec("amazon:office:test")
    _, small = rank_lists(ds, 5, seed=3, negatives=4)
    _, large = rank_lists(ds, 20, seed=3, negatives=4)
    assert set(small) <= set(large)  # same users, same targets, same sampled candidates
    assert rank_lists(ds, 5, seed=4, negatives=4)[1] != small


def test_a_baseline_constant_over_the_cases_is_not_applicable():
    from adaptrec.data.records import Case, HistoryItem
    from adaptrec.data.spec import DataSet
    from adaptrec.evaluation import baseline_rows

    cases = [Case(f"u{i}", "office", "office product", (HistoryItem('"a"'), HistoryItem('"b"')), f'"t{i}"', label=i % 2)
             for i in range(6)]
    dataset = DataSet("synthetic", cases, {f'"t{i}"': float(i) for i in range(6)}, "fp")
    like, popularity = baseline_rows(dataset, cases, ("auc",), seed=0)
    assert like.metrics == {} and "same score" in like.note  # every history all liked: one value for all
    assert popularity.metrics["auc"].value == pytest.approx(0.667, abs=1e-3) and popularity.note is None
    # leave-one-out: a held-out item and its sampled negatives share one history, which differs between users
    # (was: a pooled AUC of users' like-ratios, 0.46 on movielens:100k:loo:test, shown as a number)
    loo = [Case(f"u{u}", "movie", "movie", (HistoryItem('"a"', liked=u % 2 == 0), HistoryItem('"b"')), f'"t{u}{k}"',
                label=int(k == 0), meta={} if k == 0 else {"negative_of": f"t{u}0"}, target_id=f"t{u}{k}")
           for u in range(4) for k in range(3)]
    like, _ = baseline_rows(DataSet("loo", loo, {}, "fp"), loo, ("auc",), seed=0)
    assert like.metrics == {} and "same score" in like.note



def test_given_candidate_lists_rank_like_the_sampled_ones_they_were_written_from(tiny_backbone, tmp_path):
    import json

    from adaptrec.data.candidates import write_candidates
    from adaptrec.fingerprint import file_sha256

    ds = load_spec(str(write_film_log(tmp_path, "movie", [12] * 4)[0]))
    sampled = run_rank_eval(tiny_backbone, ds, limit=3, seed=1, negatives=5, progress=False)
    write_candidates(tmp_path / "candidates.jsonl", rank_lists(ds, 3, 1, 5)[1])
    given = run_rank_eval(tiny_backbone, ds, limit=None, seed=1, candidates_file=tmp_path / "candidates.jsonl",
                          progress=False)
    assert [r.metrics for r in given.rows] == [r.metrics for r in sampled.rows]
    assert "`candidates.jsonl` (up to 6)" in given.markdown()
    assert given.to_dict()["candidates_file"] == "candidates.jsonl" and sampled.to_dict()["candidates_file"] is None
    assert given.to_dict()["candidates_sha256"] == file_sha256(tmp_path / "candidates.jsonl")  # (was: the name only)
    assert sampled.to_dict()["candidates_sha256"] is None and given.data_fingerprint == ds.fingerprint
    assert given.to_dict()["metric_names"] == list(given.metric_names) and given.to_dict()["file_lists"] is None
    first = run_rank_eval(tiny_backbone, ds, limit=2, seed=1, candidates_file=tmp_path / "candidates.jsonl",
                          include_untuned=False, progress=False)
    assert "(up to 6; its first 2 of 3 lists)" in first.protocol and first.to_dict()["file_lists"] == 3  # was: unsaid

    (tmp_path / "bad.jsonl").write_text(json.dumps({"user_id": "nobody", "domain": "movie", "target_id": "1",
                                                    "candidates": ["1", "2"]}) + "\n")
    with pytest.raises(DataSpecError, match=r"bad\.jsonl: 1 list\(s\) match no held-out case"):
        run_rank_eval(tiny_backbone, ds, candidates_file=tmp_path / "bad.jsonl", progress=False)


def test_each_given_list_is_checked_against_its_own_domains_catalogue(tmp_path):
    import json

    from adaptrec.evaluation import given_lists

    items = [{"item_id": f"m{i}", "title": f"film {i}", "domain": "movie"} for i in range(6)]
    items += [{"item_id": f"b{i}", "title": f"book {i}", "domain": "book"} for i in range(6)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    timelines = {"u": ["m0", "m1", "b0", "b1", "b2"], "v": ["m3", "m4", "m5"]}
    rows = [{"user_id": u, "item_id": i, "domain": "book" if i[0] == "b" else "movie", "position": k}
            for u, seq in timelines.items() for k, i in enumerate(seq)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_spec(f"{tmp_path / 'log.jsonl'}:loo:test")
    lists = [{"user_id": "v", "domain": "movie", "target_id": "m5", "candidates": ["m5", "m0"]},
             {"user_id": "u", "domain": "book", "target_id": "b2", "candidates": ["b2", "m4"]}]  # a movie among books
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lists))
    with pytest.raises(DataSpecError, match=r"1 candidate item\(s\) not in the catalogue, e\.g\. 'm4'"):
        given_lists(ds, tmp_path / "c.jsonl")


@pytest.mark.parametrize("spec, kwargs, match", [
    pytest.param("tallrec:movie:test[5:5]", {}, "the slice keeps none of its 1000 cases", marks=needs_tallrec),
    pytest.param("tallrec:movie:test", {"limit": 1}, "all 1 cases labelled", marks=needs_tallrec),
    pytest.param("amazon:office:test", {"candidates_file": "empty"}, "no candidate lists", marks=needs_amazon),
])
def test_data_nothing_can_be_measured_on_is_refused_before_the_backbone_loads(tmp_path, monkeypatch, spec, kwargs,
                                                                             match):
    from adaptrec import api
    from adaptrec.errors import AdaptrecError

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path))
    monkeypatch.setattr(api, "_backbone", lambda *a: pytest.fail("the backbone loaded"))
    if "candidates_file" in kwargs:
        (tmp_path / "empty.jsonl").write_text("")
        kwargs = {"candidates_file": tmp_path / "empty.jsonl"}
    with pytest.raises(AdaptrecError, match=match):
        api.evaluate(data=spec, **kwargs)


class HashEncoder:
    """A deterministic stand-in for MiniLM: one unit vector per title."""

    name = "hash-encoder"

    def encode(self, texts):
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]
        return np.array([r / np.linalg.norm(r) for r in rows], dtype=np.float32)


@needs_amazon
def test_ranking_rows_carry_diversity_and_ndcg_per_user_group(tiny_backbone):
    from adaptrec.evaluation import COLD_GAP, DIVERSITY

    from dataclasses import replace

    warm, cold = load_spec("amazon:office:test"), load_spec("amazon:office:test:cold")  # office test users are warm
    users = sorted({c.user_id for c in warm.cases})
    mixed = [c for c in warm.cases if c.user_id in users[:4]] + [c for c in cold.cases if c.user_id in users[4:8]]
    ds = replace(warm, cases=mixed)
    report = run_rank_eval(tiny_backbone, ds, limit=None, seed=0, negatives=4, progress=False,
                           item_encoder=HashEncoder())
    assert COLD_GAP in report.metric_names  # 4 cold users and 4 warm ones
    assert DIVERSITY in report.metric_names and any(n.startswith("ndcg@10 (history ") for n in report.metric_names)
    for row in report.rows[1:]:
        assert 0 < row.metrics[DIVERSITY].value <= 2
        groups = [n for n in report.metric_names if n.startswith("ndcg@10 (history ")]
        n_by_group = sum(row.metrics[g].n for g in groups)
        assert n_by_group == report.n  # every user in exactly one activity bucket
        assert sum(row.metrics[g].n for g in ("ndcg@10 (warm)", "ndcg@10 (cold)") if g in row.metrics) == report.n
        gap = row.metrics[COLD_GAP]
        assert gap.value == pytest.approx(row.metrics["ndcg@10 (cold)"].value - row.metrics["ndcg@10 (warm)"].value)
        assert row.metrics["ndcg@10 (cold)"].n == row.metrics["ndcg@10 (warm)"].n == 4
    assert DIVERSITY in report.markdown()


def test_user_groups_and_their_means():
    from adaptrec.data.records import Case, HistoryItem
    from adaptrec.evaluation import user_groups
    from adaptrec.metrics.beyond import group_gap, group_means

    def case(n_target: int, n_other: int) -> Case:
        history = tuple(HistoryItem(f'"t{i}"', domain="office") for i in range(n_target)) + tuple(
            HistoryItem(f'"o{i}"', domain="arts") for i in range(n_other))
        return Case("u", "office", "office product", history, '"x"')

    groups = user_groups([case(0, 3), case(2, 4), case(10, 12), case(0, 0)])
    assert groups["cold"].tolist() == [True, False, False, True]
    assert groups["history <5"].tolist() == [True, False, False, True]
    assert groups["history 5-19"].tolist() == [False, True, False, False]
    assert groups["history >=20"].tolist() == [False, False, True, False]
    values = np.array([1.0, 0.0, 0.5, 0.0])
    means = group_means(values, {"cold": groups["cold"], "none": np.zeros(4, bool)}, clusters=list("abcd"))
    assert list(means) == ["cold"] and means["cold"].value == 0.5 and means["cold"].n == 2
    gap = group_gap(values, groups["cold"], groups["warm"], clusters=list("abcd"))
    assert gap.value == pytest.approx(0.5 - 0.25) and gap.ci_low <= gap.value <= gap.ci_high
    assert group_gap(values, groups["cold"], np.zeros(4, bool)) is None


def test_user_groups_bucket_by_activity_not_by_the_cut_history():
    """A leave-one-out prompt shows at most `history_len` items; the user's bucket counts every earlier one."""
    from adaptrec.data.leave_one_out import Event, loo_cases
    from adaptrec.evaluation import user_groups

    timelines = {"busy": [Event(str(i)) for i in range(30)], "new": [Event(str(i)) for i in range(4)]}
    cases = loo_cases(timelines, "test", str, "movie", history_len=10)
    assert [len(c.history) for c in cases] == [10, 3] and [c.activity for c in cases] == [29, 3]
    groups = user_groups(cases)
    assert groups["history >=20"].tolist() == [True, False] and groups["history <5"].tolist() == [False, True]


def test_a_logs_leave_one_out_test_part_ranks_every_user_with_three_interactions(tiny_backbone, tmp_path):
    """`eval --data log.jsonl:loo:test --candidates N`: one list per user with 3+ interactions (sliding 10-item
    windows give none here), each target among N items the user never touched."""
    log, rows = write_film_log(tmp_path, "movie", [3 + u % 2 for u in range(5)])
    ds = load_spec(f"{log}:loo:test")
    positives, lists = rank_lists(ds, None, seed=0, negatives=5)
    assert len(lists) == 5 and all(len(lst.candidates) == 6 for lst in lists)
    touched = {u: {r["item_id"] for r in rows if r["user_id"] == u} for u in {r["user_id"] for r in rows}}
    assert all(not (set(lst.candidates) - {lst.target_id}) & touched[lst.user_id] for lst in lists)
    report = run_rank_eval(tiny_backbone, ds, limit=None, seed=0, negatives=5, progress=False)
    assert any("ndcg@10" in r.metrics for r in report.rows)


def test_a_ranking_over_a_whole_log_labels_its_popularity_transductive(tiny_backbone, tmp_path):
    """A log's sliding windows rank targets whose own interactions popularity counts (was: a plain "popularity" row,
    as on a held-out split, in the ranking protocol; the labelled protocol already said so)."""
    log, _ = write_film_log(tmp_path, "movie", [15, 15])
    names = [r.name for r in run_rank_eval(tiny_backbone, load_spec(str(log)), limit=None, seed=0, negatives=3,
                                           include_untuned=False, progress=False).rows]
    assert "popularity (transductive)" in names
    held_out = run_rank_eval(tiny_backbone, load_spec(f"{log}:loo:test"), limit=None, seed=0, negatives=3,
                             include_untuned=False, progress=False)
    assert "popularity" in [r.name for r in held_out.rows]


def test_report_rows_resample_users_not_cases():
    """Two users with 30 cases each: a user's cases move together in the bootstrap, so the CI is wider than a case
    bootstrap's (which would treat 60 cases from 2 users as 60 independent draws)."""
    from adaptrec.data.records import Case
    from adaptrec.evaluation import case_row
    from adaptrec.metrics import compute_classification, compute_ranking

    rng = np.random.default_rng(0)
    cases = [Case(f"u{i // 30}", "d", "item", (), f"t{i}", label=int(rng.integers(2))) for i in range(60)]
    labels = np.array([c.label for c in cases])
    scores = labels * (np.arange(60) < 30) + rng.random(60)  # user 0 separates perfectly, user 1 at chance
    row = case_row("m", "llm", cases, scores, ["auc"], seed=0).metrics["auc"]
    by_case = compute_classification(["auc"], labels, scores, seed=0)["auc"]
    assert row.value == by_case.value and row.ci_high - row.ci_low > 1.5 * (by_case.ci_high - by_case.ci_low)
    rows = [np.r_[1.0 if i < 30 else rng.random(), rng.random(4)] for i in range(60)]
    users = [c.user_id for c in cases]
    clustered = compute_ranking(["ndcg@3"], rows, np.zeros(60, int), seed=0, clusters=users)["ndcg@3"]
    plain = compute_ranking(["ndcg@3"], rows, np.zeros(60, int), seed=0)["ndcg@3"]
    assert clustered.ci_high - clustered.ci_low > 1.5 * (plain.ci_high - plain.ci_low)


@needs_ml100k
@needs_tallrec
def test_labelled_movielens_reports_carry_the_feature_regression_row(tiny_backbone):
    """The bar on TALLRec movie is a row of every report on a held-out split of ML-100K's labelled cases; a split
    without item ids (TALLRec's own files) has no such row."""
    from adaptrec.cf.features import source_feature_model
    from adaptrec.evaluation import FEATURE_ROW, select_cases

    ds = load_spec("movielens:100k:test")
    report = run_eval(tiny_backbone, ds, limit=40, seed=0, include_untuned=False, progress=False)
    row = next(r for r in report.rows if r.name == FEATURE_ROW)
    cases = select_cases(ds, 40, 0)
    expected = auc(np.array([c.label for c in cases]), source_feature_model("movielens:100k").score(cases))
    assert row.metrics["auc"].value == pytest.approx(expected) and 0.5 < expected < 1
    assert FEATURE_ROW not in [r.name for r in run_eval(tiny_backbone, load_spec("tallrec:movie:test"), limit=12,
                                                        include_untuned=False, progress=False).rows]


@needs_tallrec
def test_popularity_counted_from_the_evaluated_file_itself_is_labelled_transductive(tiny_backbone):
    """Book has no train set: its valid file counts its own targets (labelled), its test reads valid (not)."""
    names = [r.name for r in run_eval(tiny_backbone, load_spec("tallrec:book:valid[1200:]"), limit=12,
                                      include_untuned=False, progress=False).rows]
    assert names == ["like_ratio", "popularity (transductive)"]
    assert not load_spec("tallrec:book:test").transductive


def test_encoders_read_a_held_out_users_whole_timeline_not_the_prompts_latest_items(tmp_path):
    """Eval rows gave encoders the prompt's history (the latest 10 items on leave-one-out), while their validation
    metric read the whole earlier timeline: SASRec was understated in every eval report."""
    from adaptrec.evaluation import encoder_scores

    log, _ = write_film_log(tmp_path, "movie", [15, 15])
    cases = load_spec(f"{log}:loo:test").cases
    read = []

    class Recording:
        def score_lists(self, users, histories, candidates):
            read.extend(histories)
            return [[0.0] for _ in users]

    encoder_scores(Recording(), cases)
    positives = [c for c in cases if c.held_out_positive]
    assert all(len(c.history) == 10 for c in positives)
    assert [len(h) for h in read[:1]] == [14]  # every item before the test target, oldest first
    assert read[0][-10:] == [h.item_id for h in positives[0].history]


def test_a_ranking_protocol_counts_held_out_items_and_users_apart():
    """(was: "all 1050 users" for 1050 lists of 1000 users: a user with two targets is two lists, averaged alike)"""
    from adaptrec.evaluation import EvalReport

    def protocol(n: int, users: int) -> str:
        return EvalReport("amazon:arts:test", n, None, 0, 0.05, "pyes", ("ndcg@10",), negatives=19,
                          users=users).protocol

    assert "all 1050 held-out items of 1000 users, each ranking" in protocol(1050, 1000)
    assert "all 1000 users, each ranking" in protocol(1000, 1000)


def test_an_encoder_scores_a_candidate_lists_user_once_with_the_same_numbers():
    """Every case of a candidate list repeats its user and history: scoring the list's user once gives the per-case
    numbers (unknown items at the same floor) without a catalogue row per candidate (was: C rows per list)."""
    from adaptrec.cf.base import Encoder
    from adaptrec.data.records import Case, HistoryItem
    from adaptrec.evaluation import encoder_list_scores, encoder_scores

    class Counting(Encoder):
        items = ["a", "b", "c", "d"]
        rows: list[int] = []

        def score_catalogue(self, users, histories):
            self.rows.append(len(users))
            return np.array([[len(h) + 0.1 * k * (1 + len(u)) for k in range(4)] for u, h in zip(users, histories)])

    history = (HistoryItem('"a"', True, "a"), HistoryItem('"b"', True, "b"))
    one = [Case("u1", "movie", "movie", history, f'"{i}"', int(i == "c"), i) for i in ("c", "d", "zzz", "a")]
    encoder = Counting()
    np.testing.assert_array_equal(encoder_list_scores(encoder, one), encoder_scores(encoder, one))
    assert encoder.rows == [1, 4]
    mixed = [one[0], Case("u2", "movie", "movie", history[:1], '"d"', 0, "d")]  # not one user's list: per case
    np.testing.assert_array_equal(encoder_list_scores(encoder, mixed), encoder_scores(encoder, mixed))


def test_a_table_names_the_resamples_its_cis_left_out():
    """A cold − warm gap with few cold users leaves out the resamples that drew none of them: the interval is
    conditional on both groups appearing, which the table did not say (the count was kept, never shown)."""
    from adaptrec.evaluation import EvalReport, EvalRow
    from adaptrec.metrics import MetricValue

    report = EvalReport("amazon:office:test", 100, 100, 0, 0.05, "pyes", ("ndcg@10", "ndcg@10 cold−warm"))
    report.rows.append(EvalRow("popularity", "baseline", {"ndcg@10": MetricValue(0.5, 0.4, 0.6, 100),
                                                          "ndcg@10 cold−warm": MetricValue(0.1, -0.2, 0.3, 100,
                                                                                           ci_skipped=129)}))
    assert "left out of a CI" in report.markdown() and "popularity, ndcg@10 cold−warm: 129." in report.markdown()
    report.rows[0].metrics["ndcg@10 cold−warm"] = MetricValue(0.1, -0.2, 0.3, 100)
    assert "left out" not in report.markdown()
