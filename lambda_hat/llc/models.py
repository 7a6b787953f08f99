"""Model families as (init, apply) pairs over flax parameter trees."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "identity": lambda x: x}


INITS = {
    "lecun": nn.initializers.lecun_normal,
    "he": nn.initializers.he_normal,
    "xavier": nn.initializers.glorot_normal,
    "orthogonal": nn.initializers.orthogonal,
}


class MLPNet(nn.Module):
    widths: tuple[int, ...]  # hidden layers
    out_dim: int
    activation: str
    bias: bool = True
    weights: str = "lecun"  # INITS' (not `init`: that is flax's Module.init)
    layernorm: bool = False
    skip_period: int | None = None  # skip connections: every skip_period-th hidden layer adds its input

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for i, w in enumerate(self.widths):
            z = nn.Dense(w, use_bias=self.bias, kernel_init=INITS[self.weights]())(x)
            h = act(nn.LayerNorm()(z) if self.layernorm else z)
            x = x + h if self.skip_period and i % self.skip_period == self.skip_period - 1 else h
        return nn.Dense(self.out_dim, use_bias=self.bias)(x)


class DLNNet(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for w in self.widths[1:]:
            x = nn.Dense(w, use_bias=False)(x)
        return x


def network(model) -> nn.Module:
    if model.kind == "mlp":
        skip = model.residual_period if model.skip_connections else None
        return MLPNet(tuple(model.hidden), model.out_dim, model.activation, model.bias, model.init, model.layernorm, skip)
    if model.kind == "dln":
        return DLNNet(tuple(model.widths))
    raise ValueError(f"model kind {model.kind!r} has no network")


def in_out(model) -> tuple[int, int]:
    if model.kind == "dln":
        return model.widths[0], model.widths[-1]
    return model.in_dim, model.out_dim


def teacher(model, key, spec=None) -> Callable:
    """The function that generates targets: a random MLP (the student's architecture, with the
    fields a config.Teacher `spec` sets), or a rank-r linear map for a DLN."""
    din, dout = in_out(model)
    if model.kind == "dln":  # jitted, as below (see targets.problem)

        def product(key):
            ku, kv = jax.random.split(key)
            return jax.random.normal(ku, (dout, model.rank)) @ jax.random.normal(kv, (model.rank, din)) / jnp.sqrt(din)

        prod = jax.jit(product)(key)
        return lambda x: x @ prod.T
    arch = {f: getattr(model, f) for f in ("width", "depth", "activation", "bias")}
    arch.update({f: v for f, v in vars(spec).items() if v is not None} if spec else {})
    # the teacher's hidden widths: its own, else its depth × width, each the student's where not given
    # (experiments.resolve_teacher has checked that a student of differing widths gives them whole)
    hidden = arch.get("widths") or (model.hidden if arch["width"] is None else [arch["width"]] * arch["depth"])
    net = MLPNet(tuple(hidden), dout, arch["activation"], arch["bias"], model.init)
    params = jax.jit(net.init)(key, np.zeros((1, din), jnp.result_type(float)))
    return lambda x: net.apply(params, x)
