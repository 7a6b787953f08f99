"""Cost of one sampler step against one bare jitted gradient of the same loss.

    python benchmarks/sampler_step_cost.py [--model base] [--n 10000] [--batch 256]

Each sampler runs one chain twice, with S and 2S kept draws; the difference in wall time over S
is its per-step cost, free of warm-up/tuning. Compilation is kept out too: a persistent JAX
compilation cache (a temporary directory) serves every repeat after the first, and the minimum of
three repeats is taken. S: 100 000 SGLD steps, 200 HMC/MCLMC steps (full-batch gradients, 40×
dearer here). The reference is a jitted scan of
S gradient evaluations on a fixed batch (minibatch size for SGLD and VI, full data otherwise).
Ratios are per gradient evaluation (HMC takes num_integration_steps gradients a step, MCLMC 2).
Goal: SGLD ≤ 1.2× a bare gradient.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp())
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

from lambda_hat.engine.runner import Context  # noqa: E402
from lambda_hat.engine.tasks import call  # noqa: E402
from lambda_hat.llc import samplers  # noqa: E402
from lambda_hat.llc.config import HMC, MCLMC, SGLD, TargetEntry  # noqa: E402
from lambda_hat.llc.experiments import resolve_target  # noqa: E402
from lambda_hat.llc.targets import load_posterior, train_target  # noqa: E402


def bare_grad(post, batch, steps: int) -> float:
    g = jax.grad(post.loss)

    def body(w, _):
        return w + 1e-12 * g(w, batch), None  # the update keeps XLA from hoisting the gradient

    run = jax.jit(lambda w: jax.lax.scan(body, w, None, length=steps)[0])
    run(post.w_star).block_until_ready()
    return best_of(lambda: run(post.w_star).block_until_ready()) / steps


def best_of(fn, repeats: int = 3) -> float:
    """Minimum wall time of several calls: the least disturbed by other load."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def step_time(post, cfg_for, steps: int) -> float:
    def timed(draws):
        return best_of(lambda: samplers.get(cfg_for(draws).kind)(post, cfg_for(draws), jax.random.PRNGKey(0)))

    return (timed(2 * steps) - timed(steps)) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="base")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=256)
    # SGLD's steps: enough that S and 2S run the same program (pieces capped in size) and the
    # difference is well above a run's fixed cost's jitter (at 20 000, 1.29× and 1.64× in two runs)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--full-steps", type=int, default=200, help="HMC's and MCLMC's steps (full-batch gradients)")
    a = ap.parse_args()

    entry = TargetEntry(model=a.model, data="base", overrides={"data": {"n": a.n}, "training": {"steps": 500}})
    target = resolve_target(entry, True, Path("config/experiments.yaml"), "bench")
    wd = Path(tempfile.mkdtemp())
    call(train_target, Context(target.semantic(), wd, []))
    post = load_posterior(wd, target.semantic(), 1.0, 1.0)
    S, b = a.steps, a.batch
    mini = jax.tree.map(lambda x: x[:b], post.data)
    g_mini, g_full = bare_grad(post, mini, S), bare_grad(post, post.data, a.full_steps)
    print(f"target {a.model}: d = {post.dim}, n = {post.n}; bare gradient {1e6 * g_mini:.1f} µs (batch {b}), {1e6 * g_full:.1f} µs (full)")
    rows = [
        ("sgld", lambda d: SGLD(chains=1, draws=d, burnin=0, batch_size=b), g_mini, 1),
        ("sgld_rmsprop", lambda d: SGLD(chains=1, draws=d, burnin=0, batch_size=b, precond="rmsprop"), g_mini, 1),
        ("hmc", lambda d: HMC(chains=1, draws=d, burnin=0, warmup=50), g_full, 8),
        ("mclmc", lambda d: MCLMC(chains=1, draws=d, burnin=0, tune_steps=100), g_full, 2),
    ]
    for name, cfg_for, ref, grads in rows:
        t = step_time(post, cfg_for, S if name.startswith("sgld") else a.full_steps)
        print(f"{name:<13} {1e6 * t:9.1f} µs/step  {grads} grad/step  ratio per gradient {t / grads / ref:5.2f}x")


if __name__ == "__main__":
    main()
