"""SGLD, plain or RMSProp-preconditioned (Hitchcock & Hoogland 2025).

Own kernel rather than blackjax.sgld: the estimator needs the minibatch loss from the same
forward pass as the gradient (blackjax's step returns only the new position), and blackjax has
no preconditioned variant whose preconditioner can be frozen after burn-in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import Trace


def sample(post, cfg, key) -> Trace:
    eps, total = cfg.step_size, cfg.burnin + cfg.draws
    rms = cfg.precond == "rmsprop"
    draw_batch = post.batcher(jax.random.fold_in(key, 1), cfg.batch_size)

    def chain(key):
        def step(carry, xs):
            w, v = carry
            t, k = xs
            kb, kn = jax.random.split(k)
            loss, g = jax.value_and_grad(post.loss)(w, draw_batch(kb))
            drift = -post.n_beta * g - post.gamma * (w - post.w_star)
            if rms:
                # EMA of squared drift during burn-in only: frozen afterwards so the chain
                # targets π (a moving preconditioner without its correction term does not).
                # v starts at 1 (plain SGLD): at w* the drift can be exactly 0, and 1/√0 would blow up.
                v = jnp.where(t < cfg.burnin, cfg.rmsprop_decay * v + (1 - cfg.rmsprop_decay) * drift**2, v)
                p = 1.0 / (jnp.sqrt(v) + cfg.rmsprop_eps)
            else:
                p = 1.0
            # float32 noise even under x64: half the RNG work, and its precision does not matter
            noise = jax.random.normal(kn, w.shape, jnp.float32).astype(w.dtype)
            w = w + 0.5 * eps * p * drift + jnp.sqrt(eps * p) * noise
            return (w, v), loss

        ts = jnp.arange(total)
        _, losses = jax.lax.scan(step, (post.w_star, jnp.ones_like(post.w_star)), (ts, jax.random.split(key, total)))
        return losses

    losses = jax.jit(jax.vmap(chain))(jax.random.split(key, cfg.chains))
    return Trace(np.asarray(losses)[:, cfg.burnin:], total * post.batch_fraction(cfg.batch_size))
