"""Variational inference around w*, trained with optax; λ̂ from E_q[L_n].

Families (all in units of sd0 = 1/√(nβh̄ + γ), the posterior width at the mean curvature h̄ of
L_n at w* (calibration.measure; 1 where it is 0), so that one Adam learning rate suits every
target: in units of a curvature-1 width, a fit at noise σ = 0.1 (h̄ ≈ 100) started 10× too wide
and ended 5–15% high after 2 000 steps):
- "meanfield": one diagonal Gaussian.
- "lowrank": Σ_m π_m N(w* + μ_m, diag(σ_m²) + U_m U_mᵀ), `M` Gaussians of rank `r`.
  The ELBO is the π-weighted sum of per-component expectations, so π gets exact gradients.
- "flow": a diagonal Gaussian pushed through `layers` affine coupling layers (RealNVP) with
  `hidden`-unit conditioners, trained with sticking-the-landing gradients (log q evaluated with
  the parameters held fixed, via the exact inverse). A Gaussian cannot follow the curved zero set
  of a singular model (on a DLN every flat direction then counts as quartic, adding ≈ 1/4 to λ̂
  each); the flow bends with it, though not far enough on a 3-layer DLN (+28–46% there).

Every family also reports PSIS k̂ of the importance weights π/q over its draws (Yao et al. 2018):
k̂ > 0.7 says q is far from π in its tails, so λ̂ under q is an upper estimate. Where that check
(or the gap to the PSIS-reweighted λ̂) fails, `refine: auto` takes λ̂ from the shipped HMC instead
and keeps q's as `llc_vi`: a reverse-KL q on a singular model is 28–118% high on a 3-layer DLN,
which no family or setting we tried brought within 10%.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from lambda_hat.llc import checks
from lambda_hat.llc.samplers import UNROLL, Trace, conv_on_cpu, in_calls, progress

FIT_PIECES = 10  # the fit runs in (at most) this many equal pieces, its progress logged between them


def _log_normal(w, mu, log_sd, U):
    """log N(w; mu, diag(exp(2 log_sd)) + U Uᵀ) by the Woodbury identity: O(d r²)."""
    d, r = U.shape
    dinv = jnp.exp(-2 * log_sd)
    z = w - mu
    cap = jnp.eye(r) + (U.T * dinv) @ U
    chol = jnp.linalg.cholesky(cap)
    t = jax.scipy.linalg.solve_triangular(chol, U.T @ (dinv * z), lower=True)
    quad = jnp.sum(dinv * z**2) - jnp.sum(t**2)
    logdet = 2 * jnp.sum(log_sd) + 2 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (quad + logdet + d * jnp.log(2 * jnp.pi))


def _log_diag_normal(x, mu, log_sd):
    """log N(x; mu, diag(exp(2 log_sd)))."""
    z = (x - mu) * jnp.exp(-log_sd)
    return -0.5 * jnp.sum(z**2) - jnp.sum(log_sd) - 0.5 * x.shape[0] * jnp.log(2 * jnp.pi)


class Mixture:
    """Mean-field (one component, no U) or a mixture of diagonal + low-rank Gaussians."""

    def __init__(self, d, cfg, dtype):
        self.d, self.M, self.dtype = d, cfg.M, dtype
        self.lowrank = cfg.family == "lowrank"
        self.r = cfg.r if self.lowrank else 1

    def init(self, key):
        M, d = self.M, self.d
        p = {"mu": jnp.zeros((M, d), self.dtype), "log_sd": jnp.zeros((M, d), self.dtype), "logits": jnp.zeros((M,), self.dtype)}
        if self.lowrank:
            p["U"] = 0.1 * jax.random.normal(key, (M, d, self.r), self.dtype)
        return p

    def component(self, p, m, k):
        k1, k2 = jax.random.split(k)
        x = p["mu"][m] + jnp.exp(p["log_sd"][m]) * jax.random.normal(k1, (self.d,), self.dtype)
        return x + p["U"][m] @ jax.random.normal(k2, (self.r,), self.dtype) if self.lowrank else x

    def draw(self, p, k):
        k1, k2 = jax.random.split(k)
        return self.component(p, jax.random.categorical(k1, p["logits"]), k2)

    def log_q(self, p, x):
        if self.lowrank:
            comps = jax.vmap(lambda mu, ls, u: _log_normal(x, mu, ls, u))(p["mu"], p["log_sd"], p["U"])
        else:
            comps = jax.vmap(lambda mu, ls: _log_diag_normal(x, mu, ls))(p["mu"], p["log_sd"])
        return logsumexp(jax.nn.log_softmax(p["logits"]) + comps)

    def neg_elbo(self, p, k, log_target, mc):
        def term(m, k):
            x = self.component(p, m, k)
            return log_target(x) - self.log_q(p, x)

        keys = jax.random.split(k, self.M * mc).reshape(self.M, mc, -1)
        per_comp = jax.vmap(lambda m, ks: jnp.mean(jax.vmap(lambda k: term(m, k))(ks)))(jnp.arange(self.M), keys)
        return -jnp.sum(jax.nn.softmax(p["logits"]) * per_comp)


class Flow:
    """Diagonal Gaussian, then affine couplings x_b ← x_b·exp(s(x_a)) + t(x_a) on random halves."""

    def __init__(self, d, cfg, dtype):
        self.d, self.hidden, self.dtype = d, cfg.hidden, dtype
        rng = np.random.default_rng(0)  # fixed masks: part of the family, not of the seed
        masks = np.zeros((cfg.layers, d))
        for mask in masks:
            mask[rng.permutation(d)[: d // 2]] = 1
        self.masks = jax.device_put(np.asarray(masks, dtype))

    def init(self, key):
        L, d, h = len(self.masks), self.d, self.hidden
        return {
            "mu": jnp.zeros(d, self.dtype),
            "log_sd": jnp.zeros(d, self.dtype),
            # zero output layers: every coupling starts as the identity
            "W1": jax.random.normal(key, (L, d, h), self.dtype) / np.sqrt(d),
            "b1": jnp.zeros((L, h), self.dtype),
            "W2": jnp.zeros((L, h, 2 * d), self.dtype),
            "b2": jnp.zeros((L, 2 * d), self.dtype),
        }

    def _layers(self, p):
        """Each coupling's mask and weights, stacked: the couplings are one lax.scan, so the
        program (and its compile time, which dominated a run) does not grow with `layers`."""
        return self.masks, p["W1"], p["b1"], p["W2"], p["b2"]

    def _shift_scale(self, layer, x):
        m, W1, b1, W2, b2 = layer
        out = jnp.tanh((x * m) @ W1 + b1) @ W2 + b2
        return 2.0 * jnp.tanh(out[: self.d]) * (1 - m), out[self.d :] * (1 - m)  # |log scale| ≤ 2

    def draw(self, p, k):
        def forward(x, layer):
            s, t = self._shift_scale(layer, x)
            return x * jnp.exp(s) + t, None

        x = p["mu"] + jnp.exp(p["log_sd"]) * jax.random.normal(k, (self.d,), self.dtype)
        return jax.lax.scan(forward, x, self._layers(p))[0]

    def log_q(self, p, x):
        def inverse(carry, layer):
            x, logdet = carry
            s, t = self._shift_scale(layer, x)
            return ((x - t) * jnp.exp(-s), logdet + jnp.sum(s)), None

        (x, logdet), _ = jax.lax.scan(inverse, (x, jnp.zeros((), self.dtype)), self._layers(p), reverse=True)
        return _log_diag_normal(x, p["mu"], p["log_sd"]) - logdet

    def neg_elbo(self, p, k, log_target, mc):
        def term(k):
            x = self.draw(p, k)
            return log_target(x) - self.log_q(jax.lax.stop_gradient(p), x)

        return -jnp.mean(jax.vmap(term)(jax.random.split(k, mc)))


def sample(post, cfg, key, spec=None) -> Trace:
    d, dt = post.dim, post.w_star.dtype
    if spec is None:
        from lambda_hat.llc import calibration

        spec = calibration.measure(post, jax.random.fold_in(key, 7))
    h = float(np.sum(spec.weight * np.clip(spec.theta, 0, None))) / d  # the mean curvature at w*
    sd0 = 1.0 / jnp.sqrt(post.n_beta * (h if h > 0 else 1.0) + post.gamma)
    fam = (Flow if cfg.family == "flow" else Mixture)(d, cfg, dt)
    clip = [optax.clip_by_global_norm(cfg.clip_global_norm)] if cfg.clip_global_norm is not None else []
    opt = optax.chain(*clip, optax.adam(_schedule(cfg)))
    batch_size = cfg.batch(post.n) if post.data is not None else None
    draw_batch = post.batcher(jax.random.fold_in(key, 1), batch_size)
    log_jac = d * jnp.log(sd0)  # q over w = w* + sd0·x

    # Per chain: q's initial parameters and optimiser state, the fit in pieces of one program
    # (so that a long fit logs its progress between them), then q's draws.
    def init(key):
        k_init, k_fit, k_draw = jax.random.split(key, 3)
        p = fam.init(k_init)
        return (p, opt.init(p)), jax.random.split(k_fit, cfg.steps), k_draw

    def fit(carry, keys, ring):  # the data as arguments, not constants of the program
        def step(carry, k):
            p, s = carry
            kb, ke = jax.random.split(k)
            batch = draw_batch.take(draw_batch.offsets(kb), ring)
            log_target = lambda x: -post.n_beta * post.loss(post.w_star + sd0 * x, batch) - post.prior_term(post.w_star + sd0 * x)  # noqa: E731
            value, g = jax.value_and_grad(fam.neg_elbo)(p, ke, log_target, cfg.mc_samples)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), log_jac - value

        return jax.lax.scan(step, carry, keys, unroll=bool(unroll))

    def draw(p, k_draw, data):
        xs = jax.vmap(lambda k: fam.draw(p, k))(jax.random.split(k_draw, cfg.burnin + cfg.draws))
        ws = post.w_star + sd0 * xs
        losses = jax.lax.map(lambda w: post.loss(w, data), ws, batch_size=64)
        log_q = jax.lax.map(lambda x: fam.log_q(p, x), xs, batch_size=64) - log_jac
        return losses, -post.n_beta * losses - jax.vmap(post.prior_term)(ws) - log_q

    unroll = UNROLL if conv_on_cpu(post) else 0  # then UNROLL unrolled steps a call (samplers.conv_on_cpu)
    carry, keys, k_draw = jax.jit(jax.vmap(init))(jax.random.split(key, cfg.chains))
    keys = np.asarray(keys) if unroll else keys  # sliced on the host: a device array's slices each compile
    fit_piece = jax.jit(jax.vmap(fit, in_axes=(0, 0, None)))
    size = cfg.steps // max(k for k in range(1, FIT_PIECES + 1) if cfg.steps % k == 0)  # equal pieces: one program
    elbo = []
    for start in range(0, cfg.steps, size):
        carry, e = in_calls(lambda c, a, b: fit_piece(c, keys[:, start + a : start + b], draw_batch.ring), carry, size, unroll or size)
        elbo.append(e)
        progress(f"VI fit: {start + size} of {cfg.steps} steps; ELBO {float(np.mean(elbo[-1][:, -1])):.4g}")
    elbo = np.concatenate(elbo, axis=1)[:, cfg.eval_every - 1 :: cfg.eval_every]  # the original's eval_every: its trace's steps
    losses, log_w = (np.asarray(a) for a in jax.jit(jax.vmap(draw, in_axes=(0, 0, None)))(carry[0], k_draw, post.data))
    fit = cfg.steps * cfg.M * cfg.mc_samples * post.batch_fraction(batch_size)
    # each draw costs one full-data loss evaluation, counted as one FGE
    llc_q = post.n_beta * (losses[:, cfg.burnin :] - post.L_star)
    k_hat, llc_is = _psis(log_w[:, cfg.burnin :], llc_q)
    extras = {
        "elbo": elbo,
        "elbo_every": cfg.eval_every,
        "pareto_k": k_hat,
        "llc_is": llc_is,
        "batch_size": min(batch_size or post.n, post.n),
        "llc_vi": float(np.mean(llc_q)),
    }
    # q's draws are independent: their MCSE is the plain standard error
    miss = checks.vi_miss(float(np.max(k_hat)), cfg.draws, float(np.mean(llc_q)), llc_is, float(np.std(llc_q) / np.sqrt(llc_q.size)))
    if cfg.refine == "none" or (cfg.refine == "auto" and miss is None):
        return Trace(losses[:, cfg.burnin :], fit + cfg.burnin + cfg.draws, 1.0, extras)
    # q's λ̂ is not π's: HMC's is, from its own dispersed starts (so that R̂ sees a slow mode).
    # HMC run through the flow's transport instead (NeuTra, Hoffman et al. 2019), on a 3-layer DLN
    # at n = 1e3, read 7.65 with 315 divergences (the whole run 45 s); HMC in w 7.87, none (31 s; MCLMC 7.86)
    from lambda_hat.llc.samplers import hmc  # here: blackjax starts a backend, and vi.py is preloaded before a fork

    trace = hmc.sample(post, cfg.refine_hmc, jax.random.fold_in(key, 5), spec)
    trace.extras.update(extras, refined="hmc")
    trace.fge += fit + cfg.burnin + cfg.draws
    return trace


def _schedule(cfg):
    """Adam's step over the fit. Decayed to 0 by default, so that the fit settles instead of
    jittering with the ELBO's Monte Carlo noise."""
    if cfg.lr_schedule is None:
        return cfg.lr
    warm = int(cfg.lr_warmup_frac * cfg.steps)
    if cfg.lr_schedule == "cosine":
        if not warm:
            return optax.cosine_decay_schedule(cfg.lr, cfg.steps)
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warm, cfg.steps)
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm), optax.linear_schedule(cfg.lr, 0.0, cfg.steps - warm)], [warm])


def _psis(log_w: np.ndarray, llc: np.ndarray) -> tuple[np.ndarray, float]:
    """PSIS per chain (arviz): k̂ (inf where the weights are not finite), and λ̂ reweighted from q
    to π. k̂ only sees a q narrower than π; a q too wide has tame weights but a λ̂ off, which the
    reweighted value shows (trustworthy while k̂ is low)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ks, means = [], []
        for lw, x in zip(log_w, llc):
            if not np.isfinite(lw).all():
                ks.append(np.inf)
                continue
            smoothed, k = az.psislw(lw)
            ks.append(k)
            means.append(float(np.sum(np.exp(smoothed) * x)))  # smoothed log weights are normalised
        return np.array(ks), float(np.mean(means)) if means else float("nan")
