"""SGLD: plain, with a fixed curvature preconditioner, or RMSProp-preconditioned (Hitchcock &
Hoogland 2025).

Own kernel rather than blackjax.sgld: the estimator needs the minibatch loss from the same
forward pass as the gradient (blackjax's step returns only the new position), and blackjax has
no preconditioned variant whose preconditioner can be frozen after burn-in.

`step_size: auto` (the default) takes ε and burn-in from the measured curvature and gradient
noise at w* (calibration.sgld_plan), with P ≈ (nβH + γ)⁻¹ (calibration.curvature_precond) unless
`precond` says otherwise; `draws: auto` runs piece by piece until the chains meet the ESS and R̂
goals or max_steps. Between pieces the bias is predicted again where the chains are
(calibration.bias_around): the auto step shrinks where it is over twice its target. Each draw
records a paired statistic on the step's own batch, L_b(w) minus a control variate with mean L_n(w*) (see _paired): the same mean
as L_n(w) without the batch noise to first order. What noise is left, the diagnostics average out
over blocks of draws (estimator.block_size). After the draws, the step-halving check (_halving)
measures the step's bias where the predictions above can only model it.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.llc import calibration
from lambda_hat.llc.data import host_rng
from lambda_hat.llc.estimator import blocked, mcse_mean
from lambda_hat.llc.samplers import UNROLL, Trace, check_finite, conv_on_cpu, in_calls, mixed, per_sample, progress, starts

CHUNKS = 10  # the scan runs in (at least) this many pieces so a divergence stops the run early
# From this many bytes of random bits a step (d ≈ 4 000 at 4 chains), each step draws its own
# inside the scan: they stay in cache, where a piece's drawn up front cost 7% more time at
# d = 9 610 and 9–12% at d = 1e5 (4 chains). Below, each piece's bits (noise and batch offsets)
# are drawn up front on the host, its pieces shrunk so that they stay under PIECE_NOISE_BYTES:
# per step, XLA splits the small fusion that makes the normals over threads (RMSProp SGLD, one
# chain at d = 433: 1.8× a bare gradient instead of 1.3×), and XLA's own generator in the
# program cost 0.15 s of its 0.45 s compilation (d = 100), a task's cold start.
STEP_BITS_BYTES = 2**16
PIECE_NOISE_BYTES = 2**24
GRAD_PREFIX_BYTES = 2**28  # per-sample gradient prefix sums for the paired statistic
MAX_PIECES = 100  # auto draws run on past the plan, piece by piece, until the chains have mixed
SHRINK_ABOVE, MAX_SHRINKS = 2.0, 3  # the auto step shrinks where the chains' bias exceeds 2× its target
CHECKS = 25  # of that bias per run (its Hessians at the chains cost a few full gradients each)
# The step-halving check (_halving): this many of the slowest relaxation times, the first
# HALVING_SETTLE of them dropped while the ε/2 copy relaxes; at most 1/HALVING_SHARE of the run's
# steps (it takes four gradients a step: ≤ 8% of the run's). Not run where that leaves less than
# one relaxation time past the settling (the bias would read short) or HALVING_MIN steps (a
# devinterp-style 600-step run: its compilation alone would double the run's time).
HALVING_RELAX, HALVING_SETTLE, HALVING_SHARE, HALVING_MIN = 4, 1.5, 48, 50


def diverged_hint(cfg) -> str:
    """What to change after a divergence. A number with `precond: auto` runs unpreconditioned,
    where an auto run's ε is in units of its curvature preconditioner: copied over, it diverges."""
    if cfg.step_size == "auto":  # planned at w* and the starts: the chains found a stiffer loss
        loose = "; with gamma 0 nothing holds the chains near w*: give gamma > 0" if cfg.posterior.gamma == 0 else ""
        return f"the auto step diverged where the chains went: lower bias_target{loose}"
    if cfg.precond == "auto":
        return "lower step_size (a number runs without a preconditioner: the step of a step_size: auto run needs precond: curvature too)"
    return "lower step_size"


