"""The CLI: user mistakes give one line on stderr and exit 2; registry commands work end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from safetensors.torch import save_file

from adaptrec.config import RECIPES_DIR
from adaptrec.errors import AdaptrecError
from adaptrec.fingerprint import Fingerprint
from adaptrec.registry import Registry


def _one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("spec", ["tallrec:movie:tset", "amazon:garden:test", "nope.json", "tallrec:book:train"])
def test_bad_specs_are_one_line_errors(monkeypatch, capsys, spec):
    line = _one_line_error(*run_cli(monkeypatch, capsys, "data", "inspect", spec)[::2])
    assert spec.split(":")[0] in line or "nope.json" in line


def test_a_backbone_folder_without_a_tokenizer_is_one_line_error(monkeypatch, capsys, tmp_path):
    """`data inspect --backbone EMPTY_FOLDER` (was: transformers' ValueError traceback)"""
    from synthetic import write_tallrec_files

    data = write_tallrec_files(tmp_path / "data", {"test": 2})["test"]
    (tmp_path / "empty").mkdir()
    line = _one_line_error(*run_cli(monkeypatch, capsys, "data", "inspect", str(data), "--backbone",
                                    str(tmp_path / "empty"))[::2])
    assert f"backbone '{tmp_path / 'empty'}': no usable tokenizer" in line


def test_bad_recipe_is_one_line_error(monkeypatch, capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text((RECIPES_DIR / "movie-lora.yaml").read_text().replace("  lr: 1.0e-3", "  lr: fast"))
    line = _one_line_error(*run_cli(monkeypatch, capsys, "train", str(recipe))[::2])
    assert str(recipe) in line and "training.lr" in line


def test_unknown_adapter_is_one_line_error(monkeypatch, capsys):
    line = _one_line_error(*run_cli(monkeypatch, capsys, "registry", "show", "missing:3")[::2])
    assert "missing" in line


def _fake_adapter(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4)}, src / "adapter_model.safetensors")
    (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    return src


@pytest.mark.parametrize("args", [["registry", "list", "--domain", "\udcff"],
                                  ["registry", "encoders", "--name", "\udcff"],
                                  ["eval", "\udcff", "--data", "tallrec:movie:test"]])
def test_a_name_of_bytes_that_are_not_utf8_is_one_line(monkeypatch, capsys, args):
    """A shell passes such bytes as surrogates, which SQLite cannot take (was: UnicodeEncodeError's traceback)."""
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert _one_line_error(code, err) == "error: a name or text given is not valid UTF-8 '\\udcff'"


def test_a_blank_mirror_folder_is_refused_not_read_as_the_current_one(monkeypatch, capsys, tmp_path):
    """(was: `hub push movie-lora --to ''` wrote the mirror into the current folder: typer reads '' as the path .)"""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", "movie-lora", "--to", "")
    assert "--to '': blank" in _one_line_error(code, err)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["eval", "x", "--json-out"], ["eval", "x", "--candidates-file"], ["score", "--out"],
                                  ["predict", "x", "--history"], ["drift", "movie", "--plot"], ["export", "x", "--out"],
                                  ["compose", "x", "--into-base"], ["route", "--history"], ["recommend", "--history"],
                                  ["recommend", "--candidates-file"], ["serve", "--registry"]])
def test_a_blank_path_is_a_usage_error_not_the_current_folder(monkeypatch, capsys, tmp_path, args):
    """(was: typer read '' as the path `.`: `drift --plot ''` drew into the current folder, `serve --registry ''`
    served it)"""
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(*run_cli(monkeypatch, capsys, *args, "")[::2])
    assert f"Invalid value for '{args[-1]}': blank; give a path" in line
    assert not list(tmp_path.iterdir())


