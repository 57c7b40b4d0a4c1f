"""experiments/demo.py: README.md's quickstart table from the demo's stored run."""

from __future__ import annotations

from experiment_modules import demo


def test_the_readme_table_says_what_ran_how_long_and_each_rows_auc():
    auc = {"value": 0.606, "ci_low": 0.53, "ci_high": 0.681, "n": 200}
    doc = {"command": "adaptrec demo --limit 200", "spec": "tallrec:movie:test", "cases": 200, "seconds": 270.0,
           "machine": "x86_64, 2 cores, torch threads 2", "rows": [{"name": "movie-lora:1", "auc": auc},
                                                                     {"name": "no ci", "auc": {**auc, "ci_low": None}}],
           "environment": {"backend": "torch-int8", "device": "cpu", "dtype": "float32"}}
    text = demo.render(doc)
    assert "took 4.5 minutes on x86_64, 2 cores, torch threads 2 (torch-int8 backend, cpu, float32" in text
    assert "| movie-lora:1 | 0.606 [0.530, 0.681] |" in text and "| no ci | 0.606 |" in text
