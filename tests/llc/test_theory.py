"""Exact learning coefficients: Aoyagi's formula on the paper's worked examples."""

import pytest

from lambda_hat.llc import theory


@pytest.mark.parametrize(
    "widths,r,lam",
    [([5, 3], 3, 7.5), ([1, 2, 1], 1, 0.5), ([5, 3, 5], 3, 10.5), ([4, 3, 8], 2, 11.0), ([8, 3, 4], 1, 8.5),
     ([3, 8, 4], 2, 6.0), ([5, 5, 5, 5], 5, 12.5), ([10, 20, 20, 10], 5, 50.0)],
)  # fmt: skip
def test_aoyagi_worked_examples(widths, r, lam):
    assert theory.dln(widths, r) == pytest.approx(lam)


@pytest.mark.parametrize("M,H,N", [(5, 4, 5), (4, 4, 4), (3, 2, 6), (6, 2, 3), (2, 9, 2), (7, 3, 5)])
def test_two_layer_dln_matches_reduced_rank_regression(M, H, N):
    for r in range(0, min(M, H, N) + 1):
        assert theory.dln([M, H, N], r) == pytest.approx(theory.reduced_rank(M, H, N, r)), r


def test_regular_cases():
    assert theory.dln([5, 3], 3) == theory.regular(15)
    assert theory.monomials([1, 2]) == 0.75 and theory.monomials([1] * 6) == 3.0
    assert theory.gaussian_finite_n([1.0] * 4, 1e9, 1.0) == pytest.approx(2.0)
    assert theory.known_llc({"kind": "dln", "widths": [5, 3, 5], "rank": 2}) is None  # local ≠ global
