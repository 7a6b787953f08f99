"""A user-defined llc target (model: {kind: custom, fn: "tests.custom_target:build", ...}).

Linear regression y = x·a + noise with `dim` inputs, as a flax module: a regular model, so its
learning coefficient is dim / 2, which build() reports as llc_true for the checks.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class Linear(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, use_bias=False)(x)


def build(cfg: dict) -> dict:
    dim, n, sigma = cfg["dim"], cfg.get("n", 500), cfg.get("noise", 1.0)
    kx, ka, ke, kt, kp = jax.random.split(jax.random.PRNGKey(cfg["seed"]), 5)
    a = jax.random.normal(ka, (dim, 1))

    def sample(kx, ke):
        x = jax.random.normal(kx, (n, dim))
        return x, x @ a + sigma * jax.random.normal(ke, (n, 1))

    x, y = sample(kx, ke)
    x_test, y_test = sample(*jax.random.split(kt))
    net = Linear(dim)
    return {
        "apply": net.apply,
        "params": net.init(kp, x[:1]),
        "x": x, "y": y, "x_test": x_test, "y_test": y_test,
        # per-sample negative log-likelihood (nats), up to a constant
        "loss": lambda out, y: jnp.sum((out - y) ** 2, axis=-1) / (2 * sigma**2),
        "llc_true": dim / 2,
    }  # fmt: skip
