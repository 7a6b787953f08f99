"""Trust: health checks that fire when a number would be wrong (REFERENCE §1b), and the
calibration behind `step_size: auto`. The shipped presets in hard regimes are in
test_presets_in_regimes.py and test_presets_on_deep_linear_networks.py.

Every assertion on an estimate also allows for its Monte Carlo error (3 MCSE), so a correct
sampler does not fail by chance; a clean run (no warning) must be within the tolerance itself.
"""

import dataclasses
import math

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat.llc.checks import run_warnings
from lambda_hat.llc.estimator import _arviz_mcse, summarize
from lambda_hat.llc.posterior import Posterior, n_beta
from lambda_hat.llc.sampling import estimate
from regimes import check, codes, preset, regular, target


def test_auto_step_predicts_one_percent_and_ten_times_it_is_flagged():
    """The sgld preset at n = 1e4 (isotropic, σ = 1): accurate, then flagged at 10× its step."""
    post, model = regular(10_000, "gauss_iso", 1.0)
    auto, _ = estimate(post, preset("sgld"), model)
    check(auto, auto["llc_finite"], 0.05)
    # ≤ 1% by construction; a little less where the curvature around the starts binds first
    assert 0.005 < auto["predicted_bias"] <= 0.01 + 1e-9 and "step_bias" not in codes(auto)
    assert auto["precond"] == "curvature", auto["precond"]  # the units of its step_size
    assert abs(auto["measured_bias"] - auto["predicted_bias"]) < 0.01, auto["measured_bias"]  # step halving agrees
    # the same preconditioner (with a number, `auto` would mean none: devinterp's plain ε)
    big, _ = estimate(post, preset("sgld", precond="curvature", step_size=10 * auto["step_size"], draws=4000, burnin=1000), model)
    assert big["predicted_bias"] > 0.05 and "step_bias" in codes(big), big["warnings"]


@pytest.mark.parametrize("eps", [3e-5, 1e-4])
def test_step_halving_measures_a_fixed_steps_bias(eps):
    """On a linear model (a Gaussian posterior: the bias model is exact there) the step-halving
    check measures what the step does to λ̂: the predicted bias, and the estimate's own error
    against llc_finite, within their Monte Carlo errors and the check's short relaxation."""
    post, model = regular(10_000, "gauss_iso", 1.0)
    m, _ = estimate(post, preset("sgld", step_size=eps, draws=12_000, burnin=1000), model)
    assert m["precond"] == "none"  # a number keeps devinterp's plain ε
    err = m["llc_raw"] / m["llc_finite"] - 1  # what the chains read
    for truth, se in ((m["predicted_bias"], 0.0), (err, m["llc_sem"] / m["llc_finite"])):
        assert abs(m["measured_bias"] - truth) <= 0.3 * truth + 3 * np.hypot(m["measured_bias_se"], se), (m["measured_bias"], m["measured_bias_se"], truth)
    assert m["measured_bias_se"] < 0.25 * m["predicted_bias"]  # the coupled copies: a sharp check
    # λ̂ is the chains' reading less the measured bias: the exact value, where the raw one was off by it
    assert abs(m["llc_mean"] - m["llc_finite"]) <= min(3 * m["llc_sem"], abs(m["llc_raw"] - m["llc_finite"])), (m["llc_mean"], m["llc_raw"], m["llc_sem"])


def test_step_halving_flags_a_bias_the_model_misses(monkeypatch):
    """Where the bias model misses (here it is told the step is exact), the measured bias still
    flags the run: the same fixed step, the predictions and MALA's acceptance blinded."""
    from lambda_hat.llc import calibration

    post, model = regular(10_000, "gauss_iso", 1.0)
    monkeypatch.setattr(calibration, "predicted_bias", lambda *a, **k: 0.0)
    monkeypatch.setattr(calibration, "bias_around", lambda *a, **k: lambda eps: 0.0)
    monkeypatch.setattr(calibration, "mala_acceptance", lambda *a, **k: 1.0)
    m, _ = estimate(post, preset("sgld", step_size=1e-4, draws=6000, burnin=1000), model)
    assert m["llc_raw"] > 1.1 * m["llc_finite"] and m["predicted_bias"] == 0.0
    # corrected to first order: a 14% bias leaves its higher-order terms (2.2%), and the flag stands
    assert abs(m["llc_mean"] / m["llc_finite"] - 1) < 0.25 * (m["llc_raw"] / m["llc_finite"] - 1), (m["llc_mean"], m["llc_raw"], m["llc_finite"])
    msgs = [w["message"] for w in m["warnings"] if w["code"] == "step_bias"]
    assert len(msgs) == 1 and msgs[0].startswith("step halving measures"), m["warnings"]
    # a devinterp-style run (100 + 500 steps) leaves the check too few steps: not measured, not read as 0
    short, _ = estimate(post, preset("sgld", step_size=1e-4, draws=500, burnin=100), model)
    assert np.isnan(short["measured_bias"]) and "step_bias" not in codes(short), (short["measured_bias"], short["warnings"])
    assert "llc_raw" not in short  # nothing measured, nothing corrected


@pytest.mark.parametrize("precond", ["curvature", "rmsprop"])
def test_auto_step_with_a_strong_localiser(precond):
    """γ = 100 (devinterp's common choice) against nβh ≈ 145: the auto step still predicts ~1%
    (a floor of γ on the preconditioned curvature once held it 100× lower, over a budget-capped
    burn-in), and the estimate meets llc_finite, which γ pulls 20% below d/2."""
    post, model = regular(1000, "gauss_iso", 1.0, gamma=100.0)
    m, _ = estimate(post, preset("sgld", precond=precond), model)
    assert m["llc_finite"] < 0.85 * m["llc_true"]
    assert 0.005 < m["predicted_bias"] <= 0.01 + 1e-9 and not m["budget_capped"], (m["predicted_bias"], m["relax_steps"])
    check(m, m["llc_finite"], 0.05)


def test_mclmc_half_step_removes_most_of_its_bias_and_a_step_too_large_is_shrunk():
    """Unadjusted MCLMC at BlackJAX's tuned step read this linear model 2% low (its step bias,
    Var[ΔE]/d ≈ 5e-4); the preset samples at half of it (~0.7%). Run at the tuned step
    (step_scale 1), the run's own check of Var[ΔE]/d shrinks the step and reruns the piece: it
    reads as the half step does. Enough draws that 3 MCSE stay below that 2%."""
    post, model = regular(1000, "gauss_iso", 1.0)
    half, _ = estimate(post, preset("mclmc", draws=16_000), model)
    assert abs(half["llc_mean"] - half["llc_finite"]) <= 0.01 * half["llc_finite"] + 3 * half["llc_sem"] < 0.02 * half["llc_finite"], half
    assert "energy_var" not in codes(half) and half["step_shrinks"] == 0
    tuned, trace = estimate(post, preset("mclmc", draws=16_000, step_scale=1.0), model)
    assert tuned["step_shrinks"] >= 1 and tuned["energy_var"] < 0.5e-4 and tuned["step_size"] < 2 * half["step_size"], tuned
    steps = trace.idata.sample_stats["step_size"].values  # each kept draw's step
    assert steps.shape == trace.loss.shape and np.mean(steps) == pytest.approx(tuned["step_size"])
    assert abs(tuned["llc_mean"] - half["llc_finite"]) <= 0.01 * half["llc_finite"] + 3 * tuned["llc_sem"], (tuned["llc_mean"], half["llc_finite"])
    assert not codes(tuned), tuned["warnings"]
    # where no rerun brings it down, the run says so
    assert {w["code"] for w in run_warnings({**HEALTHY_HMC, "draws": 1000, "energy_var": 4.4e-4}, preset("mclmc", draws=1000))} == {"energy_var"}


