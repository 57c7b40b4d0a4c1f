"""The recipe job: resuming a finished run keeps the version it registered; a restart registers the next."""

from __future__ import annotations

import json

import yaml
from synthetic import write_tallrec_files
from train_worker import tiny_recipe

from adaptrec.config import load_recipe
from adaptrec.registry import Registry
from adaptrec.train.recipe import run_recipe


def test_resuming_a_finished_run_registers_no_new_version(tiny_model_dir, tmp_path):
    files = write_tallrec_files(tmp_path / "data", {"train": 8, "valid": 4, "test": 4})
    recipe = tiny_recipe(str(tiny_model_dir), 1, eval_every=1).model_dump(mode="json")
    recipe["data"].update(train=str(files["train"]), valid=str(files["valid"]), test=str(files["test"]), shots=None)
    recipe["evaluation"] = {"limit": None, "batch_size": 4}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    parsed, text = load_recipe(str(path))
    first = run_recipe(parsed, text, resume=True).record
    again = run_recipe(parsed, text, resume=True)
    assert again.record.ref == first.ref and again.report.rows[-1].name.startswith(first.ref)
    assert [r.ref for r in Registry().list(name=first.name)] == [first.ref]
    config = again.train.adapter_dir / "adapter_config.json"  # the run's best adapter now differs from the record's
    config.write_text(json.dumps({**json.loads(config.read_text()), "lora_alpha": 3}))
    assert run_recipe(parsed, text, resume=True).record.version == first.version + 1
    assert run_recipe(parsed, text, restart=True).record.version == first.version + 2
