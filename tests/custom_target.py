"""A user-defined llc target (model: {kind: custom, fn: "tests.custom_target:build", ...}).

Linear regression y = x·a + noise with `dim` inputs, as a flax module: a regular model, so its
learning coefficient is dim / 2, which build() reports as llc_true for the checks.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class Linear(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, use_bias=False)(x)


class BatchNormed(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.BatchNorm(use_running_average=False)(x))


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


def build_batch_norm_eval(cfg: dict) -> dict:
    """build() behind a BatchNorm at its running statistics (mean 1, variance 4): flax variables
    with a batch_stats collection beside params, which the model uses but does not train."""
    out = build({**cfg, "dim": 3})
    net = nn.Sequential([nn.BatchNorm(use_running_average=True, use_scale=False, use_bias=False), nn.Dense(1, use_bias=False)])
    variables = net.init(jax.random.PRNGKey(0), out["x"][:2])
    stats = {"BatchNorm_0": {"mean": jnp.ones(3), "var": jnp.full(3, 4.0)}}
    return {**out, "apply": net.apply, "params": {"params": variables["params"], "batch_stats": {"layers_0": stats["BatchNorm_0"]}}}


def build_broken(cfg: dict) -> dict:
    """build() with one mistake, named by cfg["mistake"]: for the checks of what build returns."""
    out = build({**cfg, "dim": 3})
    mistake = cfg["mistake"]
    if mistake == "not_a_mapping":  # the pieces as a tuple
        return tuple(out.values())
    if mistake == "per_output_loss":  # (batch, 2): not summed over the outputs
        out["apply"] = lambda p, x: jnp.concatenate([x @ p["params"]["Dense_0"]["kernel"]] * 2, axis=-1)
        out["loss"] = lambda o, y: (o - y) ** 2 / 2
    elif mistake == "broadcast_y":  # y (n,) against outputs (n, 1): every output meets every label
        out["y"] = out["y"][:, 0]
    elif mistake == "summed_loss":  # the batch's sum, not its mean
        out["loss"] = lambda o, y: jnp.sum((o - y) ** 2) / 2
    elif mistake == "short_y":
        out["y"] = out["y"][:-1]
    elif mistake == "no_y_test":
        del out["y_test"]
    elif mistake == "text_llc":
        out["llc_true"] = "1.5"
    elif mistake == "tuple_outputs":  # (outputs, aux), as some models return
        apply = out["apply"]
        out["apply"] = lambda p, x: (apply(p, x), None)
    elif mistake == "list_params":  # a weight as nested Python lists: each number a leaf, apply gets lists
        out["params"], out["apply"] = {"w": [[0.0]] * 3, "b": jnp.zeros(1)}, lambda p, x: x @ p["w"] + p["b"]
    elif mistake == "int_params":  # an integer weight: it would take no gradient, yet count in d
        out["params"] = {"w": jnp.zeros((3, 1)), "scale": jnp.ones((), jnp.int32)}
        out["apply"] = lambda p, x: p["scale"] * x @ p["w"]
    elif mistake in ("class_out_of_range", "float_class_labels"):  # classes 1…3 (not 0…2); or as floats
        out["params"], out["apply"] = {"w": jnp.zeros((3, 3))}, lambda p, x: x @ p["w"]
        out["loss"] = optax.softmax_cross_entropy_with_integer_labels
        for x, y in (("x", "y"), ("x_test", "y_test")):
            out[y] = (out[x][:, 0] > 0).astype(jnp.int32) + (mistake == "class_out_of_range") * (1 + (out[x][:, 1] > 0))
            out[y] = out[y].astype(jnp.float32) if mistake == "float_class_labels" else out[y]
    elif mistake == "nan_x":
        out["x"] = out["x"].at[7, 2].set(jnp.nan)
    elif mistake == "nan_loss":  # a log-likelihood undefined where the outputs go
        out["loss"] = lambda o, y: jnp.sum(jnp.log(o - y), axis=-1)
    elif mistake == "no_params":
        out["params"] = {"params": {}}
    elif mistake == "batch_norm":  # BatchNorm in training mode: apply would update its batch_stats
        net = BatchNormed()
        out["apply"], out["params"] = net.apply, net.init(jax.random.PRNGKey(0), out["x"][:2])
    return out
