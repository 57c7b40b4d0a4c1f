"""Continual update (warm start, replay, lineage) and the promotion gate (paired user-clustered test, audit trail)
on the tiny Llama; the CLI faces of both."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_runner import run_cli
from synthetic import log_feedback, synthetic_cases
from train_worker import tiny_recipe_file

from adaptrec.config import load_recipe
from adaptrec.data.online_log import LoggedItem, OnlineLog
from adaptrec.data.records import ANONYMOUS
from adaptrec.errors import ConfigError, RegistryError
from adaptrec.metrics import auc
from adaptrec.online.gate import decide
from adaptrec.data.spec import load_spec
from adaptrec.registry import Registry
from adaptrec.train.recipe import run_recipe, train_or_reuse
from adaptrec.train.update import replay_mix, update_adapter


@pytest.fixture
def trained(tiny_model_dir, tmp_path):
    """`tiny:1`, trained from a recipe file over synthetic TALLRec files, and the recipe's path."""
    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8}, eval_every=2)
    parsed, text = load_recipe(str(path))
    return run_recipe(parsed, text).record, path


def test_an_update_of_a_pulled_adapter_loads_the_backbone_its_pull_was_checked_against(trained, tiny_model_dir,
                                                                                       monkeypatch):
    """Its recipe's backbone is the publisher's word: an update downloaded and trained on whatever it named."""
    import adaptrec.train.update as update_mod

    parent, _ = trained
    text = parent.recipe_text.replace(str(tiny_model_dir), "attacker/model")
    origin = {"source": "mirror", "repo": "/mirror/tiny", "revision": "v1",
              "checked_on": {"backbone": str(tiny_model_dir), "quantization": "none"}}
    pulled = Registry().register(parent.path, name="tiny-pulled", domain=parent.domain, kind="pulled",
                                 adapter_type="lora", adapter_config=None, fingerprint=parent.fingerprint,
                                 recipe_text=text, origin=origin)
    log_feedback(synthetic_cases(12, seed=5))
    loaded = []

    def load(name, quantization, **kw):
        loaded.append((name, quantization))
        raise RuntimeError("stop here")

    monkeypatch.setattr(update_mod, "load_backbone", load)
    with pytest.raises(RuntimeError, match="stop here"):
        update_adapter(pulled.ref, "feedback:movie", replay=0.0, steps=1)
    assert loaded == [(str(tiny_model_dir), "none")]


def test_a_replay_is_short_only_when_the_old_cases_run_out():
    """(was: judged by the share reached, so 1 new case at --replay 0.2, which rounds to 0 replayed, said the
    parent's data ran out)"""
    from adaptrec.train.update import replay_count

    assert [replay_count(n, 0.2) for n in (1, 2, 5, 12)] == [0, 0, 1, 3]
    assert replay_mix(synthetic_cases(1), synthetic_cases(100, seed=1), 0.2, 0)[1] == 0 == replay_count(1, 0.2)


def test_replay_mix_keeps_the_share_and_is_seeded():
    new, old = synthetic_cases(40), synthetic_cases(100, seed=9)
    mixed, n_old = replay_mix(new, old, 0.2, seed=1)
    assert n_old == 10 and len(mixed) == 50 and sum(c in old for c in mixed) == 10
    assert replay_mix(new, old, 0.2, seed=1)[0] == mixed
    assert replay_mix(new, old[:3], 0.5, seed=1)[1] == 3  # never more than the old data holds
    assert replay_mix(new, old, 0.0, seed=1)[1] == 0
    with pytest.raises(ConfigError, match="^replay=1.0: expected a share"):
        replay_mix(new, old, 1.0, seed=1)