def _paired(post, batches, chunked: bool):
    """The control variate of each step's batch, L_b(w*) + (∇L_b(w*) − ∇L_n(w*))·(w − w*), as
    (arrays, at): at(arrays, start, w), the arrays passed into the jitted program.

    Its mean over batches is L_n(w*) whatever w (the batch is drawn independently of w), and
    it removes the batch noise of L_b(w) to first order. Batches are windows of one shuffled
    ring, so both terms are differences of prefix sums of per-sample values at w*, at no cost
    per step. The gradient term is kept only while its prefix sums fit in GRAD_PREFIX_BYTES.
    """
    if batches.size is None:
        return (), lambda arrays, start, w: post.L_star
    x, y = batches.ring
    b, dt = batches.size, post.w_star.dtype

    def prefix(values):  # centred and summed in float64: float32 prefix sums lose the differences
        c = np.array(values, np.float64)  # one float64 copy, worked on in place (up to 256 MB at d ~ 1e4)
        c -= c[: post.n].mean(axis=0)
        out = np.zeros((c.shape[0] + 1,) + c.shape[1:], dt)
        out[1:] = np.cumsum(c, axis=0, out=c)
        return jax.device_put(out)

    one = lambda w, xi, yi: post.loss(w, (xi[None], yi[None]))  # noqa: E731
    if (x.shape[0] + 1) * post.dim * 8 > GRAD_PREFIX_BYTES:
        losses = prefix(per_sample(one, post.w_star, x, y, chunked))
        return (losses,), lambda arrays, start, w: post.L_star + (arrays[0][start + b] - arrays[0][start]) / b
    # One program for both (each costs a compilation on a task's cold start), vectorised whole:
    # lax.map in batches compiled its body twice (the loop's and the remainder's), 0.12 s
    # against 0.04 s at d = 100; the output, capped above, bounds what it holds at once.
    losses, grads = per_sample(jax.value_and_grad(one), post.w_star, x, y, chunked)
    losses, grads = prefix(losses), prefix(grads)

    def at(arrays, start, w):
        losses, grads, w_star = arrays
        return post.L_star + (losses[start + b] - losses[start]) / b + jnp.dot((grads[start + b] - grads[start]) / b, w - w_star)

    return (losses, grads, post.w_star), at


def _piece_bits(key, i: int, shape) -> np.ndarray:
    """Piece i's random bits, drawn on the host: shape (4,) is the state of XLA's generator
    (per-step draws inside the program), any other shape the piece's bits themselves."""
    return host_rng(key, i).integers(0, 2**32, size=shape, dtype=np.uint32)


def _normal(bits):
    """Standard normal noise from uint32 bits (float32, also under x64: its precision does not
    matter). SGLD's bits come from the host per piece, or per step from XLA's own threefry
    generator (lax.rng_bit_generator): jax.random's threefry, written out in HLO, took longer per step
    than the gradient at d = 1e5 (4.5 against 4 ms for 4 chains; XLA's 0.8), and each of its
    calls compiled a loop of its own (~0.1 s of a task's cold start apiece)."""
    u = ((bits >> 9).astype(jnp.float32) + 0.5) * 2.0**-23  # 23 bits, in (0, 1) exactly
    return np.sqrt(2.0) * jax.lax.erf_inv(2 * u - 1)


def _draws(bits, batches):
    """(noise, batch offsets) from uint32 bits whose last axis holds a step's d normals, then its offset."""
    return _normal(bits[..., :-1]), batches.offsets_from(bits[..., -1])


def _generate(state, shape):
    """(next state, uint32 bits of `shape`) from XLA's threefry generator (see _normal)."""
    return jax.lax.rng_bit_generator(state, shape, jnp.uint32, algorithm=jax.lax.RandomAlgorithm.RNG_THREE_FRY)