def test_bias_at_the_chains_positions_reads_as_the_plan_at_w_star():
    """At w* itself the local-quadratic bias is the plan's, mode for mode (regular target, the
    curvature preconditioner and the minibatch noise both in play)."""
    from lambda_hat.llc import calibration, samplers

    post, _ = regular(10_000, "gauss_aniso", 0.1)
    cfg = preset("sgld", batch_size=256)
    spec = calibration.measure(post, jax.random.PRNGKey(7))
    curv = calibration.curvature_precond(spec, post, samplers.starts(post, spec, jax.random.PRNGKey(0), 4))
    for eps in (0.01, 0.1):
        planned = calibration.predicted_bias(spec, post, eps, cfg, curv)
        assert calibration.bias_around(post, np.asarray(post.w_star)[None], curv.P, spec, cfg, curv)(eps) == pytest.approx(planned, rel=1e-6)
    # away from w* a linear model's curvature is the same, but its residuals, and so the
    # minibatch gradient noise, grow: measured there, not taken from w*
    far = np.asarray(post.w_star)[None] + 0.5
    assert calibration.bias_around(post, far, curv.P, spec, cfg, curv)(0.1) > 2 * planned
    # above DENSE_MAX_DIM: the plan scaled by how much stiffer the top mode is (power iteration).
    # L = ½|w|² + ¼|w|⁴: at w = 0.5·1 the top curvature is 1 + 3|w|² = 109× that at w* = 0.
    d = calibration.DENSE_MAX_DIM + 16
    quartic = Posterior(jnp.zeros(d), 1000, 50.0, 1.0, lambda w, b: 0.5 * jnp.sum(w**2) + 0.25 * jnp.sum(w**2) ** 2, None, 0.0)
    q_spec, q_cfg = calibration.measure(quartic, jax.random.PRNGKey(7)), preset("sgld", batch_size=None)
    at = lambda w, eps: calibration.bias_around(quartic, w, (None, 1.0, None), q_spec, q_cfg)(eps)  # noqa: E731
    q_planned = calibration.predicted_bias(q_spec, quartic, 1e-4, q_cfg)
    assert q_planned > 0 and at(np.zeros((1, d)), 1e-4) == pytest.approx(q_planned, rel=1e-6)
    a_far = (50.0 * (1 + 3 * 0.25 * d) + 1.0) / 51.0
    assert at(np.full((2, d), 0.5), 1e-4) == pytest.approx(q_planned * a_far, rel=1e-3)
    assert at(np.full((2, d), 0.5), 1.0) == float("inf")  # past the step's stability limit there
    memo = {}  # a run's checks measure the top at w* once per preconditioner
    for p in (1.0, 1.0, 0.5):
        b = calibration.bias_around(quartic, np.full((2, d), 0.5), (None, p, None), q_spec, q_cfg, None, memo)(1e-4)
        assert b == pytest.approx(q_planned * a_far, rel=1e-3)
    assert len(memo) == 2


def test_bias_above_the_dense_size_takes_the_gradient_noise_where_the_chains_are():
    """A fit with no residual at w* (a classifier that fits its training set: digits) has no
    per-sample gradient noise there, but away from w* it does: above DENSE_MAX_DIM the minibatch
    part of the bias takes κ from the per-sample gradients at the positions. Linear regression
    y = x·w exactly, d = 144: at w* + δ each sample's gradient is x (xᵀδ), the curvature stays."""
    from lambda_hat.llc import calibration

    d, n = calibration.DENSE_MAX_DIM + 16, 4000
    rng = np.random.default_rng(3)
    x, w_star = rng.standard_normal((n, d)), rng.standard_normal(d)
    data = (jnp.asarray(x), jnp.asarray((x @ w_star)[:, None]))
    loss = lambda w, b: 0.5 * jnp.mean((b[1][:, 0] - b[0] @ w) ** 2)  # noqa: E731
    post = Posterior(jnp.asarray(w_star), n, n_beta(n, 1.0), 1.0, loss, data, 0.0)
    cfg = preset("sgld", batch_size=256)
    spec = calibration.measure(post, jax.random.PRNGKey(7))
    assert spec.kappa < 1e-12  # no noise at w*
    quiet = calibration.predicted_bias(spec, post, 1e-3, cfg)
    assert calibration.bias_around(post, np.asarray(w_star)[None], (None, 1.0, None), spec, cfg)(1e-3) == pytest.approx(quiet, rel=1e-6)
    delta = 0.3 * rng.standard_normal((2, d))
    xs = np.asarray(calibration._subsample(post, calibration.NOISE_SAMPLES)[0])
    G = [xs * (xs @ dw)[:, None] for dw in delta]  # per-sample gradients at w* + δ
    kappa = max(np.mean(np.sum((g - g.mean(0)) ** 2, 1)) for g in G) / np.sum(spec.weight * np.clip(spec.theta, 0, None))
    want = calibration.predicted_bias(dataclasses.replace(spec, kappa=kappa), post, 1e-3, cfg)
    got = calibration.bias_around(post, w_star + delta, (None, 1.0, None), spec, cfg)(1e-3)
    assert got > 5 * quiet and got == pytest.approx(want, rel=0.1)  # Hutchinson: near-isotropic noise


@pytest.mark.slow
def test_auto_step_shrinks_where_the_chains_find_more_curvature_than_w_star():
    """3-layer DLN at n = 1e3: the chains wander along the zero set into regions ~40× stiffer
    (preconditioned) than w*, where the step planned at w* gave λ̂ 10% high (flagged by R̂
    alone). Measured there, the bias shrinks the auto step; a fixed step that large is flagged
    though its prediction at w* is under 1%."""
    post, model = target((3, 5, 4, 3), 1000, steps=3000)
    auto, _ = estimate(post, preset("sgld"), model)
    assert auto["step_shrinks"] >= 1 and auto["bias_at_chains"] <= 2 * 0.01, auto
    check(auto, auto["llc_true"], 0.05)
    big, _ = estimate(post, preset("sgld", precond="curvature", step_size=3 * auto["step_size"]), model)
    assert big["predicted_bias"] < 0.01 < 0.02 < big["bias_at_chains"] and "step_bias" in codes(big), big
    # a number of draws: all of them after the shrink (only the first half of a run shrinks: with
    # 40 000 the chains reached the stiff region later in one seed of three, flagged `step_bias`)
    fixed, _ = estimate(post, preset("sgld", draws=80_000), model)
    assert fixed["step_shrinks"] >= 1 and fixed["draws"] == 80_000 and fixed["burnin"] > 3 * fixed["relax_steps"], fixed


def test_auto_draws_stop_when_mixed_and_a_budget_too_small_for_the_burn_in_is_flagged():
    """Auto draws run until bulk ESS ≥ 1 600 and R̂ ≤ 1.01, or to max_steps; burn-in is 3
    relaxation times of the slowest mode that carries λ̂, within half of max_steps."""
    post, model = regular(1000, "gauss_iso", 1.0)
    m, _ = estimate(post, preset("sgld"), model)
    assert m["burnin"] + m["draws"] < 50_000 and m["ess_bulk"] >= 0.95 * 1600 and m["r_hat"] <= 1.01 and not m["warnings"], m
    post, model = regular(10_000, "gauss_iso", 1.0)
    m, _ = estimate(post, preset("sgld", max_steps=200), model)
    assert 3 * m["relax_steps"] > 100 and m["burnin"] == 100 and m["budget_capped"] and "budget" in codes(m), m["warnings"]
    assert m["draws"] == 100  # auto draws stop at the budget
    (msg,) = [w["message"] for w in m["warnings"] if w["code"] == "budget"]  # with what would let it run
    assert msg.endswith(f"half of max_steps allows 100; raise max_steps to at least {2 * math.ceil(3 * m['relax_steps'])}"), msg


def test_full_batch_auto_draws_run_pieces_until_mixed_or_the_budget():
    """HMC's and MCLMC's `draws: auto` (samplers.until_mixed): AR(1) chains that mix in a few
    steps stop after their first piece; chains whose slow mode keeps them apart (R̂ ≫ 1.01) or
    that mix too slowly for ESS ≥ 1 600 run to max_draws; the burn-in is dropped and the pieces
    continue one another."""
    from lambda_hat.llc.samplers import until_mixed

    def chains(rho, offsets):
        rng, x, seen = np.random.default_rng(0), np.asarray(offsets, float), []

        def piece(i, steps):
            nonlocal x
            out = np.empty((len(offsets), steps))
            for t in range(steps):
                x = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(len(offsets)) + (1 - rho) * np.asarray(offsets)
                out[:, t] = x
            seen.append(i)
            return out, out + 1

        return piece, seen

    piece, seen = chains(0.2, [0.0] * 4)
    loss, plus_one = until_mixed(piece, 200, "auto", 1000, 16_000)
    assert seen == [0] and loss.shape == (4, 800) and np.array_equal(plus_one, loss + 1)
    for rho, offsets in [(0.2, [0.0, 0.0, 0.0, 3.0]), (0.995, [0.0] * 4)]:
        piece, seen = chains(rho, offsets)
        loss, _ = until_mixed(piece, 200, "auto", 1000, 5000)
        assert seen == list(range(6)) and loss.shape == (4, 5000), (rho, seen)
    piece, seen = chains(0.5, [0.0] * 4)
    assert until_mixed(piece, 50, 300, 1000, 16_000)[0].shape == (4, 300) and seen == [0]  # a number: one piece


