"""Drift statistics (PSI, KS, reliability/ECE) and `adaptrec drift` on the tiny Llama, with its figure."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from cli_runner import run_cli
from serve_helpers import make_registry
from synthetic import log_feedback, synthetic_cases

from adaptrec.metrics.calibration import ks, psi, psi_null, reliability


def test_psi_and_ks_see_a_shift_and_not_its_absence():
    rng = np.random.default_rng(0)
    a, b, shifted = rng.beta(2, 5, 2000), rng.beta(2, 5, 2000), rng.beta(5, 2, 2000)
    assert psi(a, b) < 0.05 < 0.25 < psi(a, shifted)
    assert ks(a, b)[1] > 0.01 and ks(a, shifted)[1] < 1e-6


def test_what_psi_reads_by_chance_is_reported_beside_it():
    """Two windows of twenty cases from one distribution pass the 0.25 "large shift" rule of thumb by chance alone
    (was: reported as PSI alone); the permutation null says so, and still finds a real shift."""
    rng = np.random.default_rng(1)
    a, b = rng.beta(2, 5, 20), rng.beta(2, 5, 20)
    chance, p = psi_null(a, b)
    assert psi(a, b) > 0.25 and chance > psi(a, b) and p > 0.05
    chance, p = psi_null(rng.beta(2, 5, 200), rng.beta(5, 2, 200))
    assert chance < 0.25 and p < 0.01


def test_reliability_and_ece():
    labels = np.array([0, 0, 1, 1, 1, 0, 1, 1])
    scores = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55, 0.55, 0.55])
    curve = reliability(labels, scores)
    assert curve.count == [2, 4, 2] and curve.like_rate == [0.0, 0.75, 1.0]
    assert curve.ece == pytest.approx((2 * 0.05 + 4 * 0.2 + 2 * 0.05) / 8)
    assert reliability(labels, labels.astype(float)).ece == 0.0
    # a score on a bin edge opens the bin above it, at 0.3, 0.6 and 0.7 too (linspace put those edges a hair high)
    edges = reliability(np.array([0, 1, 0, 1, 0, 1]), np.array([0.2, 0.3, 0.6, 0.7, 0.8, 0.9]))
    assert edges.count == [1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("labels, scores, match", [([1, 0], [3.0, -2.0], "probabilities in"),  # logits: "ECE 0"
                                                   ([5, 0], [0.9, 0.1], "labels must be 0/1"),  # ECE 2.1
                                                   ([], [], "no examples")])  # ECE 0 on nothing
def test_reliability_refuses_what_is_not_a_probability_of_a_label(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        reliability(labels, scores)


@pytest.mark.parametrize("before, after", [([0.5, 0.5, np.nan, np.nan], [0.5, 0.5]), ([], [0.5])])
def test_psi_refuses_nan_and_empty_windows(before, after):
    """np.histogram dropped the NaN (PSI 0.0, "stable"); an empty window scored 9.21."""
    with pytest.raises(ValueError, match="PSI needs scores"):
        psi(before, after)


@pytest.mark.parametrize("call, match", [
    (lambda: psi([-5, -4, -3, 2], [-1, -0.5, 3, 9]), "PSI needs scores in \\[0, 1\\]"),  # was: 0.275, logits binned
    (lambda: ks([0.1, np.nan, 0.3], [0.2, 0.4]), "KS needs scores"),  # was: (nan, nan)
    (lambda: ks([], [0.2, 0.4]), "KS needs scores")])
def test_psi_refuses_logits_and_ks_nan_or_empty_windows(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_drift_cli_reports_both_windows_and_draws_them(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import os

    make_registry(tiny_model_dir, os.environ["ADAPTREC_HOME"])
    log_feedback(synthetic_cases(20, seed=1, domain="arts"), t0=1000)
    log_feedback(synthetic_cases(20, seed=2, domain="arts"), t0=2000)
    before, after = "feedback:arts[0:20]", "feedback:arts:2000"
    tiny = ("--backbone", str(tiny_model_dir), "-q", "none")
    code, out, err = run_cli(monkeypatch, capsys, "drift", "arts", "--before", before, "--after", after, *tiny,
                             "--json", "--plot", str(tmp_path / "drift.png"))
    assert code == 0, err
    report = json.loads(out)
    assert report["adapter"] == "arts-lora:1" and report["before"]["cases"] == report["after"]["cases"] == 20
    assert set(report["after"]["auc"]) == {"adapter", "like-ratio", "popularity"}
    assert (report["before"]["transductive"], report["after"]["transductive"]) == (["popularity"], [])  # was: unsaid
    assert report["change"]["psi"] >= 0 and 0 <= report["change"]["ks_p"] <= 1 and 0 < report["change"]["psi_p"] <= 1
    assert (tmp_path / "drift.png").stat().st_size > 10_000
    (tmp_path / "drift.json").write_text(out)  # the saved report, drawn again without scoring (was: no command)
    code, drawn, err = run_cli(monkeypatch, capsys, "plot", "drift", str(tmp_path / "drift.json"), "-o",
                               str(tmp_path / "again.png"))
    assert code == 0 and drawn.strip() == str(tmp_path / "again.png"), err
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run_cli(monkeypatch, capsys, "drift", "arts", "--before", before, "--after", after, *tiny)
    assert code == 0 and out.startswith("drift of arts (arts-lora:1): PSI") and f"before ({before}): 20 cases" in out
    assert "over cases, not users" in out and "(popularity transductive here)" in out.splitlines()[1]
    code, _, err = run_cli(monkeypatch, capsys, "drift", "books", "--before", before, "--after", after, *tiny)
    assert code == 2 and "no promoted adapter" in err
    code, _, err = run_cli(monkeypatch, capsys, "drift", "arts", "--before", before, "--after", after, *tiny,
                           "--plot", str(tmp_path / "missing" / "drift.png"))
    assert code == 2 and "--plot" in err and "existing folder" in err  # refused before scoring, not after


def test_drift_refuses_before_loading_a_model_and_pins_the_adapter(tiny_model_dir, tmp_path, monkeypatch):
    """A missing champion, a one-class window or a folder as --plot loaded the backbone first (or failed after
    scoring); a bare --adapter name was resolved per window, so an update registered meanwhile scored one of them."""
    import os

    import adaptrec
    import adaptrec.online.drift as drift_mod
    from adaptrec.errors import ConfigError
    from adaptrec.online.drift import summary

    make_registry(tiny_model_dir, os.environ["ADAPTREC_HOME"])
    log_feedback(synthetic_cases(20, seed=1, domain="arts"), t0=1000)
    windows = dict(before="feedback:arts[0:10]", after="feedback:arts[10:20]")
    real_backbone = adaptrec.api._backbone
    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("the backbone loaded before the refusal"))
    with pytest.raises(ConfigError, match="no promoted adapter"):
        adaptrec.drift("books", **windows)
    log_feedback(synthetic_cases(4, seed=3, domain="books"), t0=5000)
    with pytest.raises(ConfigError, match="^before='feedback:books': its cases are of domain 'books', not 'arts'"):
        adaptrec.drift("arts", before="feedback:books", after=windows["after"])  # (was: compared without a word)
    with pytest.raises(ConfigError, match="^after: drift needs labelled cases of both classes"):
        adaptrec.drift("arts", before=windows["before"], after="feedback:arts[0:1]")
    with pytest.raises(ConfigError, match=f"^plot='{re.escape(str(tmp_path))}': expected a .png file"):
        adaptrec.drift("arts", **windows, plot=tmp_path)
    with pytest.raises(ConfigError, match="expected a .png file"):  # was: PNG bytes under that name
        adaptrec.drift("arts", **windows, plot=tmp_path / "drift.txt")
    with pytest.raises(ConfigError, match="expected a .png file to write in an existing folder"):  # before scoring
        adaptrec.drift("arts", **windows, plot=tmp_path / "missing" / "drift.png")
    monkeypatch.setattr(adaptrec.api, "_backbone", real_backbone)
    scored = []
    real_scores = drift_mod.component_scores
    monkeypatch.setattr(drift_mod, "component_scores", lambda bb, reg, refs, *a, **k: scored.append(refs) or
                        real_scores(bb, reg, refs, *a, **k))
    report = adaptrec.drift("arts", **windows, adapter="arts-lora", limit=8, backbone=str(tiny_model_dir),
                            quantization="none")
    assert scored == [["arts-lora:1"], ["arts-lora:1"]] and report["adapter"] == "arts-lora:1"
    assert (report["before"]["spec"], report["after"]["spec"], report["limit"], report["seed"]) == \
        (*windows.values(), 8, 0)
    assert report["environment"]["backend"] == "fp32" and report["environment"]["adaptrec"]  # which build scored
    assert "before (feedback:arts[0:10]): " in summary(report)  # the report says which windows it compared


def test_the_seed_reaches_the_bootstrap_and_the_permutations():
    """`drift --seed` says it seeds every sampled choice (was: the CIs and the PSI null always drew with seed 0)."""
    from adaptrec.online.drift import compare, window_report

    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 60), rng.random(60)
    users = [f"u{i % 15}" for i in range(60)]
    reports = [window_report(labels, users, scores, {}, seed) for seed in (0, 1)]
    assert reports[0]["auc"]["adapter"]["ci_low"] != reports[1]["auc"]["adapter"]["ci_low"]
    nulls = [compare(reports[0], reports[0], scores[:30], scores[30:], seed)["psi_chance_95"] for seed in (0, 1)]
    assert nulls[0] != nulls[1]


def test_the_summary_of_a_one_user_window_shows_its_auc_without_an_interval():
    """One user's window has no user-clustered CI; the text shows the AUC alone instead of failing on None."""
    from adaptrec.online.drift import summary, window_report

    labels, scores = np.array([0, 1, 0, 1]), np.array([0.2, 0.8, 0.3, 0.6])
    window = window_report(labels, ["u1"] * 4, scores, {"popularity": np.array([0.5, 0.4, 0.6, 0.5])})
    assert window["auc"]["adapter"] == {"value": 1.0, "ci_low": None, "ci_high": None, "ci_skipped": 0}
    report = {"adapter": "arts-lora:1", "domain": "arts", "before": window, "after": window,
              "change": {"psi": 0.0, "psi_chance_95": 0.0, "psi_p": 1.0, "ks": 0.0, "ks_p": 1.0, "ece_change": 0.0,
                         "auc_change": 0.0}}
    assert "AUC adapter 1.000, popularity 0.125" in summary(report)