def test_registry_commands(monkeypatch, capsys, tmp_path):
    fp = Fingerprint("e" * 64, "f" * 64, "org/base")
    reg = Registry()
    reg.register(_fake_adapter(tmp_path), name="movie-lora", domain="movie", kind="trained", adapter_type="lora",
                 adapter_config=None, fingerprint=fp, metrics={"auc": {"value": 0.61, "data": "tallrec:movie:test", "limit": 200}})
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "promote", "movie-lora:1", "--domain", "movie")
    assert code == 0 and "promoted movie-lora:1" in out
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "list")
    assert "* movie-lora:1" in out and "auc=0.610" in out
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "list", "--json")  # was: no machine-readable list
    (listed,) = json.loads(out)
    assert (listed["ref"], listed["promoted_for"]) == ("movie-lora:1", ["movie"])
    assert listed["metrics"]["auc"]["value"] == 0.61
    assert "recipe_text" not in listed
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "show", "movie-lora")
    assert json.loads(out)["metrics"]["auc"]["data"] == "tallrec:movie:test"
    import sqlite3

    with sqlite3.connect(reg.db_path) as db:  # rows edited by hand: a metric that is no number, then no JSON
        db.execute("""UPDATE adapters SET metrics = '{"auc": {"value": "high"}}'""")
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "list")
    assert code == 0 and "auc='high'" in out  # was: a format error's traceback halfway through the list
    with sqlite3.connect(reg.db_path) as db:
        db.execute("UPDATE adapters SET metrics = '{bad'")
    for command in (["list"], ["show", "movie-lora:1"], ["list", "--json"]):  # was: JSONDecodeError's traceback
        line = _one_line_error(*run_cli(monkeypatch, capsys, "registry", *command)[::2])
        assert "registry row of movie-lora:1 has an unreadable metrics column" in line
        assert "`adaptrec registry remove movie-lora:1`" in line
    code, _, err = run_cli(monkeypatch, capsys, "registry", "verify")  # was: the same error, and no other problem
    assert code == 1 and "problem: the registry row of movie-lora:1 has an unreadable metrics column" in err
    line = _one_line_error(*run_cli(monkeypatch, capsys, "registry", "remove", "movie-lora:1")[::2])
    assert "--force" in line or "promoted" in line
    folder = reg.path_for("movie-lora", 1)
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "remove", "movie-lora:1", "--force")  # the damaged row
    assert code == 0 and out.strip() == "removed movie-lora:1" and reg.list() == [] and not folder.exists()


