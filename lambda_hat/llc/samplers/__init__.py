"""One sampler interface: sample(posterior, config, key, spec) -> Trace.

`spec` is the posterior measured at w* (calibration.measure; measured here when None). MCMC
samplers start their chains dispersed around w* (calibration.dispersed_starts), so that R̂ sees a
mode that has not mixed; all run their chains vectorised (vmap) inside jitted scans, discard
`burnin` draws and return L_n at each kept draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Each sampler's code version, part of its runs' IDs: bump one when a change to its module
# changes the draws, and exactly the runs of that sampler are recomputed.
VERSIONS = {"sgld": 10, "hmc": 4, "mclmc": 4, "vi": 4}


@dataclass
class Trace:
    loss: np.ndarray  # (chains, draws): L_n(w) at each kept draw
    fge: float  # full-gradient evaluations per chain, warm-up and tuning included
    fge_per_draw: float  # the cost of one kept draw, for work-normalised plots
    extras: dict = field(default_factory=dict)  # sampler diagnostics, arrays or scalars
    idata: object = None  # the arviz InferenceData of the kept draws (traces.py), once estimated


def check_finite(losses: np.ndarray, first_step: int, hint: str) -> None:
    """Fail with the chain and step of the first non-finite L_n (shape: chains × steps)."""
    bad = ~np.isfinite(losses)
    if bad.any():
        chain, step = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
        from lambda_hat.engine.tasks import TaskFailed

        raise TaskFailed(f"diverged: non-finite L_n at step {first_step + step} of chain {chain}; {hint}")


def starts(post, spec, key, chains: int):
    """Dispersed initial positions, one row per chain."""
    import jax

    from lambda_hat.llc import calibration

    spec = spec or calibration.measure(post, jax.random.fold_in(key, 7))
    return calibration.dispersed_starts(post, spec, jax.random.fold_in(key, 2), chains)


def get(kind: str):
    from lambda_hat.llc.samplers import hmc, mclmc, sgld, vi

    return {"sgld": sgld.sample, "hmc": hmc.sample, "mclmc": mclmc.sample, "vi": vi.sample}[kind]