def test_update_warm_starts_registers_the_next_version_with_lineage(trained, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file

    parent, recipe_path = trained
    log_feedback(synthetic_cases(12, seed=5))
    seen = {}
    import adaptrec.train.update as update_mod

    real_train = update_mod.train

    def spy(recipe, backbone, cases, val, run_dir, **kw):
        seen.update(cases=list(cases), init_from=kw["init_from"], steps=recipe.training.max_steps)
        return real_train(recipe, backbone, cases, val, run_dir, **kw)

    monkeypatch.setattr(update_mod, "train", spy)
    result = update_adapter(parent.ref, "feedback:movie", replay=0.25, steps=1, overrides=["training.lr=1e-9"])
    record = result.record
    assert record.ref == "tiny:2" and record.domain == parent.domain
    assert record.lineage["updated_from"] == "tiny:1" and record.lineage["parents"] == ["tiny:1"]
    assert record.lineage["window"] == {"cases": 12, "since": 1000.0, "until": 1011.0}
    assert record.lineage["replay_cases"] == 4 and result.new_cases == 12 and len(seen["cases"]) == 16
    assert not result.replay_short  # 4 of the parent's 16 cases: the share asked
    assert seen["init_from"] == parent.path and seen["steps"] == 1
    before = load_file(str(parent.path / "adapter_model.safetensors"))
    after = load_file(str(record.path / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    for k in before:  # one step at lr 1e-9 from the parent's weights: the parent's weights, not a fresh start
        np.testing.assert_allclose(after[k].numpy(), before[k].numpy(), atol=1e-5)
    assert any(np.abs(before[k].numpy()).max() > 1e-3 for k in before if "lora_B" in k)  # trained, not all zero
    # the recipe would train from scratch, not reuse an updated version whose recipe text it shares
    assert train_or_reuse(Registry(), record.fingerprint, str(recipe_path), []).ref != "tiny:2"
    # the same update again (e.g. a resumed script) finds its finished run and registers no duplicate version
    versions = len(Registry().list(name="tiny"))
    again = update_adapter(parent.ref, "feedback:movie", replay=0.25, steps=1, overrides=["training.lr=1e-9"])
    assert again.record.ref == "tiny:2" and len(Registry().list(name="tiny")) == versions



def test_an_update_says_when_its_replay_falls_short_of_the_share_asked(trained, monkeypatch, capsys):
    """The parent trained on 16 cases: 12 new ones at --replay 0.8 replay all 16, 57% of the mix (was: the lineage
    said 0.8 and nothing said otherwise)."""
    parent, _ = trained
    log_feedback(synthetic_cases(12, seed=5))
    code, out, err = run_cli(monkeypatch, capsys, "update", parent.ref, "--data", "feedback:movie", "--replay", "0.8",
                             "--steps", "1")
    assert code == 0 and "on 12 new + 16 replayed cases" in out
    assert "note: 16 replayed cases are 57% of the mix, not the 80% asked" in err
    assert Registry().resolve("tiny:2").lineage["replay_share"] == round(16 / 28, 4)
    code, out, err = run_cli(monkeypatch, capsys, "update", parent.ref, "--data", "feedback:movie[0:1]", "--replay",
                             "0.2", "--steps", "1")  # 1 new case: 0.25 of a case rounds to none, none ran out
    assert code == 0 and "on 1 new + 0 replayed cases" in out and "note:" not in err  # (was: "0% ... not the 20%")


def test_trained_events_follow_the_lineage_so_nothing_later_leaks_into_an_update_or_its_gate(
        tiny_model_dir, tmp_path, monkeypatch):
    """A recipe trained on open-ended feedback lists the events it saw; an update replays and validates on those
    only (not on feedback logged since, such as a later gate window), its lineage adds its own, and the gate refuses
    any of them, a re-labelled one included, whatever its time."""
    import adaptrec.train.update as update_mod

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8}, eval_every=2)
    log = OnlineLog()
    log_feedback(synthetic_cases(12, seed=5), log, t0=1000)
    root = run_recipe(*load_recipe(str(path), ["data.train=feedback:movie", "data.valid=feedback:movie"])).record
    assert len(root.trained_events) == 12
    log_feedback(synthetic_cases(12, seed=6), log, t0=3000)  # the update's data
    log_feedback(synthetic_cases(24, seed=7), log, t0=5000)  # logged before the update runs: the gate's window
    seen = {}
    real_train = update_mod.train

    def spy(recipe, backbone, cases, val, run_dir, **kw):
        seen.update(cases=list(cases), val=list(val))
        return real_train(recipe, backbone, cases, val, run_dir, **kw)

    monkeypatch.setattr(update_mod, "train", spy)
    with pytest.raises(ConfigError, match="has no labelled cases; .* .left once the update.s own training cases"):
        update_adapter(root.ref, "feedback:movie:3000[0:12]", replay=0.5, steps=1)  # it replays all the root saw
    child = update_adapter(root.ref, "feedback:movie:3000[0:12]", replay=0.25, steps=1).record
    assert sorted({c.meta["time"] // 1000 for c in seen["cases"]}) == [1, 3]  # replayed: only what the root saw
    assert max(c.meta["time"] for c in seen["val"]) < 5000
    assert not {c.shown for c in seen["val"]} & {c.shown for c in seen["cases"]}  # (was: validated on them too)
    assert child.trained_events > root.trained_events and len(child.trained_events) == 24
    Registry().promote(root.ref, "movie")
    from adaptrec.online.gate import trained_on

    gate_window = load_spec("feedback:movie:5000").cases
    assert trained_on([child], gate_window) == 0 and trained_on([child], load_spec("feedback:movie").cases) == 24
    relabelled = next(c for c in load_spec("feedback:movie:3000[0:12]").cases)
    log.add_feedback(relabelled.meta["request_id"], relabelled.target, label=1 - relabelled.label, created=6000)
    assert trained_on([child], load_spec("feedback:movie:5000").cases) == 1  # its newest event is after the window


def test_a_ranking_updates_partners_are_logged_by_its_window_and_none_validates(tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    """A pairwise update completes each new case's request with its other labelled items (partners): those were also
    validation cases, so checkpoints were chosen on cases trained on, and partners logged after the update's window
    were read from the grown log and trained on."""
    import adaptrec.train.update as update_mod

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8}, eval_every=2)
    log = OnlineLog()

    def requests(users, t0: float, labelled: dict[str, tuple[int, float]]):  # item -> (label, time offset)
        rids = [log.log_request(c.domain, c.user_id, c.noun, c.history, [LoggedItem(f'"{i}"') for i in labelled],
                                ["tiny:1"], "score", created=t0 + n) for n, c in enumerate(users)]
        for item, (label, dt) in labelled.items():  # logged in time order
            for n, rid in enumerate(rids):
                log.add_feedback(rid, f'"{item}"', label=label, created=t0 + dt + n)

    requests(synthetic_cases(12, seed=5), 1000, {"a": (1, 0), "b": (0, 100)})
    sets = ["data.train=feedback:movie", "data.valid=feedback:movie", "method={type: joint, rec_loss: pairwise}"]
    root = run_recipe(*load_recipe(str(path), sets)).record
    requests(synthetic_cases(12, seed=6), 2900, {"b": (0, 0), "a": (1, 100), "c": (1, 2000)})
    seen = {}
    real_train = update_mod.train

    def spy(recipe, backbone, cases, val, run_dir, **kw):
        from adaptrec.train.methods import build_method  # (was: built in train, from the log as it is then)

        method = kw.get("method") or build_method(recipe, None, cases)
        seen.update(cases=list(cases), val=list(val), own=list(method.own_cases()))
        return real_train(recipe, backbone, cases, val, run_dir, **kw)

    monkeypatch.setattr(update_mod, "train", spy)
    update_adapter(root.ref, "feedback:movie:3000[0:12]", replay=0, steps=1)  # the a's (their b's came first)
    assert {c.target for c in seen["cases"]} == {'"a"'} and len(seen["own"]) == 12
    assert {c.target for c in seen["own"]} == {'"b"'}  # (was: the c's too, logged after the window)
    assert not {c.meta["event"] for c in seen["val"]} & {c.meta["event"] for c in seen["own"]}  # (was: all 12)


def test_a_blend_updates_popularity_counts_only_feedback_logged_by_its_window(tiny_model_dir, tmp_path):
    """(was: counted over the whole grown log, the gate's later window included)"""
    from adaptrec.data.tallrec import item_popularity
    from adaptrec.train.methods import checked_method

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8})
    early, late = synthetic_cases(8, seed=5), synthetic_cases(8, seed=6)
    log_feedback(early, t0=1000)
    log_feedback(late, t0=5000)
    recipe, _ = load_recipe(str(path), ["data.train=feedback:movie", "method={type: blend}"])
    assert checked_method(recipe, [], until=2000).popularity == item_popularity(load_spec("feedback:movie[0:8]").cases)
    assert checked_method(recipe, []).popularity == load_spec("feedback:movie").item_popularity


