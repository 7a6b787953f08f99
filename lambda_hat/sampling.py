"""Stage B task: draw from the localised posterior of a stored target and estimate λ̂."""

from __future__ import annotations

import time

import numpy as np

from .config import SAMPLER_KINDS
from .store import read_json
from .typed import build


def sample_run(ctx) -> dict:
    import jax

    from . import samplers, theory
    from .estimator import summarize
    from .targets import load_posterior

    (target_dir,) = ctx.deps
    target_sem = read_json(target_dir / "config.json")
    cfg = build(SAMPLER_KINDS[ctx.config["sampler"]["kind"]], ctx.config["sampler"], "<run config>")
    post = load_posterior(target_dir, target_sem, cfg.posterior.beta0, cfg.posterior.gamma)
    ctx.log(f"{cfg.kind}: d={post.dim} n={post.n} nβ={post.n_beta:.4g} L*={post.L_star:.6g} x64={jax.config.jax_enable_x64}")

    t0 = time.time()
    trace = samplers.get(cfg.kind)(post, cfg, jax.random.PRNGKey(cfg.seed))
    sec = time.time() - t0
    # cumulative FGE at each kept draw, for plots against work
    fge_axis = trace.fge - trace.fge_per_draw * np.arange(trace.loss.shape[1] - 1, -1, -1)
    np.savez(ctx.workdir / "trace.npz", loss=trace.loss, llc=post.n_beta * (trace.loss - post.L_star), fge=fge_axis, **trace.extras)

    hint = {"sgld": "lower step_size", "vi": "lower lr", "hmc": "raise target_accept or warmup", "mclmc": "raise tune_steps"}[cfg.kind]
    samplers.check_finite(trace.loss, cfg.burnin, hint)

    out = summarize(trace.loss, post.n_beta, post.L_star)
    out.update(
        fge=trace.fge, n=post.n, d=post.dim, n_beta=post.n_beta, L_star=post.L_star, sample_sec=sec,
        llc_true=theory.known_llc(target_sem["model"]),
    )  # fmt: skip
    if "acceptance_rate" in trace.extras:
        out["acceptance_rate"] = float(np.mean(trace.extras["acceptance_rate"]))
        out["divergences"] = int(np.sum(trace.extras["divergent"]))
    if "pareto_k" in trace.extras:  # VI: the worst chain's PSIS k̂ (> 0.7: q's tails miss π's)
        out["pareto_k"] = float(np.max(trace.extras["pareto_k"]))
    ctx.log(f"λ̂ = {out['llc_mean']:.4g} ± {out['llc_sem']:.2g} (ESS {out['ess_bulk']:.0f}, R̂ {out['r_hat']:.3f}) in {sec:.1f} s")
    return out
