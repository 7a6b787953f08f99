"""One sampler interface: sample(posterior, config, key, spec) -> Trace.

`spec` is the posterior measured at w* (calibration.measure; measured here when None). MCMC
samplers start their chains dispersed around w* (calibration.dispersed_starts), so that R̂ sees a
mode that has not mixed; all run their chains vectorised (vmap) inside jitted scans, discard
`burnin` draws and return L_n at each kept draw.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field

import numpy as np

from lambda_hat.llc.checks import ESS_MIXED, RHAT_MAX
from lambda_hat.llc.config import SAMPLER_KINDS
from lambda_hat.llc.estimator import blocked, ess_bulk

# Each sampler's code version, part of its runs' IDs: bump one when a change to its module
# changes the draws, and exactly the runs of that sampler are recomputed.
VERSIONS = {"sgld": 14, "hmc": 5, "mclmc": 6, "vi": 5}
MIXED_DRAWS = 4000  # the auto draws' stopping rule reads at most this many (block) means per chain
PROGRESS_SEC = 30.0  # a long run's progress in its task's log, at most this often
UNROLL = 8  # steps per call, or samples per chunk, for a convolution on CPU (conv_on_cpu)
_REPORT = contextvars.ContextVar("sampler_progress", default=None)


@dataclass
class Trace:
    loss: np.ndarray  # (chains, draws): L_n(w) at each kept draw
    fge: float  # full-gradient evaluations per chain, warm-up and tuning included
    fge_per_draw: float  # the cost of one kept draw, for work-normalised plots
    extras: dict = field(default_factory=dict)  # sampler diagnostics, arrays or scalars
    idata: object = None  # the arviz InferenceData of the kept draws (traces.py), once estimated


def conv_on_cpu(post) -> bool:
    """Whether the target's loss has a convolution and runs on CPU, where XLA runs convolutions
    inside a loop body 2–5× slower (jax-ml/jax#12868: a small CNN's 4-chain gradient step took
    37 ms in a scan, 7.4 ms in unrolled pieces of 8 steps; a 1-D one 17.6 against 6.4; MLPs and
    attention ran as fast or faster in the loop), and vmapped over many per-sample gradients
    (1 200 digits: 1.5 s at once, 0.016 s in chunks of 8). Such a target's SGLD, MCLMC and VI
    fit run their steps from the host, UNROLL unrolled steps a call, and SGLD takes its
    per-sample values in chunks."""
    import jax

    if jax.default_backend() != "cpu" or post.data is None:
        return False
    return "conv_general_dilated" in str(jax.make_jaxpr(post.loss)(post.w_star, post.data))


def per_sample(fn, w, x, y, chunked: bool):
    """fn(w, xi, yi) for every sample (a pytree of arrays with a leading sample axis): one
    vmapped program, or where chunked (conv_on_cpu) UNROLL samples a call from the host."""
    import jax

    f = jax.jit(jax.vmap(fn, in_axes=(None, 0, 0)))
    m = x.shape[0]
    if not chunked or m <= UNROLL:
        return f(w, x, y)
    x, y, outs = np.asarray(x), np.asarray(y), []
    for start in range(0, m, UNROLL):
        lo = min(start, m - UNROLL)  # the last chunk overlaps the one before: one compiled shape
        outs.append(jax.tree.map(lambda a: np.asarray(a)[start - lo :], f(w, x[lo : lo + UNROLL], y[lo : lo + UNROLL])))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def in_calls(call, carry, steps: int, every: int):
    """`steps` steps as calls of `every` (UNROLL where conv_on_cpu, else all at once):
    call(carry, start, stop) -> (carry, outputs of chains × steps each), the outputs joined on
    the host (jnp's concatenate compiles a program per count of calls)."""
    import jax

    outs = []
    for start in range(0, steps, every):
        carry, out = call(carry, start, min(start + every, steps))
        outs.append(out)
    return carry, jax.tree.map(lambda *o: np.concatenate([np.asarray(x) for x in o], axis=1), *outs)


def check_finite(losses: np.ndarray, first_step: int, hint: str) -> None:
    """Fail with the chain and step of the first non-finite L_n (shape: chains × steps)."""
    bad = ~np.isfinite(losses)
    if bad.any():
        chain, step = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
        from lambda_hat.engine.tasks import TaskFailed

        raise TaskFailed(f"diverged: non-finite L_n at step {first_step + step} of chain {chain}; {hint}")


def mixed(kept: np.ndarray, noisy: bool) -> bool:
    """The auto draws' stopping rule: bulk ESS ≥ 4 × the warning's goal (so that it stays clear
    of it by chance) and R̂ ≤ its limit, on at most MIXED_DRAWS block means per chain (blocks at
    least as long as the minibatch statistic's diagnostics use: see estimator.NOISE_SHARE)."""
    import warnings

    import arviz as az  # slow to import: only where auto draws run

    x, _ = blocked(kept, noisy, kept.shape[1] // MIXED_DRAWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ess_bulk(x) >= ESS_MIXED and float(az.rhat(x)) <= RHAT_MAX


@contextlib.contextmanager
def reporting(log, post):
    """While a task samples `post`: the samplers' `progress` to `log` (the task's log.txt, whose
    last line the workflow shows for a task running long), at most every PROGRESS_SEC."""
    t0 = time.time()
    token = _REPORT.set({"log": log, "post": post, "t0": t0, "last": t0})
    try:
        yield
    finally:
        _REPORT.reset(token)


def progress(what: str, kept=None) -> None:
    """`what` (how far the run is) and λ̂ over the draws kept so far: kept() gives their L_n
    (chains × draws; SGLD's paired statistic, before its bias is removed), called only when logged."""
    r = _REPORT.get()
    if r is None or time.time() - r["last"] < PROGRESS_SEC:
        return
    r["last"] = time.time()
    losses = kept() if kept else None
    est = f"; λ̂ so far {r['post'].n_beta * (float(np.mean(losses)) - r['post'].L_star):.4g}" if losses is not None and losses.size else ""
    r["log"](f"{what}{est} ({time.time() - r['t0']:.0f} s)")


def phase(what: str) -> None:
    """Log, whenever it comes, the start of a phase that runs as one compiled program without
    progress of its own (MCLMC's tuning, HMC's adaptation: minutes on a large target)."""
    r = _REPORT.get()
    if r is not None:
        r["last"] = time.time()
        r["log"](f"{what} ({time.time() - r['t0']:.0f} s)")


def until_mixed(run_piece, burnin: int, draws, piece: int, max_draws: int) -> tuple:
    """Burn-in and draws from run_piece(i, steps) (the chains' next `steps` steps: a tuple of
    chains × steps arrays, L_n first), burn-in dropped. A number of draws is one piece; `auto`
    runs pieces of `piece` steps (one compiled program) until the kept L_n pass `mixed` or
    max_draws are kept."""
    if draws != "auto":
        return tuple(np.asarray(a)[:, burnin:] for a in run_piece(0, burnin + draws))
    parts, i = [], 0
    losses = lambda: np.concatenate([p[0] for p in parts], axis=1)[:, burnin:]  # noqa: E731
    while True:
        parts.append(tuple(np.asarray(a) for a in run_piece(i, piece)))
        i += 1
        kept = i * piece - burnin
        progress(f"{min(i * piece, burnin + max_draws)} of ≤ {burnin + max_draws} draws per chain (burn-in {burnin})", losses if kept > 0 else None)
        if kept >= max_draws or (kept >= 100 and mixed(losses(), False)):
            return tuple(np.concatenate(c, axis=1)[:, burnin : burnin + max_draws] for c in zip(*parts))


def starts(post, spec, key, chains: int):
    """Dispersed initial positions, one row per chain."""
    import jax

    from lambda_hat.llc import calibration

    spec = spec or calibration.measure(post, jax.random.fold_in(key, 7))
    return calibration.dispersed_starts(post, spec, jax.random.fold_in(key, 2), chains)


def get(kind: str):
    """The sampler's `sample`, its module imported alone: an SGLD or VI task does not import
    blackjax (hmc, mclmc; 0.10–0.15 s in a task forked with the preloaded modules)."""
    import importlib

    if kind not in SAMPLER_KINDS:
        raise KeyError(kind)
    return importlib.import_module(f"lambda_hat.llc.samplers.{kind}").sample