def test_an_update_replays_the_shots_its_parent_drew_from_a_log_grown_since(tiny_model_dir, tmp_path, monkeypatch):
    """(was: the parent's `data.shots` drawn again over the grown log, another sample: 1 of its 8 shots replayed)"""
    import adaptrec.train.update as update_mod

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8}, eval_every=2)
    log = OnlineLog()
    log_feedback(synthetic_cases(16, seed=5), log, t0=1000)
    sets = ["data.train=feedback:movie", "data.valid=feedback:movie", "data.shots=8"]
    root = run_recipe(*load_recipe(str(path), sets)).record
    assert len(root.trained_events) == 8
    log_feedback(synthetic_cases(64, seed=6), log, t0=3000)
    seen = {}
    real_train = update_mod.train

    def spy(recipe, backbone, cases, val, run_dir, **kw):
        seen["cases"] = list(cases)
        return real_train(recipe, backbone, cases, val, run_dir, **kw)

    monkeypatch.setattr(update_mod, "train", spy)
    result = update_adapter(root.ref, "feedback:movie:3000[0:8]", replay=0.5, steps=1)
    assert result.replay_cases == 8 and {c.meta["event"] for c in seen["cases"] if c.meta["time"] < 3000} == set(
        root.trained_events)


def test_an_update_of_an_update_replays_the_shots_of_a_recipe_without_events(tiny_model_dir, tmp_path):
    """The events an update trained on are in its lineage; they made its own update take every case of a TALLRec
    `data.train` (16) for the parent's training data, not the recipe's 4 shots."""
    from adaptrec.train.update import _replay_pool

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8}, eval_every=2)
    recipe, _ = load_recipe(str(path), ["data.shots=4"])
    root = SimpleNamespace(trained_events=set(), lineage={})
    updated = SimpleNamespace(trained_events={"r1:i1", "r2:i2"}, lineage={"events": ["r1:i1", "r2:i2"]})
    shots = _replay_pool(recipe, root)
    assert len(shots) == 4 and _replay_pool(recipe, updated) == shots


def test_a_distilled_adapter_updates_without_its_teacher_when_told_to(tiny_model_dir, tmp_path, monkeypatch):
    """(was: the teacher-pair check failed after the backbone loaded, whatever the feedback: such an adapter could
    never be updated, and nothing said how)"""
    import yaml

    import adaptrec

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 8, "valid": 8, "test": 8}, eval_every=2)
    raw = yaml.safe_load(path.read_text())
    raw["method"] = {"type": "distill", "teacher": "backbone", "teacher_data": raw["data"]["train"]}
    path.write_text(yaml.safe_dump(raw))
    parent = run_recipe(*load_recipe(str(path))).record
    log_feedback(synthetic_cases(12, seed=5))
    with monkeypatch.context() as no_model:
        no_model.setattr(adaptrec.train.update, "load_backbone", lambda *a, **k: pytest.fail("a backbone loaded"))
        with pytest.raises(ConfigError, match="tiny:1 was distilled .* overrides 'method=\\{type: plain\\}'"):
            update_adapter(parent.ref, "feedback:movie", replay=0.2, steps=1)
    updated = update_adapter(parent.ref, "feedback:movie", replay=0.2, steps=1, overrides=["method={type: plain}"])
    assert updated.record.ref == "tiny:2" and "method={type: plain}" in updated.record.recipe_text


def test_update_refuses_what_it_cannot_do(trained):
    parent, _ = trained
    with pytest.raises(ConfigError, match="no request of domain 'movie' is logged"):  # nothing served yet
        update_adapter(parent.ref, "feedback:movie")
    OnlineLog().log_request("movie", "u", "movie", (), [LoggedItem('"x"')], ["tiny:1"], "score")
    with pytest.raises(ConfigError, match="no labelled cases"):  # served, no feedback yet
        update_adapter(parent.ref, "feedback:movie")
    # a --set is written now, as train's are: true/false is no number (was: lr 1.0, as a stored text may read)
    with pytest.raises(ConfigError, match="^overrides: training: lr: a number expected, not true/false"):
        update_adapter(parent.ref, "feedback:movie", overrides=["training.lr=yes"])
    with pytest.raises(ConfigError, match="^replay=nan: expected a share"):  # before any data is read (was: after)
        update_adapter(parent.ref, "no-such-file.jsonl", replay=float("nan"))


def test_an_update_trains_on_its_parents_domain_only(trained):
    """(was: every labelled case of --data, another domain's feedback too, registered as the parent's domain)"""
    parent, _ = trained
    log_feedback(synthetic_cases(12, seed=7, domain="book"))
    with pytest.raises(ConfigError, match="^data='feedback:book': its cases are of domain 'book', not 'movie'"):
        update_adapter(parent.ref, "feedback:book", steps=1)


def test_an_adapter_named_for_another_domain_than_its_files_still_updates_on_them(trained):
    """A recipe's `domain:` is a free name; TALLRec files name their cases' domain themselves (was, with the domain
    filter: refused, "its cases are of domain 'movie', not 'drama'", on the very data it trained on)."""
    parent, path = trained
    drama = Registry().register(parent.path, name="drama-tiny", domain="drama", kind="trained", adapter_type="lora",
                                adapter_config=None, fingerprint=parent.fingerprint, recipe_text=parent.recipe_text)
    train_file = load_recipe(str(path))[0].data.train
    assert update_adapter(drama.ref, train_file, steps=1).record.ref == "drama-tiny:2"


def test_an_export_is_not_updated_from_the_recipe_of_its_source(trained):
    """(was: the export, a plain LoRA keeping its AdaLoRA source's recipe, got past the recipe check and was refused
    after the backbone loaded: 'its weights do not fit the adapter its recipe builds')"""
    parent, _ = trained
    log_feedback(synthetic_cases(12, seed=7))
    registry = Registry()
    export = registry.register(parent.path, name="tiny-lora", domain="movie", kind="composed", adapter_type="lora",
                               adapter_config=None, fingerprint=parent.fingerprint, recipe_text=parent.recipe_text,
                               lineage={"parents": [parent.ref], "method": "adalora_to_lora", "weights": [1.0]})
    with pytest.raises(RegistryError, match=r"^tiny-lora:1 was derived from tiny:1 \(adalora_to_lora\), not trained: "
                                            "update tiny:1, then derive it again"):
        update_adapter(export.ref, "feedback:movie", steps=1)