def test_console_script_exit_code(tmp_path):
    """The installed entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("adaptrec")
    proc = subprocess.run([str(exe), "eval", "--data", "tallrec:movie:nope"], capture_output=True, text=True,
                          env={"ADAPTREC_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_missing_data_file_names_recipe_and_key(monkeypatch, capsys):
    line = _one_line_error(*run_cli(monkeypatch, capsys, "train", "movie-lora", "--set", "data.train=tallrec:book:train")[::2])
    assert "movie-lora.yaml" in line and "data.train" in line and "book/train.json" in line


def _registered_adalora(backbone, folder: Path):
    """An AdaLoRA adapter with nonzero ranks, registered as movie-ada."""
    from adaptrec.adapters import build_peft_model
    from adaptrec.adapters.adalora import AdaLoraSettings

    model = build_peft_model(backbone.model, AdaLoraSettings(init_r=6, target_r=4, tinit=1, tfinal=1), total_steps=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_E" in name or "lora_B" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(str(folder), safe_serialization=True)
    return Registry().register(folder, name="movie-ada", domain="movie", kind="trained", adapter_type="adalora",
                               adapter_config=None, fingerprint=backbone.fingerprint)


def test_export_to_lora_registers_an_exact_lora(monkeypatch, capsys, tiny_backbone, tmp_path):
    _registered_adalora(tiny_backbone, tmp_path / "ada")
    reg = Registry()
    code, out, err = run_cli(monkeypatch, capsys, "export", "movie-ada", "--to-lora")
    assert code == 0, err
    new = reg.resolve("movie-ada-lora")
    assert new.adapter_type == "lora" and new.kind == "composed"
    assert new.lineage["parents"] == ["movie-ada:1"] and new.lineage["method"] == "adalora_to_lora"
    assert json.loads((new.path / "adapter_config.json").read_text())["peft_type"] == "LORA"
    line = _one_line_error(*run_cli(monkeypatch, capsys, "export", "movie-ada-lora", "--to-lora")[::2])
    assert "not adalora" in line
    code, out, err = run_cli(monkeypatch, capsys, "export", "movie-ada", "--to-lora", "--name", "again", "--json")
    assert code == 0 and json.loads(out) == {"ref": "again:1", "exported_from": "movie-ada:1"}  # was: text only


def test_export_to_lora_refuses_an_adapter_whose_files_changed(monkeypatch, capsys, tiny_backbone, tmp_path):
    rec, reg = _registered_adalora(tiny_backbone, tmp_path / "ada"), Registry()
    weights = rec.path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # still a readable safetensors file, but not the registered one
    weights.write_bytes(bytes(data))
    line = _one_line_error(*run_cli(monkeypatch, capsys, "export", "movie-ada", "--to-lora")[::2])
    assert "adapter_model.safetensors" in line
    assert reg.list(name="movie-ada-lora") == []


@pytest.mark.parametrize("args, option", [
    (["score", "--data", "tallrec:movie:test", "--out", "p.jsonl", "--limit", "-1"], "--limit"),
    (["eval", "--data", "amazon:office:test", "--candidates", "-3"], "--candidates"),
    (["eval", "--data", "tallrec:movie:test", "--batch-size", "0"], "--batch-size"),
    (["serve", "--max-resident", "0"], "--max-resident"),
    (["eval", "--data", "tallrec:movie:test", "--seed", "-1"], "--seed"),  # was: numpy's traceback
    (["serve", "--queue-timeout", "-1"], "--queue-timeout"),  # was: served, refusing every request
    (["serve", "--queue-timeout", "0"], "--queue-timeout"),  # was: help said x>=0, the API then refused it
    (["update", "x:1", "--data", "feedback:movie", "--replay", "1"], "--replay"),  # was: after both data sets loaded
    (["serve", "--max-padding", "5"], "--max-padding"),
    (["demo", "--limit", "0"], "--limit"),  # was: blamed the shipped recipe's evaluation.limit
    (["drift", "movie", "--before", "feedback:movie", "--after", "feedback:movie", "--seed", "-1"], "--seed"),
])
def test_numbers_out_of_range_are_usage_errors_before_any_work(monkeypatch, capsys, args, option):
    """One `error:` line each (was: click's five-line usage box)."""
    line = _one_line_error(*run_cli(monkeypatch, capsys, *args)[::2])
    assert f"Invalid value for '{option}'" in line and f"(see `adaptrec {args[0]} --help`)" in line


@pytest.mark.parametrize("args, path", [(["score", "--shard"], "adaptrec score"),
                                        (["registry", "promote", "x:1", "--margin"], "adaptrec registry promote")])
def test_an_option_missing_its_value_points_to_its_commands_help(monkeypatch, capsys, args, path):
    """Click gives that usage error no context: the line lacked the `(see … --help)` every other one ends with."""
    line = _one_line_error(*run_cli(monkeypatch, capsys, *args)[::2])
    assert line.endswith(f"requires an argument. (see `{path} --help`)")


@pytest.mark.parametrize("args, words", [(["eval", "--bogus"], "No such option: --bogus"),
                                         (["evall"], "No such command 'evall'. Did you mean 'eval'?"),
                                         (["registry", "promote"], "Missing argument 'REF'")])
def test_usage_errors_are_one_line(monkeypatch, capsys, args, words):
    assert words in _one_line_error(*run_cli(monkeypatch, capsys, *args)[::2])


def test_help_and_a_commands_own_exit_code_pass_through(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "eval", "--help")
    assert code == 0 and "Usage: adaptrec eval" in out
    code, out, err = run_cli(monkeypatch, capsys, "registry")  # a group called bare: its help, no error line
    assert code == 2 and "Usage: adaptrec registry" in out + err and "error:" not in err
    code, out, _ = run_cli(monkeypatch, capsys, "hub", "pull", "--help")
    assert code == 0 and "PATH[@REVISION]" in " ".join(out.split())  # (was: rich read `[@REVISION]` as markup)


@pytest.mark.parametrize("under", [False, True])
def test_a_home_that_cannot_be_made_is_one_line_naming_the_variable(monkeypatch, capsys, tmp_path, under):
    """`$ADAPTREC_HOME` a file or under one (was: a NotADirectoryError traceback, then "[Errno 17] File exists" or
    "Not a directory" without naming the variable)."""
    (tmp_path / "file").write_text("")
    home = tmp_path / "file" / "home" if under else tmp_path / "file"
    monkeypatch.setenv("ADAPTREC_HOME", str(home))
    code, _, err = run_cli(monkeypatch, capsys, "registry", "list")
    assert code == 1 and err.strip() == (f"error: $ADAPTREC_HOME {home}: a file is in the way (the home is a "
                                         "folder); point it at a folder"), err


def test_an_empty_registry_says_so(monkeypatch, capsys):
    """(was: nothing printed, as if the command had not run)"""
    for args, words in ((("list",), "no adapters registered"), (("list", "--domain", "movie"), "for domain 'movie'"),
                        (("encoders",), "no encoders registered")):
        code, out, _ = run_cli(monkeypatch, capsys, "registry", *args)
        assert code == 0 and words in out


def test_serve_refuses_an_unknown_template_before_the_backbone_loads(monkeypatch, capsys):
    """(was: it served, and refused every request with 422)"""
    import adaptrec.api

    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("the backbone loaded"))
    line = _one_line_error(*run_cli(monkeypatch, capsys, "serve", "--template", "bogus")[::2])
    assert "--template bogus" in line and "tallrec" in line


