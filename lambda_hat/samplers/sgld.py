"""SGLD, plain or RMSProp-preconditioned (Hitchcock & Hoogland 2025).

Own kernel rather than blackjax.sgld: the estimator needs the minibatch loss from the same
forward pass as the gradient (blackjax's step returns only the new position), and blackjax has
no preconditioned variant whose preconditioner can be frozen after burn-in.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from . import Trace, check_finite

CHUNKS = 10  # the scan runs in (at least) this many pieces so a divergence stops the run early
# Each piece draws its noise and batch offsets in one vectorised call (per-step draws cost about
# half a bare gradient on small models); pieces shrink so its noise stays under this size.
PIECE_NOISE_BYTES = 2**24


def sample(post, cfg, key) -> Trace:
    eps, total, d = cfg.step_size, cfg.burnin + cfg.draws, post.dim
    rms = cfg.precond == "rmsprop"
    batches = post.batcher(jax.random.fold_in(key, 1), cfg.batch_size)

    def step(carry, xs):
        w, v = carry
        t, start, noise = xs
        loss, g = jax.value_and_grad(post.loss)(w, batches.take(start))
        drift = -post.n_beta * g - post.gamma * (w - post.w_star)
        if rms:
            # EMA of squared drift during burn-in only: frozen afterwards so the chain targets π
            # (a moving preconditioner without its correction term does not). v starts at 1
            # (plain SGLD): at w* the drift can be exactly 0, and 1/√0 would blow up.
            v = jnp.where(t < cfg.burnin, cfg.rmsprop_decay * v + (1 - cfg.rmsprop_decay) * drift**2, v)
            p = 1.0 / (jnp.sqrt(v) + cfg.rmsprop_eps)
        else:
            p = 1.0
        w = w + 0.5 * eps * p * drift + jnp.sqrt(eps * p) * noise.astype(w.dtype)
        return (w, v), loss

    size = max(1, min(math.ceil(total / CHUNKS), PIECE_NOISE_BYTES // (4 * d)))

    def piece(carry, ts, k):
        kb, kn = jax.random.split(k)
        # float32 noise even under x64: half the RNG work, and its precision does not matter
        noise = jax.random.normal(kn, (size, d), jnp.float32)
        return jax.lax.scan(step, carry, (ts, batches.offsets(kb, (size,)), noise))

    run = jax.jit(jax.vmap(piece, in_axes=(0, None, 0)))
    chain_keys = jax.random.split(key, cfg.chains)
    carry = (jnp.tile(post.w_star, (cfg.chains, 1)), jnp.ones((cfg.chains, d), post.w_star.dtype))
    pieces = []
    for i in range(math.ceil(total / size)):  # the last piece may run past `total`: those steps are dropped
        carry, losses = run(carry, jnp.arange(i * size, (i + 1) * size), jax.vmap(lambda k: jax.random.fold_in(k, i))(chain_keys))
        pieces.append(np.asarray(losses))
        check_finite(pieces[-1], i * size, "lower step_size")
    losses = np.concatenate(pieces, axis=1)[:, :total]
    frac = post.batch_fraction(cfg.batch_size)
    return Trace(losses[:, cfg.burnin :], total * frac, frac)