def test_decide_names_its_test_and_resolves_what_it_can():
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 200)
    users = [f"u{i // 4}" for i in range(400)]
    champion = labels * 0.5 + rng.normal(0, 0.5, 400)
    better = labels * 1.5 + rng.normal(0, 0.5, 400)
    worse = labels * 0.1 + rng.normal(0, 0.5, 400)
    up = decide(labels, users, better, champion, margin=0.005)
    assert up["promote"] and up["ci_low"] > 0 and up["test"].startswith("non-inferiority (margin 0.005)")
    assert up["users"] == 100 and up["cases"] == 400 and 0 < up["resolution"] < 0.1
    assert not decide(labels, users, worse, champion, margin=0.005)["promote"]
    same = decide(labels, users, champion, champion, margin=0.0)
    assert same["test"].startswith("superiority") and not same["promote"]  # equal is not better
    assert decide(labels, users, champion, champion, margin=0.01)["promote"]  # but it is not worse
    assert "user-clustered paired bootstrap" in up["test"]
    alone = decide(labels, [f"u{i}" for i in range(400)], better, champion, margin=0.005)  # TALLRec: no user twice
    assert "paired bootstrap over cases (no user has two)" in alone["test"]  # (was: called user-clustered)
    weights = np.linspace(1.0, 20.0, 400)  # inverse probabilities of being shown
    weighted = decide(labels, users, better, champion, 0.005, weights=weights, weighting="ips")
    assert weighted["challenger_auc"] == pytest.approx(auc(labels, better, weights)) and weighted["weighting"] == "ips"
    assert weighted["diff"] == pytest.approx(auc(labels, better, weights) - auc(labels, champion, weights))
    with pytest.raises(ValueError, match="at least 2 users to resample, got 1"):  # (was: a TypeError)
        decide(labels, ["u0"] * 400, better, champion, margin=0.005)


def test_gate_cli_promotes_or_refuses_and_the_trail_and_rollback_follow(trained, monkeypatch, capsys, tmp_path):
    parent, _ = trained
    registry = Registry()
    log_feedback(synthetic_cases(24, seed=7), t0=1000)  # what the update trains on
    log_feedback(synthetic_cases(24, seed=8), t0=5000)  # what the gate compares on
    recent = "feedback:movie:5000"
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "promote", parent.ref, "--if-better", "--data", recent)
    assert code == 0 and "had no champion" in out
    challenger = update_adapter(parent.ref, "feedback:movie[0:24]", replay=0.0, steps=1).record
    code, _, err = run_cli(monkeypatch, capsys, "registry", "promote", challenger.ref, "--if-better", "--data",
                           "feedback:movie")
    assert code == 2 and "24 of its cases are events tiny:2 was trained or validated on" in err  # its training data
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "promote", challenger.ref, "--if-better", "--data",
                           recent, "--margin", "0.5")
    assert code == 0 and "non-inferiority (margin 0.5)" in out and "on 24 cases of 24 users" in out
    assert registry.promoted("movie").ref == challenger.ref
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "promote", parent.ref, "--if-better", "--data",
                           recent, "--margin", "0")
    assert code == 1 and out.startswith("not promoted tiny:1 over tiny:2: superiority")  # equal or worse: refused
    assert registry.promoted("movie").ref == challenger.ref
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "promote", parent.ref, "--if-better", "--data",
                           recent, "--margin", "0", "--json")  # was: text only
    outcome = json.loads(out)
    assert code == 1 and [outcome[k] for k in ("promoted", "challenger", "champion")] == [False, "tiny:1", "tiny:2"]
    assert outcome["evidence"]["test"].startswith("superiority") and outcome["evidence"]["cases"] == 24
    code, _, err = run_cli(monkeypatch, capsys, "registry", "promote", parent.ref, "--if-better", "--data",
                           f"{recent}[0:6]")
    assert code == 2 and "6 users; the gate's user-clustered test needs at least 10" in err
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "history", "movie", "--json")
    trail = json.loads(out)
    assert [(d["action"], d["ref"]) for d in trail] == [("promote", "tiny:1"), ("promote", "tiny:2"),
                                                       ("refuse", "tiny:1"), ("refuse", "tiny:1")]
    assert trail[1]["evidence"]["data"] == recent and trail[1]["evidence"]["cases"] == 24
    assert trail[1]["evidence"]["environment"]["backend"] == "fp32"  # the build it scored on (was: not recorded)
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "rollback", "movie")
    assert code == 0 and "tiny:1 serves it again" in out and registry.promoted("movie").ref == "tiny:1"
    code, _, err = run_cli(monkeypatch, capsys, "registry", "rollback", "movie")
    assert code == 2 and err.startswith("error: domain 'movie' has no earlier champion")
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "promote", challenger.ref, "--json")
    assert code == 0 and json.loads(out) == {"promoted": True, "challenger": "tiny:2", "champion": "tiny:1",
                                             "evidence": None}


def test_the_gate_weights_feedback_on_explored_slates_and_warns_on_greedy_ones(trained, monkeypatch, capsys):
    """Feedback on served slates is what the serving adapter chose to show; scored unweighted, the comparison favoured
    the adapter that did not choose them (was: no weighting, no word)."""
    from adaptrec.online.gate import IPS

    parent, _ = trained
    log_feedback(synthetic_cases(24, seed=7), t0=1000)
    challenger = update_adapter(parent.ref, "feedback:movie[0:24]", replay=0.0, steps=1).record
    Registry().promote(parent.ref, "movie")
    shown = [0.05 + 0.9 * (i % 5) / 4 for i in range(24)]  # explored: some items were unlikely to be shown
    log_feedback(synthetic_cases(24, seed=8), t0=5000, endpoint="recommend", shown=shown, hidden=2)
    import adaptrec.online.gate as gate_mod

    weighed = []
    real_decide = gate_mod.decide
    monkeypatch.setattr(gate_mod, "decide", lambda *a, **k: weighed.append(k["weights"]) or real_decide(*a, **k))
    code, out, err = run_cli(monkeypatch, capsys, "registry", "promote", challenger.ref, "--if-better", "--data",
                             "feedback:movie:5000[0:24]", "--margin", "0.9", "--json")
    evidence = json.loads(out)["evidence"]
    assert code == 0 and evidence["weighting"] == IPS and "warning" not in err and evidence["ci_skipped"] == 0
    np.testing.assert_allclose(weighed[0], 1 / np.array(shown))  # each case counts 1 / its probability of being shown
    log_feedback(synthetic_cases(24, seed=9), t0=9000, endpoint="recommend", hidden=2)  # greedy: shown for sure
    code, out, err = run_cli(monkeypatch, capsys, "registry", "promote", parent.ref, "--if-better", "--data",
                             "feedback:movie:9000", "--margin", "0.9")
    assert code == 0 and "(weighted by" not in out
    assert "warning: the gate's 24 cases of feedback:movie:9000: none: slates were served without exploration" in err
    assert Registry().history("movie")[-1].evidence["weighting"].startswith("none: slates were served")


