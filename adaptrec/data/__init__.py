"""Data layer: interaction logs and benchmark files -> `Case`s -> prompts. See docs/data.md."""

from .candidates import (
    CandidateList,
    candidate_cases,
    make_candidate_lists,
    read_candidates,
    with_sampled_negatives,
    write_candidates,
)
from .inspect import inspect_spec
from .prompts import ANSWERS, TEMPLATES, instruction, render_input, render_prompt, truncate_history
from .records import Case, HistoryItem
from .sampling import few_shot, stratified_subset
from .spec import DataSet, load_spec

__all__ = [
    "ANSWERS", "TEMPLATES", "Case", "CandidateList", "DataSet", "HistoryItem", "candidate_cases",
    "few_shot", "inspect_spec", "instruction", "load_spec", "make_candidate_lists", "read_candidates",
    "render_input", "render_prompt", "stratified_subset", "truncate_history", "with_sampled_negatives",
    "write_candidates",
]
