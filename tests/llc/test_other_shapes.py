"""Trust on shapes the regime tests do not use (a file of its own: the suite runs a file per
worker, and the regime tests' files are already its longest)."""

import pytest

from lambda_hat.llc import theory
from lambda_hat.llc.sampling import estimate
from regimes import check, codes, deep_linear, preset, regular


@pytest.mark.slow
def test_shipped_presets_on_other_shapes():
    """Shapes the regime tests do not use: a DLN whose middle layer is wider than its ends
    (2→3→2, λ = 2) and a 5→4 linear model at σ = 0.5. Every MCMC preset within tolerance (or
    flagged); VI, which overestimates λ on a singular model (seen: +33% to +193% on this DLN),
    never reports q's λ̂ there: its own checks fail and HMC's λ̂ takes its place (refine: auto)."""
    wide_middle, model = deep_linear((2, 3, 2), 1000)
    linear, linear_model = regular(1000, "gauss_iso", 0.5, widths=(5, 4))
    for name in ("sgld", "sgld_rmsprop", "hmc", "mclmc"):
        m, _ = estimate(wide_middle, preset(name), model)
        assert m["llc_true"] == theory.dln([2, 3, 2], 2) == 2.0
        check(m, 2.0, 0.10)
    m, _ = estimate(linear, preset("sgld"), linear_model)
    assert m["llc_true"] == 10.0
    check(m, m["llc_finite"], 0.05)
    for name in ("vi_meanfield", "vi_flow"):
        m, _ = estimate(wide_middle, preset(name), model)
        check(m, 2.0, 0.10)
        if abs(m["llc_vi"] - 2.0) > 0.10 * 2.0:  # q off: refined
            assert m["refined"] == "hmc" and not {"pareto_k", "vi_fit"} & codes(m), (name, m["llc_vi"], m["warnings"])