def test_a_pair_re_labelled_after_the_before_window_counts_in_the_after_window_only():
    """Feedback cases keep their first event's place with their latest label: a pair labelled in `[0:N]` and
    re-labelled after SINCE was in both windows, its new label counted as "before" too."""
    from adaptrec.data.online_log import OnlineLog
    from adaptrec.data.spec import load_spec
    from adaptrec.online.drift import labelled_windows

    log_feedback(synthetic_cases(8, seed=1), t0=1000)
    first = load_spec("feedback:movie[0:8]").cases[0]
    OnlineLog().add_feedback(first.meta["request_id"], first.target, label=1 - first.label, created=5000)
    log_feedback(synthetic_cases(8, seed=2), t0=5001)
    before, after = labelled_windows(load_spec("feedback:movie[0:8]").cases, load_spec("feedback:movie:5000").cases)
    assert first.meta["event"] in {c.meta["event"] for c in after}
    assert first.meta["event"] not in {c.meta["event"] for c in before} and len(before) == 7
    sampled, _ = labelled_windows(load_spec("feedback:movie[0:8]").cases, load_spec("feedback:movie:5000").cases,
                                  limit=8, seed=0)  # the after window sampled down: the pair is still its
    assert first.meta["event"] not in {c.meta["event"] for c in sampled}