def test_mala_check_on_a_subsample_reads_as_on_the_full_data(monkeypatch):
    """Above MALA_SAMPLES points (and DENSE_MAX_DIM parameters) the step check runs on a subsample
    with the full data's gradient at w*: its acceptance matches the full data's at every step
    size, on both sides of the flag."""
    from lambda_hat.llc import calibration
    from lambda_hat.llc.checks import MALA_MIN

    n, k, rng = 40_000, 12, np.random.default_rng(0)
    x = rng.standard_normal((n, k)) * np.linspace(0.5, 2.0, k)
    y = x @ rng.standard_normal((k, k)).T + rng.standard_normal((n, k))
    w_star = np.linalg.lstsq(x, y, rcond=None)[0].T.ravel()
    loss = lambda w, b: 0.5 * jnp.mean(jnp.sum((b[1] - b[0] @ w.reshape(k, k).T) ** 2, -1))  # noqa: E731
    post = Posterior(jnp.asarray(w_star), n, n_beta(n, 1.0), 1.0, loss, (jnp.asarray(x), jnp.asarray(y)), float(loss(w_star, (x, y))))
    A = post.n_beta * np.kron(np.eye(k), x.T @ x / n) + np.eye(k * k)
    draws = jnp.asarray(w_star + rng.standard_normal((64, k * k)) @ np.linalg.cholesky(np.linalg.inv(A)).T)  # exact posterior draws
    assert n > calibration.MALA_SAMPLES and k * k > calibration.DENSE_MAX_DIM
    g = jax.grad(loss)(post.w_star, post.data)
    accept = {}
    for c in (0.3, 1.0, 2.0):
        eps = c / np.linalg.eigvalsh(A).max()
        sub = calibration.mala_acceptance(post, draws, eps, (None, 1.0, None), jax.random.PRNGKey(1), g)
        with monkeypatch.context() as mp:
            mp.setattr(calibration, "MALA_SAMPLES", n)
            full = calibration.mala_acceptance(post, draws, eps, (None, 1.0, None), jax.random.PRNGKey(1), g)
        assert sub == pytest.approx(full, abs=0.02), (c, sub, full)  # observed within 0.006
        accept[c] = sub
    assert accept[0.3] > MALA_MIN > accept[2.0]


def test_mala_check_on_the_host_reads_as_its_program(monkeypatch):
    """Up to DENSE_MAX_DIM the check runs on the host from measure's program: the same acceptance
    as the jitted check on the full data, under each form of preconditioner and step size."""
    from lambda_hat.llc import calibration

    n, rng = 3000, np.random.default_rng(0)
    x = rng.standard_normal((n, 6)) * np.linspace(0.5, 2.0, 6)
    y = x @ rng.standard_normal((5, 6)).T + rng.standard_normal((n, 5))
    w_star = np.linalg.lstsq(x, y, rcond=None)[0].T.ravel()
    loss = lambda w, b: 0.5 * jnp.mean(jnp.sum((b[1] - b[0] @ w.reshape(5, 6).T) ** 2, -1))  # noqa: E731
    post = Posterior(jnp.asarray(w_star), n, n_beta(n, 1.0), 1.0, loss, (jnp.asarray(x), jnp.asarray(y)), float(loss(w_star, (x, y))))
    A = post.n_beta * np.kron(np.eye(5), x.T @ x / n) + np.eye(30)
    a, S = np.linalg.eigh(A)
    draws = jnp.asarray(w_star + rng.standard_normal((8, 30)) @ np.linalg.cholesky(np.linalg.inv(A)).T)
    g, key = jax.grad(loss)(post.w_star, post.data), jax.random.PRNGKey(1)
    per_chain = np.abs(rng.standard_normal((8, 30))) / np.diag(A)
    for P in ((None, 1.0, None), (None, jnp.asarray(per_chain), None), (jnp.asarray(S[:, -3:]), jnp.asarray(1 / a[-3:]), jnp.asarray(1 / a[-4]))):
        for c in (0.3, 2.0):
            eps = c / (a.max() if P[0] is None and np.ndim(P[1]) == 0 else 1.0)
            host = calibration.mala_acceptance(post, draws, eps, P, key, g)
            with monkeypatch.context() as mp:
                mp.setattr(calibration, "DENSE_MAX_DIM", 0)
                program = calibration.mala_acceptance(post, draws, eps, P, key, g)
            assert host == pytest.approx(program, abs=1e-9) and 0 < host <= 1, (P[0] is None, c, host, program)
    assert calibration.mala_acceptance(post, draws, 2.0 / a.max(), (None, 1.0, None), key, g) < 0.9  # one the check flags


@pytest.mark.parametrize("d", [6, 144])  # the top curvature exactly, and by power iteration (d > DENSE_MAX_DIM)
def test_curvature_preconditioner_whitens_a_gaussian_exactly(d):
    """On log π = −½wᵀAw, P = A⁻¹ (from all eigenvectors, or the top ones plus a common scale on
    the rest) maps the SGLD proposal and its MALA check onto those of N(0, I) at u = A^½w, draw
    for draw, and the preconditioned curvature is 1 everywhere."""
    from lambda_hat.llc import calibration

    k, nb, gamma = 3, 50.0, 0.5
    S = np.linalg.qr(np.random.default_rng(1).standard_normal((d, d)))[0]
    a = np.r_[400.0, 90.0, 20.0, np.full(d - k, 5.0)]  # the rest all equal: one scale for them
    H = S @ np.diag((a - gamma) / nb) @ S.T
    quad = lambda M: Posterior(jnp.zeros(d), 1000, nb, gamma, lambda w, b: 0.5 * w @ jnp.asarray(M) @ w, None, 0.0)  # noqa: E731
    post, white = quad(H), quad(np.eye(d) * (1 - gamma) / nb)
    W = jnp.asarray(np.random.default_rng(2).standard_normal((16, d)) @ S @ np.diag(a**-0.5) @ S.T * 1.5)
    U = W @ jnp.asarray(S @ np.diag(a**0.5) @ S.T)
    key, zero = jax.random.PRNGKey(3), np.zeros(d)
    for P in ((jnp.asarray(S), jnp.asarray(1 / a), jnp.asarray(1.0)), (jnp.asarray(S[:, :k]), jnp.asarray(1 / a[:k]), jnp.asarray(1 / a[-1]))):
        for eps in (0.3, 1.5):
            acc = calibration.mala_acceptance(post, W, eps, P, key, zero)
            assert acc == pytest.approx(calibration.mala_acceptance(white, U, eps, (None, 1.0, None), key, zero), abs=1e-9)
        assert calibration.top_curvature(post, W, P) == pytest.approx(1.0, rel=1e-6)
        # SGLD's fused move is P·drift + P^½·noise
        move = calibration.langevin_move(P, W[0], W[1])
        np.testing.assert_allclose(move, calibration.precondition(P, W[0]) + calibration.precondition(P, W[1], 0.5), atol=1e-12)
        np.testing.assert_allclose(move, S @ np.diag(1 / a) @ S.T @ W[0] + S @ np.diag(a**-0.5) @ S.T @ W[1], atol=1e-12)
    assert calibration.top_curvature(post, W) == pytest.approx(a.max(), rel=1e-3)


def test_gradient_noise_ratio_in_float32_reads_as_its_float64_definition():
    """κ from float32 per-sample gradients (centred in their own precision, summed in float64)
    equals the definition computed in float64, also where the gradients share a mean 100× their
    spread (w* not converged) and the curvature is spread over decades."""
    from lambda_hat.llc.calibration import _noise_ratio

    rng = np.random.default_rng(0)
    d = 3000
    scales = np.logspace(-2, 1, d)
    G = (rng.standard_normal((256, d)) * scales + 100 * scales).astype(np.float32)
    top = rng.standard_normal(d)
    top /= np.linalg.norm(top)
    theta, weight = np.logspace(-3, 2, 40), np.full(40, d / 40)
    g = G.astype(np.float64) - G.astype(np.float64).mean(axis=0)
    trace_ratio = np.mean(np.sum(g**2, axis=1)) / np.sum(weight * theta)
    top_ratio = np.mean((g @ top) ** 2) / theta.max()
    assert _noise_ratio(G, top, theta, weight) == pytest.approx(max(trace_ratio, top_ratio), rel=1e-5)
    assert _noise_ratio(G, top, theta * 1e4, weight) == pytest.approx(max(trace_ratio, top_ratio) / 1e4, rel=1e-5)


