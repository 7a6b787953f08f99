"""Targets with convolutions on CPU: SGLD, MCLMC and VI's fit run their steps from the host in
unrolled pieces, and SGLD takes per-sample values in chunks (XLA:CPU is slow at both inside one
program), with the same draws as the compiled loops and a λ̂ that matches the exact value."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat.llc import samplers, theory
from lambda_hat.llc.posterior import Posterior, n_beta
from lambda_hat.llc.samplers import mclmc, sgld, vi
from lambda_hat.llc.sampling import estimate
from regimes import check, preset, regular


@functools.cache  # built once for the file's tests
def conv_regression(n=500, seed=0):
    """y = conv(x, K) + noise on 6×6 one-channel images, K 3×3 from 1 to 2 channels (d = 18, no
    bias): linear in K, so regular, and λ̂ is checked against the exact finite-n value."""
    kx, kk, ke = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (n, 6, 6, 1))
    conv = lambda w, x: jax.lax.conv_general_dilated(x, w.reshape(3, 3, 1, 2), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
    k = jax.random.normal(kk, (18,))
    y = conv(k, x) + jax.random.normal(ke, (n, 4, 4, 2))
    loss = lambda w, b: 0.5 * jnp.mean(jnp.sum((conv(w, b[0]) - b[1]) ** 2, axis=(1, 2, 3)))  # noqa: E731
    A = np.asarray(jax.jacfwd(lambda w: conv(w, x).reshape(-1))(jnp.zeros(18)))
    w_star = jnp.asarray(np.linalg.lstsq(A, np.asarray(y).reshape(-1), rcond=None)[0])
    post = Posterior(w_star, n, n_beta(n, 1.0), 1.0, loss, (x, y), float(loss(w_star, (x, y))))
    H = np.asarray(jax.hessian(loss)(w_star, (x, y)))
    return post, theory.gaussian_finite_n(np.linalg.eigvalsh(H), post.n_beta, post.gamma)


def test_a_convolution_on_cpu_is_found_in_the_loss():
    post, _ = conv_regression()  # the targets the other tests use: each built once per file
    assert jax.default_backend() == "cpu" and samplers.conv_on_cpu(post)
    linear, _ = regular(1000, "gauss_iso", 1.0)
    assert not samplers.conv_on_cpu(linear)
    quadratic = Posterior(jnp.zeros(3), 100, 20.0, 1.0, lambda w, b: 0.5 * jnp.sum(w**2), None, 0.0)
    assert not samplers.conv_on_cpu(quadratic)


@pytest.mark.parametrize("m", [5, 8, 37])
def test_per_sample_values_in_chunks_are_the_whole_programs(m):
    rng = np.random.default_rng(0)
    x, y, w = rng.standard_normal((m, 3)), rng.standard_normal(m), rng.standard_normal(3)
    fn = jax.value_and_grad(lambda w, xi, yi: (xi @ w - yi) ** 2)
    whole, chunked = samplers.per_sample(fn, w, x, y, False), samplers.per_sample(fn, w, x, y, True)
    for a, b in zip(whole, chunked):
        assert np.asarray(b).shape == np.asarray(a).shape
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12)


@pytest.mark.parametrize(
    "name, module, per_step, over",
    [
        ("sgld", sgld, False, {}),
        ("sgld", sgld, True, {}),
        ("mclmc", mclmc, False, {"tune_steps": 200}),
        ("vi_meanfield", vi, False, {"steps": 100, "refine": "none"}),
    ],
)
def test_steps_from_the_host_are_the_loops_draws(name, module, per_step, over, monkeypatch):
    """The same λ̂ to rounding, whichever way the steps run (a piece's random bits or the
    generator's state carried from call to call): a linear target forced through both paths."""
    post, model = regular(1000, "gauss_iso", 1.0)
    if per_step:
        monkeypatch.setattr(sgld, "STEP_BITS_BYTES", 0)
    cfg = preset(name, draws=300, burnin=100, **over)  # SGLD's pieces of 40 steps: a multiple of UNROLL
    for mod in (samplers, module):  # the same paths at 2 steps a call: a quarter of the unrolled program to compile
        monkeypatch.setattr(mod, "UNROLL", 2)
    est = {}
    for host in (False, True):
        monkeypatch.setattr(module, "conv_on_cpu", lambda post, host=host: host)
        est[host], _ = estimate(post, cfg, model)
    assert est[True]["llc_mean"] == pytest.approx(est[False]["llc_mean"], rel=1e-9)


@pytest.mark.parametrize("name, over", [("sgld", {"draws": 6000}), ("mclmc", {})])
def test_a_convolutional_target_matches_its_exact_llc(name, over):
    """Through the real detection: steps from the host, SGLD's control variate from chunked
    per-sample gradients (SGLD's draws fixed: its auto run took 28 000 steps, 20 s)."""
    post, exact = conv_regression()
    assert 0.95 * 9 < exact < 9
    m, _ = estimate(post, preset(name, **over), {"kind": "custom"}, llc_true=9.0)
    check(m, exact, 0.05)
