"""Recipes: every shipped recipe validates; mistakes give one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adaptrec.config import RECIPES_DIR, load_recipe, recipe_digest, recipe_from_text
from adaptrec.errors import ConfigError
from adaptrec.home import data_root

SHIPPED = sorted(RECIPES_DIR.glob("*.yaml"))


def test_the_promised_recipes_ship():
    names = {p.stem for p in SHIPPED}
    assert {"movie-lora", "movie-adalora", "movie-prefix", "book-lora", "arts-lora", "office-lora"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipes_validate_and_document_themselves(path: Path):
    recipe, text = load_recipe(str(path))
    assert recipe.name == path.stem
    assert text.startswith("#") and "adaptrec train" in text  # header says how to run it


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((RECIPES_DIR / "movie-lora.yaml").read_text())
    mutate(raw)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, lambda r: r["training"].update(learning_rate=1e-3))
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert str(path) in _one_line(e) and "training.learning_rate" in str(e.value)


def test_wrong_type_names_key_and_value(tmp_path):
    path = _write(tmp_path, lambda r: r["training"].update(max_steps="many"))
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert "training.max_steps" in _one_line(e) and "'many'" in str(e.value)


def test_warmup_under_a_constant_schedule_is_refused_not_ignored(tmp_path):
    path = _write(tmp_path, lambda r: r["training"].update(scheduler="constant", warmup_steps=4))
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert "warmup_steps needs scheduler linear or cosine" in _one_line(e)


def test_unknown_adapter_type(tmp_path):
    path = _write(tmp_path, lambda r: r["adapter"].update(type="ia3"))
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert "adapter" in _one_line(e) and "ia3" in str(e.value)


def test_missing_recipe_file_lists_shipped_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_recipe(str(tmp_path / "nope.yaml"))
    assert "movie-lora" in _one_line(e)


def test_set_overrides_are_typed_and_recorded():
    recipe, text = load_recipe("movie-lora", ["training.lr=2e-4", "data.shots=16", "adapter.r=4"])
    assert recipe.training.lr == pytest.approx(2e-4) and recipe.data.shots == 16 and recipe.adapter.r == 4
    assert "# --set training.lr=2e-4" in text
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe("movie-lora", ["training.lr"])


def test_an_override_yaml_would_read_otherwise_is_refused_and_a_stored_one_still_reads():
    """`--set 'adapter.init_text=Movies you liked #watchlist'` trained on "Movies you liked" without a word."""
    from adaptrec.config import recipe_from_text

    for item, said in [("adapter.init_text=Movies you liked #watchlist", "'#watchlist' as a comment"),
                       ("adapter.init_text=#all of it", "'#all of it' as a comment"),
                       ("method={type: plain, type: joint}", "key 'type' appears twice")]:
        with pytest.raises(ConfigError) as e:
            load_recipe("movie-prefix", [item])
        assert said in _one_line(e) and repr(item) in _one_line(e)
    quoted, _ = load_recipe("movie-prefix", ['adapter.init_text="Movies you liked #watchlist and more"'])
    assert quoted.adapter.init_text == "Movies you liked #watchlist and more"
    plain, _ = load_recipe("movie-prefix", ["adapter.init_text=Movies#1 you liked", "training.lr=1e-4 "])
    assert plain.adapter.init_text == "Movies#1 you liked"  # no space before the #: no comment
    tagged, _ = load_recipe("movie-prefix", ["adapter.init_text=!Top picks for you"])  # no YAML: the text itself
    assert tagged.adapter.init_text == "!Top picks for you"
    stored = (RECIPES_DIR / "movie-lora.yaml").read_text() + "\n# --set training.lr=2e-4 # an old comment\n"
    assert recipe_from_text(stored).training.lr == pytest.approx(2e-4)  # a registered version still loads


def test_a_collab_projector_stage_as_long_as_the_run_is_refused():
    """The LoRA part's gradients are dropped for `projector_steps` steps: as many as the run has, it never trained."""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-collab", ["adapter.projector_steps=96", "training.max_steps=96"])
    assert "adapter.projector_steps 96 of training.max_steps 96: the LoRA part would never train" in _one_line(e)
    staged, _ = load_recipe("movie-collab", ["adapter.projector_steps=95", "training.max_steps=96"])
    assert staged.adapter.projector_steps == 95