def test_paired_statistic_makes_ess_and_rhat_see_slow_mixing():
    """A step 100× too small for 2000 steps: the chains have not moved from their dispersed
    starts. The minibatch loss alone would read ESS ≈ draws; the paired statistic reads the truth."""
    post, model = regular(100_000, "gauss_iso", 1.0)
    m, trace = estimate(post, preset("sgld", step_size=1e-9, draws=2000, burnin=0), model)
    assert {"ess", "rhat"} & codes(m), m["warnings"]
    assert m["ess_bulk"] < 200
    # the warning says how many draws would reach the ESS goal, and the budget that allows them
    (msg,) = [w["message"] for w in m["warnings"] if w["code"] == "ess"]
    need = int(msg.split("about ")[1].split(" draws")[0])
    assert need == np.ceil(2000 * 400 / m["ess_bulk"]) and "(not 2000)" in msg and "max_steps" not in msg, msg
    raw_noise = post.n_beta * np.std(trace.loss)  # the paired statistic's spread…
    assert raw_noise < 100  # …is far below the minibatch loss's (≈ 660 at n = 1e5, REFERENCE §1b)


def _slow_signal_plus_noise(draws, rho, noise_sd, seed=0):
    """4 chains of an AR(1) signal (sd 1, lag-1 correlation rho, mean 10) plus white noise whose
    spread differs between chains (as a minibatch statistic's does, with how far each chain is
    from w*), and the exact standard error of their pooled mean."""
    rng = np.random.default_rng(seed)
    chains = len(noise_sd)
    s = np.empty((chains, draws))
    s[:, 0] = rng.standard_normal(chains)
    e = rng.standard_normal((chains, draws)) * np.sqrt(1 - rho**2)
    for t in range(1, draws):
        s[:, t] = rho * s[:, t - 1] + e[:, t]
    x = 10 + s + rng.standard_normal((chains, draws)) * np.asarray(noise_sd)[:, None]
    var_mean = (chains * draws * (1 + rho) / (1 - rho) + np.sum(np.square(noise_sd)) * draws) / (chains * draws) ** 2
    return x, np.sqrt(var_mean)


@pytest.mark.parametrize("rho,noise", [(0.99, (3.0, 4.0, 5.0, 6.0)), (0.99, (1.0, 2.0, 4.0, 8.0)), (0.9, (0.0, 0.0, 0.0, 0.0))])
def test_minibatch_statistic_diagnostics_read_through_the_noise(rho, noise):
    """Blocked ESS, MCSE and R̂ of a slow signal under heteroscedastic white noise match the
    truth: the MCSE within 25% of the exact standard error, the ESS not above 1.5× the signal's
    (draws × (1 − ρ)/(1 + ρ); the noise's own error may lower it), R̂ clean. Per draw the noise
    inflates the ESS 15–25×, makes the MCSE too small or R̂ fail."""
    x, se = _slow_signal_plus_noise(40_000, rho, noise)
    idata = az.from_dict(posterior={"llc": x})
    idata.posterior.attrs["minibatch_statistic"] = 1
    m = summarize(idata)
    assert m["mcse"] == pytest.approx(se, rel=0.25), (m, se)
    signal_ess = x.size * (1 - rho) / (1 + rho)
    assert signal_ess / 3 < m["ess_bulk"] < 1.5 * signal_ess, m
    assert m["r_hat"] < 1.01, m
    raw = {"ess_bulk": float(az.ess(x)), "mcse": _arviz_mcse(x), "r_hat": float(az.rhat(x))}  # arviz's, per draw
    if max(noise) > 0:
        assert raw["ess_bulk"] > 10 * signal_ess and (raw["mcse"] < 0.9 * se or raw["r_hat"] > 1.01), raw
    else:  # no noise: no blocks
        assert m["diag_block"] == 1 and m["ess_bulk"] == summarize(az.from_dict(posterior={"llc": x}))["ess_bulk"]


def _squared_orbits(r, period, dims, chains, draws, seed):
    """Σ x² over `dims` AR(2) orbits (x_t = 2r cos(2π/period) x_{t−1} − r² x_{t−2} + e_t), as L_n
    along MCLMC's or HMC's orbits: autocorrelations that dip to ~0 every half period and rise
    again. With the exact standard error of the pooled mean (Cov(x_s², x_t²) = 2γ(t − s)²)."""
    from scipy.signal import lfilter

    a1, a2 = 2 * r * np.cos(2 * np.pi / period), -r * r
    e = np.random.default_rng(seed).standard_normal((chains, dims, draws + 1000))
    x = lfilter([1.0], [1.0, -a1, -a2], e, axis=-1)[..., 1000:]
    g = [(1 - a2) / ((1 + a2) * ((1 - a2) ** 2 - a1**2))]
    g.append(a1 * g[0] / (1 - a2))
    while abs(g[-1]) > 1e-12 * g[0]:
        g.append(a1 * g[-1] + a2 * g[-2])
    g = np.array(g)
    long_run_var = dims * 2 * (g[0] ** 2 + 2 * np.sum(g[1:] ** 2))
    return (x**2).sum(axis=1), np.sqrt(long_run_var / (chains * draws))


@pytest.mark.parametrize("seed", range(3))
def test_mcse_sees_correlation_past_a_dip(seed):
    """arviz's ESS stops summing autocorrelations at the first negative pair: on orbits it reads
    the MCSE 0.63–0.78× the truth (ten seeds), a λ̂ looking 3 SE off when 1.5 SE is the case
    (MCLMC on a target with unused weights). The MCSE, and the ESS with it, are within 25%;
    on plain chains they are arviz's own."""
    x, se = _squared_orbits(0.95, 10, 3, 4, 4000, seed)
    m = summarize(az.from_dict(posterior={"llc": x}))
    assert _arviz_mcse(x) < 0.8 * se  # what arviz alone reads: the check below can fail
    assert m["mcse"] == pytest.approx(se, rel=0.25), (m["mcse"], se)
    assert m["ess_bulk"] == pytest.approx(float(az.ess(x)) * (_arviz_mcse(x) / m["mcse"]) ** 2)
    # on chains without orbits arviz's numbers stand, as az.summary reads them from trace.nc
    y, se_y = _slow_signal_plus_noise(4000, 0.9, (0.0, 0.0, 0.0, 0.0), seed)
    plain = summarize(az.from_dict(posterior={"llc": y}))
    assert plain["mcse"] == _arviz_mcse(y) == pytest.approx(se_y, rel=0.25) and plain["ess_bulk"] == float(az.ess(y))


def test_diagnostics_take_arviz_mcse_as_numba_returns_it(monkeypatch):
    """Where numba is installed, arviz's MCSE of the mean is a 1-element array, which float()
    refuses: every sampler task failed so on a machine that had numba. The summary, the running
    MCSE of the trace plot and SGLD's bias check read it as the number it is."""
    from lambda_hat.llc.diagnostics import _running_llc
    from lambda_hat.llc.estimator import mcse_mean

    x, _ = _slow_signal_plus_noise(4000, 0.9, (0.0, 0.0, 0.0, 0.0))
    summary = lambda: {k: v for k, v in summarize(az.from_dict(posterior={"llc": x})).items() if k != "diag_noise"}  # noqa: E731 (NaN here)
    plain = summary()
    numba_mcse = az.mcse
    monkeypatch.setattr(az, "mcse", lambda *a, **kw: np.atleast_1d(numba_mcse(*a, **kw)))
    assert summary() == plain and mcse_mean(x) == plain["mcse"]
    assert _running_llc(x, False)[2][-1] == plain["mcse"]


def test_short_training_is_polished_or_flagged():
    """w* after 50 Adam steps: polished by full-batch L-BFGS (λ̂ within 5%), or, unpolished, flagged."""
    polished, model = target((4, 3), 1000, steps=50)
    m, _ = estimate(polished, preset("hmc"), model)
    assert m["grad_norm"] < 1e-6 and not codes(m) & {"w_star", "not_minimum"}
    check(m, m["llc_finite"], 0.05)
    raw, model = target((4, 3), 1000, steps=50, polish=0)
    m, _ = estimate(raw, preset("hmc"), model)
    assert "w_star" in codes(m) and m["wstar_shift"] < -0.06, (m["wstar_shift"], m["warnings"])


