"""What the posterior looks like at w*, measured before sampling (REFERENCE §1b).

`measure` takes the Hessian spectrum of L_n at w* (exact for small d, else stochastic Lanczos
quadrature on Hessian-vector products over a subsample), the minibatch gradient noise relative
to the curvature, and the predicted λ̂ shift from a non-zero gradient at w*. From these:
- `sgld_plan` picks SGLD's ε so that the predicted bias of λ̂ (discretisation and minibatch
  noise, per Hessian mode, weighted by each mode's share of λ̂) is at most `target`, and sizes
  burn-in and draws from the relaxation times of the modes that carry λ̂;
- `curvature_precond` builds SGLD's fixed preconditioner P ≈ (nβH + γ)⁻¹ and `auto_batch` its
  batch size from the gradient noise;
- `dispersed_starts` spreads the chains around w* so that R̂ can see modes that have not mixed;
- `bias_around` predicts the same bias from the curvature where the chains start (the plan keeps
  it ≤ target too) and where they are during the run (SGLD shrinks its auto step where it is over
  twice the target);
- `mala_acceptance` is an empirical check of the step (SGLD's step halving is the other): the
  Metropolis acceptance of the SGLD proposal with the full-batch loss and gradient (above
  DENSE_MAX_DIM parameters, over at most MALA_SAMPLES points).

Per mode with curvature h (a = nβh + γ), minibatch size b and per-sample gradient variance
c ≈ κh along it, SGLD's stationary variance is inflated by
(1 + ε·nβ²c(1 − b/n)/(4b)) / (1 − εa/4), and its relaxation time is 2/(εa) steps, ε being the
step that mode sees (the preconditioner's value on it times the step size).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.llc.checks import ESS_MIXED
from lambda_hat.llc.data import host_rng

# Up to this d the Hessian is formed exactly (d HVPs), in the one program calibration then
# compiles: cheaper than compiling the Lanczos path's three (at d = 100: 0.2 s of a 1.3 s run).
DENSE_MAX_DIM = 128
LANCZOS_STEPS, LANCZOS_PROBES = 12, 3  # above it: 3 probes and g × 12 Lanczos steps (one batch of 4)
KEEP_RITZ = LANCZOS_STEPS // 2  # Ritz pairs taken as eigenpairs: the top half has converged
CURVATURE_SAMPLES = 1024  # subsample for Hessian-vector products (the Hessian is a mean)
NOISE_SAMPLES = 256  # per-sample gradients for the minibatch noise
FLAT_ULPS = 1000  # γ = 0: a curvature within this many ulps of the largest (the run's precision) is rounding: flat
NOISE_PROBES = 32  # its trace away from w*, above DENSE_MAX_DIM (Hutchinson)
# The MALA check's loss: acceptance is set by the curvature, which a mean over this many points
# measures to about 1%; at n = 6e4 the full-data check took 4 s against 18 s of sampling.
MALA_SAMPLES = 16384


@dataclass(frozen=True)
class Spectrum:
    """Hessian eigenvalues of L_n at w* as (value, weight) pairs whose weights sum to d."""

    theta: np.ndarray
    weight: np.ndarray
    kappa: float  # per-sample gradient variance / curvature (1 for a well-specified model)
    grad: np.ndarray  # ∇L_n(w*), full data
    wstar_shift: float  # predicted λ̂(at w*) − λ̂(at the minimum) from that gradient
    seconds: float
    vectors: np.ndarray | None = None  # eigenvectors (d × d) where the Hessian was formed, else top Ritz vectors (d × k)
    vector_theta: np.ndarray | None = None  # their eigenvalues (Ritz values)
    eps: float = float(np.finfo(np.float64).eps)  # the run's precision, whose rounding the curvatures carry

    @property
    def grad_norm(self) -> float:
        return float(np.linalg.norm(self.grad))

    def modes(self, n_beta, gamma):
        h = n_beta * curvature(self.theta, gamma, self.eps)
        a = h + gamma
        # each mode's contribution to λ̂ (×½); a flat mode without a localiser (γ = 0) carries none
        share = np.divide(h, a, out=np.zeros_like(a), where=a > 0)
        return a, share

    def a_slow(self, n_beta, gamma) -> float:
        """a of the slowest mode that carries λ̂ (nβh ≥ γ); 2γ where none does."""
        a, share = self.modes(n_beta, gamma)
        return float(a[share >= 0.5].min()) if (share >= 0.5).any() else 2 * gamma or 1.0

    def llc_estimate(self, n_beta, gamma) -> float:
        """½ Σ nβh/(nβh + γ): the finite-n λ of the quadratic approximation at w*."""
        _, share = self.modes(n_beta, gamma)
        return float(0.5 * np.sum(self.weight * share))


def curvature(theta: np.ndarray, gamma: float, eps: float) -> np.ndarray:
    """The curvatures that count: without a localiser (γ = 0) one at the rounding level of the
    largest is flat, not a mode carrying ½ of λ̂ with a preconditioner 1/a of 1e15 (a DLN's
    symmetry directions read ±1e-15 in float64: SGLD diverged at its 4th step). Only rounding: a
    real mode however soft still carries λ̂, and the budget check judges its relaxation."""
    theta = np.clip(theta, 0, None)
    return np.where(theta > FLAT_ULPS * eps * theta.max(initial=0.0), theta, 0.0) if gamma == 0 else theta


def _subsample(post, size):
    """A fixed random subset (numpy: a jax permutation costs a compilation per process). The
    same subset every time, so the programs that close over it are compiled once per target."""
    if post.data is None:
        return None
    idx = np.sort(np.random.default_rng(0).permutation(post.n)[: min(size, post.n)])
    return jax.tree.map(lambda a: jax.device_put(np.asarray(a)[idx]), post.data)


def _lanczos(hvp, V0, steps, free: int = 0):
    """Lanczos from each row of V0 (full reorthogonalisation): per start, the tridiagonal T
    (k × k) and the orthonormal basis Q (k × d) with Q H Qᵀ = T. Only the HVPs run in JAX: the
    basis work is small, and eager JAX ops on growing shapes would compile at every step. The
    last `free` rows may exhaust their Krylov space without stopping the others: from there
    their basis is zero, and T splits (β = 0) after the block that holds their start."""
    dt = V0.dtype
    V0 = np.asarray(V0, np.float64)
    # the basis in one preallocated array, projected by matmul (BLAS): restacked and projected
    # by einsum at every step, it cost 0.35 s of a task at d = 1e5
    Q = np.zeros((V0.shape[0], steps, V0.shape[1]))
    Q[:, 0] = V0 / np.linalg.norm(V0, axis=1, keepdims=True)
    alphas, betas = [], []
    for j in range(steps):
        W = np.asarray(hvp(jax.device_put(np.asarray(Q[:, j], dt))), np.float64)
        alphas.append(np.sum(W * Q[:, j], axis=1))
        for _ in range(2):  # twice is enough
            W = W - np.matmul(np.matmul(Q[:, : j + 1], W[:, :, None])[:, None, :, 0], Q[:, : j + 1])[:, 0]
        beta, tol = np.linalg.norm(W, axis=1), 1e-10 * max(1.0, np.abs(alphas[0]).max())
        if j == steps - 1 or beta[: len(beta) - free].min() < tol:
            break
        beta = np.where(beta < tol, 0.0, beta)
        betas.append(beta)
        Q[:, j + 1] = np.divide(W, beta[:, None], out=np.zeros_like(W), where=beta[:, None] > 0)
    a = np.stack(alphas, 1)
    b = np.stack(betas, 1) if betas else np.zeros((len(a), 0))
    Ts = [np.diag(a[p]) + np.diag(b[p], 1) + np.diag(b[p], -1) for p in range(len(a))]
    return Ts, Q[:, : len(alphas)]


def _hvp(post):
    """hvp(v, w, batch): the Hessian of the batch's loss at w, times v.

    Here and below, w* and the data enter the jitted programs as arguments: closed over, they
    would be constants, and XLA would fold the network's products over the data at compile time
    (seconds for an MNIST-sized layer) and store the data in every compiled program."""
    return lambda v, w, batch: jax.jvp(jax.grad(lambda u: post.loss(u, batch)), (w,), (v,))[1]


def _batched_hvp(post, sub):
    """V ↦ H V for a stack of vectors V, at w*, over the subsample. One program per target:
    the stack is padded to a multiple of 4 rows, so measure's probes and the chains' starts
    (4 by default) share its compilation (0.2 s at d = 1e4 each)."""
    key = ("hvp", post.loss)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = jax.jit(jax.vmap(_hvp(post), in_axes=(0, None, None)))
    f = _PROGRAMS[key]

    def hvp(V):  # numpy in and out: eager JAX ops would compile programs of their own
        V = np.asarray(V)
        return np.asarray(f(np.concatenate([V, np.zeros((-len(V) % 4, V.shape[1]), V.dtype)]), post.w_star, sub))[: len(V)]

    return hvp


def measure(post, key) -> Spectrum:
    """Curvature spectrum, gradient noise and the gradient at w*: a few dozen HVPs on a subsample.
    Above DENSE_MAX_DIM the w* shift's A⁻¹g comes from one more Lanczos start, at g (what CG
    computes, in the HVP program Lanczos runs anyway: CG's loop in the program compiled in 0.3 s
    at d = 1e4)."""
    import time

    t0 = time.time()
    d, dt, w = post.dim, post.w_star.dtype, post.w_star
    sub, dense = _subsample(post, CURVATURE_SAMPLES), d <= DENSE_MAX_DIM
    g_full, H, G, _ = _at_w_star(post, dense)(w, sub, post.data, _subsample(post, NOISE_SAMPLES))
    g = np.asarray(g_full, np.float64)
    if dense:
        H = np.asarray(H, dtype=np.float64)
        theta, S = np.linalg.eigh(0.5 * (H + H.T))
        weight, top, vectors, vector_theta = np.ones(d), S[:, -1], S, theta
        shift = _shift(g, theta, S, post.n_beta, post.gamma)
    else:
        probes, g_norm, shift = host_rng(key).standard_normal((LANCZOS_PROBES, d)), np.linalg.norm(g), 0.0
        at_g = bool(g_norm > 0 and np.isfinite(g_norm))
        starts = np.concatenate([probes, g[None]]) if at_g else probes
        Ts, Q = _lanczos(_batched_hvp(post, sub), starts.astype(dt), min(LANCZOS_STEPS, d), free=int(at_g))
        if at_g:  # in g's Krylov basis g = |g|e₁: A⁻¹g as CG's iterate after as many steps
            Tg, Ts, Q = Ts[-1], Ts[:-1], Q[:-1]
            k = int(np.argmax(np.r_[np.diag(Tg, 1), 0.0] == 0)) + 1  # the block that holds g
            th, S = np.linalg.eigh(Tg[:k, :k])
            shift = _shift(np.eye(k)[0] * g_norm, th, S, post.n_beta, post.gamma)
        theta, weight = [], []
        for T in Ts:  # stochastic Lanczos quadrature: Ritz values weighted by e1's share
            th, S = np.linalg.eigh(T)
            theta.append(th)
            weight.append(S[0] ** 2 * d / len(Ts))
        ritz, S = np.linalg.eigh(Ts[0])
        vectors, vector_theta = Q[0].T @ S, ritz  # the top ones converge first
        top = vectors[:, -1]
        theta, weight = np.concatenate(theta), np.concatenate(weight)
    kappa = _noise_ratio(G, top, theta, weight)
    return Spectrum(theta, weight, kappa, np.asarray(g_full), shift, time.time() - t0, vectors, vector_theta, float(np.finfo(dt).eps))


def _shift(g, theta, S, nb, gamma) -> float:
    """−nβ²gᵀA⁻¹g + ½nβ²uᵀHu, u = A⁻¹g, A = nβH + γ = S diag(a) Sᵀ (a pseudo-inverse where a = 0)."""
    a = nb * theta + gamma
    inv = np.divide(1.0, a, out=np.zeros_like(a), where=np.abs(a) > 1e-12 * max(np.abs(a).max(), 1e-300))
    gs = S.T @ g
    return float(-(nb**2) * np.sum(inv * gs**2) + 0.5 * nb**2 * np.sum(theta * (inv * gs) ** 2))


_PROGRAMS: dict = {}  # calibration's programs, per target: each one traced and compiled once


def _at_w_star(post, dense: bool):
    """One program (each costs a compilation): at w (w*), the full-data gradient, the Hessian
    on the subsample (if dense), per-sample gradients on NOISE_SAMPLES points (None without
    data) and the full-data loss. Where d ≤ DENSE_MAX_DIM the same program serves the chains'
    starts, the bias checks and the MALA check (`_dense_at`), so calibration compiles one
    program there, not four."""
    key = (post.loss, dense)
    if key in _PROGRAMS:
        return _PROGRAMS[key]

    @jax.jit
    def at(w, sub, data, noise):
        loss, g = jax.value_and_grad(post.loss)(w, data)
        H = jax.hessian(post.loss)(w, sub) if dense else None
        G = None if noise is None else jax.vmap(lambda xi, yi: jax.grad(post.loss)(w, (xi[None], yi[None])))(*noise)
        return g, H, G, loss

    _PROGRAMS[key] = at
    return at


def _dense_at(post, points):
    """At each point, by measure's program (d ≤ DENSE_MAX_DIM): the Hessian of the subsample's
    loss (points × d × d), the full data's loss, the per-sample gradients (a list; None without
    data) and the full data's gradient (points × d)."""
    at, sub, noise = _at_w_star(post, True), _subsample(post, CURVATURE_SAMPLES), _subsample(post, NOISE_SAMPLES)
    # numpy rows: eager JAX indexing would compile a program per op on first use
    out = [at(w, sub, post.data, noise) for w in np.asarray(points, post.w_star.dtype)]  # its dtype: one program
    H = np.stack([np.asarray(o[1], np.float64) for o in out])
    return H, np.array([float(o[3]) for o in out]), [o[2] for o in out], np.stack([np.asarray(o[0], np.float64) for o in out])


