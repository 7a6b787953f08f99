"""Exact learning coefficients to test estimators against."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np


def regular(d: int) -> float:
    """A regular model (or L = ½‖w‖²) with d identifiable parameters."""
    return d / 2


def monomials(powers: list[int]) -> float:
    """L(w) = Σ_j w_j^{2k_j}: λ = Σ 1/(2k_j)."""
    return sum(1 / (2 * k) for k in powers)


def dln(widths: list[int], r: int) -> float:
    """Aoyagi (2024): the (global) learning coefficient of a deep linear network of true rank r."""
    M = [h - r for h in widths]
    idx = sorted(range(len(M)), key=lambda j: M[j])
    for ell in range(1, len(M)):
        sig, rest = idx[: ell + 1], idx[ell + 1 :]
        ms = [M[j] for j in sig]
        S, mx = sum(ms), max(ms)
        if rest:
            mn = min(M[j] for j in rest)
            if not (mx < mn and S >= ell * mx and S < ell * mn):
                continue
        elif S < ell * mx:
            continue
        a = S - (math.ceil(S / ell) - 1) * ell
        cross = sum(M[i] * M[j] for i, j in combinations(sig, 2))
        h0, hl = widths[0], widths[-1]
        return (-(r**2) + r * (h0 + hl)) / 2 + a * (ell - a) / (4 * ell) - ell * (ell - 1) / 4 * (S / ell) ** 2 + cross / 2
    raise ValueError(f"no index set satisfies Aoyagi's conditions for widths {widths}, rank {r}")


def reduced_rank(M: int, H: int, N: int, r: int) -> float:
    """Aoyagi & Watanabe (2005): reduced-rank regression, input M, hidden H, output N, rank r."""
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    if M + N < H + r:
        return M * N / 2
    s = 1 if (M + H + N + r) % 2 else 0
    return (2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2 + s) / 8


def gaussian_finite_n(hessian_eigs, n_beta: float, gamma: float) -> float:
    """E[λ̂] under the exact localised posterior of a quadratic loss with these Hessian eigenvalues."""
    h = np.asarray(hessian_eigs, dtype=np.float64)
    return float(0.5 * np.sum(n_beta * h / (n_beta * h + gamma)))


def is_regular(model: dict) -> bool:
    """Targets whose parameters are all identifiable: the quadratic and linear regression."""
    return model["kind"] == "quadratic" or (model["kind"] == "dln" and len(model["widths"]) == 2)


def known_llc(model: dict) -> float | None:
    """The analytic λ where the local value at a trained optimum equals it, else None."""
    if model["kind"] == "quadratic":
        return regular(model["dim"])
    if model["kind"] == "dln" and len(model["widths"]) == 2:  # linear regression, any teacher rank
        return regular(model["widths"][0] * model["widths"][1])
    if model["kind"] == "dln" and model["rank"] == min(model["widths"]):
        # A generic full-rank optimum: local and global values agree (REFERENCE §1).
        return dln(list(model["widths"]), model["rank"])
    return None
