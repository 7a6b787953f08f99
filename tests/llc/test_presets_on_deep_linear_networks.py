"""Trust: every shipped preset, unchanged, on 3-layer deep linear networks (rank = narrowest
width, so Aoyagi's λ is the local value): within tolerance of the truth, or flagged. A file apart
from test_presets_in_regimes.py: the suite runs a file per worker, and together they were its longest.

Every assertion on an estimate also allows for its Monte Carlo error (3 MCSE), so a correct
sampler does not fail by chance; a clean run (no warning) must be within the tolerance itself.
"""

import arviz as az
import pytest

from lambda_hat.llc import theory, traces
from lambda_hat.llc.checks import NOISE_MAX, run_warnings
from lambda_hat.llc.estimator import mcse_mean, summarize
from lambda_hat.llc.sampling import estimate
from regimes import check, codes, deep_linear, preset


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,widths,n",
    [
        ("sgld", (4, 3, 3, 4), 1000),
        ("sgld", (4, 3, 3, 4), 10_000),
        ("mclmc", (4, 3, 3, 4), 1000),
        ("hmc", (4, 3, 3, 4), 1000),
        ("sgld_rmsprop", (3, 5, 4, 3), 10_000),
        ("vi_meanfield", (4, 3, 3, 4), 1000),
    ],
)
def test_shipped_preset_on_deep_linear_network(name, widths, n, tmp_path):
    """3 layers, rank = narrowest width: Aoyagi's λ is the local value at any trained optimum."""
    post, model = deep_linear(widths, n)
    m, trace = estimate(post, preset(name), model)
    assert m["llc_true"] == theory.dln(list(widths), min(widths))
    check(m, m["llc_true"], 0.10)
    if name.startswith("sgld"):  # the batch noise far from w*: its diagnostics on block means
        assert m["diag_block"] > 1, m["diag_block"]
        # which trace.nc holds, so that arviz reads the table's ESS, R̂ and MCSE (per draw: optimistic)
        traces.write(trace.idata, tmp_path / "trace.nc")
        idata = traces.read(tmp_path / "trace.nc")
        assert idata.posterior.attrs["diagnostics_group"] == "blocked" and idata.blocked.attrs["block"] == m["diag_block"]
        s = az.summary(idata, var_names=["llc"], group="blocked", round_to="none").loc["llc"]
        assert s["ess_bulk"] == pytest.approx(m["ess_bulk"]) and s["r_hat"] == pytest.approx(m["r_hat"]) and s["mcse_mean"] == pytest.approx(m["mcse"]), (s, m)
        assert az.summary(idata, var_names=["llc"], round_to="none").loc["llc", "ess_bulk"] > 2 * m["ess_bulk"]  # what the draws would say
        # Either the blocks bring the noise down (and the MCSE up from the per-draw one, which the
        # noise shrinks), or the run says they could not. RMSProp SGLD on [3, 5, 4, 3] at batch
        # 256 does either by its random numbers (per-draw noise variance ~2 000 over a signal's ~5).
        if "batch_noise" in codes(m):
            assert name == "sgld_rmsprop" and m["diag_noise"] > NOISE_MAX, (name, m["diag_noise"])
        else:
            per_draw = mcse_mean(post.n_beta * (trace.loss - post.L_star))
            assert m["diag_noise"] <= NOISE_MAX and m["mcse"] > per_draw, (m["diag_noise"], m["mcse"], per_draw)
        # too few draws for blocks that long: the noise left in them is flagged
        short = az.from_dict(posterior={"llc": post.n_beta * (trace.loss[:, :1000] - post.L_star)})
        short.posterior.attrs["minibatch_statistic"] = 1
        s = {**m, **summarize(short)}
        flagged = "batch_noise" in {w["code"] for w in run_warnings(s, preset(name))}
        assert flagged == (s["diag_noise"] > NOISE_MAX) and (flagged or n < 10_000), s["diag_noise"]
    if name == "mclmc":  # 2 000 draws left R̂ 1.03–1.07 and ESS 64–136 here (flagged): auto draws run on until mixed
        assert m["draws"] > 2000 and m["r_hat"] <= 1.01 and m["ess_bulk"] >= 1600 and not m["warnings"], m
    if name == "hmc":  # adapted to 0.8, 461 of 64 000 transitions diverged here; 0.99: none over four seeds
        assert m["divergences"] == 0 and "divergences" not in codes(m) and m["r_hat"] <= 1.02 and m["ess_bulk"] >= 400, m
        # out of draws before ESS 1 600 (809–983 over six seeds): its MCSE was ~½ the seeds' spread
        assert ("unmixed" in codes(m)) == (m["draws"] >= 16_000 and (m["ess_bulk"] < 1600 or m["r_hat"] > 1.01)), m
    if name.startswith("vi"):  # a Gaussian q reads ≈ 2× here (k̂ > 2): its checks hand λ̂ to HMC
        assert m["refined"] == "hmc" and m["llc_vi"] > 1.5 * m["llc_true"] and m["pareto_k"] > 0.7, m
        assert not {"pareto_k", "vi_fit"} & codes(m) and m["divergences"] == 0, m["warnings"]
        # what the same numbers would say, unrefined: q's λ̂ flagged
        q = {**m, "refined": "none", "llc_mean": m["llc_vi"]}
        assert {"pareto_k", "off_truth"} <= {w["code"] for w in run_warnings(q, preset(name, refine="none"))}
    if name == "sgld":  # plain SGLD's burn-in (3 × 61 000 steps at n = 1e3) did not fit the budget
        assert not m["budget_capped"] and m["relax_steps"] < 10_000, m["relax_steps"]
