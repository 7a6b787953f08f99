"""MCLMC, tuned per chain with BlackJAX's L / step-size finder before sampling, then run at
`step_scale` (½) of the tuned step: it is unadjusted, and the tuned step's bias is λ̂'s."""

from __future__ import annotations

import math

import blackjax
import jax
import numpy as np

from lambda_hat.llc.samplers import Trace, starts

TUNE_FRAC = 0.1  # BlackJAX's default fraction for each of its three tuning stages
GRADS_PER_STEP = 2  # isokinetic McLachlan: two force evaluations per step (the third is reused)


def sample(post, cfg, key, spec=None) -> Trace:
    total = cfg.burnin + cfg.draws

    def chain(key, w0, data, w_star):
        logdensity = post.logdensity_over(data, w_star)
        k_init, k_tune, k_run = jax.random.split(key, 3)
        state = blackjax.mcmc.mclmc.init(position=w0, logdensity_fn=logdensity, rng_key=k_init)
        state, params, n_tune = blackjax.mclmc_find_L_and_step_size(
            mclmc_kernel=blackjax.mcmc.mclmc.build_kernel(),
            # BlackJAX tunes for (frac_tune1 + frac_tune2 + frac_tune3)·num_steps steps
            num_steps=math.ceil(cfg.tune_steps / (3 * TUNE_FRAC)),
            frac_tune1=TUNE_FRAC,
            frac_tune2=TUNE_FRAC,
            frac_tune3=TUNE_FRAC,
            state=state,
            rng_key=k_tune,
            logdensity_fn=logdensity,
            diagonal_preconditioning=cfg.diagonal_preconditioning,
        )
        step_size = cfg.step_scale * params.step_size
        alg = blackjax.mclmc(logdensity, L=params.L, step_size=step_size, inverse_mass_matrix=params.inverse_mass_matrix)

        def step(state, k):
            state, info = alg.step(k, state)
            return state, (post.loss_from_logdensity(state.position, state.logdensity), info.energy_change)

        _, (loss, de) = jax.lax.scan(step, state, jax.random.split(k_run, total))
        return loss, de, params.L, step_size, n_tune

    run = jax.jit(jax.vmap(chain, in_axes=(0, 0, None, None)))
    loss, de, L, eps, n_tune = run(jax.random.split(key, cfg.chains), starts(post, spec, key, cfg.chains), post.data, post.w_star)
    b = cfg.burnin
    extras = {"energy_change": np.asarray(de)[:, b:], "L": np.asarray(L), "step_size": np.asarray(eps)}
    fge = GRADS_PER_STEP * (float(np.max(np.asarray(n_tune))) + total)
    return Trace(np.asarray(loss)[:, b:], fge, float(GRADS_PER_STEP), extras)
