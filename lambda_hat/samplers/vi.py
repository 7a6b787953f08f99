"""Gaussian variational inference around w*, trained with optax.

q(w) = Σ_m π_m N(w* + μ_m, diag(σ_m²) + U_m U_mᵀ): "meanfield" is one component with U = 0,
"lowrank" mixes `components` Gaussians with rank-`rank` factors. The ELBO is the π-weighted
sum of per-component reparameterised expectations, so the mixture weights get exact gradients.
λ̂ comes from E_q[L_n], estimated on the full data set at `draws` samples of q per chain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from . import Trace


def _log_normal(w, mu, log_sd, U):
    """log N(w; mu, diag(exp(2 log_sd)) + U Uᵀ) by the Woodbury identity: O(d r²)."""
    d, r = U.shape
    dinv = jnp.exp(-2 * log_sd)
    z = w - mu
    cap = jnp.eye(r) + (U.T * dinv) @ U
    chol = jnp.linalg.cholesky(cap)
    t = jax.scipy.linalg.solve_triangular(chol, U.T @ (dinv * z), lower=True)
    quad = jnp.sum(dinv * z**2) - jnp.sum(t**2)
    logdet = 2 * jnp.sum(log_sd) + 2 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (quad + logdet + d * jnp.log(2 * jnp.pi))


def sample(post, cfg, key) -> Trace:
    d, M = post.dim, cfg.components
    r = cfg.rank if cfg.family == "lowrank" else 1
    lowrank = cfg.family == "lowrank"
    sd0 = 1.0 / jnp.sqrt(post.n_beta + post.gamma + 1.0)  # width of the posterior at curvature ~1
    opt = optax.adam(cfg.lr)
    draw_batch = post.batcher(jax.random.fold_in(key, 1), cfg.batch_size)

    # mu and U are stored in units of sd0 so that one Adam lr suits every parameter.
    def draw(p, m, k):
        k1, k2 = jax.random.split(k)
        z = jnp.exp(p["log_sd"][m]) * jax.random.normal(k1, (d,), post.w_star.dtype)
        if lowrank:
            z = z + sd0 * p["U"][m] @ jax.random.normal(k2, (r,), post.w_star.dtype)
        return post.w_star + sd0 * p["mu"][m] + z

    def log_q(p, w):
        U = sd0 * p["U"] if lowrank else jnp.zeros((M, d, r), w.dtype)
        comps = jax.vmap(lambda mu, ls, u: _log_normal(w, post.w_star + sd0 * mu, ls, u))(p["mu"], p["log_sd"], U)
        return logsumexp(jax.nn.log_softmax(p["logits"]) + comps)

    def neg_elbo(p, k):
        kb, kd = jax.random.split(k)
        batch = draw_batch(kb)

        def term(m, k):
            w = draw(p, m, k)
            return -post.n_beta * post.loss(w, batch) - post.prior_term(w) - log_q(p, w)

        keys = jax.random.split(kd, M * cfg.mc_samples).reshape(M, cfg.mc_samples, -1)
        per_comp = jax.vmap(lambda m, ks: jnp.mean(jax.vmap(lambda k: term(m, k))(ks)))(jnp.arange(M), keys)
        return -jnp.sum(jax.nn.softmax(p["logits"]) * per_comp)

    def chain(key):
        k_init, k_fit, k_draw = jax.random.split(key, 3)
        p = {
            "mu": jnp.zeros((M, d), post.w_star.dtype),
            "log_sd": jnp.full((M, d), jnp.log(sd0), post.w_star.dtype),
            "logits": jnp.zeros((M,), post.w_star.dtype),
        }
        if lowrank:
            p["U"] = 0.1 * jax.random.normal(k_init, (M, d, r), post.w_star.dtype)

        def step(carry, k):
            p, s = carry
            value, g = jax.value_and_grad(neg_elbo)(p, k)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), -value

        (p, _), elbo = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(k_fit, cfg.steps))
        total = cfg.burnin + cfg.draws
        k_comp, k_w = jax.random.split(k_draw)
        comps = jax.random.categorical(k_comp, p["logits"], shape=(total,))
        ws = jax.vmap(lambda m, k: draw(p, m, k))(comps, jax.random.split(k_w, total))
        losses = jax.lax.map(post.loss_full, ws, batch_size=64)
        return losses, elbo

    losses, elbo = jax.jit(jax.vmap(chain))(jax.random.split(key, cfg.chains))
    fit = cfg.steps * M * cfg.mc_samples * post.batch_fraction(cfg.batch_size)
    # each draw costs one full-data loss evaluation, counted as one FGE
    return Trace(np.asarray(losses)[:, cfg.burnin:], fit + cfg.burnin + cfg.draws, 1.0, {"elbo": np.asarray(elbo)})
