"""The Python API: `import adaptrec` stays light, and the README's Python block runs verbatim on the tiny model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthetic import write_tallrec_files

import adaptrec
from adaptrec import api
from adaptrec.backbone import EMBEDDED
from adaptrec.config import RECIPES_DIR

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_adaptrec_loads_no_torch_and_exports_the_api_lazily():
    code = "import sys, adaptrec; assert 'torch' not in sys.modules, 'torch imported'; print(callable(adaptrec.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
    assert set(adaptrec.__all__) >= {"train", "load", "evaluate", "compose", "registry"}
    assert api.EMBEDDED == EMBEDDED


def test_every_public_api_function_is_exported_and_subpackages_named_like_one_call_it(monkeypatch):
    """The README says each command has its `adaptrec.X`; `serve`, like `train`, is also a subpackage."""
    import inspect

    public = {n for n, f in inspect.getmembers(api, inspect.isfunction) if f.__module__ == api.__name__
              and not n.startswith("_")} - {"parse_exploration"}  # a helper of `serve`'s option, not a command
    assert public <= set(adaptrec.__all__), public - set(adaptrec.__all__)
    monkeypatch.setattr(api, "serve", lambda *a, **k: ("served", a, k))
    assert adaptrec.serve("x:1", port=1) == ("served", ("x:1",), {"port": 1})
    from adaptrec.serve import Engine  # still a package

    assert Engine.__name__ == "Engine"


def _readme_python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README has one Python block; this test runs it"
    return blocks[0]


def test_the_readme_python_block_runs_verbatim(tiny_model_dir, tmp_path, monkeypatch, capsys):
    data = write_tallrec_files(tmp_path / "data", {"train": 24, "valid": 16, "test": 48})
    raw = yaml.safe_load((RECIPES_DIR / "movie-lora.yaml").read_text())
    raw["backbone"] = {"name": str(tiny_model_dir), "quantization": "none"}
    raw["data"].update({k: str(v) for k, v in data.items()}, shots=16, max_prompt_tokens=256)
    raw["training"].update(batch_size=4, grad_accum=1, eval_every=4, val_limit=8, checkpoint_every=4)
    raw["evaluation"]["limit"] = 40
    (tmp_path / "my-recipe.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))

    exec(compile(_readme_python_block(), "README.md", "exec"), {})

    out = capsys.readouterr().out
    assert "movie-lora" in out and "dry run: nothing trained" in out
    assert re.search(r"\[\('(Casino|Babe|Ran) \(\d{4}\)', 0\.\d+\), \('", out)  # rank: (title, score) pairs
    assert "['movie-lora:1']" in out
    assert adaptrec.registry().promoted("movie").ref == "movie-lora:1"


def test_load_defaults_to_the_backbone_the_adapter_was_trained_on(tiny_model_dir, tmp_path, monkeypatch):
    recipe = yaml.safe_dump({"backbone": {"name": str(tiny_model_dir), "quantization": "none"}})
    monkeypatch.setattr(api, "registry", lambda home=None: _Registry(recipe))
    assert api._made_for(["x"], None, None) == (str(tiny_model_dir), "none")
    assert api._made_for(["x"], None, "8bit") == (str(tiny_model_dir), "8bit")
    assert api._made_for(["x"], "other", None) == ("other", "8bit")
    assert api._made_for([], None, None) == (EMBEDDED, "8bit")


def test_a_pulled_adapters_recipe_never_chooses_the_backbone_a_command_downloads(monkeypatch):
    """A publisher's recipe naming `attacker/model` made `eval`, `load`, `score`, `drift` and the gate download and run
    that model (a family-mates's build, the adapter then an exact match): the backbone its pull was checked against."""
    recipe = yaml.safe_dump({"backbone": {"name": "attacker/model", "quantization": "none"}})
    checked = {"checked_on": {"backbone": "embedded:gemma3-270m", "quantization": "4bit"}}
    monkeypatch.setattr(api, "registry", lambda home=None: _Registry(recipe, kind="pulled", origin=checked))
    assert api._made_for(["x"], None, None) == ("embedded:gemma3-270m", "4bit")
    assert api._made_for(["x"], "other", None) == ("other", "8bit")
    monkeypatch.setattr(api, "registry", lambda home=None: _Registry(recipe, kind="pulled", origin={}))
    assert api._made_for(["x"], None, None) == (EMBEDDED, "8bit")  # pulled before the pull recorded it


class _Registry:
    """Just enough registry for `_made_for`: one record whose recipe names a backbone section only."""

    def __init__(self, recipe_backbone: str, kind: str = "trained", origin: dict | None = None):
        base = (RECIPES_DIR / "movie-lora.yaml").read_text().split("backbone:")[0]
        rest = (RECIPES_DIR / "movie-lora.yaml").read_text().split("adapter:", 1)[1]
        self.text, self.kind, self.origin = base + recipe_backbone + "adapter:" + rest, kind, origin

    def resolve(self, ref):
        from adaptrec.registry.records import AdapterRecord

        return type("R", (), {"ref": "x:1", "recipe_text": self.text, "kind": self.kind, "origin": self.origin,
                              "lineage": None, "pulled_backbone": AdapterRecord.pulled_backbone,
                              "checked_on": AdapterRecord.checked_on})()

    def promoted(self, domain):
        return None


def test_subpackages_named_like_api_functions_stay_callable(tmp_path):
    import adaptrec.registry.store  # noqa: F401  (binds adaptrec.registry to the package)
    import adaptrec.train.loop  # noqa: F401

    assert callable(adaptrec.train) and adaptrec.train.loop.Trainer
    assert isinstance(adaptrec.registry(tmp_path / "reg"), adaptrec.registry.Registry)


def test_a_pulled_backbone_is_recorded_as_any_folder_loads_it_and_passes_to_an_export(tiny_model_dir, tmp_path,
                                                                                     monkeypatch):
    """`--backbone models/tiny` was recorded as typed, which another folder reads as the Hub id `models/tiny`; the
    LoRA export of a pulled AdaLoRA adapter (kind composed) read its publisher's recipe for the backbone again."""
    from router_helpers import register_random

    from adaptrec.hub.pulling import _as_loaded
    from adaptrec.registry import Registry
    from adaptrec.registry.derive import register_lora_export

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    assert _as_loaded("models/tiny") == str(tmp_path / "models" / "tiny") and _as_loaded("org/name") == "org/name"
    registry = Registry(tmp_path / "home")
    made = register_random(tiny_model_dir, registry, "ada", {"type": "adalora", "init_r": 4, "target_r": 2}, seed=1)
    checked = {"backbone": str(tiny_model_dir), "quantization": "none"}
    pulled = registry.register(made.path, name="ada-pulled", domain="arts", kind="pulled", adapter_type="adalora",
                               adapter_config=None, fingerprint=made.fingerprint,
                               origin={"source": "mirror", "repo": "/m/ada", "revision": "v1", "checked_on": checked})
    exported = register_lora_export(registry, pulled.ref)
    assert exported.kind == "composed" and exported.pulled_backbone(EMBEDDED) == (str(tiny_model_dir), "none")
    assert made.pulled_backbone(EMBEDDED) is None


def test_a_resume_with_nothing_to_resume_says_so(tiny_model_dir, tmp_path):
    """A resume without the overrides of the run it meant to continue trained another run from step 0 without a
    word."""
    import warnings

    from train_worker import tiny_recipe_file

    from adaptrec.train.recipe import NothingToResumeWarning

    path = tiny_recipe_file(tmp_path, str(tiny_model_dir), 1, {"train": 8, "valid": 8, "test": 8})
    with pytest.warns(NothingToResumeWarning, match="nothing to resume in .*training from step 0"):
        adaptrec.train(str(path), resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NothingToResumeWarning)
        assert adaptrec.train(str(path), resume=True).record.ref == "tiny:1"  # the finished run: nothing said


def test_route_recommend_and_compose_load_the_backbone_their_adapters_were_trained_on(tiny_model_dir, monkeypatch):
    """They loaded embedded:smollm2 at 8bit unless told otherwise: an adapter trained on another backbone was refused
    as made for another model (was), though eval, score and predict loaded its own."""
    from router_helpers import register_random

    recipe = _Registry(yaml.safe_dump({"backbone": {"name": str(tiny_model_dir), "quantization": "none"}})).text
    reg = adaptrec.registry()
    lora = {"type": "lora", "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    for name in ("arts-lora", "arts-b"):
        register_random(tiny_model_dir, reg, name, lora, seed=1, recipe_text=recipe)
    reg.promote("arts-lora:1", "arts")
    import adaptrec.backbone as backbone_mod

    loaded, real = [], backbone_mod.backbone_fingerprint
    monkeypatch.setattr(backbone_mod, "backbone_fingerprint", lambda b, q: loaded.append((b, q)) or real(b, q))
    decision = adaptrec.route("u1", "arts", history=["Heat (1995)"] * 4)
    assert decision.adapters == ("arts-lora:1",) and loaded == [(str(tiny_model_dir), "none")]
    result = adaptrec.compose("arts-lora,arts-b", name="both", method="linear")  # (was: refused, another base)
    assert result.record.fingerprint == reg.resolve("arts-lora:1").fingerprint


def test_a_composition_loads_on_the_backbone_its_sources_were_trained_on(tiny_model_dir, monkeypatch):
    """A composition records no recipe: routing to it, loading it and composing from it loaded embedded:smollm2 at
    8bit, which then refused it as made for another model (was)."""
    from router_helpers import register_random

    recipe = _Registry(yaml.safe_dump({"backbone": {"name": str(tiny_model_dir), "quantization": "none"}})).text
    reg = adaptrec.registry()
    lora = {"type": "lora", "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    for name, domain in (("arts-lora", "arts"), ("office-lora", "office")):
        register_random(tiny_model_dir, reg, name, lora, seed=1, domain=domain, recipe_text=recipe)
    adaptrec.compose("arts-lora,office-lora", name="ao", method="cat", domain="garden", promote_cold=True)
    adaptrec.compose("arts-lora,office-lora", name="ao-mix", method="mix", domain="garden")
    made = (str(tiny_model_dir), "none")
    for ref in ("ao", "ao-mix"):
        assert api._made_for([ref], None, None) == made
    assert api._champion_made_for(reg, "garden", None, None) == made
    decision = adaptrec.route("u1", "garden", history=["Heat (1995)"])
    assert decision.adapters == ("ao:1",)
    again = adaptrec.compose("ao,arts-lora", name="ao-arts", method="cat", domain="garden")
    assert api._made_for([again.record.ref], None, None) == made  # a composition of a composition
    reg.remove("ao-arts:1")
    reg.remove("ao:1", force=True)
    reg.remove("arts-lora:1", force=True)
    assert api._made_for(["ao-mix"], None, None) == (EMBEDDED, "8bit")  # its first source is gone: the default


def test_train_cf_validates_every_seed_on_the_same_candidate_lists(monkeypatch):
    """`train-cf --seed` drew the validation candidates with the fit's seed: fits at two seeds were compared on two
    draws of negatives (NDCG@10 0.304 against 0.307 for one and the same BPR fit)."""
    import adaptrec.cf.evaluate as evaluate_mod
    import adaptrec.cf.fit as fit_mod

    seen = []
    monkeypatch.setattr(fit_mod, "fit_encoder", lambda *a: type("F", (), {"encoder": None})())
    monkeypatch.setattr(evaluate_mod, "validation_metrics", lambda enc, data, seed=0: seen.append(seed) or 1 / 0)
    for seed in (0, 5):
        with pytest.raises(ZeroDivisionError):
            api.train_cf("bpr", data="amazon", seed=seed)
    assert seen == [0, 0]