def test_serve_refuses_an_admin_token_no_header_can_carry_before_the_backbone_loads(monkeypatch, capsys):
    """(was: it served, and the admin endpoints refused every request: an HTTP client cannot send that token)"""
    import adaptrec.api

    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("the backbone loaded"))
    monkeypatch.setenv("ADAPTREC_ADMIN_TOKEN", "clé-secrète")
    line = _one_line_error(*run_cli(monkeypatch, capsys, "serve", "--port", "0")[::2])
    assert "$ADAPTREC_ADMIN_TOKEN has non-ASCII characters" in line


def test_predict_takes_a_template_and_refuses_an_unknown_one_before_the_backbone_loads(monkeypatch, capsys, tmp_path):
    """(was: no --template on predict, though the Python API takes one)"""
    import adaptrec.api

    Registry().register(_fake_adapter(tmp_path), name="movie-lora", domain="movie", kind="trained",
                        adapter_type="lora", adapter_config=None, fingerprint=Fingerprint("e" * 64, "f" * 64, "o/b"))
    history = tmp_path / "h.json"
    history.write_text(json.dumps({"history": ["Heat (1995)"]}))
    monkeypatch.setattr(adaptrec.api, "_backbone", lambda *a: pytest.fail("the backbone loaded"))
    line = _one_line_error(*run_cli(monkeypatch, capsys, "predict", "movie-lora", "--history", str(history), "--item",
                                    "Fargo (1996)", "--template", "bogus")[::2])
    assert "--template bogus" in line


