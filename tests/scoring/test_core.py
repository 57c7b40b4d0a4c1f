"""The one scoring path: answer tokens, batch independence, score modes, the resumable cache."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from router_helpers import tiny_gemma

from adaptrec.data.prompts import answer_token_ids
from adaptrec.data.records import Case, HistoryItem
from adaptrec.score_cache import ScoreCache
from adaptrec.scoring.core import SCORING_VERSION, Scorer
from adaptrec.scoring.logits import to_scores


def _cases(n: int) -> list[Case]:
    titles = ["Heat (1995)", "Jumanji (1995)", "Toy Story (1995)", "Casino (1995)", "Fargo (1996)", "Babe (1995)"]
    out = []
    for i in range(n):
        hist = tuple(HistoryItem(f'"{t}"', liked=(i + j) % 3 != 0) for j, t in enumerate(titles[: 1 + i % len(titles)]))
        out.append(Case(f"u{i}", "movie", "movie", hist, f'"{titles[(i * 5) % len(titles)]}"', label=i % 2))
    return out


def test_answer_tokens_come_from_the_tokenizer(tiny_backbone):
    tok = tiny_backbone.tokenizer
    yes, no = answer_token_ids(tok)
    assert tok.decode([yes]).strip() == "Yes" and tok.decode([no]).strip() == "No"


def _llama_like(text: str, add_special_tokens: bool = False) -> SimpleNamespace:
    """A Llama-style SentencePiece tokenizer: `▁Yes` 1, `.` 2, `▁` 3, newline 4, `Yes` 5, `▁No` 6, `No` 7."""
    pieces = {"Yes.": [1, 2], "No.": [6, 2], "\n": [3, 4], "\nYes.": [3, 4, 5, 2], "\nNo.": [3, 4, 7, 2]}
    return SimpleNamespace(input_ids=pieces[text])


def test_answer_tokens_are_those_that_follow_the_prompts_newline():
    """A Llama-style SentencePiece tokenizer marks a word that starts a text (`▁Yes`) but not one after a newline
    (`Yes`, the token TALLRec scores); the answer tokens were read from "Yes." alone, so the marked ones."""
    assert answer_token_ids(_llama_like) == (5, 7)


def test_rows_cached_on_the_answers_start_of_text_tokens_stay_unread(tiny_backbone):
    """Scorers once read the answers' tokens from "Yes." alone (Llama's `▁Yes`): a tokenizer whose tokens after the
    prompt's newline differ keys its rows apart, so a cache filled then is not read as the newline reading's rows. A
    tokenizer whose two readings agree (SmolLM2's, Gemma's) keeps its keys."""
    plain = Scorer(tiny_backbone.model, tiny_backbone.tokenizer, "m", progress=False)
    llama = Scorer(tiny_backbone.model, _llama_like, "m", progress=False)
    assert (llama.yes_id, llama.no_id) == (5, 7)
    assert llama.cache_keys(["p"]) != plain.cache_keys(["p"])
    assert plain.cache_keys(["p"]) == [ScoreCache.key(f"m:full:v{SCORING_VERSION}", "p")]


@pytest.mark.parametrize("positions", ["rotary", "absolute"])
def test_score_does_not_depend_on_batch_mates(tiny_backbone, positions):
    """Left padding + padding-aware position ids: one prompt alone or in a mixed-length batch scores the same. Llama's
    rotary positions see only offsets, which the padding shifts alike; GPT-2's learned absolute ones see each."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok, cases = tiny_backbone.tokenizer, _cases(6)
    torch.manual_seed(0)
    model = tiny_backbone.model if positions == "rotary" else GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=1024)).eval()
    alone = [Scorer(model, tok, "k", batch_size=1, progress=False).score([c])[0] for c in cases]
    batched = Scorer(model, tok, "k", batch_size=6, progress=False).score(cases)
    assert len({len(p) for p in Scorer(model, tok, "k").prompts(cases)}) > 1
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_scores_follow_input_order_despite_length_sorting(tiny_backbone):
    cases = _cases(5)
    s = Scorer(tiny_backbone.model, tiny_backbone.tokenizer, "k", batch_size=2, progress=False)
    forward = s.score(cases)
    backward = s.score(cases[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)


def test_non_finite_scores_are_one_line_refusals(tiny_backbone):
    """A diverged adapter's NaN scores reached eval, the gate and drift, whose metrics failed on them with a
    traceback ("scores contain NaN")."""
    from adaptrec.errors import AdaptrecError

    s = Scorer(tiny_backbone.model, tiny_backbone.tokenizer, "k", progress=False)
    s.logits_for_prompts = lambda prompts: np.array([[np.nan, 0.0, 0.0]] + [[1.0, 0.0, 0.0]] * (len(prompts) - 1))
    for call in (lambda: s.score(_cases(3)), lambda: s.score_lists([_cases(3)])):
        with pytest.raises(AdaptrecError, match="^the model gave 1 of 3 scores that are not finite numbers") as e:
            call()
        assert "\n" not in str(e.value)


def test_score_modes_match_their_definitions(tiny_backbone):
    s = Scorer(tiny_backbone.model, tiny_backbone.tokenizer, "k", progress=False)
    cases = _cases(3)
    logits3 = s.logits_for_prompts(s.prompts(cases))
    batch = s.prompts(cases[:1])
    with torch.inference_mode():
        ids = tiny_backbone.tokenizer(batch, return_tensors="pt")
        full = tiny_backbone.model(**ids).logits[0, -1].float()
    probs = torch.softmax(full, -1)
    # pyes: two-way softmax over the answer logits
    expected_pyes = torch.softmax(full[[s.yes_id, s.no_id]], -1)[0].item()
    assert to_scores(logits3, "pyes")[0] == pytest.approx(expected_pyes, abs=1e-5)
    # tallrec: TALLRec's softmax over [P(Yes), P(No)] taken from the full-vocabulary softmax
    expected_tallrec = torch.softmax(probs[[s.yes_id, s.no_id]], -1)[0].item()
    assert to_scores(logits3, "tallrec")[0] == pytest.approx(expected_tallrec, abs=1e-6)
    with pytest.raises(ValueError, match="score mode"):
        to_scores(logits3, "bogus")


def test_confident_answers_keep_their_order_in_float32_logits():
    """The shared-prefix path and the server hand float32 logits over: above a margin of about 17 every P(yes) was
    1.0, ties that ranking metrics count against the target."""
    logits3 = np.array([[17.0, 0.0, 0.0], [18.0, 0.0, 0.0], [25.0, 0.0, 0.0], [16.0, 0.0, 0.0]], dtype=np.float32)
    scores = to_scores(logits3, "pyes")
    assert len(set(scores.tolist())) == 4 and list(np.argsort(-scores)) == [2, 1, 0, 3]


class _CountingModel(torch.nn.Module):
    """Wraps a model and counts the prompts it is asked to score."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, 0

    def forward(self, **kw):
        self.seen += kw["input_ids"].shape[0]
        return self.inner(**kw)


def test_score_cache_resumes_an_interrupted_run(tiny_backbone, tmp_path):
    cases = _cases(6)
    cache = ScoreCache(tmp_path / "scores.db")
    counting = _CountingModel(tiny_backbone.model)
    first = Scorer(counting, tiny_backbone.tokenizer, "fp:adapter", batch_size=2, cache=cache, progress=False)
    partial = first.score(cases[:4])  # an "interrupted" run got this far
    assert counting.seen == 4 and len(cache) == 4
    resumed = Scorer(counting, tiny_backbone.tokenizer, "fp:adapter", batch_size=2,
                     cache=ScoreCache(tmp_path / "scores.db"), progress=False)
    full = resumed.score(cases)
    assert counting.seen == 6  # only the 2 missing prompts ran
    np.testing.assert_allclose(full[:4], partial)
    other = Scorer(counting, tiny_backbone.tokenizer, "fp:other-adapter", batch_size=2, cache=cache, progress=False)
    other.score(cases[:1])
    assert counting.seen == 7  # another model key never reads these rows


class SpyTokenizer:
    """The tiny tokenizer, recording whether each tokenizing call added special tokens."""

    def __init__(self, tokenizer):
        self.tokenizer, self.added = tokenizer, []

    def __call__(self, *args, add_special_tokens=True, **kwargs):
        self.added.append(add_special_tokens)
        return self.tokenizer(*args, add_special_tokens=add_special_tokens, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("template, added", [("tallrec", True), ("tallrec-stats", True), ("chat", False),
                                             ("chat-stats", False), ("chat-items", False)])
def test_a_rendered_chat_template_is_tokenized_without_a_second_bos(tiny_backbone, template, added):
    """Its text already starts with the model's special tokens; a tokenizer that adds a BOS (Gemma's) would
    prepend another."""
    spy = SpyTokenizer(tiny_backbone.tokenizer)
    scorer = Scorer(tiny_backbone.model, spy, "k", template=template, progress=False)
    ranker = scorer.ranker
    spy.added.clear()  # the answer tokens' lookups
    scorer.score(_cases(2))
    ranker.split(scorer.prompts(_cases(2)))  # the shared-prefix path
    assert spy.added and set(spy.added) == {added}


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_an_empty_candidate_list_scores_as_an_empty_row(tiny_backbone, shared_prefix):
    scorer = Scorer(tiny_backbone.model, tiny_backbone.tokenizer, "k", progress=False)
    empty, full = scorer.score_lists([[], _cases(2)], shared_prefix=shared_prefix)
    assert empty.shape == (0,) and full.shape == (2,)


def test_a_prefix_tuned_row_on_sliding_window_layers_scores_as_it_would_alone(tiny_model_dir, tmp_path):
    """Left padding sits between a prefix-tuned adapter's virtual tokens and the prompt, and a sliding-window layer
    counts padding slots: a padded row lost its virtual tokens sooner (was: up to 6e-3 off its score alone, the
    cached value depending on its batch-mates). Such rows now batch by length only, under their own key."""
    from peft import PrefixTuningConfig, get_peft_model

    model, tok = tiny_gemma(tiny_model_dir, window=48)
    torch.manual_seed(1)
    model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=1.0)
    cases = [replace(c, history=c.history * 4) for c in _cases(6)]  # prompts of different lengths past the window
    cache = ScoreCache(tmp_path / "scores.db")
    batched = Scorer(model, tok, "gemma-prefix", max_prompt_tokens=None, cache=cache, batch_size=6).score(cases)
    alone = [Scorer(model, tok, "gemma-prefix", max_prompt_tokens=None, batch_size=1).score([c])[0] for c in cases]
    np.testing.assert_allclose(batched, alone, atol=1e-6)
    prompts = Scorer(model, tok, "k", max_prompt_tokens=None).prompts(cases)
    assert max(len(tok(p).input_ids) for p in prompts) > 48
    keys = Scorer(model, tok, "gemma-prefix", max_prompt_tokens=None).cache_keys(prompts, "full", by_length=True)
    assert len(cache.get_many(keys)) == len(cases)  # under the by-length key


def test_a_disabled_prefix_adapter_keys_its_untuned_rows_as_the_bare_backbones(tiny_model_dir, tmp_path):
    """Under `disable_adapter()` no virtual token is in front: the untuned rows pad as the bare model's do, under
    its key (was: keyed `:unpadded` beside a prefix-tuned adapter, so they missed the bare backbone's cached rows)."""
    from peft import PrefixTuningConfig, get_peft_model

    from adaptrec.scoring.prefix import pad_room

    model, tok = tiny_gemma(tiny_model_dir, window=48)
    cases = [replace(c, history=c.history * 4) for c in _cases(4)]
    cache = ScoreCache(tmp_path / "scores.db")
    bare = Scorer(model, tok, "base", max_prompt_tokens=None, cache=cache, batch_size=4).score(cases)
    peft_model = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)).eval()
    assert pad_room(peft_model) == 40
    with peft_model.disable_adapter():
        assert pad_room(peft_model) is None
        scorer = Scorer(peft_model, tok, "base", max_prompt_tokens=None, cache=cache, batch_size=4)
        np.testing.assert_allclose(scorer.score(cases), bare, atol=1e-6)
        assert (scorer.cached, scorer.fresh) == (len(cases), 0)


