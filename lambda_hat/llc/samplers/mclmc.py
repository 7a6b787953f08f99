"""MCLMC, tuned per chain with BlackJAX's L / step-size finder before sampling, then run at
`step_scale` (½) of the tuned step: it is unadjusted, and the tuned step's bias is λ̂'s. Each
piece of the run checks the step: a chain whose Var[ΔE]/d in it is above half the checks' limit
gets a smaller step and the piece runs again from where it ended."""

from __future__ import annotations

import functools
import math

import blackjax
import jax
import numpy as np
from blackjax.adaptation.mclmc_adaptation import MCLMCAdaptationState

from lambda_hat.llc.checks import MCLMC_ENERGY_VAR_MAX
from lambda_hat.llc.samplers import UNROLL, Trace, conv_on_cpu, in_calls, phase, starts, until_mixed

# force evaluations per step (the last of a step is the next one's first): velocity Verlet 1,
# McLachlan 2, Yoshida 3, Omelyan 5
GRADS_PER_STEP = {"isokinetic_velocity_verlet": 1, "isokinetic_mclachlan": 2, "isokinetic_yoshida": 3, "isokinetic_omelyan": 5}
# The finder's step can leave Var[ΔE]/d well above the limit even at half of it (DLNs of 3 and 4
# layers, n = 5e3–1e4: 5.5e-4 and 4.4e-4 for a limit of 1e-4), and chains that wander along a
# singular model's zero set into stiffer parts raise it later on (one piece at 8.7e-6, a later one
# at 1.3e-3). Var[ΔE] grows as ε⁶ (BlackJAX's model in its finder): a chain above RETRY_VAR in a
# piece reruns it at the step that model puts at GOAL_VAR.
RETRY_VAR, GOAL_VAR, RETRIES = MCLMC_ENERGY_VAR_MAX / 2, MCLMC_ENERGY_VAR_MAX / 4, 3


def sample(post, cfg, key, spec=None) -> Trace:
    k_init, k_tune, k_run = jax.random.split(key, 3)
    integrator = getattr(blackjax.mcmc.integrators, cfg.integrator)
    fracs = (cfg.frac_tune1, cfg.frac_tune2, cfg.frac_tune3)

    @jax.jit  # keys as arguments: as constants, each seed's program was another (see hmc.py)
    def tune(w0, data, w_star, k_init, k_tune):
        logdensity = post.logdensity_over(data, w_star)

        def chain(k_init, k_tune, w0):
            state = blackjax.mcmc.mclmc.init(position=w0, logdensity_fn=logdensity, rng_key=k_init)
            first = None
            if cfg.L is not None or cfg.step_size is not None:  # BlackJAX's own first values where not given
                root = math.sqrt(w0.shape[0])
                first = MCLMCAdaptationState(cfg.L or root, cfg.step_size or 0.25 * root, jax.numpy.ones_like(w0))
            state, params, n_tune = blackjax.mclmc_find_L_and_step_size(
                mclmc_kernel=blackjax.mcmc.mclmc.build_kernel(integrator=integrator),
                # BlackJAX tunes for (frac_tune1 + frac_tune2 + frac_tune3)·num_steps steps
                num_steps=math.ceil(cfg.tune_steps / sum(fracs)),
                frac_tune1=fracs[0],
                frac_tune2=fracs[1],
                frac_tune3=fracs[2],
                desired_energy_var=cfg.desired_energy_var,
                trust_in_estimate=cfg.trust_in_estimate,
                num_effective_samples=cfg.num_effective_samples,
                state=state,
                rng_key=k_tune,
                logdensity_fn=logdensity,
                diagonal_preconditioning=cfg.diagonal_preconditioning,
                params=first,
            )
            return state, params.L, params.step_size, params.inverse_mass_matrix, n_tune

        return jax.vmap(chain)(jax.random.split(k_init, cfg.chains), jax.random.split(k_tune, cfg.chains), w0)

    # L, ε and the mass matrix are arguments: each piece of an auto run is the same program
    @jax.jit
    def run(states, L, eps, inv_mass, keys, data, w_star):
        logdensity = post.logdensity_over(data, w_star)

        def chain(state, L, eps, inv_mass, keys):
            alg = blackjax.mclmc(logdensity, L=L, step_size=eps, inverse_mass_matrix=inv_mass, integrator=integrator)

            def step(state, k):
                state, info = alg.step(k, state)
                return state, (post.loss_from_logdensity(state.position, state.logdensity), info.energy_change)

            return jax.lax.scan(step, state, keys, unroll=bool(unroll))

        return jax.vmap(chain)(states, L, eps, inv_mass, keys)

    @functools.partial(jax.jit, static_argnames="steps")
    def piece_keys(k_run, i, steps):  # (chains, steps) keys, made once per piece
        return jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, i), steps))(jax.random.split(k_run, cfg.chains))

    unroll = UNROLL if conv_on_cpu(post) else 0

    def run_piece(states, i, steps):
        """The piece's steps: in one call, or UNROLL unrolled steps a call (the same keys; a
        piece that is not a multiple of UNROLL runs on to one, its extra draws dropped, rather
        than compile a second program for the remainder)."""
        if not unroll:
            return run(states, L, eps, inv_mass, piece_keys(k_run, i, steps=steps), post.data, post.w_star)
        keys = np.asarray(piece_keys(k_run, i, steps=math.ceil(steps / unroll) * unroll))  # sliced on the host
        states, out = in_calls(lambda s, a, b: run(s, L, eps, inv_mass, keys[:, a : a + unroll], post.data, post.w_star), states, steps, unroll)
        return states, tuple(o[:, :steps] for o in out)

    phase(f"tuning L and the step (BlackJAX's finder): {cfg.tune_steps} steps per chain, {cfg.chains} chains")
    states, L, eps, inv_mass, n_tune = tune(starts(post, spec, key, cfg.chains), post.data, post.w_star, k_init, k_tune)

    # step_scale applied here, not in `tune`: one tuning program for every step_scale
    eps, shrinks, rerun_steps = cfg.step_scale * np.asarray(eps), 0, 0

    def piece(i, steps):
        nonlocal states, eps, shrinks, rerun_steps
        for attempt in range(RETRIES + 1):
            states, out = run_piece(states, i + 1000 * attempt, steps)
            out = (*out, np.repeat(eps[:, None], steps, axis=1))  # each draw's step
            if attempt == RETRIES:
                return out
            settled = min(cfg.burnin // 2, steps // 2) if i == 0 else 0  # the start of the burn-in aside
            var = np.var(np.asarray(out[1])[:, settled:], axis=1) / post.dim
            over = ~(var <= RETRY_VAR)  # NaN too
            if not over.any():
                return out
            shrinks, rerun_steps = shrinks + 1, rerun_steps + steps
            shrink = np.where(np.isfinite(var), (GOAL_VAR / np.maximum(var, GOAL_VAR)) ** (1 / 6), 0.5)
            eps = (eps * np.where(over, shrink, 1.0)).astype(eps.dtype)  # same dtype: the same program

    loss, de, step = until_mixed(piece, cfg.burnin, cfg.draws, cfg.AUTO_PIECE, cfg.max_draws)
    extras = {"energy_change": de, "L": np.asarray(L), "step_size": step, "step_shrinks": shrinks}
    grads = GRADS_PER_STEP[cfg.integrator]
    fge = grads * (float(np.max(np.asarray(n_tune))) + rerun_steps + cfg.burnin + loss.shape[1])
    return Trace(loss, fge, float(grads), extras)
