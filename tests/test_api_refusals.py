"""The Python API refuses bad input before any model loads (as the CLI does), and reads an adapter's own prompt
template when none is given."""

from __future__ import annotations

import pytest
from serve_helpers import make_registry

import adaptrec
from adaptrec import api
from adaptrec.config import RECIPES_DIR
from adaptrec.errors import AdaptrecError


@pytest.fixture
def no_backbone(tiny_model_dir, monkeypatch):
    """The serving adapters registered under `$ADAPTREC_HOME`; loading a backbone or fitting an encoder fails the
    test."""
    import os

    import adaptrec.cf.fit
    import adaptrec.train.recipe

    registry = make_registry(tiny_model_dir, os.environ["ADAPTREC_HOME"])
    monkeypatch.setattr(api, "_backbone", lambda *a: pytest.fail("a backbone loaded before the refusal"))
    monkeypatch.setattr(adaptrec.train.recipe, "load_backbone",  # `train` loads its own
                        lambda *a, **k: pytest.fail("a backbone loaded before the refusal"))
    monkeypatch.setattr(adaptrec.cf.fit, "fit_encoder", lambda *a: pytest.fail("an encoder was fitted first"))
    return registry


def _limits(**sizes):
    from adaptrec.serve.engine import Limits

    return Limits(**sizes)