def test_eval_labels_an_adapter_scored_on_data_it_trained_or_was_selected_on(trained, tiny_model_dir):
    """(was: a plain adapter row, as if held out, where the gate refuses the same data)"""
    import adaptrec

    parent, recipe_path = trained
    data = load_recipe(str(recipe_path))[0].data
    common = dict(backbone=str(tiny_model_dir), quantization="none", limit=0)
    alias = Path(recipe_path).parent / "same-cases-other-name.json"  # (was: a held-out row, compared by SPEC alone)
    alias.write_bytes(Path(data.valid).read_bytes())
    for spec, seen in ((data.train, True), (data.valid, True), (str(alias), True), (data.test, False)):
        names = [r.name for r in adaptrec.evaluate([parent.ref], data=spec, **common).rows]
        assert (f"{parent.ref} (trained or selected on this data)" in names) is seen and (parent.ref in names) is not seen


def test_the_gate_refuses_the_data_a_checkpoint_was_chosen_on(trained, tiny_model_dir, monkeypatch, tmp_path):
    """Early stopping picks the checkpoint best on data.valid: gated there, the adapter is favoured as on its
    training data (was: accepted, by SPEC and by logged event)."""
    import adaptrec

    parent, recipe_path = trained
    registry = Registry()
    other = registry.register(parent.path, name="other", domain="movie", kind="trained", adapter_type="lora",
                              adapter_config=None, fingerprint=parent.fingerprint)
    registry.promote(other.ref, "movie")
    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("a backbone loaded"))
    valid_file = load_recipe(str(recipe_path))[0].data.valid
    with pytest.raises(ConfigError, match="tiny:1 .* had its checkpoint chosen on it \\(data.valid\\)"):
        adaptrec.promote_if_better(parent.ref, data=valid_file)
    log_feedback(synthetic_cases(24, seed=7), t0=3000)
    recipe, text = load_recipe(str(recipe_path), ["name=picked", "data.valid=feedback:movie:3000"])
    picked = run_recipe(recipe, text).record
    assert len(picked.validated_events) == 8 and not picked.trained_events  # the val_limit subset
    with pytest.raises(ConfigError, match="8 of its cases are events picked:1 was trained or validated on"):
        adaptrec.promote_if_better(picked.ref, data="feedback:movie:3000")


def test_the_gate_refuses_data_the_challenger_or_its_parents_trained_on(trained, monkeypatch, capsys, tmp_path):
    """Only logged feedback events were checked: gating on the recipe's own training file (or a slice of it, or an
    update's data) scored the challenger on cases it trained on and promoted it."""
    parent, recipe_path = trained
    train_file = load_recipe(str(recipe_path))[0].data.train
    log_feedback(synthetic_cases(24, seed=7), t0=1000)
    challenger = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1).record
    Registry().promote(parent.ref, "movie")
    relative = f"{train_file}[0:12]".replace(str(tmp_path), ".")
    monkeypatch.chdir(tmp_path)
    for data in (train_file, relative):  # the parent's recipe trained on the whole file
        code, _, err = run_cli(monkeypatch, capsys, "registry", "promote", challenger.ref, "--if-better", "--data",
                               data)
        assert code == 2 and f"--data {data}: tiny:2 (or an adapter it comes from) was trained on this" in err
    assert [d.action for d in Registry().history("movie")] == ["promote"]  # nothing decided


def test_the_gate_follows_compositions_and_checks_cases_and_the_champion_too(trained, monkeypatch, tmp_path):
    """(was: a composition or export of an adapter passed a gate on its source's training file; a copy of that file
    under another name passed too; and a champion scored on its own training cases was never checked)"""
    import shutil

    import adaptrec
    from adaptrec.online.gate import ancestry

    parent, recipe_path = trained
    train_file = load_recipe(str(recipe_path))[0].data.train
    registry = Registry()
    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("a backbone loaded"))
    plain = dict(domain="movie", kind="trained", adapter_type="lora", adapter_config=None,
                 fingerprint=parent.fingerprint)  # no recipe, no lineage: what it trained on is unknown
    other = registry.register(parent.path, name="other", **plain)
    registry.promote(other.ref, "movie")
    composed = registry.register(parent.path, name="composed", **{**plain, "kind": "composed"},
                                 lineage={"parents": [parent.ref], "method": "linear", "weights": [1.0]})
    with pytest.raises(ConfigError, match="composed:1 \\(or an adapter it comes from\\) was trained on this data"):
        adaptrec.promote_if_better(composed.ref, data=train_file)
    copy = shutil.copy(train_file, tmp_path / "renamed.json")
    with pytest.raises(ConfigError, match=f"16 of its cases are cases composed:1 .* as {re.escape(str(train_file))}"):
        adaptrec.promote_if_better(composed.ref, data=str(copy))
    pulled = registry.register(parent.path, name="pulled", **{**plain, "kind": "pulled"},
                               recipe_text=parent.recipe_text, origin={"repo": "alice/tiny", "revision": "v1"},
                               lineage={"parents": ["other:1"], "updated_from": "other:1", "method": "update"})
    with pytest.raises(ConfigError, match="pulled:1 \\(or an adapter it comes from\\) was trained on"):
        adaptrec.promote_if_better(pulled.ref, data=train_file)  # its recipe's data (was: skipped for pulled ones)
    assert [r.ref for r in ancestry(registry, pulled)] == ["pulled:1"]  # its lineage names the publisher's versions
    registry.promote(parent.ref, "movie")
    with pytest.raises(ConfigError, match="the champion tiny:1 \\(or an adapter it comes from\\) was trained on"):
        adaptrec.promote_if_better(other.ref, data=train_file)
    assert [d.ref for d in registry.history("movie")] == ["other:1", "tiny:1"]  # nothing decided by the gate