def _noise_ratio(G, top, theta, weight) -> float:
    """κ = per-sample gradient variance / curvature, the larger of its trace and top-mode values."""
    if G is None:
        return 0.0
    # in G's own precision, sums in float64: a float64 copy of 256 × 1e5 gradients took 0.7 s
    G = np.asarray(G)
    G = G - G.mean(axis=0, dtype=np.float64).astype(G.dtype)
    tr_c = float(np.mean(np.einsum("ij,ij->i", G, G, dtype=np.float64)))
    top_c = float(np.mean((G @ np.asarray(top, G.dtype)).astype(np.float64) ** 2))
    tr_h, h_top = float(np.sum(weight * np.clip(theta, 0, None))), float(theta.max())
    ratios = [r for r in (tr_c / tr_h if tr_h > 0 else 0.0, top_c / h_top if h_top > 0 else 0.0) if np.isfinite(r)]
    return max(ratios, default=0.0)


# ---------------------------------------------------------------- SGLD's step, burn-in, draws


@dataclass(frozen=True)
class SGLDPlan:
    step_size: float
    burnin: int
    draws: int  # the draws the relaxation times ask for (or the configured number)
    max_draws: int  # auto draws: run on to this many until the ESS and R̂ goals are met
    predicted_bias: float  # relative bias of λ̂ predicted for this ε (discretisation + minibatch)
    relax_steps: float  # relaxation time of the slowest mode that carries λ̂, in steps
    capped: bool  # the budget (max_steps) cut the burn-in short


