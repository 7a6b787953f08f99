"""λ̂ = nβ(E[L_n(w)] − L_n(w*)) per chain and pooled, with arviz diagnostics."""

from __future__ import annotations

import warnings

import numpy as np


def summarize(loss: np.ndarray, n_beta: float, L_star: float) -> dict:
    """loss: (chains, draws) of L_n at kept draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz's refactor notice, small-sample warnings
        import arviz as az

        llc = n_beta * (np.asarray(loss, dtype=np.float64) - L_star)
        per_chain = llc.mean(axis=1)
        chains, draws = llc.shape
        diag = {
            "ess_bulk": float(az.ess(llc, method="bulk")),
            "ess_tail": float(az.ess(llc, method="tail")),
            "r_hat": float(az.rhat(llc)) if chains > 1 and draws >= 4 else float("nan"),
            "mcse": float(az.mcse(llc, method="mean")),
        }
    return {
        "llc_mean": float(per_chain.mean()),
        "llc_std": float(per_chain.std(ddof=1)) if chains > 1 else 0.0,
        # Standard error of the pooled mean: the arviz MCSE accounts for autocorrelation.
        "llc_sem": diag["mcse"],
        "llc_chains": [float(v) for v in per_chain],
        **diag,
    }
