"""HMC with BlackJAX window adaptation run per chain; sampling continues from the adapted state."""

from __future__ import annotations

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.llc.samplers import Trace, starts


def sample(post, cfg, key, spec=None) -> Trace:
    L, total = cfg.num_integration_steps, cfg.burnin + cfg.draws

    def chain(key, w0, data, w_star):
        logdensity = post.logdensity_over(data, w_star)
        k_warm, k_run = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.hmc, logdensity, target_acceptance_rate=cfg.target_accept, num_integration_steps=L)
        (state, params), _ = warmup.run(k_warm, w0, num_steps=cfg.warmup)
        kernel = blackjax.hmc(logdensity, **params)  # params include num_integration_steps

        inv_mass = params["inverse_mass_matrix"]

        def step(state, k):
            prev = state
            state, info = kernel.step(k, state)
            loss = post.loss_from_logdensity(state.position, state.logdensity)
            # info.energy is the proposal's: E-BFMI needs the energy of the state the chain keeps
            start = -prev.logdensity + 0.5 * jnp.sum(info.momentum**2 * inv_mass)
            energy = jnp.where(info.is_accepted, info.energy, start)
            return state, (loss, info.acceptance_rate, info.is_divergent, energy)

        _, out = jax.lax.scan(step, state, jax.random.split(k_run, total))
        return out + (params["step_size"],)

    run = jax.jit(jax.vmap(chain, in_axes=(0, 0, None, None)))
    loss, acc, div, energy, step_size = run(jax.random.split(key, cfg.chains), starts(post, spec, key, cfg.chains), post.data, post.w_star)
    b = cfg.burnin
    extras = {
        "acceptance_rate": np.asarray(acc)[:, b:],
        "divergent": np.asarray(div)[:, b:],
        "energy": np.asarray(energy)[:, b:],
        "step_size": np.asarray(step_size),
    }
    return Trace(np.asarray(loss)[:, b:], float((cfg.warmup + total) * L), float(L), extras)
