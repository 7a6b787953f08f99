"""HMC with BlackJAX window adaptation run per chain; sampling continues from the adapted state
with BlackJAX's dynamic HMC: each transition draws its number of leapfrog steps uniformly from
1 … 2L − 1 (mean L). A fixed trajectory length resonates on near-Gaussian posteriors: near half
a period the loss (a quadratic form) comes back almost unchanged, and on a linear model with
d = 100 (n = 1e4) fixed L = 8 gave a bulk ESS of 65 from 4 000 draws, and on linear models with
d = 12 and 25 it ranged from 56 to 2 056 over four seeds (by where adaptation put the step);
drawn from 1 … 2L − 1, 1 101–1 258, and 911–1 079 from L/2 … 3L/2."""

from __future__ import annotations

import functools

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.llc.samplers import Trace, phase, starts, until_mixed


def sample(post, cfg, key, spec=None) -> Trace:
    L = cfg.num_integration_steps
    k_warm, k_run, k_len = jax.random.split(key, 3)

    # keys are arguments, like the data: as constants they made each seed's program another
    # one, which JAX's persistent cache could not serve (1.3 s of compilation a run at d = 12)
    @jax.jit
    def adapt(keys, w0, data, w_star, k_len):
        logdensity = post.logdensity_over(data, w_star)

        def chain(key, w0):
            first = {} if cfg.step_size is None else {"initial_step_size": cfg.step_size}
            warmup = blackjax.window_adaptation(blackjax.hmc, logdensity, target_acceptance_rate=cfg.target_accept, num_integration_steps=L, **first)
            (state, params), _ = warmup.run(key, w0, num_steps=cfg.warmup)
            # one sequence of lengths for all chains (k_len): vmapped, a transition lasts as
            # long as its longest chain's (4 chains drawing their own took 1.3× as long)
            return blackjax.dynamic_hmc.init(state.position, logdensity, k_len), params["step_size"], params["inverse_mass_matrix"]

        return jax.vmap(chain)(keys, w0)

    # the step size and mass matrix are arguments: each piece of an auto run is the same program
    @functools.partial(jax.jit, static_argnames="steps")
    def run(states, eps, inv_mass, i, data, w_star, k_run, steps):
        logdensity = post.logdensity_over(data, w_star)

        def chain(state, eps, inv_mass, key):
            kernel = blackjax.dynamic_hmc(logdensity, eps, inv_mass, integration_steps_fn=lambda k: jax.random.randint(k, (), 1, 2 * L))

            def step(state, k):
                prev = state
                state, info = kernel.step(k, state)
                loss = post.loss_from_logdensity(state.position, state.logdensity)
                # info.energy is the proposal's: E-BFMI needs the energy of the state the chain keeps
                start = -prev.logdensity + 0.5 * jnp.sum(info.momentum**2 * inv_mass)
                energy = jnp.where(info.is_accepted, info.energy, start)
                return state, (loss, info.acceptance_rate, info.is_divergent, energy, info.num_integration_steps)

            return jax.lax.scan(step, state, jax.random.split(jax.random.fold_in(key, i), steps))

        return jax.vmap(chain)(states, eps, inv_mass, jax.random.split(k_run, cfg.chains))

    w0 = starts(post, spec, key, cfg.chains)
    if cfg.adapt_step_size:
        phase(f"window adaptation: {cfg.warmup} steps of {L} leapfrogs per chain, {cfg.chains} chains")
        states, eps, inv_mass = adapt(jax.random.split(k_warm, cfg.chains), w0, post.data, post.w_star, k_len)
    else:  # the given step, a unit mass matrix; the warmup steps run as burn-in
        init = jax.jit(jax.vmap(lambda w, data, w_star: blackjax.dynamic_hmc.init(w, post.logdensity_over(data, w_star), k_len), in_axes=(0, None, None)))
        states = init(w0, post.data, post.w_star)
        eps, inv_mass = np.full(cfg.chains, cfg.step_size, w0.dtype), np.ones(w0.shape, w0.dtype)

    def piece(i, steps):
        nonlocal states
        states, out = run(states, eps, inv_mass, i, post.data, post.w_star, k_run, steps=steps)
        return out

    burnin = cfg.burnin if cfg.adapt_step_size else cfg.warmup + cfg.burnin
    loss, acc, div, energy, leapfrogs = until_mixed(piece, burnin, cfg.draws, cfg.AUTO_PIECE, cfg.max_draws)
    extras = {"acceptance_rate": acc, "divergent": div, "energy": energy, "step_size": np.asarray(eps)}
    fge = (cfg.warmup + cfg.burnin) * L + float(np.mean(np.sum(leapfrogs, axis=1)))  # per chain
    return Trace(loss, fge, float(L), extras)