@pytest.mark.parametrize("call, words", [
    (lambda: adaptrec.load("arts-lora", template="bogus"), "template='bogus'"),
    (lambda: adaptrec.load("arts-lora", batch_size=0), "batch_size=0"),
    (lambda: adaptrec.evaluate(["arts-lora", "typo"], data="tallrec:movie:test"), "typo"),
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", limit=-5), "limit=-5"),
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", candidates=-3), "candidates=-3"),
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", seed=-1), "seed=-1"),  # was: numpy's
    (lambda: adaptrec.write_predictions("arts-lora", data="tallrec:movie:test", out="p.jsonl", seed=-2), "seed=-2"),
    (lambda: adaptrec.compose("arts-lora", name="c", weights="1", seed=-3), "seed=-3"),
    (lambda: adaptrec.compose("arts-lora,office-lora", name="c", search_data="tallrec:movie:valid", budget=0),
     "budget=0"),  # was: after the backbone loaded and every case was scored
    (lambda: adaptrec.compose("arts-lora,office-lora", name="c", search_data="tallrec:movie:valid", l1=-1.0),
     "l1=-1.0"),
    (lambda: adaptrec.compose("arts-lora,office-lora", name="c", search_data="tallrec:movie:valid", budget=20.0),
     "budget=20.0"),  # was: TypeError after the backbone loaded and 19 evaluations
    (lambda: adaptrec.compose("pre,arts-lora", name="c", weights="1,1"), "pre:1 is a prefix adapter"),  # was: after
    (lambda: adaptrec.route("u1", "arts", history="h.json", min_target_history="3"), "min_target_history='3'"),
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", template="bogus"), "template='bogus'"),
    (lambda: adaptrec.predict("arts-lora", [{"title": "Heat", "like": False}], "Casino"), "like"),
    (lambda: adaptrec.train_cf("bpr", data="movielens:100k:loo", name="a b"), "a b"),
    (lambda: adaptrec.train_cf("bpr", data="movielens:100k:loo", seed=-1), "seed=-1"),
    # a blank option is no default (was: the embedded backbone, 8bit, the first source's domain, KIND-SOURCE, …)
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", backbone=""), "backbone='': blank"),
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", quantization=" "), "quantization=' '"),
    (lambda: adaptrec.compose("arts-lora,office-lora", name="c", domain=""), "domain='': blank"),
    (lambda: adaptrec.train_cf("bpr", data="movielens:100k:loo", name=""), "name='': blank"),
    (lambda: adaptrec.drift("arts", before="a.json", after="b.json", adapter=""), "adapter='': blank"),
    (lambda: adaptrec.push("arts-lora", to="/nonexistent/m", repo=""), "repo='': blank"),
    (lambda: adaptrec.promote_if_better("arts-lora", data="tallrec:movie:valid", domain=""), "domain='': blank"),
    (lambda: adaptrec.evaluate(["arts-lora", "arts-lora:1"], data="tallrec:movie:test"),
     "arts-lora:1 is named twice"),  # (was: two identical rows)
    # (was: numpy's RandomState traceback inside implicit, after the interactions loaded)
    (lambda: adaptrec.train_cf("bpr", data="movielens:100k:loo", seed=2**32), "seed=4294967296: expected at most"),
    (lambda: adaptrec.train_cf("bpr", data="movielens:100k:loo", dim=99999999999), "dim=99999999999: at most"),
    (lambda: adaptrec.train_cf("bpr", data="movielens:100k:loo", dim=0), "dim=0: expected an integer >= 1"),
    (lambda: adaptrec.push("arts-lora", repo="alice/arts", revision=""), "revision='': blank; leave it out"),
    (lambda: adaptrec.predict("arts-lora", [], "Heat (1995)", item_id=""), "item_id: expected the target item's"),
    (lambda: adaptrec.train_cf("sasrec", data="movielens:100k"), "liked item before every disliked"),
    (lambda: adaptrec.serve(preload=["typo"]), "typo"),
    (lambda: adaptrec.serve(max_resident=0), "max_resident=0"),
    (lambda: adaptrec.serve(max_wait_ms=float("inf")), "max_wait_ms=inf"),  # was: a lone request waited for good
    (lambda: adaptrec.serve(max_padding=float("nan")), "max_padding=nan: give a finite number, 0 to 1"),
    (lambda: adaptrec.serve(watch_promotions=-1.0), "watch_promotions=-1.0"),
    (lambda: adaptrec.serve(max_batch=0), "max_batch=0"),
    (lambda: adaptrec.serve(limits=_limits(queue_timeout_s=0.0)), "queue_timeout_s=0.0"),  # was: refused every request
    (lambda: adaptrec.train("movie-lora", resume=True, restart=True), "exclude each other"),  # was: it trained
    (lambda: adaptrec.plan("movie-lora", resume=True, restart=True), "exclude each other"),  # was: a plan
    (lambda: adaptrec.train_cf("bpr", data="movielens:100k:loo", name="../x"), "bad encoder name '../x'"),
    (lambda: adaptrec.route("u1", "movie", data="tallrec:movie:test", history="h.json"), "pass one"),
    (lambda: adaptrec.route("u1", "", history="h.json"), "bad domain ''"),  # was: blamed on the history
    (lambda: adaptrec.evaluate([], data="tallrec:movie:test[5:0]"), "ends \\(0\\) before it starts \\(5\\)"),
    (lambda: adaptrec.write_predictions("", data="tallrec:movie:test", out="p.jsonl"), "'' names no adapter"),
    (lambda: adaptrec.evaluate([" "], data="tallrec:movie:test"), "^' ' names no adapter"),  # (was: "[' '] names")
    (lambda: adaptrec.serve(exploration={"movie": 0.1}, request_log=False), "needs the request log"),  # was: greedy
    (lambda: adaptrec.compose("arts-lora,office-lora", name="c", weights="1,1", shots=8, l1=0.1),
     "compose shots, l1: only the weight search reads these"),  # was: ignored, as if searched
    (lambda: adaptrec.evaluate([], data=3), "data=3: expected a data SPEC"),  # was: TypeError deep in the SPEC parser
    # the Python API refuses what only the CLI's option types refused (was: an unseeded draw, a TypeError after the
    # backbone loaded, a server refusing every request, a string split into its letters)
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", seed=None), "seed=None: expected an int"),
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", batch_size=None), "batch_size=None"),
    (lambda: adaptrec.evaluate(["arts-lora"], data="tallrec:movie:test", encoders="bpr-x"), "no encoder 'bpr-x'"),
    (lambda: adaptrec.inspect_data("tallrec:movie:test", show=-1), "show=-1: expected an integer >= 0"),
    (lambda: adaptrec.inspect_data("tallrec:movie:test", template="bogus"), "template='bogus'"),
    (lambda: adaptrec.update("arts-lora", data="tallrec:movie:test", steps=True), "steps=True"),
    (lambda: adaptrec.update("arts-lora", data="tallrec:movie:test", replay="0.2"), "replay='0.2'"),
    (lambda: _limits(max_candidates=0), "max_candidates=0: expected an integer >= 1"),
    (lambda: adaptrec.serve(limits={"max_candidates": 5}), "limits=.*expected an adaptrec.serve.engine.Limits"),
    (lambda: adaptrec.serve(port="8000"), "port='8000'"),
    (lambda: adaptrec.serve(preload="arts-typo"), "arts-typo"),
    (lambda: adaptrec.train("movie-lora", overrides="training.lr=yes"), "training.lr.*not true/false|a number"),
])
def test_bad_input_is_refused_before_any_model_loads(no_backbone, call, words):
    """Each was refused after the backbone loaded (or never: a negative limit dropped users, a negative batch size
    scored nothing), or after minutes of fitting (`train_cf`'s name)."""
    with pytest.raises(AdaptrecError, match=words):
        call()


