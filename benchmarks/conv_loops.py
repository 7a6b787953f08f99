"""A small CNN's sampler steps, in compiled loops against unrolled pieces run from the host.

    python benchmarks/conv_loops.py [--draws 2000] [--channels 4]

XLA:CPU runs a convolution inside a loop body several times slower than outside one
(jax-ml/jax#12868), so on CPU a target whose loss has a convolution runs SGLD's, MCLMC's and VI's
fit steps in pieces of UNROLL unrolled steps, one call each (samplers.conv_on_cpu). This runs
both ways side by side on a CNN trained on scikit-learn's digits (conv 3×3 → ReLU → 2×2 average
pool → dense, float64, 1 200 training images), with the same settings (fixed step size and
counts): each way runs S draws (VI: fit steps) twice, the first compiling, and 2S once; the
difference over S is the cost of a step, free of the calibration and checks a run also pays
(SGLD's control variate takes per-sample gradients at w*, slow for convolutions too). It prints
both, per step and per run of S, and their ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from lambda_hat.llc import samplers  # noqa: E402
from lambda_hat.llc.config import MCLMC, SGLD, VI  # noqa: E402
from lambda_hat.llc.posterior import Posterior, n_beta  # noqa: E402
from lambda_hat.llc.samplers import mclmc, sgld, vi  # noqa: E402


class CNN(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        x = nn.avg_pool(nn.relu(nn.Conv(self.channels, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def target(channels: int) -> Posterior:
    digits = load_digits()
    x, y = jnp.asarray(digits.images[:1200, ..., None] / 16.0), jnp.asarray(digits.target[:1200])
    net = CNN(channels)
    w, unravel = ravel_pytree(jax.tree.map(lambda p: p.astype(x.dtype), net.init(jax.random.PRNGKey(0), x[:1])))
    loss = lambda w, b: optax.softmax_cross_entropy_with_integer_labels(net.apply(unravel(w), b[0]), b[1]).mean()  # noqa: E731
    opt = optax.adam(3e-3)

    @jax.jit
    def train(w):
        def step(c, _):
            w, s = c
            u, s = opt.update(jax.grad(loss)(w, (x, y)), s)
            return (w + u, s), None

        return jax.lax.scan(step, (w, opt.init(w)), None, length=1500)[0][0]

    w = train(w)
    return Posterior(w, 1200, n_beta(1200, 1.0), 1.0, loss, (x, y), float(loss(w, (x, y))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=4)
    a = ap.parse_args()
    post = target(a.channels)
    print(f"CNN on digits: d = {post.dim}, n = {post.n}, convolutions found: {samplers.conv_on_cpu(post)}")
    # (sampler module, config with S of what each counts, S, what): SGLD on minibatches, MCLMC and VI full batch
    runs = {
        "sgld (batch 256, 4 chains)": (sgld, lambda s: SGLD(step_size=1e-3, precond="none", batch_size=256, burnin=100, draws=s), a.draws, "draws"),
        "mclmc (full batch, 4 chains)": (mclmc, lambda s: MCLMC(tune_steps=100, burnin=100, draws=s), a.draws // 8, "draws"),
        "vi meanfield (full batch, 8 draws a step, 4 chains)": (
            vi,
            lambda s: VI(family="meanfield", steps=s, draws=200, refine="none"),
            a.draws // 40,
            "fit steps",
        ),
    }
    for name, (module, cfg, S, what) in runs.items():
        sec, step, est = {}, {}, {}
        for unrolled in (False, True):
            module.conv_on_cpu = lambda post, u=unrolled: u
            timed = {}
            for count in (S, S, 2 * S):  # compiled, then timed: S and 2S
                t0 = time.perf_counter()
                trace = module.sample(post, cfg(count), jax.random.PRNGKey(0))
                timed[count] = time.perf_counter() - t0
                est[unrolled] = post.n_beta * (float(np.mean(trace.loss)) - post.L_star)
            sec[unrolled], step[unrolled] = timed[S], (timed[2 * S] - timed[S]) / S
        print(
            f"{name}: a step {1e3 * step[False]:.2f} ms in loops, {1e3 * step[True]:.2f} ms in unrolled pieces "
            f"({step[False] / step[True]:.2f}×); a run of {S} {what} {sec[False]:.1f} s and {sec[True]:.1f} s "
            f"({sec[False] / sec[True]:.2f}×); λ̂ of the run of {2 * S} {est[False]:.3f} and {est[True]:.3f}"
        )


if __name__ == "__main__":
    main()
