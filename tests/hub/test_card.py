"""The model card's metadata and Data section, built from an adaptrec.json alone (no Hub)."""

from __future__ import annotations

import yaml

from adaptrec.hub.card import card_metadata, model_card

META = {
    "name": "movie-lora", "domain": "movie", "adapter_type": "lora",
    "base": {"exact": "e" * 64, "family": "f" * 64, "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "metrics": {"auc": {"value": 0.6, "data": "/home/me/data/valid.json[0:100]", "limit": None},
                "ndcg@10": {"value": 0.4, "data": "movielens:100k:test", "limit": 50},
                "hit@10": {"value": 0.5, "data": "/home/me/logs/events.jsonl", "limit": None}},
}


def test_no_datasets_key_and_the_task_type_is_the_pipeline_tag():
    meta = card_metadata(META)
    assert "datasets" not in meta
    tasks = {r["task"]["type"] for r in meta["model-index"][0]["results"]}
    assert tasks == {meta["pipeline_tag"]}


def test_the_data_section_says_what_each_source_is_without_local_paths():
    card = model_card(META, "alice/movie-lora", "main")
    assert yaml.safe_load(card.split("---\n")[1])["pipeline_tag"] == "text-generation"
    data = card.split("## Data\n\n")[1].split("\n\n")[0].splitlines()
    assert data == ["- `events.jsonl`: the publisher's own interaction log",
                    "- `movielens:100k`: TALLRec's movie prompts rebuilt from MovieLens-100K (GroupLens), with real "
                    "user and item ids",
                    "- `valid.json`: the publisher's own TALLRec-style file"]
    assert "/home/me" not in card


def test_no_metrics_no_data_section():
    assert "## Data" not in model_card({**META, "metrics": {}}, "alice/movie-lora", "main")


def test_any_recipe_text_gives_a_card_and_only_a_named_template_is_said():
    """A pulled adapter's recipe is its publisher's text (was: `data: x` raised AttributeError at the next push)."""
    for recipe in ("data: x\n", "data: [1, 2]\n", "- a\n", "data: {template: 3}\n", "{bad", "",
                   "data: {template: '`<script>`'}\n", "x: " + "[" * 600 + "]" * 600):  # none adaptrec knows
        assert "prompt template" not in model_card({**META, "recipe": recipe}, "alice/movie-lora", "main")
    card = model_card({**META, "recipe": "data: {template: chat}\n"}, "alice/movie-lora", "main")
    assert "trained with the `chat` prompt template" in card


def test_a_compositions_card_names_the_template_its_lineage_records_of_its_sources():
    """A composition has no recipe; it is served in its sources' prompt (was: the card always said `tallrec`)."""
    lineage = {"method": "cat", "parents": ["a:1", "b:1"], "prompt": {"template": "chat", "max_prompt_tokens": 512}}
    card = model_card({**META, "lineage": lineage}, "alice/movie-cat", "main")
    assert "trained with the `chat` prompt template" in card
    for odd in ({"prompt": {"template": "`x`"}}, {"prompt": "chat"}, ["chat"]):  # a publisher's lineage, unchecked
        assert "prompt template" not in model_card({**META, "lineage": odd}, "alice/movie-cat", "main")


def test_the_card_says_how_the_adapter_came_to_be_from_its_kind():
    """(was: "trained with adaptrec on a frozen base model" for every adapter, a composition and an export too)"""
    def said(**meta) -> str:
        return model_card({**META, **meta}, "alice/m", "main").split("## Base model")[0]

    assert "recommendation, trained with adaptrec on a frozen base model." in said(kind="trained")
    assert "trained with adaptrec" in said()  # an adaptrec.json without a kind: as before
    composed = said(kind="composed", lineage={"parents": ["a:1", "b:2"], "method": "linear", "weights": [0.5, 0.5]})
    assert ("recommendation, composed by adaptrec from `a:1`, `b:2` (method `linear`) on a frozen base model, "
            "without training of its own.") in composed
    export = said(kind="composed", lineage={"parents": ["movie-adalora:1"], "method": "adalora_to_lora"})
    assert "the exact plain-LoRA form of `movie-adalora:1` (`adalora_to_lora`), exported by adaptrec." in export
    pulled = said(kind="pulled", lineage={"parents": ["theirs:3"], "method": "linear"})
    assert "made by another publisher, pulled with adaptrec and published again unchanged." in pulled
    for text in (composed, export, pulled):
        assert "trained with adaptrec" not in text
    for odd in (["a:1"], {"parents": "a:1", "method": "`x`"}, {"parents": [1]}):  # no lineage adaptrec writes
        assert "composed by adaptrec from registered adapters on" in said(kind="composed", lineage=odd)


def test_a_backbone_typed_as_a_relative_folder_is_not_published_as_a_hub_id(tiny_model_dir, tmp_path, monkeypatch):
    """`--backbone models/tiny` (a local folder) was recorded as `models/tiny`, which reads as a Hub id: the card's
    `base_model` and the pushed `base_model_name_or_path` pointed at a repo that is not the base."""
    from adaptrec.backbone import resolve_source
    from adaptrec.hub.common import is_repo_id

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    folder, base_model = resolve_source("models/tiny")
    assert folder == tiny_model_dir.resolve() and base_model == str(tmp_path / "models" / "tiny")
    assert not is_repo_id(base_model)
    assert "base_model" not in card_metadata({**META, "base": {**META["base"], "base_model": base_model}})


def _pull_line(card: str) -> str:
    return next(line for line in card.splitlines() if line.startswith("adaptrec hub pull "))


def test_the_card_s_pull_command_names_the_backbone_the_adapter_was_made_for():
    """(was: no --backbone, so the card's own command was refused for any base but the embedded SmolLM2)"""
    def card(base: str) -> str:
        return model_card({**META, "base": {**META["base"], "base_model": base}}, "alice/m", "main")

    assert _pull_line(card("HuggingFaceTB/SmolLM2-135M-Instruct")).startswith("adaptrec hub pull alice/m@main   ")
    assert "adaptrec hub pull alice/m@main --backbone Qwen/Qwen2.5-0.5B-Instruct " in card("Qwen/Qwen2.5-0.5B-Instruct")
    assert "--backbone embedded:gemma3-270m " in _pull_line(card("google/gemma-3-270m"))
    assert "--backbone PATH_TO_THE_BASE_MODEL " in _pull_line(card("<local>/tiny"))


def test_a_gemma_derivative_s_card_carries_the_gemma_license_id():
    """(was: no `license` in the front matter, though the body says the Gemma terms apply)"""
    assert "license" not in card_metadata(META)
    gemma = {**META, "base": {**META["base"], "base_model": "google/gemma-3-270m"}}
    assert card_metadata(gemma)["license"] == "gemma"
    distilled = {**META, "derived_from": ["HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"]}
    assert card_metadata(distilled)["license"] == "gemma"  # a student of a Gemma teacher


def test_a_domain_in_another_script_gets_no_empty_domain_tag():
    assert not any(t.startswith("domain") for t in card_metadata({**META, "domain": "映画"})["tags"])
    assert "domain-movie" in card_metadata(META)["tags"]