def auto_batch(post, spec: Spectrum) -> int | None:
    """SGLD's `batch_size: auto`: b = nβκ/8 (at least 256; None, full batch, from n). The step's
    minibatch noise scales its relaxation time by 1 + nβκ/b and its gradient work by b, so
    b + nβκ per relaxation: this b costs at most 1/8 more work than the smallest batch, in
    (1 + nβκ/256)/9 as many steps (at n = 1e5, κ = 1: 4× fewer)."""
    if post.data is None:
        return None
    b = max(256, math.ceil(post.n_beta * spec.kappa / 8))
    return None if b >= post.n else b


def _minibatch_factor(post, batch_size) -> float:
    if post.data is None or batch_size is None or batch_size >= post.n:
        return 0.0
    return post.n_beta * (1 - batch_size / post.n) / batch_size


@dataclass(frozen=True)
class Curvature:
    """The `curvature` preconditioner P = U diag(p) Uᵀ + rest·(I − UUᵀ) (see curvature_precond);
    `cut`: the curvature at w* above which a spectral mode lies in U's span."""

    U: jax.Array
    p: jax.Array
    rest: float
    cut: float

    @property
    def P(self):
        return self.U, self.p, np.asarray(self.rest, self.p.dtype)

    def scale(self, a: np.ndarray) -> np.ndarray:
        return np.where(a >= self.cut, 1.0 / np.maximum(a, self.cut), self.rest)


