"""Diagnose tasks: plots of a run's traces and of a target's fit, written next to nothing else.

Each returns {"plots": {name: file}} for the gallery. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import warnings

import numpy as np

from lambda_hat.engine.store import read_json
from lambda_hat.engine.tasks import task
from lambda_hat.engine.typed import build
from lambda_hat.llc import traces
from lambda_hat.llc.checks import ebfmi
from lambda_hat.llc.config import VI, PlotTask
from lambda_hat.llc.estimator import block_means, blocked, mcse_mean

# Bump to redraw every plot (it is part of the diagnose task IDs).
PLOTS_VERSION = 7  # 7: the finite-n λ beside the true λ


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "lambda-hat"})
    return plt


def truth_lines(m: dict) -> list[tuple[float, str, str]]:
    """(value, label, line style) of what λ̂ is read against: the true λ and, where it differs by
    more than 0.1%, the finite-n value of the localised posterior at w* (a regular model's λ̂
    estimates that, below d/2 where some directions are weak). None or NaN: not known."""

    def known(v) -> bool:
        return v is not None and v == v  # NaN != NaN

    true, finite = m.get("llc_true"), m.get("llc_finite")
    lines = [(float(true), f"true λ = {true:g}", "--")] if known(true) else []
    if known(finite) and not (known(true) and abs(finite - true) <= 1e-3 * abs(true)):
        lines.append((float(finite), f"finite-n λ = {finite:.4g}", "-."))
    return lines


def _save(fig, path) -> str:
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version stamp: identical bytes on every redraw
    _plt().close(fig)
    return path.name


def _running_llc(llc: np.ndarray, noisy: bool, points: int = 40):
    """Pooled running mean of λ̂ and its MCSE (arviz; on block means for a minibatch statistic, as
    in the table) after k draws, at up to `points` values of k."""
    draws = llc.shape[1]
    ks = np.unique(np.linspace(min(8, draws), draws, points).astype(int))
    mean = np.array([llc[:, :k].mean() for k in ks])
    mcse = np.array([mcse_mean(blocked(llc[:, :k], noisy)[0]) for k in ks])
    return ks, mean, mcse


@task(PlotTask, version=PLOTS_VERSION)
def diagnose_run(ctx, cfg: PlotTask) -> dict:
    plt = _plt()
    (run_dir,) = ctx.deps
    idata = traces.read(run_dir / "trace.nc")
    tr = traces.arrays(idata)
    m = read_json(run_dir / "metrics.json")
    sampler = read_json(run_dir / "config.json")["sampler"]
    label = read_json(run_dir / "manifest.json")["label"]
    loss, llc, fge = tr["loss"], tr["llc"], tr["fge"]
    chains, draws = loss.shape
    out, wd = {}, ctx.workdir

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for c in range(chains):
        ax.plot(loss[c], lw=0.6, label=f"chain {c}")
    ax.axhline(m["L_star"], color="k", ls="--", lw=1, label="L_n(w*)")
    ax.set(title=f"L_n trace per chain: {label}", xlabel="draw (after burn-in)", ylabel="L_n(w) [nats / sample]")
    ax.legend(fontsize=7, ncol=min(chains + 1, 5))
    out["trace"] = _save(fig, wd / "trace.png")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ks, mean, mcse = _running_llc(llc, bool(idata.posterior.attrs.get("minibatch_statistic")))
    # Wall time is spread over draws in proportion to their FGE (one sampling time is recorded).
    secs = m["sample_sec"] * fge / fge[-1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, x, xlabel in (
        (axes[0], fge[ks - 1], "work [full-gradient evaluations per chain]"),
        (axes[1], secs[ks - 1], "wall time [s] (sampling time spread by FGE)"),
    ):
        ax.plot(x, mean, color="C0", label="running λ̂")
        ax.fill_between(x, mean - 2 * mcse, mean + 2 * mcse, color="C0", alpha=0.25, label="± 2 MCSE")
        for value, name, style in truth_lines(m):
            ax.axhline(value, color="k", ls=style, lw=1, label=name)
        if m.get("llc_raw") is not None:  # SGLD: the draws read llc_raw; λ̂ has the step's bias removed
            ax.axhline(m["llc_mean"], color="C3", ls=":", lw=1.2, label=f"λ̂ = {m['llc_mean']:.4g}, the step's bias removed")
        ax.set(xlabel=xlabel)
    axes[0].set(ylabel="λ̂ (pooled over chains)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Running λ̂ estimate: {label}")
    out["running_llc"] = _save(fig, wd / "running_llc.png")

    import arviz as az
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = plt.subplots(figsize=(7, 3.6))
        block = int(m.get("diag_block") or 1)
        if chains > 1 and block > 1:  # SGLD's minibatch statistic: per draw its noise reads uniform however far apart the chains are
            az.plot_rank(xr.Dataset({"llc": (("chain", "draw"), block_means(llc, block))}), var_names=["llc"], ax=ax)
            ax.set(title=f"Rank plot of λ̂ in blocks of {block} draws (uniform when chains agree): {label}", xlabel="rank (all chains)", ylabel="chain")
        elif chains > 1:
            az.plot_rank(idata, var_names=["llc"], ax=ax)
            ax.set(title=f"Rank plot of λ̂ draws (uniform when chains agree): {label}", xlabel="rank (all chains)", ylabel="chain")
        else:
            ax.text(0.5, 0.5, "one chain: no rank plot", ha="center")
            ax.set(title=f"Rank plot: {label}", xlabel="rank", ylabel="chain")
        out["rank"] = _save(fig, wd / "rank.png")

    if "acceptance_rate" in tr:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for c in range(chains):
            acc = tr["acceptance_rate"][c]
            axes[0].plot(np.cumsum(acc) / np.arange(1, acc.size + 1), lw=0.8, label=f"chain {c}")
        refined = sampler["kind"] == "vi"  # a VI run whose λ̂ is its refinement's HMC: that HMC's target
        target = build(VI, sampler, "run config").refine_hmc.target_accept if refined else sampler["target_accept"]
        axes[0].axhline(target, color="k", ls="--", lw=1, label="target")
        axes[0].set(title=f"HMC acceptance rate (running mean){' of the refinement' if refined else ''}", xlabel="draw", ylabel="acceptance probability")
        axes[0].legend(fontsize=7)
        axes[1].bar(range(chains), tr["divergent"].sum(axis=1))
        axes[1].set(title=f"Divergent transitions: {int(tr['divergent'].sum())}", xlabel="chain", ylabel="count")
        # Energy: marginal vs transition distribution; similar widths mean momentum resampling
        # explores the energy levels well (E-BFMI near 1).
        e = tr["energy"] - tr["energy"].mean(axis=1, keepdims=True)
        de = np.diff(tr["energy"], axis=1)
        bfmi = m.get("ebfmi", ebfmi(tr["energy"]))  # the lowest chain's, as the ebfmi check reads it
        axes[2].hist(e.ravel(), bins=40, alpha=0.6, density=True, label="energy (centred)")
        axes[2].hist(de.ravel(), bins=40, alpha=0.6, density=True, label="energy change")
        axes[2].set(title=f"HMC energy (E-BFMI {bfmi:.2f})", xlabel="energy [nats]", ylabel="density")
        axes[2].legend(fontsize=7)
        out["hmc"] = _save(fig, wd / "hmc.png")
    if "energy_change" in tr:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for c in range(chains):
            ax.plot(tr["energy_change"][c], lw=0.5, label=f"chain {c}")
        ax.set(title="MCLMC energy change per step", xlabel="draw", ylabel="ΔE [nats]")
        ax.legend(fontsize=7)
        out["mclmc"] = _save(fig, wd / "mclmc.png")
    if "elbo" in tr:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for c in range(tr["elbo"].shape[0]):
            k = f", PSIS k̂ {tr['pareto_k'][c]:.2f}" if "pareto_k" in tr else ""
            ax.plot(tr["elbo_step"], tr["elbo"][c], lw=0.6, label=f"fit {c}{k}")
        ax.set_ylim(bottom=np.percentile(tr["elbo"], 5))  # the first steps' ELBO would flatten the rest
        ax.set(title="VI: ELBO during optimisation", xlabel="optimiser step", ylabel="ELBO [nats] (MC estimate)")
        ax.legend(fontsize=7)
        out["elbo"] = _save(fig, wd / "elbo.png")
    return {"plots": out}


@task(PlotTask, version=PLOTS_VERSION)
def diagnose_target(ctx, cfg: PlotTask) -> dict:
    """Training curve with the final train and test loss, and predictions against the teacher."""
    plt = _plt()
    (target_dir,) = ctx.deps
    sem = read_json(target_dir / "config.json")
    metrics = read_json(target_dir / "metrics.json")
    if sem["model"]["kind"] == "quadratic":
        return {"plots": {}}  # analytic loss: no data, no training
    import jax

    from lambda_hat.llc.targets import problem

    arrays = np.load(target_dir / "target.npz")
    prob = problem(sem)
    fig, axes = plt.subplots(1, 2 if prob.teacher else 1, figsize=(10 if prob.teacher else 6, 3.8), squeeze=False)
    axes = axes[0]
    axes[0].semilogy(arrays["train_curve"], lw=0.8, label="training loss (batch)")
    axes[0].axhline(metrics["final_loss"], color="C1", ls="--", lw=1, label=f"train L_n(w*) = {metrics['final_loss']:.4g}")
    if metrics.get("test_loss") is not None:
        axes[0].axhline(metrics["test_loss"], color="C2", ls=":", lw=1.2, label=f"test loss = {metrics['test_loss']:.4g}")
    acc = f" (accuracy: train {metrics['train_accuracy']:.3f}, test {metrics['test_accuracy']:.3f})" if "test_accuracy" in metrics else ""
    axes[0].set(title=f"Training{acc}", xlabel="optimiser step", ylabel="loss [nats / sample]")
    axes[0].legend(fontsize=8)
    if not prob.teacher:  # real or user-made data: no noiseless truth to compare with
        fig.suptitle(f"Target fit: {sem['model']['kind']} (d = {metrics['d']}, n = {metrics['n']})")
        return {"plots": {"target": _save(fig, ctx.workdir / "target.png")}}
    xt, _ = prob.test()
    w = jax.device_put(np.asarray(arrays["w_star"], xt.dtype))
    pred, truth = np.asarray(prob.predict(w, xt))[:, 0], np.asarray(prob.teacher(xt))[:, 0]
    lo, hi = float(min(pred.min(), truth.min())), float(max(pred.max(), truth.max()))
    axes[1].scatter(truth, pred, s=3, alpha=0.4)
    axes[1].plot([lo, hi], [lo, hi], color="k", lw=1, label="prediction = teacher")
    axes[1].set(title="Test set, first output", xlabel="teacher f*(x)", ylabel="trained network f(x; w*)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Target fit: {sem['model']['kind']} (d = {metrics['d']}, n = {metrics['n']})")
    return {"plots": {"target": _save(fig, ctx.workdir / "target.png")}}