def test_the_training_data_check_compares_slices_and_protocols():
    """A disjoint slice of the training SPEC is held-out data (book: shots from valid[:1200], selection on
    valid[1200:]); a log trained through `protocol: leave_one_out` trained on its `:loo:train` part."""
    from adaptrec.online.gate import _overlaps, _spec_range

    trained = [_spec_range("tallrec:book:valid[:1200]"), _spec_range("~/logs/x.jsonl:loo:train")]
    assert not _overlaps("tallrec:book:valid[1200:]", trained)
    assert _overlaps("tallrec:book:valid[1000:1300]", trained) and _overlaps("tallrec:book:valid", trained)
    assert _overlaps("~/logs/x.jsonl:loo:train[5:9]", trained) and not _overlaps("~/logs/x.jsonl:loo:valid", trained)


def test_the_gates_refusals_come_before_any_model_loads(trained, monkeypatch):
    """Every refusal is decided on the registry and the data; the first promotion needs no model either."""
    import adaptrec

    parent, _ = trained
    log_feedback(synthetic_cases(24, seed=8), t0=5000)
    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("a backbone loaded"))
    result = adaptrec.promote_if_better(parent.ref, data="feedback:movie", limit=20, seed=3)
    assert result.promoted and result.evidence == {"test": "none", "reason": "domain 'movie' had no champion",
                                                   "data": "feedback:movie", "limit": 20,
                                                   "data_fingerprint": load_spec("feedback:movie").fingerprint}
    with pytest.raises(ConfigError, match="already the champion"):
        adaptrec.promote_if_better(parent.ref, data="feedback:movie")
    log_feedback(synthetic_cases(24, seed=8, domain="book"), t0=5500)
    with pytest.raises(ConfigError, match="its cases are of domain 'book', not 'movie'"):  # (was: decided on them)
        adaptrec.promote_if_better(parent.ref, data="feedback:book", domain="movie")
    challenger = update_adapter(parent.ref, "feedback:movie[0:4]", replay=0.0, steps=1).record
    with pytest.raises(ConfigError, match="4 of its cases are events"):
        adaptrec.promote_if_better(challenger.ref, data="feedback:movie")
    with pytest.raises(ConfigError, match="6 users") as e:
        adaptrec.promote_if_better(challenger.ref, data="feedback:movie[4:10]")
    assert "anonymous" not in str(e.value)
    log_feedback([replace(c, user_id=ANONYMOUS) for c in synthetic_cases(12, seed=9)], t0=6000)
    with pytest.raises(ConfigError, match="1 users; .* at least 10 \\(requests sent without a user_id all count as "
                                          "the one user 'anonymous'\\)"):  # was: no word on why one user
        adaptrec.promote_if_better(challenger.ref, data="feedback:movie[24:36]")


def test_the_gate_leaves_other_domains_out_and_needs_users_holding_each_class():
    """A log of several domains had all its cases scored and counted by one domain's adapters; liked cases all of one
    user passed a superiority test on that user's cases alone (every resample defining AUC held them)."""
    from adaptrec.online.gate import plan_gate

    def record(ref: str) -> SimpleNamespace:
        return SimpleNamespace(ref=ref, lineage={}, kind="trained", recipe_text=None, trained_events=set(),
                               validated_events=set())

    registry = SimpleNamespace(resolve=record, promoted=lambda domain: record("champ:1"))
    movie = synthetic_cases(24, seed=1)
    plan = plan_gate(registry, "chall:1", "movie", movie + synthetic_cases(30, seed=2, domain="book"), "log.jsonl")
    assert plan.cases == movie
    one_liker = [replace(c, label=int(c.user_id == "u1")) for c in movie]
    with pytest.raises(ConfigError, match="its liked cases are held by 1 user; .* at least 3 users holding each"):
        plan_gate(registry, "chall:1", "movie", one_liker, "log.jsonl")
    # a cold-start alias gates on its domain's cases (a cold slice's keep their domain; was: always refused)
    assert plan_gate(registry, "chall:1", "movie:cold", movie, "movielens:100k:test:cold").cases == movie


def test_the_gates_limit_counts_the_domains_own_cases(monkeypatch):
    """The seeded `limit` was drawn from every domain's cases before the other domains' were left out: 10 of a log
    holding 24 movie and 300 book cases left about one movie case."""
    import adaptrec.data.spec as spec_mod
    import adaptrec.online.gate as gate_mod
    from adaptrec import api

    mixed = synthetic_cases(24, seed=1) + synthetic_cases(300, seed=2, domain="book")
    monkeypatch.setattr(spec_mod, "load_spec", lambda data, seed=0: spec_mod.DataSet("log.jsonl", mixed, {}, "f"))
    monkeypatch.setattr(api, "registry", lambda home=None: SimpleNamespace(
        resolve=lambda ref: SimpleNamespace(ref="x:1", domain="movie")))
    seen = []
    monkeypatch.setattr(gate_mod, "plan_gate", lambda reg, ref, domain, cases, *a: seen.append(cases) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        api.promote_if_better("x:1", data="log.jsonl", limit=10)
    assert len(seen[0]) == 10 and {c.domain for c in seen[0]} == {"movie"}


def test_an_update_killed_before_it_recorded_its_version_registers_no_second_one(trained):
    """The run folder's `registered.json` is written after the version is registered: a kill in between made the
    rerun register a duplicate."""
    from adaptrec.train.update import REGISTERED

    parent, _ = trained
    log_feedback(synthetic_cases(12, seed=5))
    first = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1)
    (first.train.run_dir / REGISTERED).unlink()  # as if killed right after registering
    again = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1)
    assert again.record.ref == first.record.ref and [r.version for r in Registry().list(name="tiny")] == [1, 2]


def test_an_update_that_cannot_resume_says_how_to_start_it_over(trained):
    """An update has no restart option: its refusal to resume named `restart=True` (`--restart`), which `update`
    does not take."""
    from adaptrec.train.update import REGISTERED

    parent, _ = trained
    log_feedback(synthetic_cases(12, seed=5))
    first = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1)
    run_dir = first.train.run_dir
    (run_dir / REGISTERED).unlink()  # so the rerun trains (resumes) in the same folder
    (run_dir / "metrics.jsonl").write_text("not json\n{}\n")
    with pytest.raises(ConfigError, match=f"or remove {re.escape(str(run_dir))} to start the update over$"):
        update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1)


