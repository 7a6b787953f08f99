"""Task functions for engine tests (imported by name in the task's child process)."""

import os
import time
from dataclasses import dataclass

from lambda_hat import task  # as a user's own task module imports it


@dataclass(frozen=True)
class Plain:
    value: int = 0
    gc: int = 0
    of: str = ""  # the ID of the task read
    sleep: float = 0.0


@task(Plain)
def noop(ctx, cfg: Plain):
    return {"value": cfg.value}


@task(Plain)
def sleeper(ctx, cfg: Plain):
    (ctx.workdir / "pid").write_text(str(os.getpid()))
    ctx.log(f"sleeping {cfg.sleep} s")
    time.sleep(cfg.sleep)
    return {"slept": cfg.sleep}


@task(Plain)
def cores(ctx, cfg: Plain):
    """The cores this task process may run on, and its OpenMP thread count, after `sleep` s (so
    that tasks overlap)."""
    time.sleep(cfg.sleep)
    return {"cores": sorted(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS")}


@task(Plain)
def array_metrics(ctx, cfg: Plain):
    """Metrics as numpy and JAX values, as a training loop leaves them."""
    import jax.numpy as jnp
    import numpy as np

    return {"score": np.float32(0.5) + cfg.value, "n": np.int64(cfg.value), "ok": np.bool_(True), "curve": np.arange(3) / 2, "jax": jnp.float32(0.25)}


@task(Plain, requires=("lambda_hat_absent_module",))
def needs_absent(ctx, cfg: Plain):
    return {"value": cfg.value}


@dataclass(frozen=True)
class Returns:
    what: str = "metrics"


@task(Returns)
def returns(ctx, cfg: Returns):
    """What a task may hand back, right or wrong, by cfg.what."""
    if cfg.what == "exits_quietly":  # a library's os._exit(0): no result at all
        os._exit(0)
    return {
        "metrics": {"score": 1.0},
        "none": None,
        "list": [1, 2],
        "tuple_key": {("a", 1): 2.0},
        "nested_tuple_key": {"score": 1.0, "per_bucket": {(1, 2): 3}},
        "efficiency_number": {"score": 1.0, "efficiency": 0.9},
        "dotted_twice": {"score": 1.0, "acc.val": 0.5, "acc": {"val": 0.7}},
        "dotted_deep_twice": {"per": {"acc": {"val": 0.5}, "acc.val": 0.7}},
        "dotted_twice_equal": {"score": 1.0, "acc.val": 0.5, "acc": {"val": 0.5}},
    }[cfg.what]


@task(Plain)
def boom(ctx, cfg: Plain):
    raise ValueError("boom: this task always fails")


@task(Plain)
def read_dep(ctx, cfg: Plain):
    return {"dep_value": __import__("json").loads((ctx.deps[0] / "metrics.json").read_text())["value"]}


@dataclass(frozen=True)
class ToyConfig:
    seed: int = 0
    lr: float = 0.01
    width: int = 4
    sleep: float = 0.0
    fail: bool = False
    curve: int = 0  # epochs of a made-up training curve: history.csv and curve.png


def _curve(workdir, epochs: int, lr: float) -> None:
    """loss = 1/(1 + lr·epoch), exactly, so a tracker's history can be checked number by number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [1 / (1 + lr * e) for e in range(epochs)]
    (workdir / "history.csv").write_text("epoch,loss\n" + "".join(f"{e},{v!r}\n" for e, v in enumerate(loss)))
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(loss)
    fig.savefig(workdir / "curve.png")
    plt.close(fig)


@task(ToyConfig)
def toy(ctx, cfg: ToyConfig):
    """A sweep task with a known best point (lr = 0.03) and a cost that grows with width."""
    (ctx.workdir / "pid").write_text(str(os.getpid()))
    time.sleep(cfg.sleep)
    if cfg.fail:
        raise ValueError(f"toy failure at lr={cfg.lr}")
    if cfg.curve:
        _curve(ctx.workdir, cfg.curve, cfg.lr)
    return {"score": -((cfg.lr - 0.03) ** 2) * 1e4 + 0.01 * cfg.seed, "loss": abs(cfg.lr - 0.03) + 1 / cfg.width, "params": 10 * cfg.width, "epochs": 1}


@task(Plain, preload=("jax",))
def jax_state(ctx, cfg: Plain):
    """What JAX looks like in a task process: its x64 flag (from JAX_ENABLE_X64) and the dtype of a
    new array; the process's parent (the fork server, or the runner) and its session."""
    import jax.numpy as jnp

    return {"x64": jnp.zeros(1).dtype == jnp.float64, "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0)}
