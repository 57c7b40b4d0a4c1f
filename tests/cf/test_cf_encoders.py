"""The implicit-feedback encoders learn a planted structure; fold-in, unknown items and the full-catalogue ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_markers import needs_amazon, needs_ml100k

from adaptrec.cf.base import FactorEncoder, Interactions, PopularityEncoder
from adaptrec.cf.evaluate import full_ranks
from adaptrec.cf.fit import _settings, fit_encoder, source_ratings
from adaptrec.cf.titles import source_titles
from adaptrec.cf.implicit_mf import ALSSettings, BPRSettings, fit_als, fit_bpr
from adaptrec.cf.lightgcn import LightGCNSettings, fit_lightgcn
from adaptrec.cf.mf import MFSettings
from adaptrec.cf.sasrec import SASRecSettings, fit_sasrec
from adaptrec.errors import ConfigError

pytest.importorskip("implicit")
pytest.importorskip("torch_geometric")


def _two_tastes(seed: int = 0) -> tuple[Interactions, dict[str, int], dict[str, int]]:
    """60 users of two tastes, each touching 8 of the 20 items of their taste's half of a 40-item catalogue."""
    rng = np.random.default_rng(seed)
    taste = {f"u{u}": u % 2 for u in range(60)}
    side = {f"i{i}": i % 2 for i in range(40)}
    pairs = [(u, f"i{2 * j + t}") for u, t in taste.items() for j in rng.choice(20, 8, replace=False)]
    return Interactions.of(pairs, items=list(side)), taste, side


@pytest.mark.parametrize("fit", [
    lambda d: fit_bpr(d, BPRSettings(factors=8, lr=0.05, iterations=100)),
    lambda d: fit_als(d, ALSSettings(factors=8, iterations=10)),
    lambda d: fit_lightgcn(d, LightGCNSettings(dim=16, epochs=30, batch_size=128, lr=0.02)),
], ids=["bpr", "als", "lightgcn"])
def test_factor_encoders_rank_the_users_taste_first(fit):
    data, taste, side = _two_tastes()
    encoder = fit(data)
    users = list(taste)
    scores = encoder.score_catalogue(users, [[]] * len(users))
    own = np.array([[side[i] == taste[u] for i in encoder.items] for u in users])
    assert scores[own].mean() > scores[~own].mean()
    top = np.argsort(-scores, axis=1)[:, :5]
    assert np.take_along_axis(own, top, axis=1).mean() > 0.9  # random: 0.5


def test_sasrec_learns_what_comes_next():
    rng = np.random.default_rng(0)
    pairs = []
    for u in range(40):  # every sequence walks the catalogue in order from a random start
        start = int(rng.integers(0, 12))
        pairs += [(f"u{u}", f"i{(start + k) % 12}") for k in range(10)]
    settings = SASRecSettings(dim=16, max_len=8, epochs=60, dropout=0.0, lr=5e-3, batch_size=16)
    encoder = fit_sasrec(Interactions.of(pairs), settings)
    histories = [[f"i{(s + k) % 12}" for k in range(5)] for s in range(12)]
    best = encoder.score_catalogue(["new"] * 12, histories).argmax(axis=1)
    expected = [encoder.item_index[f"i{(s + 5) % 12}"] for s in range(12)]
    assert (best == np.array(expected)).mean() >= 0.75