def test_eval_score_and_predict_load_the_backbone_the_adapter_was_trained_on(monkeypatch, capsys, tmp_path):
    """As the Python functions do (was: the CLI passed the embedded 8-bit default, so an adapter trained on another
    backbone was refused, or loaded on another build with shifted scores)."""
    import adaptrec.api
    from adaptrec.config import load_recipe
    from adaptrec.data.prompts import instruction

    _, text = load_recipe("movie-lora", [f"backbone.name={tmp_path}", "backbone.quantization=none"])
    Registry().register(_fake_adapter(tmp_path), name="movie-lora", domain="movie", kind="trained",
                        adapter_type="lora", adapter_config=None, fingerprint=Fingerprint("e" * 64, "f" * 64, "o/b"),
                        recipe_text=text)

    def loaded(name, quantization):
        raise AdaptrecError(f"loads {name} {quantization}")

    monkeypatch.setattr(adaptrec.api, "_backbone", loaded)
    rec = {"instruction": instruction("movie"), "output": "Yes.",
           "input": 'User Preference: "A"\nUser Unpreference: \nWhether the user will like the target movie "B"?'}
    (tmp_path / "test.json").write_text(json.dumps([rec, {**rec, "output": "No."}]))
    (tmp_path / "h.json").write_text(json.dumps({"history": ["A"]}))
    data = str(tmp_path / "test.json")
    for args in (("eval", "movie-lora", "--data", data), ("score", "movie-lora", "--data", data, "--out",
                 str(tmp_path / "p.jsonl")), ("predict", "movie-lora", "--history", str(tmp_path / "h.json"),
                 "--item", "B")):
        line = _one_line_error(*run_cli(monkeypatch, capsys, *args)[::2])
        assert line == f"error: loads {tmp_path} none", args
    # its own backbone named: still its own build; another backbone: the default build, 8bit
    for named, build in ((str(tmp_path), "none"), ("embedded:gemma3-270m", "8bit")):
        line = _one_line_error(*run_cli(monkeypatch, capsys, "eval", "movie-lora", "--data", data, "--backbone",
                                        named)[::2])
        assert line == f"error: loads {named} {build}"


def test_gate_options_without_if_better_are_refused_not_ignored(monkeypatch, capsys, tmp_path):
    """`promote REF --data S --margin M` without --if-better promoted REF ungated, ignoring both."""
    reg = Registry()
    reg.register(_fake_adapter(tmp_path), name="movie-lora", domain="movie", kind="trained", adapter_type="lora",
                 adapter_config=None, fingerprint=Fingerprint("e" * 64, "f" * 64, "org/base"))
    line = _one_line_error(*run_cli(monkeypatch, capsys, "registry", "promote", "movie-lora", "--data",
                                    "feedback:movie", "--margin", "0")[::2])
    assert "--data, --margin: only the gate reads these; add --if-better" in line and reg.promoted("movie") is None
    line = _one_line_error(*run_cli(monkeypatch, capsys, "registry", "promote", "movie-lora", "--domain", "")[::2])
    assert "bad domain ''" in line and reg.promoted("movie") is None  # was: promoted for its own domain


def test_history_checks_its_domain_and_says_when_there_is_none(monkeypatch, capsys):
    line = _one_line_error(*run_cli(monkeypatch, capsys, "registry", "history", "")[::2])
    assert "bad domain ''" in line
    code, out, _ = run_cli(monkeypatch, capsys, "registry", "history", "garden")
    assert code == 0 and out.strip() == "no decisions recorded for domain 'garden'"


def test_history_lists_promotions_whose_evidence_is_no_whole_gate_test(monkeypatch, capsys, tmp_path):
    """`promote(..., evidence={"diff": 0.1})` (was: a KeyError traceback from `registry history`)"""
    reg = Registry()
    reg.register(_fake_adapter(tmp_path), name="movie-lora", domain="movie", kind="trained", adapter_type="lora",
                 adapter_config=None, fingerprint=Fingerprint("e" * 64, "f" * 64, "org/base"))
    reg.promote("movie-lora:1", "movie", evidence={"diff": 0.1})
    reg.promote("movie-lora:1", "books", evidence={"diff": 0.1, "ci_low": 0.0, "ci_high": 0.2})
    code, out, err = run_cli(monkeypatch, capsys, "registry", "history", "movie")
    assert code == 0 and "promote  movie-lora:1" in out and "diff" not in out, err
    code, out, err = run_cli(monkeypatch, capsys, "registry", "history", "books")
    assert code == 0 and "diff +0.1000 [+0.0000, +0.2000]" in out and "None" not in out, err