def test_an_implicit_encoder_source_under_the_label_encoder_is_refused_with_the_recipe():
    """`fit_encoder` refused it only once the backbone had loaded, without naming `adapter.encoder`."""
    with pytest.raises(ConfigError) as e:
        load_recipe("office-collab", ["adapter.encoder=mf-bias"])
    assert ("office-collab.yaml: adapter: encoder mf-bias (the default) on encoder_data amazon: mf-bias learns "
            "like/dislike labels") in _one_line(e)


def test_sasrec_on_the_label_ordered_movielens_cases_is_refused_with_the_recipe():
    """(was: accepted by a collab recipe, though `train-cf` refused the pair: its cases are not in time order)"""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-collab", ["adapter.encoder=sasrec", "adapter.encoder_data=movielens:100k"])
    assert "encoder sasrec on encoder_data movielens:100k: sasrec reads a history in time order" in _one_line(e)
    _, text = load_recipe("movie-collab")  # a version trained before the check still reads
    stored = recipe_from_text(text + "# --set adapter.encoder=sasrec\n# --set adapter.encoder_data=movielens:100k\n")
    assert stored.adapter.encoder == "sasrec"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_override_each_recipe_shows_loads(path: Path):
    """Each header's `# Override:` example is a run a user can start (movie-joint's once set a ranking loss on one
    case per user, which every run refused)."""
    line = next(x for x in path.read_text().splitlines() if x.startswith("# Override:"))
    sets = line.split("--set ")[1:]
    assert sets and line.startswith(f"# Override:  adaptrec train {path.stem} --set ")
    recipe, _ = load_recipe(str(path), [s.strip() for s in sets])
    if recipe.method.type == "joint" and recipe.data.train.startswith("tallrec:"):
        if not (data_root() / "tallrec").is_dir():
            pytest.skip(f"no TALLRec data under {data_root()}: the method's own rules are not checked")
        from adaptrec.train.cases import training_cases
        from adaptrec.train.methods import check_method

        check_method(recipe, training_cases(recipe))  # the method's own data rules, as a run checks them first


def _refusal_of_movie_lora_plus(tmp_path: Path, tail: str) -> str:
    """The one-line error for the shipped movie-lora recipe with `tail` appended, as `mine.yaml`."""
    path = tmp_path / "mine.yaml"
    path.write_text((RECIPES_DIR / "movie-lora.yaml").read_text() + tail)
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    return _one_line(e)


def test_a_comment_that_reads_as_a_recorded_override_is_refused(tmp_path):
    """Read back from a registry row, `# --set training.max_steps=96` would change the settings the file trained."""
    line = _refusal_of_movie_lora_plus(tmp_path, "# --set training.max_steps=96\n")
    assert "mine.yaml line" in line and "reword it" in line


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntraining: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert "line" in _one_line(e)


def test_adapter_errors_use_the_key_users_wrote():
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", ["adapter.r=0"])
    assert "adapter.r:" in _one_line(e) and "adapter.lora" not in str(e.value)
    with pytest.raises(ConfigError) as e:  # a settings-wide check: the section, and the validator's own words
        load_recipe("movie-prefix", ["adapter.prefix_projection=true"])
    assert _one_line(e).endswith("movie-prefix.yaml: adapter: init: text sets the virtual key/values directly; "
                                 "with prefix_projection: true use init: random")


