"""Fit a named encoder on a named interaction source: the one entry point the collaborative adapter and the
experiments use, so an encoder's training data is always the leakage-checked set of its source.

Sources (`SOURCES`):
    movielens:100k        ML-100K ratings (users `ml100k-ID`) left after TALLRec movie's valid/test users are cut
                          from their first held-out window on (`data.movielens.training_ratings`); liked = rating > 3
    movielens:100k:loo    ML-100K leave-one-out: every user's interactions but the last two (`data.leave_one_out`)
    amazon                Amazon Arts<->Office: every interaction of the train-split users, both domains (one
                          catalogue: item ids are disjoint); valid and test users are unseen, folded in from history
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np

from adaptrec.errors import ConfigError
from adaptrec.fingerprint import digest

from .base import Encoder, Interactions

Source = Literal["movielens:100k", "movielens:100k:loo", "amazon"]
Kind = Literal["mf-bias", "bpr", "als", "lightgcn", "sasrec"]
SOURCES: tuple[str, ...] = Source.__args__
KINDS: tuple[str, ...] = Kind.__args__


WINDOWS = {"movielens:100k": "ML-100K ratings before each TALLRec valid/test user's first held-out window",
           "movielens:100k:loo": "every ML-100K user's ratings but the last two",
           "amazon": "every interaction of Amazon Arts-Office train users, both domains"}
HELD_OUT = {"movielens:100k": r"movielens:100k:(valid|test)", "movielens:100k:loo": r"movielens:100k:loo:(valid|test)",
            "amazon": r"amazon:(arts|office):(valid|test)(:cold)?"}  # the SPECs an encoder of each source may score


def scores_spec(source: str, spec: str) -> bool:
    """True when `spec` (or a slice of it) is a held-out split of `source`: its pairs are outside the encoder's data."""
    return re.fullmatch(HELD_OUT[source], spec.split("[", 1)[0]) is not None


@dataclass(frozen=True)
class Ratings:
    """A source's training interactions (user, item, liked) in time order per user, and its whole catalogue."""

    rows: list[tuple[str, str, bool]]
    items: list[str]

    @property
    def fingerprint(self) -> str:
        return digest(sorted(self.rows))


def source_ratings(source: str) -> Ratings:
    """The training interactions of `source` (no held-out pair among them)."""
    from adaptrec.data import amazon, leave_one_out, movielens

    if source == "movielens:100k":  # users spelled as the cases spell them
        rows = [(f"ml100k-{r.user}", r.item, r.liked) for r in movielens.training_ratings()]
    elif source == "movielens:100k:loo":
        rows = leave_one_out.train_interactions(movielens.loo_timelines())
    elif source == "amazon":
        rows = amazon.train_interactions()
        return Ratings(rows, [i for domain in amazon.DOMAINS for i in amazon.amazon_items(domain)])
    else:
        raise ConfigError(f"unknown encoder data {source!r}; known: {', '.join(SOURCES)}")
    return Ratings(rows, movielens.load_item_ids())


@dataclass(frozen=True)
class Fitted:
    """An encoder, its item table in catalogue order (zeros for items it never saw) and its record."""

    encoder: Encoder
    items: list[str]
    table: np.ndarray
    record: dict


def _settings(cls, dim: int | None, epochs: int | None, seed: int):
    """The encoder's settings with `dim`/`epochs` mapped onto its own knob names (None keeps its default)."""
    names = {f.name for f in fields(cls)}
    size = next(n for n in ("dim", "factors") if n in names)
    length = next(n for n in ("epochs", "iterations") if n in names)
    given = {size: dim, length: epochs, "seed": seed}
    return replace(cls(), **{k: v for k, v in given.items() if v is not None})


def fit_encoder(kind: str, source: str, dim: int | None = None, epochs: int | None = None, seed: int = 0,
                cache: bool = True) -> Fitted:
    """Fit encoder `kind` on `source`'s training interactions; `dim`/`epochs` override its defaults. With `cache`,
    a fit made before with the same settings, interactions and code is loaded instead (`cf/cache.py`)."""
    from . import implicit_mf, lightgcn, mf, sasrec
    from .cache import cached_fit, fit_key

    builders = {"mf-bias": (mf.MFSettings, None),
                "bpr": (implicit_mf.BPRSettings, implicit_mf.fit_bpr),
                "als": (implicit_mf.ALSSettings, implicit_mf.fit_als),
                "lightgcn": (lightgcn.LightGCNSettings, lightgcn.fit_lightgcn),
                "sasrec": (sasrec.SASRecSettings, sasrec.fit_sasrec)}
    if kind not in builders:
        raise ConfigError(f"unknown encoder {kind!r}; known: {', '.join(KINDS)}")
    if kind == "mf-bias" and source == "amazon":
        raise ConfigError("mf-bias learns like/dislike labels; amazon holds implicit interactions only (every one "
                          "a like): use bpr, als, lightgcn or sasrec")
    cls, fit = builders[kind]
    settings = _settings(cls, dim, epochs, seed)
    ratings = source_ratings(source)

    def fitted() -> Encoder:  # MF with biases learns the like/dislike labels, the others the interactions
        if fit is None:
            return mf.train_mf_bias(*zip(*[(u, i, int(liked)) for u, i, liked in ratings.rows]), settings).as_encoder()
        return fit(Interactions.of([(u, i) for u, i, _ in ratings.rows]), settings)

    key = fit_key(kind, vars(settings), ratings.rows, ratings.items)
    encoder = cached_fit(key, vars(settings), fitted) if cache else fitted()
    known = encoder.item_index
    width = encoder.item_table.shape[1]
    table = np.stack([encoder.item_table[known[i]] if i in known else np.zeros(width, np.float32)
                      for i in ratings.items])
    record = {"kind": kind, "data": source, "settings": vars(settings), "ratings": ratings.fingerprint,
              "known_items": len(known)}
    return Fitted(encoder, ratings.items, table.astype(np.float32), record)
