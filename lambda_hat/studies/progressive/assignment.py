"""Linear assignment problems: seeded cost-matrix families, optimum, dual bound and baselines.

For row duals u, the column duals v_j = min_i (C_ij − u_i) make (u, v) feasible, so the dual bound
D(u) = Σ_i u_i + Σ_j v_j never exceeds the optimal assignment cost OPT (weak duality).
"""

from __future__ import annotations

import numpy as np

FAMILIES = ("uniform", "euclidean", "clustered", "lowrank")


def instance(family: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if family == "uniform":
        return rng.uniform(0, 1, (n, n))
    if family == "euclidean":
        p, q = rng.uniform(0, 1, (n, 2)), rng.uniform(0, 1, (n, 2))
        return np.linalg.norm(p[:, None] - q[None], axis=-1)
    if family == "clustered":
        centres = rng.uniform(0, 1, (4, 2))
        p = centres[rng.integers(0, 4, n)] + 0.05 * rng.standard_normal((n, 2))
        q = centres[rng.integers(0, 4, n)] + 0.05 * rng.standard_normal((n, 2))
        return np.linalg.norm(p[:, None] - q[None], axis=-1)
    if family == "lowrank":
        a, b = rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (n, 3))
        return a @ b.T / 3 + 0.1 * rng.uniform(0, 1, (n, n))
    raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")


def optimum(c: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment

    r, k = linear_sum_assignment(c)
    return float(c[r, k].sum())


def dual_bound(c, u):
    """D(u) for cost matrices (..., n, n) and row duals (..., n); numpy or torch."""
    v = (c - u[..., :, None]).min(-2)
    v = v.values if hasattr(v, "values") else v
    return u.sum(-1) + v.sum(-1)


def generate(workdir, n: int, seed: int, n_train: int, n_val: int, families) -> dict:
    """Train/val instances of one bucket (size n) and their optima, as workdir/data.npz."""
    rng = np.random.default_rng([seed, n])
    out = {}
    for split, per_family in (("train", n_train), ("val", n_val)):
        fams = [f for f in families for _ in range(per_family)]
        c = np.stack([instance(f, n, rng) for f in fams]).astype(np.float32)
        out[f"{split}_c"] = c
        out[f"{split}_opt"] = np.array([optimum(x.astype(np.float64)) for x in c])
        out[f"{split}_family"] = np.array(fams)
    np.savez(workdir / "data.npz", **out)
    return {"n": n, "instances": int(len(out["train_c"]) + len(out["val_c"]))}