def test_w_star_shift_above_the_dense_size_reads_as_the_exact_solve():
    """Above DENSE_MAX_DIM the shift's A⁻¹g comes from a Lanczos start at g: on an unconverged
    linear model (d = 160, anisotropic inputs, A positive definite) it is the dense solve's, and
    at an exact minimum (g = 0) it is 0 while the spectrum is still measured."""
    from lambda_hat.llc import calibration

    post, _ = target((16, 10), 1000, "gauss_aniso", steps=30, polish=0)
    assert post.dim > calibration.DENSE_MAX_DIM
    sub = calibration._subsample(post, calibration.CURVATURE_SAMPLES)
    H = np.asarray(jax.hessian(post.loss)(post.w_star, sub), np.float64)
    theta, S = np.linalg.eigh(0.5 * (H + H.T))
    g = np.asarray(jax.grad(post.loss)(post.w_star, post.data), np.float64)
    exact = calibration._shift(g, theta, S, post.n_beta, post.gamma)
    spec = calibration.measure(post, jax.random.PRNGKey(0))
    assert abs(exact) > 100 and spec.wstar_shift == pytest.approx(exact, rel=1e-3)
    d = calibration.DENSE_MAX_DIM + 16
    curv = jnp.linspace(0.5, 2.0, d)
    quad = Posterior(jnp.zeros(d), 1000, 100.0, 1.0, lambda w, b: 0.5 * jnp.sum(curv * w**2), None, 0.0)
    spec = calibration.measure(quad, jax.random.PRNGKey(0))
    assert spec.wstar_shift == 0.0 and spec.theta.max() == pytest.approx(2.0, rel=0.02)  # Ritz values, 12 steps


def test_flat_modes_without_a_localiser_carry_no_share_and_the_plan_stays_finite():
    """γ = 0 with exactly flat directions (0/0 shares): the quadratic estimate counts the curved
    modes only, and SGLD's plan (relaxation times, draws) is finite; it once raised on NaN."""
    from lambda_hat.llc import calibration

    curv = jnp.array([0.0, 0.0, 1.0, 2.0, 4.0])
    post = Posterior(jnp.zeros(5), 1000, 100.0, 0.0, lambda w, b: 0.5 * jnp.sum(curv * w**2), None, 0.0)
    spec = calibration.measure(post, jax.random.PRNGKey(0))
    assert spec.llc_estimate(post.n_beta, post.gamma) == pytest.approx(1.5)
    plan = calibration.sgld_plan(spec, post, preset("sgld"), 0.01)
    assert 0 < plan.step_size and 100 <= plan.draws <= plan.max_draws and np.isfinite(plan.predicted_bias), plan


@pytest.mark.parametrize("name", ["sgld", "hmc", "mclmc"])
def test_normal_crossing_against_its_finite_n_value(name):
    """K(w) = w1²·w2²: λ = 1/2 asymptotically, but 0.361 at n = 1e3, γ = 1 (quadrature)."""
    n = 1000
    post = Posterior(jnp.zeros(2), n, n_beta(n, 1.0), 1.0, lambda w, batch: w[0] ** 2 * w[1] ** 2, None, 0.0)
    g = np.linspace(-6, 6, 3001)
    w1, w2 = np.meshgrid(g, g)
    K = w1**2 * w2**2
    p = np.exp(-post.n_beta * K - 0.5 * (w1**2 + w2**2))
    truth = post.n_beta * np.sum(K * p) / np.sum(p)
    assert truth == pytest.approx(0.361, abs=0.002)
    m, _ = estimate(post, preset(name), {"kind": "quadratic", "dim": 2, "n": n})
    check(m, truth, 0.05)


HEALTHY_HMC = {"r_hat": 1.005, "ess_bulk": 900.0, "llc_mean": 7.9, "llc_sem": 0.09, "wstar_shift": 0.0, "grad_norm": 0.0,
               "n_beta": 145.0, "L_star": 0.5, "gamma": 1.0, "min_curvature": 1.0, "max_curvature": 2.0, "divergences": 0,
               "acceptance_rate": 0.99, "ebfmi": 1.0, "energy_var": 1e-6}  # fmt: skip  # metrics no check flags


