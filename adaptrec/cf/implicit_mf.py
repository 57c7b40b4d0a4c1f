"""BPR-MF and ALS on implicit interactions, fitted by the `implicit` library (its Cython CPU kernels)."""

from __future__ import annotations

from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from .base import FactorEncoder, Interactions, need


# Defaults: the best of a small grid on MovieLens-100K leave-one-out validation NDCG@10 (1 + 99 sampled).
@dataclass(frozen=True)
class BPRSettings:
    factors: int = 32  # implicit adds one more column: the item bias
    lr: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0


@dataclass(frozen=True)
class ALSSettings:
    factors: int = 32
    regularization: float = 0.01
    alpha: float = 2.0  # confidence of an observed interaction: 1 + alpha
    iterations: int = 15
    seed: int = 0


def fit_bpr(data: Interactions, settings: BPRSettings = BPRSettings()) -> FactorEncoder:
    """Bayesian personalised ranking (Rendle et al. 2009). `implicit` keeps the item bias as the factors' last column
    (and a constant 1 as the users'); it is split off into the item bias, so a folded-in user weighs it by 1 too."""
    implicit_bpr = need("implicit.cpu.bpr")
    model = implicit_bpr.BayesianPersonalizedRanking(
        factors=settings.factors, learning_rate=settings.lr, regularization=settings.regularization,
        iterations=settings.iterations, random_state=settings.seed, num_threads=1)
    model.fit(data.csr(), show_progress=False)
    return FactorEncoder("bpr", data.users, data.items, model.user_factors[:, :-1], model.item_factors[:, :-1],
                         model.item_factors[:, -1])


def fit_als(data: Interactions, settings: ALSSettings = ALSSettings()) -> FactorEncoder:
    """Weighted alternating least squares (Hu, Koren and Volinsky 2008)."""
    implicit_als = need("implicit.cpu.als")
    with threadpool_limits(1, "blas"):  # implicit's advice: its own loop beats a threaded BLAS inside it
        model = implicit_als.AlternatingLeastSquares(
            factors=settings.factors, regularization=settings.regularization, alpha=settings.alpha,
            iterations=settings.iterations, random_state=settings.seed, num_threads=1)
        model.fit(data.csr(), show_progress=False)
    return FactorEncoder("als", data.users, data.items, model.user_factors, model.item_factors)