def test_the_shared_prefix_path_matches_the_full_one_past_a_sliding_window(tiny_model_dir, tmp_path):
    """Gemma-3's sliding-window layers build their window from cache slots: left padding between the cached history
    and a shorter suffix cost that suffix real tokens (was: 0.02 off the full path), and the row depended on its
    batch-mates. Suffixes now batch by length once the prompts outgrow the window, under their own cache key."""
    model, tok = tiny_gemma(tiny_model_dir, window=16)
    history = tuple(HistoryItem(f'"Film number {i} ({1980 + i})"', liked=i % 3 > 0) for i in range(12))
    titles = ['"A"', '"A much longer title of a film (1999)"', '"Medium title (2001)"']
    lst = [Case("u", "movie", "movie", history, t, label=1) for t in titles]
    cache = ScoreCache(tmp_path / "scores.db")
    scorer = Scorer(model, tok, "gemma-tiny", max_prompt_tokens=None, cache=cache, batch_size=8)
    shared = scorer.score_lists([lst], shared_prefix=True)[0]
    np.testing.assert_allclose(shared, Scorer(model, tok, "gemma-tiny", max_prompt_tokens=None).score_lists([lst])[0],
                               atol=1e-5)
    ids, n = scorer.ranker.split(scorer.list_prompts([lst])[0])
    assert max(map(len, ids)) > 16 and cache.get_many(scorer.cache_keys(scorer.list_prompts([lst])[0], "prefix",
                                                                         split=n, by_length=True))


