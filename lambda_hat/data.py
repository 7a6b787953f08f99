"""Seeded teacher–student regression data."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inputs(cfg, dim: int, key) -> jnp.ndarray:
    n = cfg.n
    k1, k2, k3 = jax.random.split(key, 3)
    if cfg.x_dist == "gauss_iso":
        return jax.random.normal(k1, (n, dim))
    if cfg.x_dist == "gauss_aniso":
        scales = jnp.logspace(0, -1, dim)  # condition number 100 in the covariance
        return jax.random.normal(k1, (n, dim)) * scales
    if cfg.x_dist == "mixture":
        centres = 2.0 * jax.random.normal(k2, (3, dim))
        comp = jax.random.randint(k3, (n,), 0, 3)
        return centres[comp] + 0.5 * jax.random.normal(k1, (n, dim))
    if cfg.x_dist == "heavy_tail":
        return jax.random.t(k1, 3.0, (n, dim)) / jnp.sqrt(3.0)  # unit variance, infinite kurtosis
    raise ValueError(cfg.x_dist)


def noise(cfg, shape, key) -> jnp.ndarray:
    if cfg.noise == "gauss":
        return cfg.noise_scale * jax.random.normal(key, shape)
    df = cfg.student_df
    return cfg.noise_scale * jax.random.t(key, df, shape) * jnp.sqrt((df - 2) / df)  # variance σ²


def make(cfg, dim: int, teacher_fn, key) -> tuple[jnp.ndarray, jnp.ndarray]:
    kx, kn = jax.random.split(key)
    x = inputs(cfg, dim, kx)
    y = teacher_fn(x)
    return x, y + noise(cfg, y.shape, kn)


def batcher(data: tuple, key, size: int | None):
    """Minibatches: `draw(k)` returns a batch whose mean loss is unbiased for the full data's.

    The data are shuffled once and each batch is a window at a uniform random offset of the
    cyclic shuffled order: every sample lies in exactly `size` of the n windows, so each is
    included with probability size/n, at the cost of one random number per step (drawing
    `size` indices per step costs more than the gradient on small models).
    """
    n = data[0].shape[0]
    if size is None or size >= n:
        return lambda k: data
    perm = jax.random.permutation(key, n)
    ring = jax.tree.map(lambda a: jnp.concatenate([a[perm], a[perm[:size]]]), data)

    def draw(k):
        start = jax.random.randint(k, (), 0, n)
        return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), ring)

    return draw
