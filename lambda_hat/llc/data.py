"""Seeded teacher–student regression data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.llc.config import DIGITS_TEST


def inputs(cfg, dim: int, key, n: int | None = None) -> jnp.ndarray:
    n = cfg.n if n is None else n
    k1, k2, k3 = jax.random.split(key, 3)
    if cfg.x_dist == "gauss_iso":
        return jax.random.normal(k1, (n, dim))
    if cfg.x_dist == "gauss_aniso":
        decay = cfg.get("cov_decay")  # variances decay**i; built in: sd 1 … 0.1 (condition number 100)
        scales = jnp.logspace(0, -1, dim) if decay is None else decay ** (jnp.arange(dim) / 2)
        return jax.random.normal(k1, (n, dim)) * scales
    if cfg.x_dist == "mixture":
        k = cfg.get("mixture_k")
        centres = cfg.get("mixture_spread") * jax.random.normal(k2, (k, dim))
        comp = jax.random.randint(k3, (n,), 0, k)
        return centres[comp] + 0.5 * jax.random.normal(k1, (n, dim))
    if cfg.x_dist == "lowdim_manifold":  # a tanh embedding of a few latent Gaussian coordinates
        latent = cfg.get("x_dim_latent")
        return jnp.tanh(jax.random.normal(k1, (n, latent)) @ jax.random.normal(k2, (latent, dim)))
    if cfg.x_dist == "heavy_tail":
        return jax.random.t(k1, 3.0, (n, dim)) / jnp.sqrt(3.0)  # unit variance, infinite kurtosis
    raise ValueError(cfg.x_dist)


def noise(cfg, shape, key, x) -> jnp.ndarray:
    k1, k2, k3 = jax.random.split(key, 3)
    if cfg.noise_model == "gauss":
        return cfg.noise_scale * jax.random.normal(key, shape)
    if cfg.noise_model == "hetero":  # sd grows with |x|
        scale = cfg.noise_scale * (1 + cfg.get("hetero_scale") * jnp.linalg.norm(x, axis=-1, keepdims=True))
        return scale * jax.random.normal(key, shape)
    if cfg.noise_model == "outliers":  # a fraction of the labels get a much wider noise
        wide = jax.random.uniform(k2, shape) < cfg.get("outlier_frac")
        return jnp.where(wide, cfg.get("outlier_scale") * jax.random.normal(k3, shape), cfg.noise_scale * jax.random.normal(k1, shape))
    df = cfg.student_df
    return cfg.noise_scale * jax.random.t(key, df, shape) * jnp.sqrt((df - 2) / df)  # variance σ²


def digits(n: int):
    """scikit-learn's handwritten digits (shipped with it: nothing is downloaded), pixels scaled to
    [0, 1], labels one-hot: ((x, y) of the first n training images, (x, y) of the test images)."""
    from sklearn.datasets import load_digits

    x, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    dtype = jnp.result_type(float)
    x, y = np.asarray(x[order] / 16.0, dtype), np.eye(10, dtype=dtype)[labels[order]]
    return jax.device_put(((x[DIGITS_TEST:][:n], y[DIGITS_TEST:][:n]), (x[:DIGITS_TEST], y[:DIGITS_TEST])))


def make(cfg, dim: int, teacher_fn, key, n: int | None = None, dropout: float | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(x, y): n inputs (default cfg.n), labelled by the teacher, each clean label zeroed with
    probability `dropout` (the original Lambda-Hat's teacher dropout_rate), then noised."""
    kx, kn = jax.random.split(key)
    x = inputs(cfg, dim, kx, n)
    y = teacher_fn(x)
    if dropout:
        y = y * (jax.random.uniform(jax.random.fold_in(key, 2), y.shape) >= dropout)
    return x, y + noise(cfg, y.shape, kn, x)


def host_rng(key, *more: int) -> np.random.Generator:
    """numpy's generator seeded from a JAX key (and more integers): the host draws that a task
    makes once (probes, starts, shuffles, proposal noise), where eager jax.random compiles a
    program per op and threefry written into a jitted program dominated its compile time."""
    return np.random.default_rng([*np.asarray(key).ravel().tolist(), *more])


def _ring(key, data, size):
    """The shuffled data followed by its first `size` rows, shuffled on the host: as a jitted
    program (jax.random.permutation's sort) it cost a task's cold start ~0.3 s of compilation."""
    perm = host_rng(key).permutation(data[0].shape[0])
    rows = np.concatenate([perm, perm[:size]])
    return jax.tree.map(lambda a: jax.device_put(np.asarray(a)[rows]), data)


class Batcher:
    """Minibatches: `take(offsets(k))` is a batch whose mean loss is unbiased for the full data's.

    The data are shuffled once and each batch is a window at a uniform random offset of the
    cyclic shuffled order: every sample lies in exactly `size` of the n windows, so each is
    included with probability size/n, at the cost of one random number per step (drawing
    `size` indices per step costs more than the gradient on small models). `offsets` draws them
    from a key, `offsets_from` from uint32 bits a sampler drew with its other randomness (SGLD);
    `take` cuts the window. With no size
    (or size ≥ n) every batch is the full data; with no data (analytic targets) it is None.
    """

    def __init__(self, data: tuple | None, key, size: int | None):
        self.n = 1 if data is None else data[0].shape[0]
        self.size = None if data is None or size is None or size >= self.n else size
        self.ring = data if self.size is None else _ring(key, data, self.size)

    def offsets(self, key, shape=()):
        return jax.random.randint(key, shape, 0, self.n)

    def offsets_from(self, bits):
        """Offsets from uint32 bits (modulo bias ≤ n/2³²)."""
        return (bits % np.uint32(self.n)).astype(jnp.int32)

    def take(self, start, ring=None):
        """The window at `start` of `ring` (default: this batcher's; a jitted program passes
        its own argument, so that the data are not compiled into it as constants)."""
        ring = self.ring if ring is None else ring
        if self.size is None:
            return ring
        return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, self.size), ring)
