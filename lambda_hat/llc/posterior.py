"""The localised tempered posterior every sampler draws from.

log π(w) = −nβ·L_n(w) − (γ/2)·‖w − w*‖²,  β = β0 / log n,  over a flat parameter vector w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax.numpy as jnp


@dataclass(frozen=True)
class Posterior:
    w_star: jnp.ndarray  # (d,)
    n: int
    n_beta: float
    gamma: float
    loss: Callable  # loss(w, batch) -> mean per-sample negative log-likelihood on that batch
    data: tuple | None  # full data set (x, y); None for data-free targets
    L_star: float  # L_n(w*) on the full data set

    @property
    def dim(self) -> int:
        return self.w_star.shape[0]

    def loss_full(self, w):
        return self.loss(w, self.data)

    def prior_term(self, w):
        return 0.5 * self.gamma * jnp.sum((w - self.w_star) ** 2)

    def logdensity_over(self, data, w_star):
        """log π with the data and w* given: a jitted sampler passes them in as arguments, so
        that they are not compiled into its program as constants (which XLA may fold over)."""
        return lambda w: -self.n_beta * self.loss(w, data) - 0.5 * self.gamma * jnp.sum((w - w_star) ** 2)

    def loss_from_logdensity(self, w, logdensity):
        """Recover L_n(w) from a log-density the sampler already computed (no extra FGE)."""
        return -(logdensity + self.prior_term(w)) / self.n_beta

    def batcher(self, key, size: int | None):
        """Minibatches for a sampler (data.Batcher); data-free targets get None."""
        from lambda_hat.llc.data import Batcher

        return Batcher(self.data, key, size)

    def batch_fraction(self, size: int | None) -> float:
        return 1.0 if self.data is None or size is None else min(size, self.n) / self.n


def n_beta(n: int, beta0: float) -> float:
    return n * beta0 / math.log(n)
