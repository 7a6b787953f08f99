"""Stage B task: draw from the localised posterior of a stored target and estimate λ̂."""

from __future__ import annotations

import time

import numpy as np

from lambda_hat.engine.store import read_json
from lambda_hat.engine.tasks import task
from lambda_hat.llc.config import MIN_KEPT, RunTask
from lambda_hat.llc.samplers import VERSIONS

FINITE_N_MAX_DIM = 2000  # llc_finite needs the full Hessian: d HVPs over the whole data set


def llc_finite(post, model: dict) -> float | None:
    """½ Σ nβh/(nβh + γ) over the exact Hessian at w* (full data), for regular targets."""
    import jax

    from lambda_hat.llc import theory

    if not theory.is_regular(model) or post.dim > FINITE_N_MAX_DIM:
        return None
    H = np.asarray(jax.jit(jax.hessian(post.loss))(post.w_star, post.data), dtype=np.float64)
    return theory.gaussian_finite_n(np.linalg.eigvalsh(0.5 * (H + H.T)), post.n_beta, post.gamma)


def estimate(post, cfg, model: dict, log=lambda msg: None, llc_true: float | None = None, trained: dict | None = None):
    """Calibrate, sample, summarise and check one run: (metrics with warnings, trace). The true
    λ is theory's for the model, or `llc_true` (a custom target's own); `trained`: the target's
    metrics, whose loss before and after training the checks read."""
    import jax

    from lambda_hat.engine import tracking
    from lambda_hat.engine.typed import plain
    from lambda_hat.llc import calibration, checks, samplers, theory, traces
    from lambda_hat.llc.estimator import summarize
    from lambda_hat.llc.samplers import sgld

    key = jax.random.PRNGKey(cfg.seed)
    spec = calibration.measure(post, jax.random.fold_in(key, 7))
    log(
        f"at w*: curvature {spec.theta.min():.3g}…{spec.theta.max():.3g}, gradient noise κ = {spec.kappa:.3g}, "
        f"|∇L_n| = {spec.grad_norm:.3g} (λ̂ shift {spec.wstar_shift:.3g}); measured in {spec.seconds:.2f} s"
    )
    t0 = time.time()
    with samplers.reporting(log, post):
        trace = samplers.get(cfg.kind)(post, cfg, key, spec)
    sec = time.time() - t0
    hint = (
        sgld.diverged_hint(cfg)
        if cfg.kind == "sgld"
        else {"vi": "lower lr", "hmc": "raise target_accept or warmup", "mclmc": "lower step_scale or raise tune_steps"}[cfg.kind]
    )
    if trace.extras.get("refined") == "hmc":  # the draws are the refinement's HMC, whose settings are not VI's
        hint = "in VI's refinement by HMC (q failed its checks): run the hmc sampler with a higher target_accept or warmup, or refine: none for q's own λ̂"
    samplers.check_finite(trace.loss, 0 if trace.extras.get("refined") else trace.extras.get("burnin", cfg.burnin), hint)
    traces.thin(trace, cfg.draw_every)  # the original Lambda-Hat's eval_every (VI's thins its ELBO's steps instead)
    if trace.loss.shape[1] < MIN_KEPT:  # auto draws stopped early: too few left to estimate or check
        raise ValueError(f"eval_every = {cfg.eval_every} keeps {trace.loss.shape[1]} draws per chain (< {MIN_KEPT}); lower eval_every")
    trace.idata = traces.inference_data(trace, post.n_beta, post.L_star, {"sampler": plain(cfg), "n": post.n, "d": post.dim})
    out = summarize(trace.idata)
    if trace.idata.posterior.attrs.get("minibatch_statistic"):  # arviz then reads the table's ESS and R̂ from its group
        traces.add_blocks(trace.idata, out["diag_block"])
    out.update(
        fge=trace.fge, n=post.n, d=post.dim, n_beta=post.n_beta, gamma=post.gamma, L_star=post.L_star, sample_sec=sec,
        calibration_sec=spec.seconds, grad_norm=spec.grad_norm, wstar_shift=spec.wstar_shift,
        min_curvature=float(spec.theta.min()), max_curvature=float(spec.theta.max()),
        llc_true=theory.known_llc(model) if llc_true is None else llc_true, llc_finite=llc_finite(post, model),
    )  # fmt: skip
    out["draws"] = int(trace.loss.shape[1])  # kept per chain (auto draws: where they stopped)
    out.update({k: (trained or {}).get(k) for k in ("initial_loss", "trained_loss")})
    if cfg.kind == "sgld":
        # the starts and the curvature around them are calibration, not sampling
        out["calibration_sec"] += trace.extras["plan_sec"]
        out["sample_sec"] -= trace.extras["plan_sec"]
        for k in (
            "step_size",
            "batch_size",
            "burnin",
            "predicted_bias",
            "bias_at_chains",
            "step_shrinks",
            "mala_acceptance",
            "halving_steps",
            "relax_steps",
            "budget_capped",
        ):
            out[k] = trace.extras[k]
        # the step-halving check's bias, relative to λ̂ (checks.py flags it where clearly too large)
        shift, shift_se = trace.extras["halving_shift"], trace.extras["halving_shift_se"]
        scale = max(abs(out["llc_mean"]), 1e-12)
        out["measured_bias"], out["measured_bias_se"] = shift / scale, shift_se / scale
        if np.isfinite(shift) and np.isfinite(shift_se):
            # Richardson extrapolation (as SG Richardson-Romberg LD, Durmus et al. 2016): the
            # bias is linear in ε to first order, so λ̂ − bias(ε) is the ε → 0 value; its error
            # joins the MCSE. Draws and llc_raw keep what the chains read.
            out["llc_raw"], out["llc_mean"] = out["llc_mean"], out["llc_mean"] - shift
            out["llc_chains"] = [v - shift for v in out["llc_chains"]]
            out["llc_sem"] = float(np.hypot(out["llc_sem"], shift_se))
        out["precond"] = cfg.preconditioner  # the units of step_size
    if cfg.kind == "vi":
        out["batch_size"] = trace.extras["batch_size"]
    if "acceptance_rate" in trace.extras:  # HMC's: its step (the chains' mean), acceptance, divergences, E-BFMI
        out["step_size"] = float(np.mean(trace.extras["step_size"]))
        out["acceptance_rate"] = float(np.mean(trace.extras["acceptance_rate"]))
        out["divergences"] = int(np.sum(trace.extras["divergent"]))
        out["ebfmi"] = checks.ebfmi(trace.extras["energy"])
    if "energy_change" in trace.extras:  # MCLMC is unadjusted: its bias grows with Var[ΔE]/d
        out["energy_var"] = float(np.mean(np.var(trace.extras["energy_change"], axis=1)) / post.dim)
        out["step_size"], out["step_shrinks"] = float(np.mean(trace.extras["step_size"])), trace.extras["step_shrinks"]
    if "pareto_k" in trace.extras:  # VI: the worst chain's PSIS k̂ (> 0.7: q's tails miss π's)
        out["pareto_k"] = float(np.max(trace.extras["pareto_k"]))
        out["llc_is"] = trace.extras["llc_is"]
        # refined: λ̂ is HMC's (q failed its own checks: samplers/vi.py), llc_vi what q itself read
        out["llc_vi"], out["refined"] = trace.extras["llc_vi"], trace.extras.get("refined", "none")
    for col in ("llc_true", "llc_finite"):
        out[col.replace("llc", "err")] = (out["llc_mean"] - out[col]) / out[col] if out[col] else None
    out["warnings"] = checks.run_warnings(out, cfg, data_free=model["kind"] == "quadratic")
    # the run's numbers as attrs, but not over a per-chain array the sampler stored under the same
    # name (VI's PSIS k̂: the table's worst-chain value in its place broke VI's plots)
    attrs = trace.idata.posterior.attrs
    traces.annotate(trace.idata, {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(attrs.get(k), str)})
    # its checks beside its numbers (`none` where clean), for whoever opens trace.nc alone
    codes, details = tracking.warning_text(out["warnings"])
    traces.annotate(trace.idata, {"warnings": codes or "none", "warning_details": details or ""})
    return out, trace