def test_auto_draws_that_run_out_of_budget_unmixed_are_flagged():
    """HMC/MCLMC `draws: auto` stopped by max_draws short of the stopping rule's ESS and R̂ is
    flagged even where ESS ≥ 400 and R̂ ≤ 1.01 clear the other checks; stopped by the rule, or
    with a number of draws, it is not."""
    base = HEALTHY_HMC
    for name in ("hmc", "mclmc"):
        cfg = preset(name)
        assert cfg.draws == "auto"
        found = lambda **m: {w["code"] for w in run_warnings({**base, **m}, cfg)}  # noqa: E731
        assert found(draws=cfg.max_draws) == {"unmixed"}
        assert "unmixed" in found(draws=cfg.max_draws, ess_bulk=2000.0, r_hat=1.02)
        assert "unmixed" not in found(draws=cfg.max_draws, ess_bulk=2000.0)  # the rule passed on the last piece
        assert not found(draws=cfg.max_draws // 2)  # stopped when mixed
        assert "unmixed" not in found(draws=1000) and not {w["code"] for w in run_warnings({**base, "draws": 1000}, preset(name, draws=1000))}


def test_hmc_acceptance_is_checked_against_its_target_only_where_adapted():
    """Adaptation aims the step at target_accept: missing it by more than 0.15 is flagged. At a
    fixed step (adapt_step_size: false) the acceptance is the step's, and Metropolis keeps the
    chains exact: not flagged (a poor step shows in ESS and R̂)."""
    m = {**HEALTHY_HMC, "draws": 1000, "acceptance_rate": 0.5}
    assert [w["code"] for w in run_warnings(m, preset("hmc", draws=1000))] == ["hmc_accept"]
    fixed = preset("hmc", draws=1000, adapt_step_size=False, step_size=0.05)
    assert not run_warnings(m, fixed)
    # its divergences are the step's to fix, not adaptation's
    (w,) = run_warnings({**m, "divergences": 40}, fixed)
    assert w["message"] == "40 divergent transitions: lower step_size (0.05, fixed: adapt_step_size false), or let it adapt", w


def test_rhat_reads_at_any_size():
    """R̂ to 3 decimals, and chains that went far apart (diverged ones: 5e15) in 3 figures, not 16 digits."""
    found = lambda r: run_warnings({**HEALTHY_HMC, "draws": 1000, "r_hat": r}, preset("hmc", draws=1000))[0]["message"]  # noqa: E731
    assert found(1.0123).startswith("R̂ 1.012 > 1.01") and found(5341631286276744.0).startswith("R̂ 5.34e+15 > 1.01")


def test_negative_llc_beyond_its_error_is_flagged():
    """λ ≥ 0 at a local minimum: a λ̂ below 0 by more than 3 MCSE is flagged, within its error not."""

    def found(name, llc, sem):
        m = {**HEALTHY_HMC, "llc_mean": llc, "llc_sem": sem, "draws": 1000, "pareto_k": 0.1, "llc_is": llc}
        return {w["code"] for w in run_warnings(m, preset(name))}

    for name in ("hmc", "vi_flow"):
        assert found(name, -1.6, 0.2) == {"negative"} and not found(name, -0.1, 0.05) and not found(name, 0.3, 0.05), name


def test_undefined_ess_is_flagged():
    """An ESS arviz cannot compute (NaN: a constant trace) is flagged, not passed as healthy."""
    for name in ("hmc", "sgld"):
        m = {**HEALTHY_HMC, "ess_bulk": float("nan"), "draws": 1000, "burnin": 100, "predicted_bias": 0.01, "mala_acceptance": 0.99, "budget_capped": False}
        found = [w for w in run_warnings(m, preset(name, draws=1000)) if w["code"] == "ess"]
        assert found and "1000 draws per chain" not in found[0]["message"], found  # the hint counts from ESS 1


def test_sgld_ess_hint_names_the_knob_that_applies():
    """Auto draws stopped at max_steps: raise it; a fixed number of draws: raise that; and the batch
    only where the run took minibatches with an auto step (not on a data-free target, nor full batch)."""
    m = {**HEALTHY_HMC, "ess_bulk": 100.0, "draws": 1000, "burnin": 100, "predicted_bias": 0.01, "mala_acceptance": 0.99, "budget_capped": False, "n": 1000}
    hint = lambda batch, **cfg: [w["message"] for w in run_warnings({**m, "batch_size": batch}, preset("sgld", **cfg)) if w["code"] == "ess"][0]  # noqa: E731
    assert "max_steps ≥ 4100" in hint(256) and "raise batch_size" in hint(256)
    assert "(not 1000)" in hint(256, draws=1000) and "max_steps" not in hint(256, draws=1000)
    assert "raise batch_size" not in hint(1000) and "raise batch_size" not in hint(256, step_size=1e-3)


def test_auto_draws_thinned_below_four_fail_the_run():
    """draws: auto passes the config check whatever eval_every; where the draws it stopped at keep
    fewer than 4 per chain the run fails with the fix, instead of a λ̂ of NaN shown as done."""
    post = Posterior(jnp.zeros(3), 1000, n_beta(1000, 1.0), 1.0, lambda w, batch: 0.5 * jnp.sum(w**2), None, 0.0)
    with pytest.raises(ValueError, match=r"keeps 0 draws per chain \(< 4\); lower eval_every"):
        estimate(post, preset("sgld", eval_every=10**7), {"kind": "quadratic", "dim": 3, "n": 1000})


def test_measured_step_bias_flags_either_sign_beyond_its_error():
    """The step-halving check flags |measured bias| above 2% by 2 standard errors, whichever way
    the step moves λ̂; within its error, or not measured (NaN), it does not."""
    cfg = preset("sgld")
    base = {**HEALTHY_HMC, "draws": 4000, "burnin": 1000, "step_size": 1e-3, "predicted_bias": 0.01, "mala_acceptance": 0.99, "budget_capped": False}
    flagged = lambda b, se: "step_bias" in {w["code"] for w in run_warnings({**base, "measured_bias": b, "measured_bias_se": se}, cfg)}  # noqa: E731
    assert flagged(0.05, 0.005) and flagged(-0.05, 0.005)
    assert not flagged(0.03, 0.01) and not flagged(-0.03, 0.01) and not flagged(0.01, 0.001)
    assert not flagged(float("nan"), float("nan"))
    # a step past the stability limit at w* (predicted bias inf) says so, not "inf%"
    msgs = [
        w["message"] for w in run_warnings({**base, "predicted_bias": float("inf"), "bias_at_chains": 0.1, "measured_bias": 0.2, "measured_bias_se": 0.01}, cfg)
    ]
    assert len(msgs) == 3 and "stability limit" in msgs[0] and not any("inf" in m for m in msgs), msgs


def test_a_non_finite_gradient_at_w_star_is_flagged():
    """A kink or pole at w* (a user's own model) makes the gradient and the shift NaN, which no
    threshold comparison catches: flagged w_star."""
    m = {**HEALTHY_HMC, "draws": 1000, "grad_norm": float("nan"), "wstar_shift": float("nan")}
    assert {w["code"] for w in run_warnings(m, preset("hmc", draws=1000))} == {"w_star"}
    assert not run_warnings({**HEALTHY_HMC, "draws": 1000}, preset("hmc", draws=1000))


def test_without_a_localiser_rounding_level_curvature_is_flat():
    """γ = 0: a DLN's symmetry directions read ±1e-15 in float64. Counted as modes, each carried ½
    of λ̂ and got a preconditioner 1/a of 1e15, so SGLD's auto step diverged at its 4th step, and
    unpreconditioned its budget asked for 1e25 steps. They are flat: the run goes through, within
    its tolerance of Aoyagi's λ or flagged."""
    from lambda_hat.llc.calibration import Spectrum

    spec = Spectrum(np.array([-2.9e-15, 3e-15, 1e-3, 7.9]), np.ones(4), 1.0, np.zeros(4), 0.0, 0.0)
    assert list(spec.modes(145.0, 0.0)[1]) == [0.0, 0.0, 1.0, 1.0] and spec.modes(145.0, 1.0)[1][1] > 0
    # only rounding is flat: a real mode 1e-8 of the largest still carries λ̂ (its slow relaxation
    # is the budget check's to judge); in float32 the rounding level is higher
    soft = dataclasses.replace(spec, theta=np.array([3e-15, 1e-8, 7.9]), weight=np.ones(3))
    assert list(soft.modes(145.0, 0.0)[1]) == [0.0, 1.0, 1.0]
    assert list(dataclasses.replace(soft, eps=float(np.finfo(np.float32).eps)).modes(145.0, 0.0)[1]) == [0.0, 0.0, 1.0]
    post, model = target((5, 3, 5), 1000, gamma=0.0)
    for over in ({}, {"precond": "none"}):
        m, _ = estimate(post, preset("sgld", max_steps=20_000, **over), model)
        assert m["relax_steps"] < 1e6, m["relax_steps"]
        check(m, 10.5, 0.10)


def test_training_that_raised_the_loss_is_flagged():
    """The loss after training more than 10% of its size above the loss at initialisation: the
    training diverged, whatever polishing reached. A target stored without the two losses (a
    quadratic, or trained by an earlier version) is not judged."""
    flags = lambda **m: {w["code"] for w in run_warnings({**HEALTHY_HMC, "draws": 1000, **m}, preset("hmc", draws=1000))}  # noqa: E731
    assert flags(initial_loss=0.54, trained_loss=1.25e10) == {"training"}
    assert flags(initial_loss=0.54, trained_loss=0.6) == {"training"}
    assert not flags(initial_loss=0.54, trained_loss=0.58) and not flags(initial_loss=0.54, trained_loss=0.44)
    assert flags(initial_loss=-2.0, trained_loss=-1.7) == {"training"} and not flags(initial_loss=-2.0, trained_loss=-1.9)  # a density's NLL < 0
    assert not flags(initial_loss=None, trained_loss=None) and not flags()


def test_a_saturated_loss_is_flagged():
    """Data fit perfectly (nβ·L_n(w*) < 1) with no curvature above γ: the loss saturated (a separating
    classifier pushed toward infinity) and λ̂ measures the localiser. A degenerate singular point
    under noisy data (zero Hessian, L_n(w*) > 0), a noiseless fit that is still curved, and a
    data-free quadratic (L = 0 and no curvature at a normal crossing's w*) are not flagged."""
    codes = lambda data_free=False, **m: {w["code"] for w in run_warnings({**HEALTHY_HMC, "draws": 1000, **m}, preset("hmc", draws=1000), data_free)}  # noqa: E731
    flat = {"L_star": 0.0, "min_curvature": 0.0, "max_curvature": 1e-20, "llc_mean": 0.11, "llc_sem": 0.004}
    assert codes(**flat) == {"saturated"}
    assert codes(**{**flat, "L_star": 6e-7, "max_curvature": 3e-4}) == {"saturated"}  # nβL = 9e-5, nβh = 0.04
    assert not codes(**{**flat, "L_star": 0.4})  # noisy data, zero Hessian: a singular point, not a saturated loss
    assert not codes(**{**flat, "max_curvature": 0.5})  # noiseless data fit exactly, still curved
    assert not codes(data_free=True, **{**flat, "llc_mean": 0.36, "llc_sem": 0.01})


def test_one_chain_is_flagged_since_rhat_cannot_be_computed():
    """With one chain R̂ is NaN, which no threshold flags: a run that never left one mode would
    read as clean. HMC and VI (one fit) say so; two chains do not."""
    m = {**HEALTHY_HMC, "draws": 1000, "r_hat": float("nan")}
    (w,) = run_warnings(m, preset("hmc", draws=1000, chains=1))
    assert w["code"] == "one_chain" and w["message"].startswith("one chain: R̂ is not computed"), w
    assert not run_warnings({**m, "r_hat": 1.0}, preset("hmc", draws=1000, chains=2))
    vi = {**m, "pareto_k": 0.1, "llc_is": 7.9}
    assert [w["message"][:26] for w in run_warnings(vi, preset("vi_meanfield", chains=1))] == ["one fit: R̂, which compare"]


def test_a_refined_vi_run_is_checked_as_the_hmc_run_it_is():
    """refined: λ̂ is HMC's, so q's k̂ no longer speaks for it, and HMC's checks do (against the
    refinement's own settings: target_accept 0.99, draws auto up to max_draws)."""
    q_far = {**HEALTHY_HMC, "draws": 2000, "pareto_k": 2.3, "llc_is": 9.0}
    assert {w["code"] for w in run_warnings(q_far, preset("vi_meanfield", refine="none"))} == {"pareto_k"}
    refined = {**q_far, "refined": "hmc"}
    assert not run_warnings(refined, preset("vi_meanfield"))
    found = run_warnings({**refined, "divergences": 3, "acceptance_rate": 0.8, "draws": 16_000}, preset("vi_meanfield"))
    assert [w["code"] for w in found] == ["unmixed", "divergences", "hmc_accept"], found
    assert all(w["message"].endswith("to change them, run the hmc sampler)") for w in found), found
    # a warning about the target is not the refinement's settings to fix
    (w,) = run_warnings({**refined, "grad_norm": 1.0, "wstar_shift": 0.5}, preset("vi_meanfield"))
    assert w["code"] == "w_star" and "hmc sampler" not in w["message"], w


def test_a_diverged_refinement_names_itself(monkeypatch):
    """A refinement whose HMC goes non-finite fails with what to do about it, not VI's `lower lr`."""
    from lambda_hat.engine.tasks import TaskFailed
    from lambda_hat.llc.samplers import Trace, hmc

    monkeypatch.setattr(hmc, "sample", lambda post, cfg, key, spec: Trace(np.full((4, 100), np.nan), 1.0, 1.0, {}))
    post = Posterior(jnp.zeros(3), 1000, 50.0, 1.0, lambda w, b: 0.5 * jnp.sum(w**2), None, 0.0)
    with pytest.raises(TaskFailed, match=r"non-finite L_n at step 0 of chain 0; in VI's refinement by HMC .*refine: none"):
        estimate(post, preset("vi_meanfield", refine="always", steps=20), {"kind": "quadratic"})


def test_vi_pareto_threshold_follows_draws():
    from lambda_hat.llc.checks import pareto_k_max

    assert pareto_k_max(500) == pytest.approx(1 - 1 / np.log10(500)) and pareto_k_max(10**6) == 0.7
    m = {**HEALTHY_HMC, "pareto_k": float("inf"), "llc_is": 7.9}
    (w,) = run_warnings(m, preset("vi_meanfield", draws=10))
    assert w == {"code": "pareto_k", "message": "10 draws per fit are too few for PSIS k̂ to check q against π (more than 10 needed); read λ̂ as unchecked"}


def test_vi_too_wide_is_caught_by_its_reweighted_estimate():
    """Mean-field VI at σ = 0.1 (curvature 100× its default scale) ends too wide: k̂ stays low
    (weights π/q are tame when q is wider than π), yet λ̂ under q is ≈ 15% high. PSIS reweighting
    to π recovers the truth; the gap between the two is `vi_fit`, which hands λ̂ to HMC."""
    post, model = regular(1000, "gauss_iso", 0.1)
    m, _ = estimate(post, preset("vi_meanfield"), model)
    assert m["pareto_k"] < 0.5
    assert abs(m["llc_is"] - m["llc_finite"]) < 0.05 * m["llc_finite"]
    if abs(m["llc_vi"] - m["llc_finite"]) > 0.05 * m["llc_finite"]:
        assert m["refined"] == "hmc", m
        q = {**m, "refined": "none", "llc_mean": m["llc_vi"]}  # unrefined, the same numbers are flagged
        assert "vi_fit" in {w["code"] for w in run_warnings(q, preset("vi_meanfield", refine="none"))}
    check(m, m["llc_finite"], 0.05)


def test_off_truth_uses_the_finite_n_value_first_and_allows_monte_carlo_error():
    """λ̂ is judged against llc_finite where known (5%), else llc_true (10%, noted as the n → ∞
    value, with γ/nβ), and never for a gap within 3 MCSE."""
    from lambda_hat.llc.checks import run_warnings
    from lambda_hat.llc.config import HMC

    base = {"r_hat": 1.0, "ess_bulk": 1000.0, "wstar_shift": 0.0, "grad_norm": 0.0, "n_beta": 145.0, "L_star": 0.5, "gamma": 100.0,
            "min_curvature": 1.0, "max_curvature": 2.0, "divergences": 0, "acceptance_rate": 0.8, "ebfmi": 1.0}  # fmt: skip

    def off(llc, sem=0.01, **truth):
        ws = [w for w in run_warnings({**base, "llc_mean": llc, "llc_sem": sem, **truth}, HMC()) if w["code"] == "off_truth"]
        return ws[0]["message"] if ws else None

    assert off(5.37, llc_true=7.5) and "γ/nβ = 0.69" in off(5.37, llc_true=7.5)
    assert off(7.0, llc_true=7.5) is None  # within 10%
    assert off(5.37, sem=0.8, llc_true=7.5) is None  # within 3 MCSE
    # where the finite-n value is known it decides, whatever the asymptotic one says
    assert off(5.2, llc_finite=5.0, llc_true=6.0) is None  # 4% from it, 13% from llc_true
    msg = off(5.8, llc_finite=5.5, llc_true=6.0)  # 5.5% from it, 3% from llc_true
    assert msg and "llc_finite" in msg and "n → ∞" not in msg


def test_warning_lines_say_what_the_run_was_asked():
    """An ESS just under the goal reads below it (399.6 had read '400 < 400'); an auto step's
    predicted bias over the limit is what its bias_target asked for, so the line says to lower
    that, where a fixed step's says to use step_size: auto."""
    from lambda_hat.llc.config import SGLD

    m = {"r_hat": 1.0, "ess_bulk": 399.6, "wstar_shift": 0.0, "grad_norm": 0.0, "n_beta": 145.0, "L_star": 0.5, "gamma": 1.0,
         "min_curvature": 1.0, "max_curvature": 2.0, "llc_mean": 6.0, "llc_sem": 0.1, "draws": 1000, "burnin": 100, "batch_size": 1000,
         "n": 1000, "step_size": 0.02, "predicted_bias": 0.05, "mala_acceptance": 1.0, "budget_capped": False}  # fmt: skip

    def lines(code, **cfg):
        return [w["message"] for w in run_warnings(m, SGLD(**cfg)) if w["code"] == code]

    assert lines("ess", draws=1000)[0].startswith("bulk ESS 399 < 400: "), lines("ess", draws=1000)
    (auto,) = lines("step_bias", bias_target=0.05)
    assert auto.endswith("(> 2%); the auto step aims at bias_target 0.05: lower it"), auto
    (fixed,) = lines("step_bias", step_size=0.02)
    assert fixed.endswith("(> 2%); use step_size: auto or a smaller step"), fixed


def test_sgld_drawing_random_bits_per_step_samples_the_same_posterior(monkeypatch):
    """Large models (≥ STEP_BITS_BYTES of bits a step) draw each step's noise and batch offsets
    inside the scan (and the step-halving check's); forced here on the n = 1e3 linear model, the
    preset still meets llc_finite."""
    from lambda_hat.llc.samplers import sgld

    post, model = regular(1000, "gauss_iso", 1.0)
    monkeypatch.setattr(sgld, "STEP_BITS_BYTES", 0)
    m, _ = estimate(post, preset("sgld"), model)
    check(m, m["llc_finite"], 0.05)
    assert not codes(m), m["warnings"]
    assert abs(m["measured_bias"] - m["predicted_bias"]) < 0.01, m["measured_bias"]  # the step-halving check's generator too


def test_minibatch_windows_hold_every_sample_equally_often():
    """A batch is a window at a uniform offset of the shuffled ring: over the n offsets each
    sample is in exactly `size` windows, so a batch's mean loss is unbiased for the full data's;
    the same key shuffles the same way, another key another way."""
    from lambda_hat.llc.data import Batcher

    n, size = 37, 8
    data = (jnp.arange(n, dtype=jnp.float64)[:, None], -jnp.arange(n, dtype=jnp.float64)[:, None])
    b = Batcher(data, jax.random.PRNGKey(3), size)
    windows = np.stack([np.asarray(b.take(o)[0][:, 0]) for o in range(n)])
    assert np.array_equal(np.asarray(b.take(5)[1]), -np.asarray(b.take(5)[0]))  # rows stay paired
    assert np.array_equal(np.bincount(windows.astype(int).ravel(), minlength=n), np.full(n, size))
    assert not np.array_equal(np.asarray(b.ring[0][:n, 0]), np.arange(n))  # shuffled
    assert np.array_equal(np.asarray(Batcher(data, jax.random.PRNGKey(3), size).ring[0]), np.asarray(b.ring[0]))
    assert not np.array_equal(np.asarray(Batcher(data, jax.random.PRNGKey(4), size).ring[0]), np.asarray(b.ring[0]))


def test_batch_noise_that_hides_the_signal_is_worded_so():
    """No positive lag-1 autocovariance in the draws (the slow part lost in the batch noise):
    diag_noise is infinite, flagged with its own line, not as 'inf×' the signal."""
    m = {**HEALTHY_HMC, "draws": 1000, "diag_block": 50}
    found = lambda r: [w["message"] for w in run_warnings({**m, "diag_noise": r}, preset("hmc")) if w["code"] == "batch_noise"]  # noqa: E731
    (line,) = found(float("inf"))
    assert "hides its signal" in line and "inf" not in line and "blocks of 50 draws" in line and line.endswith("more draws per chain or a larger batch_size")
    (line,) = found(1.5)
    assert "1.5× its signal's variance" in line and f"about {20 * 300} draws per chain" in line
    assert not found(0.1) and not found(float("nan"))


@pytest.mark.parametrize("name, tuning, pieces", [("sgld", None, 2), ("hmc", "window adaptation: ", 2), ("mclmc", "tuning L and the step", 1)])
def test_a_long_run_logs_its_progress(name, tuning, pieces, monkeypatch):
    """Piece by piece (here every piece: PROGRESS_SEC 0), how far the run is (never past its
    limit) and λ̂ over the draws kept so far, in the task's log: the workflow shows its last line
    for a task running long. A tuning phase without progress of its own is named as it starts."""
    from lambda_hat.llc import samplers

    monkeypatch.setattr(samplers, "PROGRESS_SEC", 0.0)
    post, model = regular(1000, "gauss_iso", 1.0)
    lines = []
    m, _ = estimate(post, preset(name), model, log=lines.append)
    steps = [ln for ln in lines if "per chain (burn-in" in ln]
    assert len(steps) >= pieces, lines
    for ln in steps:
        done, limit = ln.split(" of ≤ ")
        assert int(done) <= int(limit.split(" ")[0]), ln
    if tuning:
        first = next(i for i, ln in enumerate(lines) if ln.startswith(tuning))
        assert first < lines.index(steps[0]), lines
    last = float(steps[-1].split("λ̂ so far ")[1].split(" ")[0])
    assert abs(last - m.get("llc_raw", m["llc_mean"])) < 0.05 * m["llc_mean"], (steps[-1], m["llc_mean"])  # the draws read so far


def test_progress_never_counts_past_the_limit(monkeypatch):
    """The last piece of an auto run may run past max_draws (its extra draws are dropped): the
    log counts the draws kept, up to the limit, not '600 of ≤ 500'."""
    from types import SimpleNamespace

    from lambda_hat.llc import samplers

    monkeypatch.setattr(samplers, "PROGRESS_SEC", 0.0)
    lines = []
    unmixed = lambda i, steps: (np.arange(4)[:, None] + np.zeros((4, steps)),)  # noqa: E731  chains apart: never mixed
    with samplers.reporting(lines.append, SimpleNamespace(n_beta=1.0, L_star=0.0)):
        (kept,) = samplers.until_mixed(unmixed, 0, "auto", 300, 500)
    assert kept.shape == (4, 500)
    assert [ln.split(";")[0] for ln in lines] == ["300 of ≤ 500 draws per chain (burn-in 0)", "500 of ≤ 500 draws per chain (burn-in 0)"], lines


def test_a_long_vi_fit_logs_its_progress(monkeypatch):
    """VI fits q in equal pieces of one program, its step count and ELBO logged between them; the
    same λ̂ as one piece would give (the draws do not depend on how the fit is cut)."""
    from lambda_hat.llc import samplers
    from lambda_hat.llc.samplers import vi

    monkeypatch.setattr(samplers, "PROGRESS_SEC", 0.0)
    post, model = regular(1000, "gauss_iso", 1.0)
    lines = []
    m, _ = estimate(post, preset("vi_meanfield", steps=600), model, log=lines.append)
    fit = [ln for ln in lines if ln.startswith("VI fit: ")]
    assert [ln.split(" steps")[0] for ln in fit] == [f"VI fit: {k} of 600" for k in range(60, 601, 60)], lines
    monkeypatch.setattr(vi, "FIT_PIECES", 1)
    whole, _ = estimate(post, preset("vi_meanfield", steps=600), model)
    assert whole["llc_mean"] == pytest.approx(m["llc_mean"], rel=1e-9)


def test_vi_eval_every_thins_its_elbo_and_its_schedule_is_the_one_asked_for():
    """The original Lambda-Hat's VI eval_every records the fit's ELBO every k-th step: q's draws are
    independent, and thinning them would only lose some. Its lr_schedule and lr_warmup_frac shape
    Adam's step as they say."""
    from lambda_hat.llc.samplers.vi import _schedule

    post, model = regular(1000, "gauss_iso", 1.0)
    m, trace = estimate(post, preset("vi_meanfield", draws=64, eval_every=50, refine="none"), model)
    assert m["draws"] == 64 and trace.idata.posterior.sizes["draw"] == 64
    assert list(trace.idata.vi_fit["step"].values) == list(range(50, 2001, 50))
    assert m["llc_mean"] == pytest.approx(6, rel=0.1)  # d/2 of the 3 × 4 linear model
    for kind in ("cosine", "linear_decay"):
        f = _schedule(preset("vi_meanfield", steps=100, lr=0.01, lr_schedule=kind, lr_warmup_frac=0.1))
        assert (float(f(0)), float(f(10)), float(f(100))) == pytest.approx((0.0, 0.01, 0.0), abs=1e-9), kind
        assert 0.004 < float(f(55)) < 0.006  # halfway down
    assert float(_schedule(preset("vi_meanfield", steps=100, lr=0.01))(0)) == pytest.approx(0.01)  # ours: cosine from lr, no warm-up
    const = preset("vi_meanfield", steps=100, lr=0.01, lr_schedule=None, lr_warmup_frac=0.05)
    assert _schedule(const) == 0.01 and const.lr_warmup_frac == 0.0  # a constant step has no warm-up


FUSED_LOSS = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: XLA's one-thread program, before jax starts
import jax, jax.numpy as jnp, numpy as np
from lambda_hat.engine.typed import plain
from lambda_hat.llc.config import DLN, Data
from lambda_hat.llc.posterior import n_beta
from lambda_hat.llc.targets import problem
n = 100_000
prob = problem({"model": plain(DLN(widths=(4, 3), rank=3)), "data": plain(Data(n=n, noise_scale=1.0)), "training": None, "seed": 0, "x64": False})
x, y = prob.x, prob.y
w_ls = np.linalg.lstsq(np.asarray(x, np.float64), np.asarray(y, np.float64), rcond=None)[0].ravel()
W = jnp.asarray(w_ls + 0.01 * np.random.default_rng(0).standard_normal((4, w_ls.size)), jnp.float32)
nb = n_beta(n, 1.0)
if np.asarray(prob.predict(W[0], x[:3])).shape != (3, 3) or abs(float(prob.loss(jnp.asarray(w_ls, jnp.float32), (x, y))) - 0.5 * 3) > 0.05:
    sys.exit("not the linear model this test assumes")
values = jax.jit(jax.vmap(jax.value_and_grad(lambda w: -nb * prob.loss(w, (x, y)))))(W)[0]
exact = [0.5 * np.mean(np.sum((np.asarray(y, np.float64) - np.asarray(prob.predict(w, x), np.float64)) ** 2, -1)) for w in W]
print(float(np.max(np.abs(-np.asarray(values, np.float64) - nb * np.array(exact)))))
"""


def test_a_float32_loss_fused_with_its_gradient_keeps_its_precision():
    """L_n in float32 at n = 1e5, evaluated as HMC and MCLMC do (vmapped with its gradient) on one
    core: XLA had added the per-sample losses in one running sum there, 0.03–0.07 nats off in
    nβ·L_n, which capped HMC's acceptance below its 0.99 target and its adapted step 20× too small
    (README, Precision). Summed in blocks it is float32's rounding of the result."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", FUSED_LOSS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 0.01, r.stdout
