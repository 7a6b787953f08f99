"""The localised tempered posterior every sampler draws from.

log π(w) = −nβ·L_n(w) − (γ/2)·‖w − w*‖²,  β = β0 / log n,  over a flat parameter vector w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax
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

    def logdensity(self, w):
        return -self.n_beta * self.loss_full(w) - self.prior_term(w)

    def loss_from_logdensity(self, w, logdensity):
        """Recover L_n(w) from a log-density the sampler already computed (no extra FGE)."""
        return -(logdensity + self.prior_term(w)) / self.n_beta

    def batcher(self, key, size: int | None):
        """Minibatches for a sampler: `draw(k)` returns a batch whose loss is unbiased for L_n.

        The data are shuffled once and each batch is a window at a uniform random offset of
        the cyclic shuffled order: every sample lies in exactly `size` of the n windows, so
        each is included with probability size/n, at the cost of one random number per step
        (drawing `size` indices per step costs more than the gradient on small models).
        """
        if self.data is None or size is None or size >= self.n:
            return lambda k: self.data
        perm = jax.random.permutation(key, self.n)
        ring = jax.tree.map(lambda a: jnp.concatenate([a[perm], a[perm[:size]]]), self.data)

        def draw(k):
            start = jax.random.randint(k, (), 0, self.n)
            return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), ring)

        return draw

    def batch_fraction(self, size: int | None) -> float:
        return 1.0 if self.data is None or size is None else min(size, self.n) / self.n


def n_beta(n: int, beta0: float) -> float:
    return n * beta0 / math.log(n)