# A run's code version: the estimator's (bump when this file, calibration or the estimator changes
# λ̂ or its diagnostics; 2: the MCSE that sees past a dip) and its sampler's.
ESTIMATOR_VERSION = 2
# not blackjax: importing it starts a JAX backend, and a process cannot fork one
_PRELOAD = ("jax", "optax", "arviz", "lambda_hat.llc.calibration", "lambda_hat.llc.traces", "lambda_hat.llc.targets", "lambda_hat.llc.samplers.vi")


# VI's eval_every thinned q's draws before it thinned its ELBO's steps: only those runs changed
@task(
    RunTask,
    version=lambda c: (
        f"{ESTIMATOR_VERSION}.{VERSIONS[c['sampler']['kind']]}" + (".e" if c["sampler"]["kind"] == "vi" and c["sampler"]["eval_every"] > 1 else "")
    ),
    preload=_PRELOAD,
)
def sample_run(ctx, cfg: RunTask) -> dict:
    import jax

    from lambda_hat.llc import traces
    from lambda_hat.llc.targets import load_posterior

    (target_dir,) = ctx.deps
    target_sem = read_json(target_dir / "config.json")
    cfg = cfg.sampler
    post = load_posterior(target_dir, target_sem, cfg.posterior.beta0, cfg.posterior.gamma)
    ctx.log(f"{cfg.kind}: d={post.dim} n={post.n} nβ={post.n_beta:.4g} L*={post.L_star:.6g} x64={jax.config.jax_enable_x64}")
    trained = read_json(target_dir / "metrics.json") or {}
    out, trace = estimate(post, cfg, target_sem["model"], ctx.log, trained.get("llc_true"), trained)
    traces.annotate(trace.idata, {"config": ctx.config, "target_id": ctx.deps[0].name})
    traces.write(trace.idata, ctx.workdir / "trace.nc")
    ctx.log(f"λ̂ = {out['llc_mean']:.4g} ± {out['llc_sem']:.2g} (ESS {out['ess_bulk']:.0f}, R̂ {out['r_hat']:.3f}) in {out['sample_sec']:.1f} s")
    for w in out["warnings"]:
        ctx.log(f"warning {w['code']}: {w['message']}")
    return out