def test_recipe_digest_ignores_comments_and_keeps_overrides(tmp_path):
    """Editing a comment keeps the run folder and registry reuse; a changed setting or override does not."""
    recipe, text = load_recipe("movie-lora", ["data.shots=16"])
    edited = tmp_path / "movie-lora.yaml"
    edited.write_text("# a new comment\n" + (RECIPES_DIR / "movie-lora.yaml").read_text().replace("# rank", "# the rank"))
    same, _ = load_recipe(str(edited), ["data.shots=16"])
    assert recipe_digest(same) == recipe_digest(recipe)
    assert recipe_digest(recipe_from_text(text)) == recipe_digest(recipe)  # a registry row's text, overrides included
    assert recipe_digest(load_recipe("movie-lora", ["data.shots=32"])[0]) != recipe_digest(recipe)
    assert recipe_digest(load_recipe("movie-lora")[0]) != recipe_digest(recipe)


# A recipe's run folder and registry reuse go by its settings digest. A schema field added with a default that
# serializes changes every recipe's digest, so every resumed run would start over: leave such a field out of the
# dump while unset (as `DataSection` does with `protocol`). Editing a shipped recipe's settings updates its line here.
SHIPPED_DIGESTS = {
    "arts-lora": "75e85c722d", "arts-office-multitask": "10bea625a1", "book-lora": "91e3c6a2f7",
    "ml100k-collab": "f0bab32c63", "movie-adalora": "cd087e4fef", "movie-blend": "e9a9db845a",
    "movie-book-multitask": "cb30ca778c", "movie-collab": "488fab9be2", "movie-joint": "e3c840fa75",
    "movie-lora": "39d9b2aa60", "movie-prefix": "5bb6c7ff21", "movie-stats": "b51127adc8",
    "office-blend": "3853e34210", "office-collab": "d808e61c55", "office-distill": "8e60573003",
    "office-joint": "46f8313ad0", "office-lora": "ecd65a0513",
}


def test_the_shipped_recipes_keep_their_settings_digests():
    digests = {path.stem: recipe_digest(load_recipe(path.stem)[0])[:10] for path in SHIPPED}
    assert digests == SHIPPED_DIGESTS


def test_reuse_skips_registry_rows_whose_recipe_no_longer_validates():
    from types import SimpleNamespace

    from adaptrec.train.recipe import _settings

    recipe, text = load_recipe("movie-lora", ["data.shots=16"])
    assert _settings(SimpleNamespace(recipe_text=text, ref="movie-lora:1")) == recipe_digest(recipe)
    old_schema = text.replace("training:", "removed_section: 1\ntraining:", 1)
    assert _settings(SimpleNamespace(recipe_text=old_schema, ref="movie-lora:2")) is None


def test_reuse_takes_only_adapters_trained_here():
    """(was: a pulled adapter of the same name and recipe settings was reused instead of training one here)"""
    from types import SimpleNamespace

    from adaptrec.fingerprint import Fingerprint
    from adaptrec.train.recipe import _trained_with

    recipe, text = load_recipe("movie-lora")
    fp = Fingerprint("e" * 64, "f" * 64, "m")
    record = SimpleNamespace(kind="trained", recipe_text=text, lineage=None, fingerprint=fp, ref="movie-lora:1")
    assert _trained_with(record, recipe_digest(recipe), fp)
    assert not _trained_with(SimpleNamespace(**{**vars(record), "kind": "pulled"}), recipe_digest(recipe), fp)


def test_several_mistakes_are_each_named_with_key_and_value(tmp_path):
    """One line per mistake (up to five), never the first one plus a count; an unknown key is always named."""
    def mutate(r):
        r["training"].update(max_steps="many", lr=-1, learning_rate=1e-3)
        r["data"].update(shots=0)

    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    lines = str(e.value).splitlines()
    assert len(lines) == 4 and all(line.startswith(f"{path}: ") for line in lines)
    text = str(e.value)
    for key, value in (("training.max_steps", "'many'"), ("training.lr", "-1"), ("training.learning_rate", "0.001"),
                       ("data.shots", "0")):
        assert any(key in line and value in line for line in lines), (key, text)
    assert "more)" not in text


def test_more_than_five_mistakes_name_five_and_count_the_rest(tmp_path):
    path = _write(tmp_path, lambda r: r["training"].update({f"typo{i}": i for i in range(7)}))
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    lines = str(e.value).splitlines()
    assert len(lines) == 5 and lines[-1].endswith("(+2 more)")


