"""λ̂ = nβ(E[L_n(w)] − L_n(w*)) per chain and pooled, with arviz diagnostics of the run's
InferenceData (traces.py)."""

from __future__ import annotations

import warnings

import numpy as np

# A minibatch statistic (SGLD's) is the chain's slowly varying L_n(w) plus white batch noise that
# grows with |w − w*|² (the control variate cancels it to first order only): on a DLN at n = 1e3
# five times the signal's spread, and larger in the chains that wander further. Per draw it
# inflates the ESS (34 605 against 1 166 for the exact L_n(w) along the same chains), shrinks the
# MCSE (0.071 against 0.100) and, its spread differing between chains, throws R̂ (1.098 against
# 1.004). Its diagnostics are computed on means of blocks of draws that bring the noisiest
# chain's noise variance down to NOISE_SHARE of the signal's (there: blocks of 136, R̂ 1.010,
# ESS 689, MCSE 0.112).
NOISE_SHARE = 0.25
MIN_BLOCKS = 20  # per chain


def noise_ratio(x: np.ndarray) -> float:
    """Variance of the white noise on top of a statistic (chain × draw) over its slow part's, for
    the noisiest chain (R̂ compares the chains' spreads): the lag-1 autocovariance estimates the
    slow part's variance, the rest of a chain's variance is its noise. 0 without noise, inf
    where no slow part shows."""
    c = x - x.mean(axis=1, keepdims=True)
    var, lag1 = np.mean(c * c, axis=1), np.mean(c[:, 1:] * c[:, :-1], axis=1)
    noise, signal = float(np.max(var - lag1)), float(np.mean(lag1))
    if not noise > 0:
        return 0.0
    return np.inf if signal <= 0 else noise / signal


def block_size(x: np.ndarray) -> int:
    """Draws per block that bring the noise ratio down to NOISE_SHARE, within MIN_BLOCKS per chain."""
    want = np.ceil(noise_ratio(x) / NOISE_SHARE)
    return int(max(1, min(want, x.shape[1] // MIN_BLOCKS)))


def block_means(x: np.ndarray, m: int) -> np.ndarray:
    k = x.shape[1] // m
    return x[:, : k * m].reshape(x.shape[0], k, m).mean(axis=2)


def blocked(x: np.ndarray, noisy: bool, at_least: int = 1) -> tuple[np.ndarray, int]:
    """(block means, block length): what every diagnostic of a (possibly minibatch) statistic reads."""
    m = max(block_size(x) if noisy else 1, at_least)
    return block_means(x, m), m


# arviz's ESS sums autocorrelations up to the first pair whose sum is negative (Geyer). Along
# MCLMC's and HMC's orbits L_n's can dip to ~0 and rise again (MCLMC, a linear target with unused
# weights: lag 1 0.66, lag 2 0.05, lag 5 0.60): it stops at the dip and reads the MCSE 2× too
# small. Block means average an orbit out; the largest MCSE over block lengths replaces arviz's
# where it is more than MCSE_SLACK times it (README, "An MCSE that sees past a dip").
MIN_BLOCK_MEANS = 50  # per chain: the longest blocks tried leave this many
# Below it the blocks' own noise explains the difference (on AR(1) chains of 500–6 000 draws, ρ 0
# to 0.99, 100 seeds each: above 1.25× in 0–2% of them): arviz's numbers stand, as `az.summary`
# reads them from trace.nc.
MCSE_SLACK = 1.25


def _arviz_mcse(x: np.ndarray) -> float:
    """arviz's MCSE of the mean of a chain × draw array (a 1-element array where numba is
    installed: float() of it fails; .item() takes one element and refuses more)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        return float(np.asarray(az.mcse(x, method="mean")).item())


def _mcses(x: np.ndarray) -> tuple[float, float]:
    """(arviz's MCSE of the pooled mean, the MCSE): arviz's, or where the largest of arviz's on
    means over blocks of 2, 4, 8, … draws (at least MIN_BLOCK_MEANS per chain) is more than
    MCSE_SLACK times it, that."""
    plain, blocks, m = _arviz_mcse(x), 0.0, 2
    while x.shape[1] // m >= MIN_BLOCK_MEANS:
        blocks = max(blocks, _arviz_mcse(block_means(x, m)))
        m *= 2
    return plain, blocks if blocks > MCSE_SLACK * plain else plain


def mcse_mean(x: np.ndarray) -> float:
    """MCSE of the pooled mean of a chain × draw array (_mcses)."""
    return _mcses(x)[1]


def ess_bulk(x: np.ndarray, mcses: tuple[float, float] | None = None) -> float:
    """arviz's bulk ESS, scaled down by (arviz's MCSE / the MCSE)² where the blocks found more error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ess = float(az.ess(x, method="bulk"))
    plain, se = mcses or _mcses(x)
    return ess * min(1.0, (plain / se) ** 2) if se > 0 else ess


def summarize(idata) -> dict:
    """Mean, spread and diagnostics of the posterior variable `llc` (chain × draw); on block means
    (`diag_block` draws each) where the posterior's attrs mark it a minibatch statistic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz's refactor notice, small-sample warnings
        import arviz as az

        llc = np.asarray(idata.posterior["llc"].values, dtype=np.float64)
        per_chain = llc.mean(axis=1)
        noisy = bool(idata.posterior.attrs.get("minibatch_statistic"))
        x, m = blocked(llc, noisy)
        chains, draws = x.shape
        plain, mcse = _mcses(x)
        diag = {
            "ess_bulk": ess_bulk(x, (plain, mcse)),
            "ess_tail": float(az.ess(x, method="tail")),
            "r_hat": float(az.rhat(x)) if chains > 1 and draws >= 4 else float("nan"),
            "mcse": mcse,
            "diag_block": m,
            # what noise the blocks leave, over the signal's variance (above NOISE_SHARE where
            # the draws are too few for long enough blocks: checks.py flags it)
            "diag_noise": noise_ratio(llc) / m if noisy else float("nan"),
        }
    return {
        "llc_mean": float(per_chain.mean()),
        "llc_std": float(per_chain.std(ddof=1)) if chains > 1 else 0.0,
        # Standard error of the pooled mean, autocorrelation accounted for (mcse_mean)
        "llc_sem": diag["mcse"],
        "llc_chains": [float(v) for v in per_chain],
        **diag,
    }
