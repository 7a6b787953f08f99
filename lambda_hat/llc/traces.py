"""A run's draws as arviz InferenceData (trace.nc): what every diagnostic and plot reads.

posterior: `loss` (L_n at each kept draw) and `llc` (nβ(L_n − L_n(w*)), whose mean is λ̂), chain ×
draw. sample_stats: what the sampler has per draw (diverging, energy, acceptance rate, step size,
MCLMC's energy change) and the cumulative work (`fge`). VI's ELBO curve is the group `vi_fit`;
SGLD's minibatch statistic in blocks, whose diagnostics are the table's, the group `blocked`.
The posterior's attrs hold the run's config (JSON) and the scalars of the estimate.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

# sampler extras that are per kept draw (chains × draws), under arviz's names
PER_DRAW = {"divergent": "diverging", "energy": "energy", "acceptance_rate": "acceptance_rate", "energy_change": "energy_change", "step_size": "step_size"}


def thin(trace, every: int) -> None:
    """Keep every `every`-th draw of the trace and of its per-draw extras (eval_every)."""
    if every <= 1:
        return
    full = trace.loss.shape[1]
    for k in PER_DRAW:
        a = trace.extras.get(k)
        if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape[1] == full:
            trace.extras[k] = a[:, every - 1 :: every]
    trace.loss, trace.fge_per_draw = trace.loss[:, every - 1 :: every], trace.fge_per_draw * every


def _attr(v):
    """NetCDF attributes hold strings and numbers only."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, float, str, np.integer, np.floating)):
        return v
    return json.dumps(np.asarray(v).tolist() if hasattr(v, "shape") else v, default=float)


def inference_data(trace, n_beta: float, L_star: float, attrs: dict):
    import arviz as az
    import xarray as xr

    loss = np.asarray(trace.loss, dtype=np.float64)
    chains, draws = loss.shape
    stats = {PER_DRAW[k]: np.asarray(a) for k, a in trace.extras.items() if k in PER_DRAW and np.shape(a) == (chains, draws)}
    step = trace.extras.get("step_size")
    if step is not None and np.size(step) in (1, chains):  # per chain (HMC) or one (SGLD); MCLMC's is per draw
        stats["step_size"] = np.broadcast_to(np.reshape(np.asarray(step, dtype=np.float64), (-1, 1)), (chains, draws))
    stats["fge"] = np.broadcast_to(trace.fge - trace.fge_per_draw * np.arange(draws - 1, -1, -1), (chains, draws))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz's "More chains than draws" guess: a short run's arrays are (chain, draw) as given
        idata = az.from_dict(posterior={"loss": loss, "llc": n_beta * (loss - L_star)}, sample_stats=stats)
    if "elbo" in trace.extras:
        elbo, every = np.asarray(trace.extras["elbo"]), trace.extras.get("elbo_every", 1)
        steps = every * np.arange(1, elbo.shape[1] + 1)  # the optimiser's steps (eval_every thins them)
        idata.add_groups({"vi_fit": xr.Dataset({"elbo": (("fit", "step"), elbo)}, coords={"step": steps})})
    scalars = {k: v for k, v in trace.extras.items() if k not in PER_DRAW and k not in ("elbo", "elbo_every", "step_size")}
    annotate(idata, {**scalars, **attrs, "n_beta": n_beta, "L_star": L_star})
    return idata


def add_blocks(idata, m: int) -> None:
    """Group `blocked`: a minibatch statistic's `llc` as means of m draws (chain × draw, a draw per
    block), on which arviz's ESS, R̂ and MCSE read as the table's: per draw its batch noise inflates
    the ESS and shrinks the MCSE (estimator.py), and az.summary of the posterior looks healthier
    than the run is."""
    import xarray as xr

    from lambda_hat.llc.estimator import block_means

    x = block_means(np.asarray(idata.posterior["llc"].values, dtype=np.float64), m)
    idata.add_groups({"blocked": xr.Dataset({"llc": (("chain", "draw"), x)}, attrs={"block": m})})
    annotate(idata, {"diagnostics_group": "blocked"})


def annotate(idata, attrs: dict) -> None:
    """Add attributes to the posterior group (None values are left out)."""
    idata.posterior.attrs.update({k: _attr(v) for k, v in attrs.items() if v is not None})


def write(idata, path) -> None:
    idata.to_netcdf(str(path))


def read(path):
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.from_netcdf(str(path))


def arrays(idata) -> dict:
    """The plain arrays the plots draw: loss, llc, fge axis, per-draw stats, ELBO, PSIS k̂."""
    post, stats = idata.posterior, idata.sample_stats
    out = {"loss": post["loss"].values, "llc": post["llc"].values, "fge": stats["fge"].values[0]}
    out.update({k: stats[v].values for k, v in PER_DRAW.items() if v in stats})
    if "vi_fit" in idata.groups():
        out["elbo"], out["elbo_step"] = idata.vi_fit["elbo"].values, idata.vi_fit["step"].values
    if isinstance(post.attrs.get("pareto_k"), str):  # per chain (runs stored before it was kept: the worst only)
        out["pareto_k"] = np.asarray(json.loads(post.attrs["pareto_k"]))
    return out