def test_flags_the_command_would_ignore_are_refused(monkeypatch, capsys, tmp_path):
    for args, needle in ((["export", "x", "--to-lora", "--out", str(tmp_path / "o")], "--out goes with --to"),
                         (["export", "x", "--to", "vllm", "--out", str(tmp_path / "o"), "--name", "n"],
                          "without --to-lora and --name")):
        assert needle in _one_line_error(*run_cli(monkeypatch, capsys, *args)[::2])


def test_output_paths_of_the_wrong_kind_are_named_before_any_work(monkeypatch, capsys, tmp_path):
    """`plot -o FOLDER` and `hub push --to FILE` failed with errno text naming an internal temp file (exit 1);
    `hub pull ''` read the current folder as a mirror."""
    (tmp_path / "afile").write_text("x")
    bench = Path(__file__).resolve().parents[2] / "bench" / "results" / "swap_latency.json"
    for out, words in ((tmp_path, "a folder; name the file to write"),
                       (tmp_path / "afile" / "x.png", f"{tmp_path / 'afile'} is a file, so no folder can be made")):
        line = _one_line_error(*run_cli(monkeypatch, capsys, "plot", "bench", str(bench), "-o", str(out))[::2])
        assert f"--out {out}: {words}" in line
    line = _one_line_error(*run_cli(monkeypatch, capsys, "hub", "push", "x", "--to", str(tmp_path / "afile"))[::2])
    assert "is a file" in line
    line = _one_line_error(*run_cli(monkeypatch, capsys, "hub", "pull", "")[::2])
    assert "give ORG/NAME[@REVISION]" in line


def test_an_eval_report_path_that_cannot_be_written_is_refused_before_the_evaluation(monkeypatch, capsys, tmp_path):
    """(was: the whole evaluation ran, then the write failed with exit 1)"""
    from adaptrec import api

    monkeypatch.setattr(api, "_backbone", lambda *a: pytest.fail("the backbone loaded before the refusal"))
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--data", "tallrec:movie:test", "--json-out", str(tmp_path))
    assert code == 2 and f"--json-out {tmp_path}: a folder" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--data", "tallrec:movie:test", "--json", str(tmp_path))
    assert code == 2 and "is neither a registered adapter" in err  # `--json` prints, as every command's does


def test_eval_json_prints_the_report_as_every_commands_json_prints(monkeypatch, capsys, tmp_path, tiny_model_dir):
    """`eval --json` took a path (the report's file) where every other command's `--json` prints JSON."""
    import json

    from synthetic import write_tallrec_files

    test = write_tallrec_files(tmp_path / "data", {"test": 6})["test"]
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--data", str(test), "--json", "--backbone",
                             str(tiny_model_dir), "-q", "none", "--limit", "0")
    report = json.loads(out)
    assert code == 0, err
    assert report["spec"] == str(test) and report["n"] == 6 and len(report["rows"]) >= 3  # baselines and backbone