def test_serve_refuses_a_registry_folder_that_does_not_exist(no_backbone, tmp_path):
    """(was: a new empty registry was made there and served)"""
    with pytest.raises(AdaptrecError, match="no such folder"):
        adaptrec.serve(registry_home=tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_a_server_of_another_registry_logs_beside_it(no_backbone, tmp_path, monkeypatch):
    """With `--registry DIR` the request log went to $ADAPTREC_HOME/online.db, so no command could run the loop on
    DIR: `ADAPTREC_HOME=DIR adaptrec update` read an empty log, the default home promoted into a registry the
    server never saw."""
    from types import SimpleNamespace

    import adaptrec.serve.app

    served = {}
    monkeypatch.setattr(api, "_backbone", lambda *a: SimpleNamespace(device="cpu"))
    monkeypatch.setattr(adaptrec.serve.engine.Engine, "__post_init__", lambda self: None)
    monkeypatch.setattr(adaptrec.serve.app, "serve", lambda engine, host, port, options: served.update(o=options))
    (tmp_path / "other").mkdir()
    adaptrec.serve(registry_home=tmp_path / "other")
    assert served["o"].online_log == tmp_path / "other" / "online.db"


def test_serve_refuses_an_address_it_cannot_listen_on_before_the_backbone_loads(no_backbone):
    """(was: the backbone and preloads loaded first, then uvicorn failed to bind)"""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(AdaptrecError, match=f"port={port}: cannot listen there"):
            adaptrec.serve(port=port)
    with pytest.raises(AdaptrecError, match="host='no-such-host.invalid', port=8000: cannot listen there"):
        adaptrec.serve(host="no-such-host.invalid")
    with pytest.raises(AdaptrecError, match="host='': blank; give an address"):  # (was: every interface)
        adaptrec.serve(host="")


def test_exploring_a_domain_nothing_serves_is_said_before_the_backbone_loads(no_backbone):
    """A misspelt `--explore offce=0.1` explored nothing, without a word (was); a name that is no text refused."""
    from adaptrec.serve.app import UnservedExplorationWarning

    with pytest.warns(UnservedExplorationWarning, match="no adapter is registered for 'offce'"), \
            pytest.raises(pytest.fail.Exception, match="a backbone loaded"):
        adaptrec.serve(exploration={"offce": 0.1, "arts": 0.1})
    with pytest.raises(AdaptrecError, match="expected a domain's exploration rate"):
        adaptrec.serve(exploration={"\udcff": 0.1})


def test_a_mix_of_a_mix_is_refused_before_the_backbone_loads(no_backbone):
    """(was: refused by the registration, after the backbone loaded)"""
    from pathlib import Path

    no_backbone.register(lambda folder: (Path(folder) / "mix.json").write_text("{}"), name="mixy", domain="arts",
                         kind="composed", adapter_type="mix", fingerprint=no_backbone.resolve("arts-lora").fingerprint,
                         adapter_config={"sources": ["arts-lora:1", "office-lora:1"], "weights": [0.5, 0.5]},
                         lineage={"parents": ["arts-lora:1", "office-lora:1"], "method": "mix", "weights": [0.5, 0.5]})
    with pytest.raises(AdaptrecError, match="mixy:1 is itself a mix"):
        adaptrec.compose("mixy,arts-lora", name="c", method="mix", weights="1,1")


def test_write_predictions_checks_the_adapter_and_the_output_before_the_backbone(no_backbone, tmp_path):
    with pytest.raises(AdaptrecError, match="typo"):
        adaptrec.write_predictions("typo", data="tallrec:movie:test", out=tmp_path / "p.jsonl")
    with pytest.raises(AdaptrecError, match="a folder"):
        adaptrec.write_predictions("arts-lora", data="tallrec:movie:test", out=tmp_path)
    with pytest.raises(AdaptrecError, match="written as JSON lines or Parquet; name the file .jsonl or .parquet"):
        adaptrec.write_predictions("arts-lora", data="tallrec:movie:test", out=tmp_path / "p.csv")  # (was: JSON)
    (tmp_path / "afile").write_text("")
    with pytest.raises(AdaptrecError, match="afile is a file, so no folder can be made there"):  # was: errno, exit 1
        adaptrec.write_predictions("arts-lora", data="tallrec:movie:test", out=tmp_path / "afile" / "p.jsonl")


def test_load_scores_with_the_template_the_adapter_was_trained_with(tiny_model_dir, tmp_path):
    """`load` (and so `predict`) defaulted to `tallrec` whatever the adapter trained on: a `tallrec-stats` adapter
    was scored on prompts it never saw."""
    import os

    registry = make_registry(tiny_model_dir, os.environ["ADAPTREC_HOME"])
    arts = registry.resolve("arts-lora")
    registry.register(arts.path, name="stats", domain="movie", kind="trained", adapter_type="lora",
                      adapter_config=None, fingerprint=arts.fingerprint,
                      recipe_text=(RECIPES_DIR / "movie-stats.yaml").read_text())
    tiny = {"backbone": str(tiny_model_dir), "quantization": "none"}
    assert adaptrec.load("stats", **tiny).scorer.template == "tallrec-stats"
    assert adaptrec.load("stats", template="tallrec", **tiny).scorer.template == "tallrec"
    assert adaptrec.load("arts-lora", **tiny).scorer.template == "tallrec"  # no recipe: the default
    # the prompt length too, as `score` takes it (was: 1024 tokens whatever the recipe said, 512 for every shipped one)
    assert adaptrec.load("stats", **tiny).scorer.max_prompt_tokens == 512
    assert adaptrec.load("arts-lora", **tiny).scorer.max_prompt_tokens == 1024


def test_evaluate_scores_in_the_prompt_the_adapters_were_trained_with(tiny_model_dir, monkeypatch):
    """As `load` does (was: `tallrec` and 1024 tokens, whatever the recipes said); templates that differ are refused
    unless one is named."""
    import os

    import adaptrec.evaluation

    registry = make_registry(tiny_model_dir, os.environ["ADAPTREC_HOME"])
    arts = registry.resolve("arts-lora")
    registry.register(arts.path, name="stats", domain="movie", kind="trained", adapter_type="lora",
                      adapter_config=None, fingerprint=arts.fingerprint,
                      recipe_text=(RECIPES_DIR / "movie-stats.yaml").read_text())
    seen = {}
    monkeypatch.setattr(api, "_backbone", lambda *a: None)
    monkeypatch.setattr(adaptrec.evaluation, "run_eval", lambda backbone, dataset, **kw: (seen.clear(), seen.update(kw)))
    tiny, data = {"backbone": str(tiny_model_dir), "quantization": "none"}, "tallrec:movie:test"
    adaptrec.evaluate(["stats"], data=data, **tiny)
    assert (seen["template"], seen["max_prompt_tokens"]) == ("tallrec-stats", 512)
    adaptrec.evaluate([], data=data, **tiny)  # the untuned backbone alone: the default
    assert seen["template"] == "tallrec" and "max_prompt_tokens" not in seen
    registry.register(arts.path, name="plain", domain="movie", kind="trained", adapter_type="lora",
                      adapter_config=None, fingerprint=arts.fingerprint,
                      recipe_text=(RECIPES_DIR / "movie-lora.yaml").read_text())
    with pytest.raises(AdaptrecError, match="trained with different prompt templates .* pass template to"):
        adaptrec.evaluate(["stats", "plain"], data=data, **tiny)
    adaptrec.evaluate(["stats", "plain"], data=data, template="tallrec", **tiny)
    assert (seen["template"], seen["max_prompt_tokens"]) == ("tallrec", 512)


def test_an_encoder_row_of_an_unknown_source_is_no_encoder_of_any_spec(tmp_path):
    """A row naming a source this version does not know made every `eval` fail with a KeyError traceback."""
    from types import SimpleNamespace

    from adaptrec.registry import Registry

    registry = Registry(tmp_path)
    rows = [SimpleNamespace(name="old", data="movielens:1m"), SimpleNamespace(name="ok", data="movielens:100k:loo")]
    registry.encoders = lambda: rows
    assert [r.name for r in registry.encoders_for("movielens:100k:loo:test")] == ["ok"]


def test_a_data_spec_may_be_a_path_and_one_source_to_plot_is_not_its_letters(tmp_path):
    """`PATH.json` is a SPEC: a `Path` to it is one too (was: TypeError inside the SPEC parser); `plot(kind, "run")`
    drew the runs "r", "u", "n"."""
    assert api._spec_text(tmp_path / "test.json", "data") == str(tmp_path / "test.json")
    with pytest.raises(AdaptrecError, match="^no-such-run: no such run"):  # was: "n: no such run"
        adaptrec.plot("curves", "no-such-run", out=tmp_path / "c.png")


@pytest.mark.parametrize("call, python, flags", [
    (lambda: adaptrec.evaluate([], data="amazon:office:test", candidates=5, candidates_file="c.jsonl"),
     "candidates=5 and candidates_file:", "--candidates 5 and --candidates-file:"),
    (lambda: adaptrec.serve(exploration={"movie": 0.1}, request_log=False),
     "exploration of movie (exploration) logs", "exploration of movie \\(--explore\\) logs"),
    (lambda: adaptrec.serve(exploration={"movie": 2.0}),  # was: served, with negative propensities logged
     "exploration['movie']=2.0: expected a domain's exploration rate", "--explore movie=2.0: expected a domain's"),
    (lambda: api.parse_exploration(["movie=x"]),
     "exploration='movie=x': expected DOMAIN=EPSILON", "--explore movie=x: expected DOMAIN=EPSILON"),
    (lambda: api.parse_exploration(["movie=0.1", "movie=0.2"]),  # was: the last one kept
     "exploration='movie=0.2': movie is given a rate twice", "--explore movie=0.2: movie is given a rate twice"),
    (lambda: adaptrec.serve(preload=["arts-lora", "office-lora"], max_resident=1),  # was: the first one evicted
     "preload names 2 adapters, more than max_resident=1 keeps", "--preload names 2 adapters, more than "
     "--max-resident 1 keeps"),
    (lambda: adaptrec.compose("arts-lora,office-lora", name="c", search_data="tallrec:movie:test"),
     "search_data='tallrec:movie:test': the weight search", "--data tallrec:movie:test: the weight search"),
    (lambda: adaptrec.route("u1", "arts", history=["Heat (1995)"], cold_mix="arts-lora,office-lora",
                            cold_weights="a,b"),  # was: `weights`, which route does not take
     "cold_weights='a,b': expected comma-separated numbers", "--cold-weights a,b: expected comma-separated numbers"),
    (lambda: adaptrec.plan("movie-lora", overrides=["nokey"]), "overrides 'nokey': expected key=value",
     "--set 'nokey': expected key=value"),
])
def test_a_refusal_names_the_option_as_the_caller_wrote_it(no_backbone, call, python, flags):
    """From Python a refusal names the keyword (`candidates=5`), under the command line the flag (`--candidates 5`):
    it named the flag from Python too."""
    from adaptrec.errors import command_line

    with pytest.raises(AdaptrecError) as refused:
        call()
    assert python in str(refused.value) and "--" not in str(refused.value)
    with command_line(), pytest.raises(AdaptrecError, match=flags):
        call()


def test_option_spells_values_flags_and_booleans_for_each_caller():
    from adaptrec.errors import command_line, option

    assert [option("top_k"), option("top_k", 0), option("out", "p.jsonl"), option("force", True)] == \
        ["top_k", "top_k=0", "out='p.jsonl'", "force=True"]
    with command_line():
        assert [option("top_k"), option("top_k", 0), option("out", "p.jsonl"), option("force", True),
                option("request_log", False), option("registry_home", "r", flag="--registry")] == \
            ["--top-k", "--top-k 0", "--out p.jsonl", "--force", "--no-request-log", "--registry r"]
        assert [option("data", "a b"), option("data", ""), option("data", "a\nb")] == \
            ["--data 'a b'", "--data ''", "--data 'a\\nb'"]  # one line, pasteable where it can be
    assert option("top_k") == "top_k"  # the command line's spelling ends with it
