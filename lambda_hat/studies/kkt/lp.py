"""Linear programs min cᵀx s.t. Ax ≤ b (x free): seeded RND and combinatorial-auction (CA)
instances, HiGHS ground truth, and the KKT loss a network is trained to minimise.

RND: A₀ ~ U(−1,1)ⁿˣⁿ, b₀ = A₀x₀ + U(0,1) with x₀ ~ U(−1,1), c ~ U(−1,1), and the box −1 ≤ x ≤ 1
as rows: always feasible and bounded. CA (Leyton-Brown "arbitrary"-style bids): n items, 5n bids,
max Σ price·x s.t. each item sold at most once, 0 ≤ x ≤ 1; c = −price/‖price‖∞.
The first `orig_rows` rows are the problem's own; the rest are the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lambda_hat.engine.tasks import task

PROBLEMS = ("RND", "CA")
WEIGHTS = {"primal": 0.1, "dual": 0.1, "stationarity": 0.6, "complementary": 0.2}


def rnd(n: int, rng: np.random.Generator):
    a0 = rng.uniform(-1, 1, (n, n))
    b0 = a0 @ rng.uniform(-1, 1, n) + rng.uniform(0, 1, n)
    a = np.vstack([a0, np.eye(n), -np.eye(n)])
    return a, np.concatenate([b0, np.ones(2 * n)]), rng.uniform(-1, 1, n), n


def ca(n_items: int, rng: np.random.Generator):
    n_bids = 5 * n_items
    value = rng.uniform(1, 2, n_items)  # common value of each item
    a0 = np.zeros((n_items, n_bids))
    price = np.empty(n_bids)
    for j in range(n_bids):
        size = min(n_items, int(rng.geometric(0.5)))  # 1, 2, 3, … items, mean 2
        first = rng.integers(n_items)
        # bundles favour neighbouring items (complements), as in the "arbitrary" scheme
        items = {first}
        while len(items) < size:
            items.add(int(np.clip(first + rng.integers(-2, 3), 0, n_items - 1)) if rng.random() < 0.7 else int(rng.integers(n_items)))
        idx = np.fromiter(items, int)
        a0[idx, j] = 1.0
        price[j] = value[idx].sum() * (1 + 0.2 * (len(idx) - 1)) * rng.uniform(0.8, 1.2)
    a = np.vstack([a0, -np.eye(n_bids), np.eye(n_bids)])
    b = np.concatenate([np.ones(n_items), np.zeros(n_bids), np.ones(n_bids)])
    return a, b, -price / np.abs(price).max(), n_items


def solve(a, b, c):
    """HiGHS optimum: x*, λ* ≥ 0 (λ* = −marginals of Ax ≤ b), objective."""
    from scipy.optimize import linprog

    res = linprog(c, A_ub=a, b_ub=b, bounds=(None, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"HiGHS: {res.message}")
    return res.x, -res.ineqlin.marginals, res.fun


@dataclass(frozen=True)
class LPData:
    problem: str
    size: int
    n_instances: int
    seed: int


@task(LPData)
def generate(ctx, cfg: LPData) -> dict:
    """Cached task: `n_instances` instances of one (problem, size, seed) with their optima."""
    rng = np.random.default_rng([cfg.seed, cfg.size, PROBLEMS.index(cfg.problem)])
    make = rnd if cfg.problem == "RND" else ca
    out = {k: [] for k in ("A", "b", "c", "x", "lam", "obj")}
    for _ in range(cfg.n_instances):
        a, b, c, orig = make(cfg.size, rng)
        x, lam, obj = solve(a, b, c)
        for k, v in zip(out, (a, b, c, x, lam, obj)):
            out[k].append(v)
    np.savez(ctx.workdir / "lp.npz", orig_rows=orig, **{k: np.array(v, dtype=np.float64) for k, v in out.items()})
    return {"instances": cfg.n_instances, "rows": int(len(out["b"][0])), "cols": int(len(out["c"][0]))}


def kkt_terms(a, b, c, x, lam) -> dict:
    """The four KKT violations, each a mean over rows or columns then over instances; torch
    tensors (B, m, n), (B, m), (B, n), (B, n), (B, m)."""
    import torch

    r = torch.einsum("bmn,bn->bm", a, x) - b
    return {
        "primal": torch.relu(r).pow(2).mean(),
        "dual": torch.relu(-lam).pow(2).mean(),
        "stationarity": (c + torch.einsum("bmn,bm->bn", a, lam)).pow(2).mean(),
        "complementary": (lam * r).pow(2).mean(),
    }


def kkt_loss(terms: dict):
    return sum(WEIGHTS[k] * v for k, v in terms.items())