def test_length_batches_leave_padding_alone_until_a_batch_outgrows_its_room():
    """Prompts under the room batch as usual (was: every prefix-tuned row on a sliding-window model batched alone by
    length, whatever its length); past it, only prompts of one length share a batch."""
    from adaptrec.scoring.prefix import length_batches

    lengths = {0: 5, 1: 6, 2: 9, 3: 9, 4: 12}
    assert length_batches(range(5), lengths, 8, None) == [[0, 1, 2, 3, 4]]
    assert length_batches(range(5), lengths, 8, 8) == [[0, 1], [2, 3], [4]]
    assert length_batches(range(5), lengths, 2, 8) == [[0, 1], [2, 3], [4]]
    assert length_batches(range(5), lengths, 8, 20) == [[0, 1, 2, 3, 4]]


def test_batches_are_left_padded_whatever_the_tokenizer_says(tiny_model_dir):
    """A tokenizer loaded outside `load_backbone` pads on the right: the last position of a short row was a pad
    token, and its score came from it."""
    from transformers import AutoTokenizer

    from adaptrec.scoring.logits import pad_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "right"
    batch = pad_ids(tokenizer, [[5, 6, 7], [8]], torch.device("cpu"))
    assert batch["input_ids"][1, -1].item() == 8 and batch["attention_mask"][1].tolist() == [0, 0, 1]
    assert batch["position_ids"][1, -1].item() == 0