def _halving(post, cfg, step, batches, control, arrays, carry, eps, key, relax, total, per_step):
    """The step-halving check, from the chains' last states: (bias(ε) in λ̂'s units, its
    standard error, steps run), or NaNs where the run is too short for it (HALVING_*).

    Per chain, two copies A₁, A₂ take ε steps on batches o₁, o₂ and one copy B takes two ε/2
    steps on o₁ then o₂, all with the same Gaussian increment (A's the sum of B's halves); each
    step's statistics of the A's and of B, on both batches at the step's start, differ by
    bias(ε) − bias(ε/2) = bias(ε)/2 in the mean (a bias linear in ε), once B has relaxed. Two
    A's make the batch noise of A's drift match B's to first order: with one A (on o₁) the
    mismatch put a standard error of 2% on a linear model's 1% (n = 1e4, batch 256), with two
    0.1%. RMSProp's v stays frozen as in the draws (t past burn-in). Random bits as in the
    draws: from the host per piece, or (per_step) from XLA's generator at every step, where the
    host's would be 3.2 MB a step at d = 1e5."""
    steps = min(math.ceil(HALVING_RELAX * relax), total // HALVING_SHARE)
    if steps < max(HALVING_MIN, (HALVING_SETTLE + 1) * relax):  # B would not relax: a bias read short
        return float("nan"), float("nan"), 0
    settle, frozen, d = math.ceil(HALVING_SETTLE * relax), np.iinfo(np.int32).max, post.dim
    pieces = 1 if per_step else math.ceil(steps / max(1, PIECE_NOISE_BYTES // (8 * (d + 1) * cfg.chains)))  # two draws a step
    length = math.ceil(steps / pieces)

    @jax.jit
    def run(copies, bits, eps, arrays):
        def one(c, o, z):  # one chain's three copies
            ring, cv_arrays = arrays[:2]
            both = (z[0] + z[1]) / np.sqrt(2.0)
            # A₁, A₂ and B's first half as one vectorised step (one gradient in the program, not three)
            rows = jax.tree.map(lambda *x: jnp.stack(x), *c)
            e = jnp.stack([eps, eps, eps / 2])
            new, s = jax.vmap(lambda e, c, o, z: step(arrays, e, c, (frozen, o, z)))(e, rows, o[jnp.array([0, 1, 0])], jnp.stack([both, both, z[0]]))
            w_b = c[2][0]
            s3 = post.loss(w_b, batches.take(o[1], ring)) - control(cv_arrays, o[1], w_b) + post.L_star
            b, _ = step(arrays, eps / 2, jax.tree.map(lambda x: x[2], new), (frozen, o[1], z[1]))
            return (jax.tree.map(lambda x: x[0], new), jax.tree.map(lambda x: x[1], new), b), post.n_beta * (s[0] + s[1] - s3 - s[2]) / 2

        if not per_step:
            noise, offsets = _draws(bits, batches)
            return jax.vmap(lambda c, o, z: jax.lax.scan(lambda c, x: one(c, *x), c, (o, z)))(copies, offsets, noise)

        def each(c_state, _):
            c, state = c_state
            state, bits = _generate(state, (cfg.chains, 2, d + 1))
            noise, offsets = _draws(bits, batches)
            c, diff = jax.vmap(one)(c, offsets, noise)
            return (c, state), diff

        (copies, _), diffs = jax.lax.scan(each, (copies, bits), None, length=length)
        return copies, diffs.T

    copies, diffs, key = (carry, carry, carry), [], jax.random.fold_in(key, 5)
    shape = (4,) if per_step else (cfg.chains, length, 2, d + 1)  # the generator's state, or the piece's bits
    for i in range(pieces):
        copies, diff = run(copies, _piece_bits(key, i, shape), np.asarray(eps, post.w_star.dtype), arrays)
        diffs.append(np.asarray(diff))
    diff = np.concatenate(diffs, axis=1)[:, settle:steps]
    x, _ = blocked(diff, post.batch_fraction(cfg.batch_size) < 1)  # as λ̂'s MCSE (estimator.blocked)
    return 2 * float(diff.mean()), 2 * mcse_mean(x), steps


def sample(post, cfg, key, spec=None) -> Trace:
    spec = spec or calibration.measure(post, jax.random.fold_in(key, 7))
    t0 = time.time()
    if cfg.batch_size == "auto":
        cfg = dataclasses.replace(cfg, batch_size=calibration.auto_batch(post, spec))
    w0 = starts(post, spec, key, cfg.chains)
    curv = calibration.curvature_precond(spec, post, w0) if cfg.preconditioner == "curvature" else None
    P = (None, 1.0, None) if curv is None else curv.P
    around, a_top, memo = None, 0.0, {}  # memo: bias_around's measurements at w*, for its checks below
    if cfg.step_size == "auto" and cfg.precond == "rmsprop":  # its P is not formed at the starts
        a_top = calibration.top_curvature(post, w0, P)
    elif cfg.step_size == "auto":
        around = calibration.bias_around(post, w0, P, spec, cfg, curv, memo)
    plan = calibration.sgld_plan(spec, post, cfg, cfg.bias_target, around, a_top, curv)
    plan_sec = time.time() - t0
    eps, d = plan.step_size, post.dim
    rms = cfg.precond == "rmsprop"
    rms_P = lambda v: (None, 1.0 / (jnp.sqrt(v) + cfg.rmsprop_eps), None)  # noqa: E731  diagonal, per chain
    batches = post.batcher(jax.random.fold_in(key, 1), cfg.batch_size)
    chunked = conv_on_cpu(post)
    cv_arrays, control = _paired(post, batches, chunked)
    # the data, w* and the control variate's prefix sums are arguments of the jitted program,
    # not constants compiled into it (see calibration._hvp)
    arrays = (batches.ring, cv_arrays, post.w_star, P)

    def step(arrays, eps, carry, xs):
        ring, cv_arrays, w_star, P = arrays
        w, v = carry
        t, start, noise = xs
        batch = batches.take(start, ring)
        loss, g = jax.value_and_grad(post.loss)(w, batch)
        drift = -post.n_beta * g - post.gamma * (w - w_star)
        if rms:
            # EMA of squared drift during burn-in only: frozen afterwards so the chain targets π
            # (a moving preconditioner without its correction term does not). v starts at 1
            # (plain SGLD): at w* the drift can be exactly 0, and 1/√0 would blow up.
            v = jnp.where(t < plan.burnin, cfg.rmsprop_decay * v + (1 - cfg.rmsprop_decay) * drift**2, v)
            P = rms_P(v)
        w = w + calibration.langevin_move(P, 0.5 * eps * drift, jnp.sqrt(eps) * noise.astype(w.dtype))
        return (w, v), loss - control(cv_arrays, start, carry[0]) + post.L_star

    # pieces of a tenth of the planned run, and at most MAX_PIECES up to the budget
    limit = plan.burnin + plan.max_draws
    per_step = cfg.chains * (d + 1) * 4 >= STEP_BITS_BYTES
    size = max(math.ceil((plan.burnin + plan.draws) / CHUNKS), math.ceil(limit / MAX_PIECES))
    size = size if per_step else max(1, min(size, PIECE_NOISE_BYTES // (4 * d)))
    unroll = UNROLL if chunked else 0  # a piece then runs from the host, UNROLL steps a call
    size = math.ceil(size / UNROLL) * UNROLL if unroll else size  # one compiled length

    def piece(carry, ts, noise, offsets, eps, arrays):
        return jax.lax.scan(lambda c, xs: step(arrays, eps, c, xs), carry, (ts, offsets, noise))

    def all_chains(arrays, eps, c, t, noise, offsets):  # one step, the chains vectorised inside it
        return jax.vmap(lambda c, o, z: step(arrays, eps, c, (t, o, z)))(c, offsets, noise)

    # ε is an argument, not a constant: a step shrunk below (re-planned) runs the same program
    @jax.jit
    def run(carry, ts, bits, eps, arrays):
        """bits: the piece's (chains, steps, d + 1), or per step the generator's state, also
        returned as it is left (for the next call's, where a piece is run UNROLL steps a call)."""
        if not per_step:
            noise, offsets = _draws(bits, batches)
            if not unroll:
                return (*jax.vmap(piece, in_axes=(0, None, 0, 0, None, None))(carry, ts, noise, offsets, eps, arrays), bits)
            xs = (ts, noise.swapaxes(0, 1), offsets.swapaxes(0, 1))
            carry, losses = jax.lax.scan(lambda c, x: all_chains(arrays, eps, c, *x), carry, xs, unroll=True)
            return carry, losses.T, bits

        def each(c_state, t):
            c, state = c_state
            state, bits = _generate(state, (cfg.chains, d + 1))
            c, losses = all_chains(arrays, eps, c, t, *_draws(bits, batches))
            return (c, state), losses

        (carry, state), losses = jax.lax.scan(each, (carry, bits), ts, unroll=bool(unroll))
        return carry, losses.T, state

    def run_piece(carry, ts, bits, eps, arrays):
        """The piece's steps: one call, or UNROLL steps a call (the same draws either way)."""
        if not unroll:
            return run(carry, ts, bits, eps, arrays)[:2]

        def call(c, a, b):  # c: the chains and, per step, the generator's state
            chains, state = c
            chains, losses, state = run(chains, ts[a:b], state if per_step else bits[:, a:b], eps, arrays)
            return (chains, state), losses

        (carry, _), losses = in_calls(call, (carry, bits), len(ts), unroll)
        return carry, losses

    carry = (w0, np.ones((cfg.chains, d), post.w_star.dtype))
    noisy = post.batch_fraction(cfg.batch_size) < 1  # the recorded statistic carries batch noise
    pieces, total, burnin, relax, biases, shrunk = [], None, plan.burnin, plan.relax_steps, [], 0
    # a few checks where they only report (a fixed step) or cost HVPs (above DENSE_MAX_DIM)
    every = max(1, math.ceil(limit / size) // (CHECKS if cfg.step_size == "auto" and d <= calibration.DENSE_MAX_DIM else 4))
    bits_shape = (4,) if per_step else (cfg.chains, size, d + 1)  # the generator's state, or the piece's bits
    i = -1
    while (i + 1) * size < limit:  # the last piece may run past `limit`: those steps are dropped
        i += 1
        # host-side step numbers: eager jnp ops would each compile a program of their own
        ts = np.arange(i * size, (i + 1) * size, dtype=np.int32)
        carry, losses = run_piece(carry, ts, _piece_bits(key, i, bits_shape), np.asarray(eps, post.w_star.dtype), arrays)
        pieces.append(np.asarray(losses))
        check_finite(pieces[-1], i * size, diverged_hint(cfg))
        end = (i + 1) * size
        progress(
            f"{min(end, limit)} of ≤ {limit} steps per chain (burn-in {burnin})",
            (lambda: np.concatenate(pieces, axis=1)[:, burnin:end]) if end > burnin else None,
        )
        if end > burnin and (i % every == 0 or end >= limit):
            # The step was planned at w*; a singular model's chains go where the curvature is
            # larger. Measured there, a bias over twice the target shrinks the auto step, and the
            # draws so far become burn-in (a few times, while the budget lasts).
            bias = calibration.bias_around(post, carry[0], rms_P(carry[1]) if rms else P, spec, cfg, curv, memo)
            b = bias(eps)
            if cfg.step_size == "auto" and b > SHRINK_ABOVE * cfg.bias_target and shrunk < MAX_SHRINKS and end < limit // 2:
                # to the step whose bias there is the target (b may be infinite: unstable there)
                factor = calibration.largest_step(lambda e: bias(e) <= cfg.bias_target, hi=eps) / eps
                eps, relax, shrunk, biases = eps * factor, relax / factor, shrunk + 1, []
                burnin = end + min(math.ceil(3 * relax), (limit - end) // 2)
                if cfg.draws != "auto":  # the draws asked for, after the new burn-in
                    limit = burnin + int(cfg.draws)
                continue
            biases.append(b)
        kept = end - burnin
        if cfg.draws == "auto" and kept >= max(100, plan.burnin) and kept < limit - burnin and mixed(np.concatenate(pieces, axis=1)[:, burnin:], noisy):
            total = end
            break
    total = total or limit  # the budget, or the draws asked for after the last shrink
    losses = np.concatenate(pieces, axis=1)[:, :total]

    shift, shift_se, checked = _halving(post, cfg, step, batches, control, arrays, carry, eps, key, relax, total, per_step)

    w_end, v = carry
    if rms:
        P = rms_P(v)
    mala = calibration.mala_acceptance(post, w_end, eps, P, jax.random.fold_in(key, 3), spec.grad)
    frac = post.batch_fraction(cfg.batch_size)
    extras = {
        "step_size": eps, "burnin": burnin, "draws": total - burnin, "relax_steps": relax,
        "predicted_bias": calibration.predicted_bias(spec, post, eps, cfg, curv) if shrunk else plan.predicted_bias,
        "bias_at_chains": float(np.mean(biases)) if biases else float("nan"), "step_shrinks": shrunk,
        "budget_capped": plan.capped or (cfg.burnin == "auto" and 3 * relax > cfg.max_steps // 2),
        "mala_acceptance": mala, "halving_shift": shift, "halving_shift_se": shift_se, "halving_steps": checked, "plan_sec": plan_sec, "batch_size": min(cfg.batch_size or post.n, post.n),
        "minibatch_statistic": noisy,
    }  # fmt: skip
    return Trace(losses[:, burnin:], total * frac, frac, extras)