def test_an_auc_whose_likes_are_one_users_has_no_interval_and_skipped_resamples_are_said():
    """Both liked cases of one user gave AUC 1.000 [1.000, 1.000]: every resample on which AUC is defined held that
    user, an interval reading as certainty; the resamples skipped for holding one class were never reported."""
    from adaptrec.online.drift import summary, window_report

    users = [f"u{i % 10}" for i in range(40)]
    one = np.array([int(i in (0, 10)) for i in range(40)])  # u0's two cases are the likes
    assert window_report(one, users, one * 0.5 + 0.2, {})["auc"]["adapter"]["ci_low"] is None
    two = np.array([int(i in (0, 1)) for i in range(40)])  # u0 and u1 like: ~(8/10)^10 of resamples hold neither
    window = window_report(two, users, two * 0.5 + 0.2, {})
    assert window["auc"]["adapter"]["ci_low"] == 1.0 and window["auc"]["adapter"]["ci_skipped"] > 50
    report = {"adapter": "arts-lora:1", "domain": "arts", "before": window, "after": window,
              "change": {"psi": 0.0, "psi_chance_95": 0.0, "psi_p": 1.0, "ks": 0.0, "ks_p": 1.0, "ece_change": 0.0,
                         "auc_change": 0.0}}
    skipped = window["auc"]["adapter"]["ci_skipped"]
    assert f"AUC adapter 1.000 [1.000, 1.000] ({skipped} resamples with one class skipped)" in summary(report)


def test_the_same_window_twice_says_its_cases_count_as_after_only():
    """`--before` and `--after` naming the same feedback said "0 labelled" of a window holding 8 labelled cases."""
    from adaptrec.data.spec import load_spec
    from adaptrec.errors import ConfigError
    from adaptrec.online.drift import labelled_windows

    log_feedback(synthetic_cases(8, seed=1), t0=1000)
    cases = load_spec("feedback:movie").cases
    with pytest.raises(ConfigError, match="^before: .*0 labelled; 8 of its cases are events after holds too"):
        labelled_windows(cases, cases)