def test_the_cli_prefixes_every_line_with_error(tmp_path, monkeypatch, capsys):
    from cli_runner import run_cli

    path = _write(tmp_path, lambda r: r["training"].update(max_steps="many", learning_rate=1e-3))
    code, _, err = run_cli(monkeypatch, capsys, "train", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 2
    assert all(line.startswith("error: ") for line in err.strip().splitlines()) and "Traceback" not in err


def test_a_collab_adapter_must_read_item_tokens():
    with pytest.raises(ConfigError) as e:
        load_recipe("ml100k-collab", ["data.template=tallrec"])
    assert str(e.value).endswith("data.template 'tallrec': a collab adapter reads item tokens, so use tallrec-items "
                                 "or chat-items")
    assert load_recipe("ml100k-collab", ["data.template=chat-items"])[0].data.template == "chat-items"


@pytest.mark.parametrize("setting, key", [("training.lr=.inf", "training.lr"), ("training.weight_decay=.nan",
                                          "training.weight_decay"), ("adapter.dropout=.nan", "adapter.dropout")])
def test_non_finite_numbers_are_refused(setting, key):
    """`lr: .inf` passed `gt=0` and trained on NaN."""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", [setting])
    assert f"{key}: Input should be a finite number" in _one_line(e)


def test_a_gradient_norm_may_not_be_negative():
    """A negative `max_grad_norm` flipped every gradient's sign: the adapter trained to raise the loss. 0 and null
    turn clipping off, as they did (a recipe stored with 0 still reads)."""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", ["training.max_grad_norm=-1"])
    assert "training.max_grad_norm: Input should be greater than or equal to 0" in _one_line(e)
    for off in ("0", "null"):
        assert not load_recipe("movie-lora", [f"training.max_grad_norm={off}"])[0].training.max_grad_norm


@pytest.mark.parametrize("setting, needle", [
    ("name=..", "movie-lora.yaml: bad adapter name '..'"), ("name=.hidden", "bad adapter name '.hidden'"),
    ("name=" + "x" * 129, "bad adapter name"), ("domain=a\tb", "movie-lora.yaml: bad domain 'a\\tb'"),
    ("domain=' '", "bad domain ' '")])
def test_a_name_or_domain_the_registry_refuses_is_refused_when_a_run_starts(setting, needle):
    """(was: accepted, refused by the registry only after the model loaded, trained and was evaluated); a stored
    recipe text is read as before"""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", [setting])
    assert needle in _one_line(e)
    assert recipe_from_text((RECIPES_DIR / "movie-lora.yaml").read_text() + "# --set name=a..b\n").name == "a..b"


@pytest.mark.parametrize("setting, key", [("training.lr=yes", "training: lr, max_steps: numbers"),
                                          ("data.shots=true", "data: shots: a number"),
                                          ("training.seed=no", "training: max_steps, seed: numbers"),
                                          ("adapter.r=true", "adapter: r: a number")])
def test_a_boolean_is_no_number_in_a_new_run(setting, key):
    """pydantic's lax mode read `lr: yes` as 1.0, `shots: true` as 1 and `seed: no` as 0; a stored recipe text that
    relied on it (`max_grad_norm: off`, no clipping) still reads, so its adapter still scores and gates."""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", [setting, "training.max_steps=yes"])
    assert f"{key} expected, not true/false" in str(e.value) and "max_steps" in str(e.value)
    stored = (RECIPES_DIR / "movie-lora.yaml").read_text() + "# --set training.max_grad_norm=off\n"
    assert recipe_from_text(stored).training.max_grad_norm == 0


def test_yaml_nested_past_the_parsers_depth_is_one_line_and_long_values_are_cut(tmp_path):
    """(was: a RecursionError traceback from inside PyYAML; a refused value echoed whole, kilobytes long)"""
    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * 600 + "]" * 600 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml: not valid YAML \\(nested too deeply\\)"):
        load_recipe(str(deep))
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", ["foo=" + "[" * 1000 + "]" * 1000])
    assert "foo: unknown key (got '[[[[" in _one_line(e) and "; from --set foo=…)" in _one_line(e)
    assert len(_one_line(e)) < 250
    with pytest.raises(ConfigError, match="not valid YAML"):
        recipe_from_text("x: " + "[" * 600 + "]" * 600)


@pytest.mark.parametrize("sets, said", [
    (["training.max_step=16"], ("training.max_step: unknown key (got 16; from --set training.max_step=…); did you "
                                "mean 'max_steps'?")),
    (["adapter.rr=3"], "adapter.rr: unknown key (got 3; from --set adapter.rr=…); did you mean 'r'?"),
    (["method={type: joint, rec_los: pairwise}"], ("method.rec_los: unknown key (got 'pairwise'; from --set "
                                                   "method=…); did you mean 'rec_loss'?")),
    (["traning.lr=1"], ("traning: unknown key (got {'lr': 1}; from --set traning.lr=…); did you mean "
                        "'training'?")),
])
def test_a_misspelt_key_names_the_override_and_the_closest_key(sets, said):
    """(was: "Extra inputs are not permitted" after the shipped recipe's path, as if the file held the typo)"""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", sets)
    assert _one_line(e).endswith(said)


def test_a_misspelt_recipe_name_gets_the_closest_shipped_one():
    with pytest.raises(ConfigError, match="^movie-lor: no such recipe file \\(did you mean 'movie-lora'\\? shipped"):
        load_recipe("movie-lor")


def test_an_empty_recipe_is_one_line(tmp_path):
    empty = tmp_path / "empty.yaml"  # was: one error line per missing section
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(str(empty))
    assert "empty.yaml: the recipe is empty" in _one_line(e)


def test_a_boolean_inside_a_mapping_of_numbers_is_no_number_either():
    """`method.weights: {office: yes}` read as a loss weight of 1.0"""
    multitask = ["method.type=multitask", "method.extra_train=[amazon:arts:train]"]
    with pytest.raises(ConfigError) as e:
        load_recipe("office-lora", [*multitask, "method.weights={office: yes}"])
    assert "method: weights: a number expected, not true/false" in _one_line(e)
    assert load_recipe("office-lora", [*multitask, "method.weights={office: 2}"])[0].method.weights == {"office": 2.0}


@pytest.mark.parametrize("key", ["data.seed", "training.seed", "evaluation.seed"])
def test_a_negative_seed_is_refused(key):
    """(was: accepted, then numpy's traceback: at the few-shot draw, at the first step or at the report)"""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", [f"{key}=-1"])
    assert f"{key}: Input should be greater than or equal to 0" in _one_line(e)


@pytest.mark.parametrize("key", ["data.seed", "training.seed", "evaluation.seed"])
def test_a_seed_past_what_every_generator_takes_is_refused(key):
    """(was: training.seed 2**64 accepted, then torch's overflow traceback once the backbone had loaded)"""
    assert load_recipe("movie-lora", [f"{key}={2**32 - 1}"])
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", [f"{key}={2**64}"])
    assert f"{key} {2**64}: at most 4294967295 (2**32 - 1)" in _one_line(e)
    stored = (RECIPES_DIR / "movie-lora.yaml").read_text() + f"\n# --set {key}={2**40}\n"
    assert recipe_from_text(stored)  # a version trained before the bound still loads, scores and updates


def test_an_override_with_a_line_break_is_refused():
    """Overrides are recorded one per `# --set` line: a line break wrote a YAML line of its own into the stored
    recipe (was: `method: {type: blend}` read back from a plain run's record)."""
    for item in ["adapter.init_text=Judge\nmethod: {type: blend}", "adapter.init_text=a\rb",
                 "adapter.init_text=Judge\u2028method: {type: blend}", "adapter.init_text=a\x85b", "a=b\x0c"]:
        with pytest.raises(ConfigError) as e:
            load_recipe("movie-prefix", [item])
        assert "holds a line break" in _one_line(e)


@pytest.mark.parametrize("recipe, sets, said", [
    ("movie-lora", ["backbone.quantization=4bit", "backbone.int8_backend=torch"],
     "backbone.int8_backend 'torch' picks the 8-bit kernels, and quantization '4bit' runs none"),
    ("movie-prefix", ["adapter.init=random", "adapter.init_text=Movies"],
     "adapter.init_text is read with init: text only"),
    ("movie-lora", ["data.negatives_per_positive=5"], "data.negatives_per_positive is read by implicit data"),
    ("movie-lora", ["data.template=tallrec-items"], "a lora adapter has none (it would read 'tallrec' prompts)"),
])
def test_a_setting_nothing_reads_is_refused(recipe, sets, said):
    """(was: accepted, changing the run folder and the record but not the run)"""
    with pytest.raises(ConfigError) as e:
        load_recipe(recipe, sets)
    assert said in _one_line(e)


def test_an_update_keeps_the_settings_its_parent_was_trained_with():
    """A version registered before these refusals updates as it was trained (was: refused, "drop it", which an
    update cannot do to its parent's recipe)."""
    from adaptrec.config import check_new_run

    stored = recipe_from_text((RECIPES_DIR / "movie-lora.yaml").read_text()
                              + "\n# --set data.negatives_per_positive=3\n# --set training.seed=1099511627776\n")
    check_new_run(stored, stored=True)
    with pytest.raises(ConfigError, match="data.negatives_per_positive is read by implicit data"):
        check_new_run(stored)


@pytest.mark.parametrize("sets", [["backbone.quantization=none"], ["adapter.init=random"],
                                  ["data.negatives_per_positive=3"], ["data.negatives_per_positive=1"]])
def test_the_same_settings_where_they_are_read_still_load(sets):
    recipe = "office-lora" if "data.negatives_per_positive=3" in sets else "movie-prefix"
    assert load_recipe(recipe, sets)


@pytest.mark.parametrize("section, types", [("method", "plain, joint, distill, multitask, blend"),
                                            ("adapter", "lora, adalora, prefix, collab")])
def test_a_section_without_its_type_says_to_name_one(tmp_path, section, types):
    """(was: "Unable to extract tag using discriminator 'type'")"""
    path = _write(tmp_path, lambda r: r.update({section: {"r" if section == "adapter" else "text_weight": 4}}))
    with pytest.raises(ConfigError) as e:
        load_recipe(str(path))
    assert _one_line(e).endswith(f"{section}: name its type first ({section}.type: one of {types})")


def test_a_warm_up_that_leaves_no_step_with_a_learning_rate_is_refused():
    """The schedule's first step has learning rate 0 (was: `max_steps 1` with the shipped `warmup_steps 2` trained
    nothing and registered the untrained adapter)."""
    with pytest.raises(ConfigError) as e:
        load_recipe("movie-lora", ["training.max_steps=1"])
    assert "set warmup_steps 0" in _one_line(e)
    assert load_recipe("movie-lora", ["training.max_steps=1", "training.warmup_steps=0"])
    with pytest.raises(ConfigError) as e:  # the rate would never reach training.lr (was: accepted)
        load_recipe("movie-lora", ["training.max_steps=2"])
    assert "warmup_steps 2 of max_steps 2: the learning rate would never reach training.lr" in _one_line(e)
    assert load_recipe("movie-lora", ["training.max_steps=3"])
    _, text = load_recipe("movie-lora")  # a version registered before the check, e.g. by `update --steps 1`
    assert recipe_from_text(text + "# --set training.max_steps=1\n").training.max_steps == 1  # still loads


@pytest.mark.parametrize("recipe, source", [("ml100k-collab", "movielens:100k"), ("movie-collab", "movielens:100k:loo")])
def test_a_collab_adapter_is_refused_an_encoder_whose_data_holds_its_valid_or_test_pairs(recipe, source):
    """(was: accepted; 914 of the 943 leave-one-out test pairs, or 968 of the 1000 TALLRec-window ones, were in the
    encoder's training data)"""
    sets = [f"adapter.encoder_data={source}", "adapter.encoder=als"]  # (sasrec reads movielens:100k in no time order)
    with pytest.raises(ConfigError) as e:
        load_recipe(recipe, sets)
    assert f"is not held out of adapter.encoder_data '{source}'" in _one_line(e)
    _, text = load_recipe(recipe)  # a version stored before the check still reads
    stored = recipe_from_text(text + "".join(f"# --set {s}\n" for s in sets))
    assert stored.adapter.encoder_data == source


def test_an_unquoted_no_precision_is_no(tmp_path):
    """YAML reads `mixed_precision: no` as false, which the Literal refused."""
    assert load_recipe("movie-lora", ["training.mixed_precision=no"])[0].training.mixed_precision == "no"
    path = tmp_path / "r.yaml"
    path.write_text((RECIPES_DIR / "movie-lora.yaml").read_text().replace("  seed: 0\n\nevaluation",
                                                                           "  seed: 0\n  mixed_precision: no\n\nevaluation"))
    assert load_recipe(str(path))[0].training.mixed_precision == "no"


def test_a_repeated_section_is_refused_not_merged(tmp_path):
    """PyYAML keeps the last copy: a second `training:` reset the first one's keys to their defaults."""
    line = _refusal_of_movie_lora_plus(tmp_path, "training:\n  lr: 2.0e-4\n")
    assert "mine.yaml line" in line and "key 'training' appears twice" in line
    line = _refusal_of_movie_lora_plus(tmp_path, "[lr]: 1\n")
    assert "mine.yaml line" in line and "a key must be a name" in line


def test_anchors_and_merge_keys_still_read_with_overrides():
    """The repeated-key check counts written keys only: a key a `<<: *anchor` merge brings may be overridden, as
    PyYAML's safe loader allows."""
    from adaptrec.config import _UniqueKeyLoader

    text = "a: &base\n  lr: 1\n  seed: 3\nb:\n  <<: *base\n  lr: 2\n"
    assert yaml.load(text, Loader=_UniqueKeyLoader) == yaml.safe_load(text) == \
        {"a": {"lr": 1, "seed": 3}, "b": {"lr": 2, "seed": 3}}
    with pytest.raises(yaml.YAMLError, match="key 'lr' appears twice"):
        yaml.load("b:\n  lr: 1\n  lr: 2\n", Loader=_UniqueKeyLoader)


def test_a_refused_value_of_nested_yaml_aliases_is_named_without_being_spelt_out():
    """A few hundred bytes of aliases nested N deep spell a value of 9^N items: its whole repr, built for the error
    line, took minutes and gigabytes at 10 levels (a pulled recipe is read whenever its adapter is scored)."""
    import tracemalloc

    levels = ["- &a0 [x, x, x, x, x, x, x, x, x]"] + [f"- &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                     for i in range(1, 8)]
    text = "anchors:\n" + "".join(f"  {line}\n" for line in levels) + (RECIPES_DIR / "movie-lora.yaml").read_text()
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as e:
            recipe_from_text(text.replace("name: movie-lora", "name: *a7", 1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "name: Input should be a valid string (got [[[[" in str(e.value) and len(str(e.value)) < 1000
    assert peak < 20 * 2**20  # was: the whole repr, about 200 MB here, cut to 80 characters afterwards


def test_every_shipped_recipe_has_a_description_and_a_row_in_the_training_guide():
    """`adaptrec recipes list` prints each recipe's first comment line; docs/training.md's table names each."""
    from adaptrec.config import recipe_summaries, shipped_recipes

    summaries = recipe_summaries()
    assert list(summaries) == shipped_recipes() and all(summaries.values())
    assert summaries["movie-lora"] == "a LoRA adapter for TALLRec's MovieLens-100K task on the frozen 8-bit SmolLM2."
    guide = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert [name for name in summaries if f"`{name}`" not in guide] == []
