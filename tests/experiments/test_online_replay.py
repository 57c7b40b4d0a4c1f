"""experiments/online_replay.py: a results file resumes only under the settings its finished windows ran with."""

from __future__ import annotations

import pytest
from experiment_modules import online_replay

from adaptrec.errors import AdaptrecError


def test_a_results_file_resumes_only_under_its_own_settings():
    """(was: resumed whatever the constants said now, so windows trained under two step budgets shared one table
    whose protocol named the first)"""
    done = {"windows": [{"start": 0}], "steps": 32, "replay": 0.2, "margin": 0.005, "seed": 0, "recipe": "movie-lora",
            "sets": ["training.max_steps=32"], "machine": "elsewhere"}
    online_replay.check_resumable(done, {**done, "machine": "here"})  # where it runs is not a setting
    with pytest.raises(AdaptrecError, match="other steps, sets; move the file away"):
        online_replay.check_resumable(done, {**done, "steps": 16, "sets": ["training.max_steps=16"]})



@pytest.mark.parametrize("key", ["windows", "steps", "replay", "margin", "seed", "recipe", "sets"])
def test_every_resumed_setting_is_checked(key):
    """Each setting a later window would train or gate under: changed, it is named and the resume refused."""
    done = {"windows": [{"start": 0}], "steps": 32, "replay": 0.2, "margin": 0.005, "seed": 0, "recipe": "movie-lora",
            "sets": ["training.max_steps=32"]}
    with pytest.raises(AdaptrecError, match=f"other {key};"):
        online_replay.check_resumable(done, {**done, key: "changed"})



def test_a_results_file_resumes_only_under_the_scoring_its_windows_had():
    """(was: the resume overwrote the recorded backend and library versions, so windows scored under two torch
    versions shared one table naming the last)"""
    done = {"backend": "torch-int8", "torch": "2.13.0+cpu", "threads": 2, "cpu_count": 2}
    online_replay.check_same_scoring(done, {"backend": "torch-int8", "torch": "2.13.0+cpu"})  # more cores: fine
    with pytest.raises(AdaptrecError, match="another backend, torch; move the file away"):
        online_replay.check_same_scoring(done, {"backend": "bitsandbytes", "torch": "2.14.0+cpu"})