def test_unseen_users_fold_in_and_unknown_items_rank_last():
    encoder = FactorEncoder("toy", ["u"], ["a", "b"], np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert encoder.score_catalogue(["stranger"], [["b"]]).argmax() == 1  # the mean of b's vector prefers b
    assert encoder.score_catalogue(["u"], [["b"]]).argmax() == 0  # a known user keeps their own vector
    (row,) = encoder.score_lists(["u"], [[]], [["zzz", "b", "a"]])
    assert row.argmin() == 0 and row.argmax() == 2


def test_full_ranks_skip_what_the_user_has_seen():
    data = Interactions.of([("u", "a"), ("v", "a"), ("v", "b"), ("w", "a"), ("w", "b"), ("w", "c")], items=list("abcd"))
    pop = PopularityEncoder(data)  # counts a 3, b 2, c 1, d 0
    assert full_ranks(pop, ["u", "u"], ["c", "d"], [["a"], ["a"]], [{"a"}, {"a"}]).tolist() == [2, 3]
    assert full_ranks(pop, ["u"], ["a"], [["a"]], [{"a"}]).tolist() == [1]  # a target is never skipped
    # one domain's items of a two-domain encoder: a and b (another domain) do not compete
    assert full_ranks(pop, ["u"], ["d"], [["a"]], [set()], catalogue={"c", "d"}).tolist() == [2]
    # an item the encoder never saw ranks below every eligible one (b, c, d here: a was seen), not below all four
    assert full_ranks(pop, ["u"], ["zzz"], [["a"]], [{"a"}]).tolist() == [4]
    # ... and last among the catalogue's other unknown items the user has not touched, tied with them at the bottom
    # (was: 2, above the unknown "y"); a known target is not moved by them
    assert full_ranks(pop, ["u"], ["x"], [["a"]], [{"a", "z"}], catalogue={"c", "d", "x", "y", "z"}).tolist() == [4]
    assert full_ranks(pop, ["u"], ["d"], [["a"]], [set()], catalogue={"c", "d", "x", "y"}).tolist() == [2]


def test_full_ranks_refuse_nan_and_count_infinite_scores_above_an_unknown_target():
    """NaN is never >= the target's score, so NaN-scored items ranked the target too high; an unknown target ranked
    above items scored +inf."""
    encoder = FactorEncoder("toy", ["u"], ["a", "b", "c"], np.array([[1.0]]), np.array([[np.nan], [0.5], [0.1]]))
    with pytest.raises(ValueError, match="NaN scores"):
        full_ranks(encoder, ["u"], ["c"], [[]], [set()])
    encoder = FactorEncoder("toy", ["u"], ["a", "b", "c"], np.array([[1.0]]), np.array([[np.inf], [0.5], [0.1]]))
    assert full_ranks(encoder, ["u"], ["zzz"], [[]], [set()]).tolist() == [4]


def test_fit_encoder_maps_size_and_length_onto_each_encoders_knobs():
    assert _settings(MFSettings, 8, 5, 1) == MFSettings(dim=8, epochs=5, seed=1)
    assert _settings(BPRSettings, 8, 5, 0) == BPRSettings(factors=8, iterations=5)
    assert _settings(ALSSettings, None, None, 0) == ALSSettings()
    with pytest.raises(ConfigError, match="unknown encoder 'svd'"):
        fit_encoder("svd", "movielens:100k:loo")


@pytest.mark.parametrize("source", [pytest.param("movielens:100k", marks=needs_ml100k),
                                    pytest.param("amazon", marks=needs_amazon)])
def test_each_source_titles_its_whole_catalogue(source):
    titles = source_titles(source)
    assert list(titles) == source_ratings(source).items
    assert all(text.startswith('"') for text in titles.values())  # as prompts quote them
    with pytest.raises(ConfigError, match="unknown encoder data 'nope'"):
        source_titles("nope")


def test_a_fit_is_kept_and_loaded_again_with_its_scores(monkeypatch):
    """fit_encoder keeps each fit under a key of kind, settings, interactions and code: the same call loads it
    (the fit does not run), other settings or interactions fit anew, a damaged entry is fitted again."""
    import adaptrec.cf.fit as fit_module
    from adaptrec.cf import implicit_mf
    from adaptrec.cf.fit import Ratings
    from adaptrec.home import adaptrec_home

    data, _, _ = _two_tastes()
    rows = [(data.users[u], data.items[i], True) for u, i in zip(data.user_idx, data.item_idx)]
    monkeypatch.setattr(fit_module, "source_ratings", lambda source: Ratings(rows, list(data.items)))
    calls, real = [], implicit_mf.fit_bpr
    monkeypatch.setattr(implicit_mf, "fit_bpr", lambda *a: (calls.append(1), real(*a))[1])
    first = fit_encoder("bpr", "movielens:100k", dim=8, epochs=20)
    again = fit_encoder("bpr", "movielens:100k", dim=8, epochs=20)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.table, again.table)
    np.testing.assert_allclose(again.encoder.score_lists(["u0"], [["i0"]], [["i2", "i3"]]),
                               first.encoder.score_lists(["u0"], [["i0"]], [["i2", "i3"]]))
    fit_encoder("bpr", "movielens:100k", dim=8, epochs=20, seed=1)
    assert len(calls) == 2
    (entry,) = [p for p in (adaptrec_home() / "cache" / "encoders").iterdir()
                if json.loads((p / "encoder.json").read_text())["settings"]["seed"] == 0]
    (entry / "encoder.safetensors").write_bytes(b"damaged")
    np.testing.assert_array_equal(fit_encoder("bpr", "movielens:100k", dim=8, epochs=20).table, first.table)
    assert len(calls) == 3
    monkeypatch.setattr(fit_module, "source_ratings", lambda source: Ratings(rows[:-1], list(data.items)))
    fit_encoder("bpr", "movielens:100k", dim=8, epochs=20)
    assert len(calls) == 4
    fit_encoder("bpr", "movielens:100k", dim=8, epochs=20, cache=False)
    assert len(calls) == 5
    import adaptrec.cf.cache as cache_module

    monkeypatch.setattr(cache_module, "_CODE_DIGESTS", {**cache_module._CODE_DIGESTS, "implicit_mf.py": "0" * 64})
    fit_encoder("bpr", "movielens:100k", dim=8, epochs=20)  # the encoder's code changed: fitted anew
    assert len(calls) == 6
    key = cache_module.fit_key("bpr", {"dim": 8}, rows, list(data.items))
    assert key != cache_module.fit_key("als", {"dim": 8}, rows, list(data.items))  # another kind, same settings
    assert key != cache_module.fit_key("bpr", {"dim": 8}, rows, list(data.items)[::-1])  # another catalogue order