def test_a_decision_against_a_champion_that_changed_meanwhile_is_not_recorded(trained, tiny_model_dir, monkeypatch):
    import adaptrec.online.gate as gate_mod

    parent, _ = trained
    registry = Registry()
    log_feedback(synthetic_cases(24, seed=7), t0=1000)
    challenger = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1).record
    third = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1, overrides=["training.seed=1"]).record
    registry.promote(parent.ref, "movie")
    real = gate_mod.component_scores

    def scored_while_someone_promotes(*args, **kwargs):
        if registry.promoted("movie").ref != third.ref:
            registry.promote(third.ref, "movie")
        return real(*args, **kwargs)

    monkeypatch.setattr(gate_mod, "component_scores", scored_while_someone_promotes)
    from router_helpers import fresh_backbone

    with pytest.raises(RegistryError, match="changed to tiny:3 while this decision was made against tiny:1"):
        gate_mod.gate(fresh_backbone(tiny_model_dir), registry, challenger.ref, "movie",
                      synthetic_cases(24, seed=9), "synthetic", margin=0.5)
    assert registry.promoted("movie").ref == third.ref
    assert [d.action for d in registry.history("movie")] == ["promote", "promote"]


def test_an_adalora_adapter_updates_from_its_own_weights(tiny_model_dir, tmp_path):
    """A saved AdaLoRA adapter keeps only its unpruned ranks; warm-started into a fresh init_r model it computes the
    same function, and an update of it trains and registers."""
    import torch
    from router_helpers import fresh_backbone

    from adaptrec.adapters.attach import load_peft
    from adaptrec.adapters.base import build_peft_model, warm_start
    from adaptrec.adapters.export import adalora_to_lora
    from adaptrec.scoring.logits import tokenize

    settings = {"type": "adalora", "init_r": 4, "target_r": 2}
    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 4, {"train": 16, "valid": 8, "test": 8}, filename="ada",
                            adapter=settings, eval_every=4)
    parent = run_recipe(*load_recipe(str(path))).record
    assert json.loads((parent.path / "adapter_config.json").read_text())["rank_pattern"]  # pruned when saved

    def logits(model, tokenizer):
        batch = tokenize(tokenizer, ["a prompt about movies", "another one"], torch.device("cpu"))
        with torch.no_grad():
            return model(**batch).logits[:, -1]

    saved_bb, fresh_bb = fresh_backbone(tiny_model_dir), fresh_backbone(tiny_model_dir)
    exported = adalora_to_lora(parent.path, tmp_path / "as-lora")  # the saved function, exactly (adapters/export.py)
    expected = logits(load_peft(saved_bb.model, exported, "p").eval(), saved_bb.tokenizer)
    warm = build_peft_model(fresh_bb.model, settings, total_steps=4, tokenizer=fresh_bb.tokenizer)
    warm_start(warm, parent.path, fresh_bb.tokenizer)
    torch.testing.assert_close(logits(warm.eval(), fresh_bb.tokenizer), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected, logits(fresh_backbone(tiny_model_dir).model, fresh_bb.tokenizer))

    log_feedback(synthetic_cases(8, seed=5))
    child = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=4).record
    assert child.adapter_type == "adalora" and child.lineage["updated_from"] == parent.ref


@pytest.mark.parametrize("margin", [float("nan"), float("inf"), -0.1, 1.0, 5.0])
def test_the_gate_refuses_a_margin_outside_zero_to_below_one(margin):
    """nan would refuse every challenger; inf, and any margin of 1 or more (was: accepted), promote every one: an
    AUC difference lies in [-1, 1]."""
    from adaptrec.online.gate import gate

    with pytest.raises(ConfigError, match="expected a margin in AUC from 0 to below 1"):
        gate(None, Registry(), "tiny:1", "movie", [], "synthetic", margin=margin)


def test_if_better_without_data_is_one_error_line(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "registry", "promote", "tiny:1", "--if-better")
    assert code == 2 and err == "error: --if-better needs --data SPEC (the recent cases to compare on)\n"


def test_versions_registered_before_lineages_listed_events_keep_their_windows():
    """A parent with a lineage window but no events bounds its replay by the window, and passes the window on, so
    the gate of its updates still refuses what it trained on."""
    from types import SimpleNamespace

    from adaptrec.data.records import Case
    from adaptrec.online.gate import trained_on
    from adaptrec.train.lineage import with_events
    from adaptrec.train.update import _seen_before

    def logged(n: int, time: float) -> Case:
        return Case("u", "movie", "movie", (), f'"m{n}"', 1, meta={"event": f"r{n}/0", "time": time})

    old = SimpleNamespace(lineage={"window": {"cases": 2, "since": 100.0, "until": 200.0}}, trained_events=set(),
                          validated_events=set())
    cases = [logged(0, 150.0), logged(1, 250.0)]
    assert _seen_before(cases, old) == cases[:1]  # not the event logged after it trained
    child = with_events({"updated_from": "old:1"}, [logged(2, 300.0)], old)
    assert child["events"] == ["r2/0"] and child["earlier_windows"] == [old.lineage["window"]]
    record = SimpleNamespace(lineage=child, trained_events=set(child["events"]), validated_events=set())
    assert trained_on([record], [logged(0, 150.0), logged(2, 300.0), logged(3, 400.0)]) == 2


def test_feedback_by_a_title_two_shown_items_share_is_refused(tmp_path):
    """Amazon catalogues repeat titles: feedback by title went to the first of them (was: labelled the wrong item)."""
    from adaptrec.data.online_log import BadFeedback

    log = OnlineLog(tmp_path / "online.db")
    rid = log.log_request("office", "u", "office product", (), [LoggedItem('"pens"', "101", slot=0),
                                                                LoggedItem('"pens"', "202", slot=1)], ["a:1"], "recommend")
    with pytest.raises(BadFeedback, match="in 2 slots; send the item_id"):
        log.add_feedback(rid, '"pens"', event="click")
    log.add_feedback(rid, "202", event="click")
    assert [(c.target_id, c.label) for c in log.cases("office")] == [("202", 1)]


def test_requests_logged_before_show_probabilities_keep_their_slots(tmp_path):
    """Items once logged with five fields (no slot, no `shown`): their slot is the 0 they were logged with, and feedback
    joins them (was: padded with None, so no item had been shown and feedback was refused)."""
    import json as json_module

    log = OnlineLog(tmp_path / "online.db")
    rid = log.log_request("movie", "u", "movie", (), [LoggedItem('"Heat (1995)"')], ["a:1"], "score")
    log._db.execute("UPDATE requests SET items = ? WHERE request_id = ?",
                    (json_module.dumps([['"Heat (1995)"', None, 0.9, False, 1.0]]), rid))
    (item,) = log.request(rid).items
    assert (item.slot, item.shown) == (0, None)
    log.add_feedback(rid, '"Heat (1995)"', label=1)
    assert [c.meta["shown"] for c in log.cases("movie")] == [None]


