"""λ̂ = nβ(E[L_n(w)] − L_n(w*)) per chain and pooled, with arviz diagnostics of the run's
InferenceData (traces.py)."""

from __future__ import annotations

import warnings


def summarize(idata) -> dict:
    """Mean, spread and diagnostics of the posterior variable `llc` (chain × draw)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz's refactor notice, small-sample warnings
        import arviz as az

        llc = idata.posterior["llc"]
        per_chain = llc.mean("draw").values
        chains, draws = llc.shape
        one = lambda fn, **kw: float(fn(idata, var_names=["llc"], **kw)["llc"])  # noqa: E731
        diag = {
            "ess_bulk": one(az.ess, method="bulk"),
            "ess_tail": one(az.ess, method="tail"),
            "r_hat": one(az.rhat) if chains > 1 and draws >= 4 else float("nan"),
            "mcse": one(az.mcse, method="mean"),
        }
    return {
        "llc_mean": float(per_chain.mean()),
        "llc_std": float(per_chain.std(ddof=1)) if chains > 1 else 0.0,
        # Standard error of the pooled mean: the arviz MCSE accounts for autocorrelation.
        "llc_sem": diag["mcse"],
        "llc_chains": [float(v) for v in per_chain],
        **diag,
    }