def test_an_output_is_never_written_over_an_input(monkeypatch, capsys, tmp_path, tiny_model_dir):
    """`score --out` naming its data file wrote the scores over it, exit 0; `eval --json-out` naming its candidates file,
    and `plot -o` one of the files it draws, did the same (was); a plot named .txt got PNG bytes."""
    from synthetic import write_tallrec_files

    from adaptrec import api

    load = api._backbone
    monkeypatch.setattr(api, "_backbone", lambda *a: pytest.fail("the backbone loaded before the refusal"))
    test = write_tallrec_files(tmp_path / "data", {"train": 4, "valid": 4, "test": 4})["test"]
    before = test.read_bytes()
    code, _, err = run_cli(monkeypatch, capsys, "score", "--data", str(test), "--out", str(tmp_path / "data" / "."
                                                                                       / test.name))
    assert code == 2 and f"the input {test} itself" in err and test.read_bytes() == before
    (tmp_path / "p.jsonl.meta.json").mkdir()  # was: refused only once every case was scored, with errno 21
    code, _, err = run_cli(monkeypatch, capsys, "score", "--data", str(test), "--out", str(tmp_path / "p.jsonl"))
    assert code == 2 and "(its record" in err and "p.jsonl.meta.json): a folder" in err
    candidates = tmp_path / "c.jsonl"
    candidates.write_text("{}\n")
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--data", "amazon:office:test", "--candidates-file",
                           str(candidates), "--json-out", str(candidates))
    assert code == 2 and "the input" in err and candidates.read_text() == "{}\n"
    monkeypatch.setattr(api, "_backbone", load)
    sliced = ["eval", "--data", f"{test}[0:4]", "--json-out", str(test), "--backbone", str(tiny_model_dir), "-q",
              "none"]
    code, _, err = run_cli(monkeypatch, capsys, *sliced)  # the SPEC names the file only with a slice after it
    assert code == 2 and f"the input {test} itself" in err and test.read_bytes() == before
    grid = tmp_path / "grid.jsonl"
    grid.write_text("{}\n")
    for out, words in ((grid, "the input"), (tmp_path / "shots.txt", "name a .png file")):
        code, _, err = run_cli(monkeypatch, capsys, "plot", "shots", str(grid), "-o", str(out))
        assert code == 2 and words in err and grid.read_text() == "{}\n" and not (tmp_path / "shots.txt").exists()


@pytest.mark.parametrize("args, words", [
    (["eval", "--data", "tallrec:movie:test", "--encoder", "mf", "--no-encoders"], "--encoder mf and --no-encoders"),
    (["eval", "--data", "amazon:office:test", "--candidates", "5", "--candidates-file", "c.jsonl"],
     "--candidates 5 and --candidates-file"),
    (["export", "x", "--to", "bogus", "--out", "o"], "export --to bogus: the one target is vllm"),
])
def test_options_that_contradict_each_other_are_one_line(monkeypatch, capsys, args, words):
    """(was: accepted, one of them silently dropped; `--to bogus` was not named)"""
    from adaptrec import api

    monkeypatch.setattr(api, "_backbone", lambda *a: pytest.fail("the backbone loaded before the refusal"))
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and words in err and "Traceback" not in err


def test_json_output_writes_numpy_values_as_numbers(capsys):
    """numpy values were written as their text (`"0.5"`, `"[0 1 2]"`), which no reader takes for numbers."""
    import numpy as np

    from adaptrec.cli.options import echo_json

    echo_json({"score": np.float32(0.5), "ids": np.arange(3), "path": Path("a/b")})
    assert json.loads(capsys.readouterr().out) == {"score": 0.5, "ids": [0, 1, 2], "path": "a/b"}


@pytest.mark.parametrize("args", [["train", "no-such-recipe"], ["eval", "nope", "--data", "tallrec:movie:test"],
                                  ["score", "nope", "--data", "tallrec:movie:test", "--out", "p.jsonl"],
                                  ["predict", "nope", "--history", "h.json", "--item", "x"]])
def test_a_wrong_recipe_or_adapter_name_is_refused_before_peft_is_imported(tmp_path, args):
    """These imported peft and transformers (5-10 s) before looking the name up."""
    code = ("import sys\nfrom adaptrec.cli import main\nsys.argv = ['adaptrec', *sys.argv[1:]]\ntry:\n    main()\n"
            "except SystemExit as e:\n    print(e.code, 'peft' in sys.modules or 'transformers' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "ADAPTREC_HOME": str(tmp_path / "home")}, timeout=120, check=False)
    assert run.stdout.split() == ["2", "False"], run.stderr
    assert "no such recipe" in run.stderr or "neither a registered adapter" in run.stderr