def curvature_precond(spec: Spectrum, post, starts) -> Curvature:
    """P ≈ (nβH + γ)⁻¹: 1/a on the modes that carry λ̂ (a ≥ the slowest's, where the Hessian was
    formed; else the top KEEP_RITZ Ritz pairs), so that they all relax at one rate and the step
    is no longer set by the stiffest and the burn-in by the softest (a 3-layer DLN's span three
    decades). The other directions, flat at w*, are not flat where the chains go (a DLN's along
    its symmetries): they get one scale, 1/(their stiffest curvature at `starts`)."""
    nb, gamma, dt = post.n_beta, post.gamma, post.w_star.dtype
    a_vec = nb * curvature(spec.vector_theta, gamma, spec.eps) + gamma
    if spec.vectors.shape[1] == post.dim:
        cut = spec.a_slow(nb, gamma)
        keep = a_vec >= cut
    else:
        order = np.argsort(a_vec)[::-1]
        keep, cut = order[:KEEP_RITZ], float(a_vec[order[KEEP_RITZ]]) if len(order) > KEEP_RITZ else 2 * gamma or 1.0
    U, p = jax.device_put(np.asarray(spec.vectors[:, keep], dt)), jax.device_put(np.asarray(1.0 / a_vec[keep], dt))
    a_rest = top_curvature(post, starts, (U, np.zeros(p.shape, dt), np.asarray(1.0, dt)))  # on I − UUᵀ (numpy: eager jnp compiles)
    return Curvature(U, p, 1.0 / max(a_rest, cut), cut)


def precondition(P, v, power: float = 1.0):
    """P^power v for P = (U, p, rest): U diag(p) Uᵀ + rest·(I − UUᵀ); U None: diag(p)."""
    U, p, rest = P
    if U is None:
        return p**power * v
    c = v @ U
    return (p**power * c) @ U.T + rest**power * (v - c @ U.T)


def langevin_move(P, drift, noise):
    """P drift + P^½ noise, the preconditioned Langevin move, with one projection onto U each way
    where two precondition() calls would take two (on a DLN of d = 433 U is nearly square, and
    its products cost more than the gradient)."""
    U, p, rest = P
    if U is None:
        return p * drift + jnp.sqrt(p) * noise
    both = jnp.stack([drift, noise], -2) @ U  # one product for the two: each costs a dispatch per step
    c = (p - rest) * both[..., 0, :] + (jnp.sqrt(p) - jnp.sqrt(rest)) * both[..., 1, :]
    return rest * drift + jnp.sqrt(rest) * noise + c @ U.T


def _step_scale(spec: Spectrum, post, cfg, curv: Curvature | None) -> np.ndarray:
    """The factor on ε that each spectral mode sees under cfg's preconditioner. RMSProp's frozen
    preconditioner ≈ 1/√V per mode (V = a + the minibatch variance of the drift)."""
    a, _ = spec.modes(post.n_beta, post.gamma)
    if cfg.precond == "rmsprop":
        return 1.0 / np.sqrt(a + (a - post.gamma) * _minibatch_factor(post, cfg.batch_size) * spec.kappa)
    return np.ones_like(a) if curv is None else curv.scale(a)