def test_the_gate_weighs_only_windows_whose_every_slate_could_be_corrected():
    """A window logged partly before exploration was turned on: its greedy slates' unshown candidates had probability
    0 (was: weighted as if explored, and called corrected)."""
    from adaptrec.data.records import Case
    from adaptrec.online.gate import IPS, UNCORRECTED, case_weights

    def served(shown, propensity=0.9, all_shown=False, endpoint="recommend"):
        return Case("u", "movie", "movie", (), '"x"', 1, meta={"event": "r/0", "shown": shown, "endpoint": endpoint,
                                                                "propensity": propensity, "all_shown": all_shown})

    weights, how = case_weights([served(0.4), served(0.8), served(1.0, 1.0, all_shown=True)])
    assert how == IPS and weights.tolist() == [2.5, 1.25, 1.0]  # a slate that showed every candidate: weight 1
    # an explored slate's top item, shown for sure in floating point (small ε, many slots): still explored
    assert case_weights([served(0.4), served(1.0, propensity=0.99)])[1] == IPS
    assert case_weights([served(0.4), served(1.0, propensity=1.0)]) == (None, UNCORRECTED)  # a greedy slate
    assert case_weights([served(1.0, endpoint="score"), served(1.0, 1.0, all_shown=True)])[1] == \
        "none: every item was shown"
    # a greedy slate beside feedback logged before probabilities were recorded (was: no warning, for the latter)
    assert case_weights([served(None), served(1.0, propensity=1.0)]) == (None, UNCORRECTED)


def test_feedback_from_any_time_is_in_an_open_ended_spec():
    """An open start was -1.0: feedback stamped earlier (the Python API takes any `created`) dropped out."""
    log_feedback(synthetic_cases(3, seed=2), t0=-10.0)
    assert len(OnlineLog().cases("movie")) == 3 and len(load_spec("feedback:movie").cases) == 3


def test_a_stored_recipe_that_no_longer_validates_is_refused_before_any_model_loads(trained, monkeypatch):
    """The gate and drift read the prompt settings from each adapter's stored recipe; they read them after the
    backbone had loaded, so a recipe the current rules refuse (here a repeated key) cost a model load first."""
    import adaptrec

    parent, _ = trained
    registry = Registry()
    registry.promote(parent.ref, "movie")
    old = registry.register(parent.path, name="old-schema", domain="movie", kind="trained", adapter_type="lora",
                            adapter_config=None, fingerprint=parent.fingerprint,
                            recipe_text=parent.recipe_text + "\nname: again\n")
    log_feedback(synthetic_cases(24, seed=8), t0=5000)
    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("a backbone loaded"))
    with pytest.raises(ConfigError, match="old-schema:1 line .*appears twice.*no longer validates"):
        adaptrec.promote_if_better(old.ref, data="feedback:movie")
    with pytest.raises(ConfigError, match="old-schema:1 line .*appears twice.*no longer validates"):
        adaptrec.drift("movie", before="feedback:movie[0:12]", after="feedback:movie[12:24]", adapter=old.ref)


def test_relative_training_files_are_read_from_the_folder_the_adapter_trained_in(tiny_model_dir, tmp_path,
                                                                                 monkeypatch):
    """A recipe's relative `data.train` was resolved against the gate's working directory: gating from another
    folder on the very file it trained on (named by its absolute path) was not refused."""
    from adaptrec.online.gate import _overlaps, ancestry, trained_specs

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 2, {"train": 16, "valid": 8, "test": 8}, eval_every=2)
    train_file = load_recipe(str(path))[0].data.train
    path.write_text(path.read_text().replace(str(tmp_path / "data"), "data"))
    monkeypatch.chdir(tmp_path)
    done = run_recipe(*load_recipe(str(path)))
    record = done.record
    assert load_recipe(str(path))[0].data.train.startswith("data/")
    assert record.lineage["workdir"] == str(tmp_path.resolve())
    # what trained it beyond its recipe text: the kernel, a mixed precision an environment chose, the processes
    setup = record.lineage["setup"]
    assert {"backbone", "backend", "mixed_precision"} <= set(setup) and setup["num_processes"] == 1
    assert json.loads((done.train.run_dir / "report.json").read_text())["train"]["setup"] == setup
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    trained = trained_specs(ancestry(Registry(), record))
    assert _overlaps(train_file, trained) and _overlaps(f"{train_file}[0:4]", trained)
    assert not _overlaps(Path(train_file).relative_to(tmp_path).as_posix(), trained)  # here: another file


def test_a_one_step_update_of_a_warmed_up_recipe_trains(tiny_model_dir, tmp_path):
    """A warm-up's first step has learning rate 0 (was: `--steps 1` of a recipe with warm-up registered the
    parent's exact weights as a new version)."""
    from safetensors.torch import load_file

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 3, {"train": 16, "valid": 8, "test": 8}, eval_every=3,
                            warmup_steps=2)
    parent = run_recipe(*load_recipe(str(path))).record
    log_feedback(synthetic_cases(12, seed=5))
    child = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=1).record
    before = load_file(str(parent.path / "adapter_model.safetensors"))
    after = load_file(str(child.path / "adapter_model.safetensors"))
    assert any(not np.allclose(after[k].numpy(), before[k].numpy()) for k in before)
    assert "# --set training.warmup_steps=0" in child.recipe_text  # the stored recipe says so
    # a budget within the warm-up would never train at training.lr (was: 2 steps at rates 0 and lr / 2)
    two = update_adapter(parent.ref, "feedback:movie", replay=0.0, steps=2).record
    assert "# --set training.max_steps=2\n# --set training.warmup_steps=0" in two.recipe_text


def test_a_superiority_summary_says_the_bound_passes_above_zero():
    """(was: "passes when the lower bound > -0.0000" for --margin 0)"""
    from adaptrec.online.gate import GateResult

    evidence = {"test": "superiority", "cases": 40, "users": 10, "challenger_auc": 0.7, "champion_auc": 0.6,
                "diff": 0.1, "ci_low": 0.01, "ci_high": 0.2, "margin": 0.0, "resolution": 0.095}
    assert "passes when the lower bound > +0.0000;" in GateResult(True, "a:2", "a:1", evidence).summary()