def test_loading_a_kept_sasrec_leaves_the_callers_random_state_alone(tmp_path):
    """A cache hit must not consume torch's global RNG where a fit (inside fork_rng) does not."""
    import torch

    from adaptrec.cf.files import load_encoder, save_encoder

    data, _, _ = _two_tastes()
    settings = SASRecSettings(dim=8, epochs=1, max_len=4)
    save_encoder(fit_sasrec(data, settings), tmp_path, vars(settings))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_encoder(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_a_kept_fit_leaves_every_random_generator_as_it_found_it_and_a_diverged_one_is_not_kept(tmp_path, monkeypatch):
    """The torch fits seed inside `fork_rng(devices=[])`, which restores the CPU's generator only: on CUDA a fresh
    fit left the GPU's seeded with the encoder's seed, a cache hit did not, so a collab recipe's dropout drew
    otherwise. A fit that diverged was kept, and every later run trained on its NaN table."""
    import torch

    from adaptrec.cf.cache import cached_fit
    from adaptrec.errors import AdaptrecError
    from adaptrec.home import adaptrec_home

    data, _, _ = _two_tastes()
    settings = SASRecSettings(dim=8, epochs=1, max_len=4)
    states = [torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None]
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)

    def fit():
        torch.manual_seed(0)  # what the fits do: on CUDA this seeds the GPUs too
        return fit_sasrec(data, settings)

    cached_fit("k" * 64, vars(settings), fit)
    assert torch.equal(torch.rand(2), expected)
    if torch.cuda.is_available():
        states.append(torch.cuda.get_rng_state_all())
        assert all(torch.equal(a, b) for a, b in zip(*states))
    diverged = fit_sasrec(data, settings)
    diverged.item_table[0, 0] = np.nan
    with pytest.raises(AdaptrecError, match="non-finite item vectors"):
        cached_fit("n" * 64, vars(settings), lambda: diverged)
    assert not (adaptrec_home() / "cache" / "encoders" / ("n" * 64)).exists()
    from adaptrec.atomic import write_json
    from adaptrec.cf.cache import HASHES
    from adaptrec.cf.files import file_hashes, save_encoder

    kept = adaptrec_home() / "cache" / "encoders" / ("n" * 64)  # one kept before diverged fits were refused
    kept.mkdir(parents=True)
    save_encoder(diverged, kept, vars(settings))
    write_json(kept / HASHES, file_hashes(kept))
    assert np.isfinite(cached_fit("n" * 64, vars(settings), lambda: fit_sasrec(data, settings)).item_table).all()


def test_a_target_the_encoder_never_saw_is_a_neutral_guess_on_a_like_dislike_auc():
    """`score_lists` puts an unknown item below every known one (right for ranking); on a pooled like/dislike AUC
    that read as a certain dislike, while MF's own `score` gives such an item no item term at all."""
    from adaptrec.cf.evaluate import labelled_scores

    encoder = FactorEncoder("mf-bias", ["u0", "u1"], ["a", "b", "c"], np.array([[1.0], [-1.0]]),
                            np.array([[0.5], [0.0], [-0.5]]), item_bias=np.array([0.2, 0.0, -0.2]),
                            user_bias=np.array([0.3, -0.3]))
    scores = labelled_scores(encoder, ["u0", "u1", "u1"], [[], [], []], ["a", "new", None])
    full = encoder.score_catalogue(["u0", "u1"], [[], []])
    assert scores[0] == pytest.approx(full[0, 0])
    assert scores[1] == pytest.approx(full[1].mean()) and scores[2] == pytest.approx(full[1].mean())
    assert encoder.score_lists(["u1"], [[]], [["new"]])[0][0] < full[1].min()  # ranking keeps its floor