def predicted_bias(spec: Spectrum, post, eps: float, cfg, curv: Curvature | None = None) -> float:
    """Relative bias of λ̂ at step ε: share-weighted mean of the per-mode variance inflation."""
    a, share = spec.modes(post.n_beta, post.gamma)
    M = _minibatch_factor(post, cfg.batch_size) * spec.kappa
    V = a + (a - post.gamma) * M
    e = eps * _step_scale(spec, post, cfg, curv)
    denom = 1 - e * a / 4
    if np.any(denom <= 0):
        return float("inf")
    infl = (1 + e * (V - a) / 4) / denom - 1
    w = spec.weight * share
    if w.sum() <= 0:
        return float(infl.max())
    return float(np.sum(w * infl) / w.sum())


def _whitened(P, h, n_beta, gamma):
    """P^½(nβH + γ)P^½ for one dense Hessian H = h (P as in `precondition`, numpy)."""
    d = h.shape[0]
    half = precondition(P, np.eye(d), 0.5)
    return half @ (n_beta * 0.5 * (h + h.T) + gamma * np.eye(d)) @ half


def bias_around(post, positions, P, spec: Spectrum, cfg, curv: Curvature | None = None, memo: dict | None = None) -> Callable[[float], float]:
    """ε ↦ the relative bias of λ̂ at step ε predicted from the curvature and gradient noise at
    `positions` (the chains' own, one row each, or their starts; P as in `precondition`, a
    diagonal p may hold a row per position), not at w*; both are measured once, so that ε can be
    searched against them. A singular model's chains wander along its zero set into regions far
    stiffer than w* (a 3-layer DLN: the preconditioned curvature 1.6 at the starts, 68 at the
    median piece end), where a step planned at w* is too large; a classifier's fit to its
    training data leaves little per-sample gradient noise at w* and far more where the chains go.

    Where d ≤ DENSE_MAX_DIM, exactly for the local quadratic: with R = P^½(nβH + γ)P^½ = Σ ã uuᵀ,
    λ̂ = ½ Σ s·c over R's modes, s = 1 − γ·uᵀPu/ã (that mode's share of λ̂), c its variance
    inflation (as in predicted_bias, with the gradient noise κ measured there too); the mean over
    positions (at w* it is predicted_bias). Above, predicted_bias with its step part scaled by how
    much stiffer the top mode is there than at w* (power iteration; `memo` keeps the top at w*
    per P across a run's checks) and its minibatch part taken with the gradient noise there
    (the per-sample gradient variance's trace on NOISE_SAMPLES points over the curvature's at
    w*; w*'s κ where that is larger). A classifier that fits its training set exactly has no
    per-sample gradient noise at w*: on digits (d = 1 210) its chains met enough to put SGLD's
    λ̂ 13% above HMC's, with 0.02% predicted from w*."""
    if post.dim <= DENSE_MAX_DIM:
        return _dense_bias(post, positions, P, cfg.batch_size)
    positions = np.asarray(positions)
    p = None if P[1] is None else np.asarray(P[1])
    # one P for every position (a per-chain diagonal: one each), and its top at w* once
    groups = [(positions, P)] if p is None or p.ndim < 2 else [(w[None], (None, jax.device_put(r), None)) for w, r in zip(positions, p)]
    ratio, top, memo = 1.0, 0.0, {} if memo is None else memo
    for ws, Pj in groups:
        a_top = top_curvature(post, jax.device_put(ws), Pj)
        key = hashlib.sha1(b"".join(np.asarray(x).tobytes() for x in Pj if x is not None)).digest()
        if key not in memo:  # w* in as many rows as the positions: the same program, not a second compile
            memo[key] = top_curvature(post, np.broadcast_to(np.asarray(post.w_star), ws.shape), Pj)
        ratio, top = max(ratio, a_top / memo[key]), max(top, a_top)
    # κ there: the per-sample gradient variance there over the curvature at w* (its trace)
    tr_h, kappa = float(np.sum(spec.weight * np.clip(spec.theta, 0, None))), spec.kappa
    if _minibatch_factor(post, cfg.batch_size) > 0 and tr_h > 0:
        kappa = max(kappa, float(_noise_trace(post, positions).max()) / tr_h)
    quiet, there = dataclasses.replace(spec, kappa=0.0), dataclasses.replace(spec, kappa=kappa)

    def bias(eps: float) -> float:
        if eps * top / 4 >= 1:
            return float("inf")
        step_part = predicted_bias(quiet, post, eps, cfg, curv)
        return ratio * step_part + max(predicted_bias(there, post, eps, cfg, curv) - step_part, 0.0)

    return bias


def _noise_trace(post, points) -> np.ndarray:
    """Per point, the trace of the per-sample gradient covariance over NOISE_SAMPLES points, by
    Hutchinson's estimator: each of NOISE_PROBES fixed Gaussian directions z gives every
    sample's zᵀg from one JVP (the gradients themselves, NOISE_SAMPLES × d, took 0.22 s a point
    at d = 1e5, against the power iteration's 0.02 s)."""
    key = ("noise", post.loss)
    if key not in _PROGRAMS:

        @jax.jit
        def trace(w, noise, Z):
            per_sample = lambda u: jax.vmap(lambda xi, yi: post.loss(u, (xi[None], yi[None])))(*noise)  # noqa: E731
            along = jax.vmap(lambda z: jax.jvp(per_sample, (w,), (z,))[1])(Z)  # probes × samples
            return jnp.mean(jnp.var(along, axis=1))

        _PROGRAMS[key] = trace
    noise, dt = _subsample(post, NOISE_SAMPLES), post.w_star.dtype
    Z = np.random.default_rng(0).standard_normal((NOISE_PROBES, post.dim)).astype(dt)
    return np.array([float(_PROGRAMS[key](w, noise, Z)) for w in np.asarray(points, dt)])


def _dense_bias(post, positions, P, batch_size):
    """bias_around where d ≤ DENSE_MAX_DIM: from the Hessians at `positions`, formed once."""
    nb, gamma = post.n_beta, post.gamma
    positions = np.asarray(positions)
    U, p, rest = (None if x is None else np.asarray(x, np.float64) for x in P)
    rows = np.broadcast_to(p, positions.shape) if U is None else None
    H, _, G, _ = _dense_at(post, positions)
    terms = []  # per position: its modes' curvature ã, share s of λ̂, and minibatch noise M
    for j, h in enumerate(H):
        theta, S = np.linalg.eigh(0.5 * (h + h.T))  # the gradient noise there too, not w*'s
        M = _minibatch_factor(post, batch_size) * _noise_ratio(G[j], S[:, -1], theta, np.ones_like(theta))
        Pj = (U, p, rest) if U is not None else (None, rows[j], None)
        a_t, u = np.linalg.eigh(_whitened(Pj, h, nb, gamma))
        a_t = np.clip(a_t, 1e-300, None)
        s = np.clip(1 - gamma * np.sum(u * (precondition(Pj, np.eye(post.dim)) @ u), axis=0) / a_t, 0, 1)
        terms.append((a_t, s, M))

    def bias(eps: float) -> float:
        out = []
        for a_t, s, M in terms:
            denom = 1 - eps * a_t / 4
            if np.any(denom <= 0):
                return float("inf")
            inflation = (1 + eps * a_t * s * M / 4) / denom - 1
            out.append(float(np.sum(s * inflation) / max(np.sum(s), 1e-300)))
        return float(np.mean(out))

    return bias


def top_curvature(post, points, P=None, iters: int = 10) -> float:
    """Largest eigenvalue of P^½(nβH + γ)P^½ over `points` (power iteration on a subsample;
    P = None: of nβH + γ)."""
    nb, gamma = post.n_beta, post.gamma
    P = (None, 1.0, None) if P is None else P
    if post.dim <= DENSE_MAX_DIM:  # exactly, with measure's program
        Pn = tuple(None if x is None else np.asarray(x, np.float64) for x in P)
        return max(float(np.linalg.eigvalsh(_whitened(Pn, h, nb, gamma)).max()) for h in _dense_at(post, points)[0])
    key = ("power", post.loss, nb, gamma, iters)
    if key not in _PROGRAMS:  # memoised: the SGLD run checks the chains' positions with it
        _PROGRAMS[key] = _power_program(post, iters)
    return float(_PROGRAMS[key](points, _subsample(post, CURVATURE_SAMPLES), P))


def _power_program(post, iters):
    nb, gamma, hvp = post.n_beta, post.gamma, _hvp(post)

    @jax.jit
    def power(points, sub, P):
        def one(w):
            def op(v):
                u = precondition(P, v, 0.5)
                return precondition(P, nb * hvp(u, w, sub) + gamma * u, 0.5)

            v = jnp.ones_like(w) / jnp.sqrt(w.shape[0])
            v = jax.lax.fori_loop(0, iters, lambda _, v: (lambda u: u / (jnp.linalg.norm(u) + 1e-30))(op(v)), v)
            return jnp.dot(v, op(v))

        return jnp.max(jax.vmap(one)(points))

    return power


def largest_step(ok: Callable[[float], bool], hi: float = math.exp(5.0)) -> float:
    """The largest ε ≤ hi with ok(ε) (true below some ε), by bisection in log ε down to e⁻³⁰."""
    lo, top = -30.0, math.log(hi)
    for _ in range(60):
        mid = 0.5 * (lo + top)
        lo, top = (mid, top) if ok(math.exp(mid)) else (lo, mid)
    return math.exp(lo)


def sgld_plan(
    spec: Spectrum, post, cfg, target: float, around: Callable[[float], float] | None = None, a_top: float = 0.0, curv: Curvature | None = None
) -> SGLDPlan:
    """Bounds where the chains start, under the preconditioner sampled with (where w* itself is
    degenerate, a zero Hessian as in w1²·w2² at 0, the posterior's stiffness is only seen there):
    `around`, ε ↦ the bias predicted there (bias_around), which ε must also keep ≤ target;
    `a_top`, for RMSProp, whose P is not formed at the starts, the top of P^½(nβH + γ)P^½ there
    (top_curvature), whose mode alone may take that bias. Neither: γ, the unpreconditioned floor.
    A measured top is never floored by γ: under P = (nβH + γ)⁻¹ the localiser's stiffness is
    γ/a ≤ 1, and a floor of γ = 100 held ε 100× below its 1% bias. The bias at the starts is the
    finer bound: on a 3-layer DLN [6, 4, 4, 6] the top alone held ε 16× below where the checks at
    the chains settled it (their ESS 9)."""
    rms = cfg.precond == "rmsprop"
    if cfg.step_size == "auto":  # largest ε whose predicted bias is ≤ target
        eps = largest_step(lambda e: predicted_bias(spec, post, e, cfg, curv) <= target and (around is None or around(e) <= target))
        V = (a_top or (post.gamma if around is None else 0.0)) * (1 + _minibatch_factor(post, cfg.batch_size) * spec.kappa)
        if V > 0:  # the same bound for that mode (none without data, γ or a measurement)
            eps = min(eps, 4 * target / (math.sqrt(V) if rms else V))
    else:
        eps = float(cfg.step_size)
    bias = predicted_bias(spec, post, eps, cfg, curv)

    a, share = spec.modes(post.n_beta, post.gamma)
    e = eps * _step_scale(spec, post, cfg, curv)
    # w ← (1 − εa/2)w + noise: relaxation time of each mode, in steps (a flat one, γ = 0: never)
    tau = np.divide(2.0, e * a, out=np.full_like(a, np.inf), where=e * a > 0)
    carrying = share >= 0.5  # modes that carry λ̂ (nβh ≥ γ); flat ones are left to R̂
    tau_slow = float(tau[carrying].max()) if carrying.any() else float(tau.max())
    w = spec.weight * share
    on = w > 0  # modes that carry none (flat, γ = 0: an infinite τ) do not enter
    tau_int = float(np.sum(w[on] * tau[on]) / w.sum()) if w.sum() > 0 else tau_slow  # of the λ̂ statistic
    burnin = math.ceil(3 * tau_slow) + (int(3 / (1 - cfg.rmsprop_decay)) if rms else 0)
    # 4×: a bulk ESS of 1 600 keeps R̂ (noise ≈ 1/√ESS per chain) clear of 1.01 by chance
    draws = max(100, math.ceil(ESS_MIXED * tau_int / cfg.chains))
    capped = cfg.burnin == "auto" and burnin > cfg.max_steps // 2
    burnin = min(burnin, cfg.max_steps // 2) if cfg.burnin == "auto" else int(cfg.burnin)
    if cfg.draws == "auto":
        max_draws = max(100, cfg.max_steps - burnin)
        draws = min(draws, max_draws)
    else:
        draws = max_draws = int(cfg.draws)
    return SGLDPlan(eps, burnin, draws, max_draws, bias, tau_slow, capped)


def dispersed_starts(post, spec: Spectrum, key, chains: int, spread: float = 2.0):
    """w* + δ per chain, δ ~ N(0, spread·A⁻¹) with A = nβH + γ floored at a_slow (the slowest mode
    that carries λ̂): every mode that matters starts overdispersed, so the chains' transients
    differ and R̂ sees a mode that has not relaxed, while flat directions are not thrown far.
    A^(-1/2)z from the eigenvectors where the Hessian was formed, else by Lanczos on H from z."""
    d, nb, gamma = post.dim, post.n_beta, post.gamma
    a_slow = spec.a_slow(nb, gamma)
    f = lambda h: np.sqrt(spread / np.maximum(nb * np.clip(h, 0, None) + gamma, a_slow))  # noqa: E731
    z = host_rng(key).standard_normal((chains, d)).astype(post.w_star.dtype)
    sub = _subsample(post, CURVATURE_SAMPLES)
    if spec.vectors is not None and spec.vectors.shape[1] == d:
        S = spec.vectors
        deltas = (np.asarray(z, np.float64) @ S) * f(spec.theta) @ S.T
    else:
        Ts, Q = _lanczos(_batched_hvp(post, sub), z, min(d, LANCZOS_STEPS))
        norms = np.linalg.norm(np.asarray(z, np.float64), axis=1)
        deltas = []
        for T, q, zn in zip(Ts, Q, norms):
            th, S = np.linalg.eigh(T)
            deltas.append(zn * q[: len(th)].T @ (S @ (f(th) * S[0])))
        deltas = np.stack(deltas)
    # Directions flat at second order (an MLP's) are rarely flat far out: halve a start whose
    # actual excess loss is above twice the spread's share of λ (4 × the quadratic estimate).
    w_star, dt = np.asarray(post.w_star), post.w_star.dtype  # numpy: see _dense_at
    deltas = np.asarray(deltas, dt)
    if d <= DENSE_MAX_DIM:
        L0 = _dense_at(post, w_star[None])[1][0]
        excess = lambda dw: nb * (_dense_at(post, w_star + dw)[1] - L0)  # noqa: E731
    else:
        f = jax.jit(jax.vmap(lambda dw, w, sub: nb * (post.loss(w + dw, sub) - post.loss(w, sub)), in_axes=(0, None, None)))
        excess = lambda dw: f(dw, post.w_star, sub)  # noqa: E731
    cap = 2 * spread * max(spec.llc_estimate(nb, gamma), 0.5)
    for _ in range(20):
        too_far = np.asarray(excess(deltas)) > cap
        if not too_far.any():
            break
        deltas = deltas * np.where(too_far, 0.5, 1.0).astype(dt)[:, None]
    return jax.device_put(np.asarray(w_star + deltas))


def mala_acceptance(post, positions, eps: float, P, key, grad_full, proposals: int = 2) -> float:
    """Mean Metropolis acceptance of the (preconditioned) SGLD proposal, full-batch, at `positions`.
    P as in `precondition`; a diagonal p may hold one row per chain.

    Above MALA_SAMPLES points the loss is a subsample's, L_m(w) − (∇L_m(w*) − ∇L_n(w*))·(w − w*):
    the same gradient at w* as L_n (`grad_full`, measured at w*), so the same optimum to first
    order, and curvature within ~1%. Where d ≤ DENSE_MAX_DIM, on the full data through measure's
    program, the rest on the host: its own program's compilation was 0.2 s of a 1.4 s task."""
    z = host_rng(key).standard_normal((positions.shape[0] * proposals, post.dim)).astype(post.w_star.dtype)
    if post.dim <= DENSE_MAX_DIM:
        return _dense_mala(post, positions, eps, P, z, proposals)
    data, subsampled = post.data, post.data is not None and post.n > MALA_SAMPLES
    if subsampled:
        data = _subsample(post, MALA_SAMPLES)
    prog = ("mala", post.loss, post.n_beta, post.gamma, subsampled, P[0] is None, proposals)  # what it closes over
    if prog not in _PROGRAMS:
        _PROGRAMS[prog] = _mala_program(post, subsampled, P[0] is None, proposals)
    dt = post.w_star.dtype
    return float(_PROGRAMS[prog](positions, P, z, post.w_star, data, np.asarray(grad_full, dt), np.asarray(eps, dt)))


def _log_ratio(w, w2, z, lp, lp2, g2, P, eps):
    """log of the Metropolis–Hastings ratio of the SGLD proposal w → w2 (noise z), its reverse
    proposal's mean w2 + ½εP∇log π(w2): for one point (JAX) or rows (numpy) alike."""
    r = w - (w2 + 0.5 * eps * precondition(P, g2))
    return lp2 - lp - (r * precondition(P, r, -1.0)).sum(-1) / (2 * eps) + 0.5 * (z**2).sum(-1)


def _mala_program(post, subsampled: bool, diagonal: bool, proposals: int):
    """mala_acceptance's one program, the bookkeeping and the subsample's shift too (eager, each
    op would compile a program of its own). ε is an argument: as a constant, every step size
    (another seed's, a shrunk one) was another program, missing the persistent cache."""

    def log_pi(w, w_star, data, shift):
        return -post.n_beta * (post.loss(w, data) - jnp.dot(shift, w - w_star)) - 0.5 * post.gamma * jnp.sum((w - w_star) ** 2)

    grad_lp = jax.value_and_grad(log_pi)

    def one(w, P, z, eps, *args):
        lp, g = grad_lp(w, *args)
        w2 = w + langevin_move(P, 0.5 * eps * g, jnp.sqrt(eps) * z)  # SGLD's own move, full batch
        lp2, g2 = grad_lp(w2, *args)
        log_a = _log_ratio(w, w2, z, lp, lp2, g2, P, eps)
        return jnp.where(jnp.isfinite(log_a), jnp.exp(jnp.minimum(log_a, 0.0)), 0.0)

    @jax.jit
    def mean_acceptance(positions, P, z, w_star, data, grad_full, eps):
        shift = jax.grad(post.loss)(w_star, data) - grad_full if subsampled else jnp.zeros_like(w_star)
        rep = lambda a: jnp.repeat(a, proposals, axis=0)  # noqa: E731
        if diagonal:  # a diagonal, per chain
            P, axes = (None, rep(jnp.broadcast_to(P[1], positions.shape)), None), (None, 0, None)
        else:
            axes = None
        return jnp.mean(jax.vmap(one, in_axes=(0, axes, 0, None, None, None, None))(rep(positions), P, z, eps, w_star, data, shift))

    return mean_acceptance


def _dense_mala(post, positions, eps, P, z, proposals) -> float:
    """mala_acceptance in float64 on the host, log π and its gradient from _dense_at."""
    nb, gamma, w_star = post.n_beta, post.gamma, np.asarray(post.w_star, np.float64)
    w = np.repeat(np.asarray(positions, np.float64), proposals, axis=0)
    U, p, rest = (None if x is None else np.asarray(x, np.float64) for x in P)
    if U is None and p.ndim == 2:  # a diagonal per chain
        p = np.repeat(p, proposals, axis=0)
    P = (U, p, rest)

    def log_pi(w):
        _, L, _, g = _dense_at(post, w)
        return -nb * L - 0.5 * gamma * np.sum((w - w_star) ** 2, axis=1), -nb * g - gamma * (w - w_star)

    z = np.asarray(z, np.float64)
    lp, g = log_pi(w)
    w2 = w + precondition(P, 0.5 * eps * g) + precondition(P, np.sqrt(eps) * z, 0.5)  # SGLD's own move, full batch
    lp2, g2 = log_pi(w2)
    log_a = _log_ratio(w, w2, z, lp, lp2, g2, P, eps)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.mean(np.where(np.isfinite(log_a), np.exp(np.minimum(log_a, 0.0)), 0.0)))
