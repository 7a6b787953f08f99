"""Stage A: build a target (data + trained optimum w*) and load it back as a Posterior."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from lambda_hat.engine.tasks import TaskFailed, task
from lambda_hat.engine.typed import build, import_ref
from lambda_hat.llc.config import MODEL_KINDS, Data, TargetTask, Teacher, Training


def typed(sem: dict):
    model = build(MODEL_KINDS[sem["model"]["kind"]], sem["model"], "<target config>", "model")
    data = build(Data, sem["data"], "<target config>", "data") if sem["data"] else None
    training = build(Training, sem["training"], "<target config>", "training") if sem["training"] else None
    return model, data, training


def typed_teacher(sem: dict) -> Teacher | None:
    return build(Teacher, sem["teacher"], "<target config>", "teacher") if sem.get("teacher") else None


class Problem(NamedTuple):  # None: not made (problem(generate=False) makes only loss and predict)
    x: object = None
    y: object = None
    loss: Callable | None = None  # loss(w, (x, y)): mean negative log-likelihood per sample
    predict: Callable | None = None  # predict(w, x): the network's outputs
    teacher: Callable | None = None  # teacher(x): the noiseless truth, where there is one
    w0: object = None  # initial flat parameters
    test: Callable | None = None  # test(): held-out data (for generated data a fresh draw of n_test, default n)
    classify: bool = False  # y classes (one-hot, or a custom target's class indices): accuracy is reported
    llc_true: float | None = None  # a custom target's own known λ


def _softmax_ce(logits, y_onehot):
    import jax

    return -(y_onehot * jax.nn.log_softmax(logits)).sum(axis=-1)


SUM_BLOCK = 512


def sample_mean(values):
    """The mean over samples of per-sample losses, summed in blocks of SUM_BLOCK. XLA may add a
    float32 vector in one running sum (fused with its gradient, on one thread, it did): at
    n = 1e5 that lost ~1e-5 of L_n, 0.03–0.07 nats of nβ·L_n, a floor under HMC's and MCLMC's
    energy errors (HMC's acceptance stuck below its 0.99 target, its step 20× too small)."""
    import jax.numpy as jnp

    v = jnp.ravel(values)
    n = v.shape[0]
    if n <= SUM_BLOCK:
        return jnp.mean(v)
    m = -(-n // SUM_BLOCK) * SUM_BLOCK
    return jnp.sum(jnp.sum(jnp.pad(v, (0, m - n)).reshape(m // SUM_BLOCK, SUM_BLOCK), axis=1)) / n


def _as_data(a, dtype):
    """On the device, floating data in the process's precision; integers (a custom target's class
    indices, which its loss indexes with) stay integers."""
    import jax

    a = np.asarray(a)
    return jax.device_put(a if np.issubdtype(a.dtype, np.integer) or a.dtype == bool else a.astype(dtype))


def custom_problem(model, seed: int) -> Problem:
    """A user's target from its build function (config.Custom)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    out = import_ref(model.fn, "<target config>", "model.fn")({**model.options, "seed": seed})
    if not isinstance(out, Mapping):
        raise TaskFailed(f"{model.fn} returned {type(out).__name__}, not a mapping: build(cfg) must return a dict of apply, params, x, y, loss")
    missing = [k for k in ("apply", "params", "x", "y", "loss") if k not in out]
    if missing:
        raise TaskFailed(f"{model.fn} returned no {', '.join(missing)}: build(cfg) must return apply, params, x, y, loss")
    dtype = jnp.result_type(float)
    params, apply, per_sample = out["params"], out["apply"], out["loss"]
    if isinstance(params, Mapping) and "params" in params and len(params) > 1:
        # flax variables: only the `params` collection is the model's parameters; batch_stats and
        # other state enter apply as they are, not trained or sampled as if they were parameters
        state, params = {k: v for k, v in params.items() if k != "params"}, params["params"]
        apply = lambda p, bx: out["apply"]({**state, "params": p}, bx)  # noqa: E731
    lists = _check_params(model.fn, params)
    w0, unravel = ravel_pytree(params)
    x, y = (_as_data(out[k], dtype) for k in ("x", "y"))
    if len(x) != len(y):
        raise TaskFailed(f"{model.fn} returned x with {len(x)} rows and y with {len(y)}: one label per input")
    if ("x_test" in out) != ("y_test" in out):
        raise TaskFailed(f"{model.fn} returned only one of x_test, y_test: give both or neither")
    for name in ("x", "y", "x_test", "y_test"):  # a NaN in the data read as a training divergence
        a = np.asarray(out.get(name, 0.0))
        if np.issubdtype(a.dtype, np.number) and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))
            raise TaskFailed(
                f"{model.fn} returned {name} with {len(bad)} non-finite values (the first at index {tuple(bad[0].tolist())}): the data must be finite"
            )
    llc_true = out.get("llc_true")
    if llc_true is not None and not (isinstance(llc_true, (int, float)) and not isinstance(llc_true, bool) and 0 <= llc_true < float("inf")):
        raise TaskFailed(f"{model.fn} returned llc_true = {llc_true!r}: a known λ is a number ≥ 0 (or leave it out)")

    def predict(w, bx):
        return apply(unravel(w), bx)

    # one value per sample: a loss left per output (shape (batch, k)) would be averaged over the
    # outputs too, dividing L_n, and so λ̂, by k without a word
    k = min(2, len(x))
    try:
        outputs = jax.eval_shape(lambda w: predict(w, x[:k]), w0)
    except Exception as e:  # the user's apply, not ours: say so, and name flax's usual cause
        hint = ""
        if type(e).__module__.startswith("flax"):  # before flax's long message, which a summary line cuts
            hint = " (apply must be a pure function of params and x: a flax BatchNorm or Dropout needs use_running_average=True / deterministic=True)"
        elif lists:  # each number of a list is a leaf of its own: apply gets a list of scalars, not an array
            hint = f" (params{lists[0]} is a Python list of numbers, which apply receives as a list, not an array: build it with jnp.asarray)"
        raise TaskFailed(f"{model.fn}: apply(params, x[:{k}]) raised {type(e).__name__}{hint}: {e}") from e
    if not hasattr(outputs, "shape"):  # e.g. (logits, aux): loss would get the tuple
        raise TaskFailed(f"{model.fn}: apply(params, x) returned {type(outputs).__name__}, not one array of outputs (one row per input)")
    out_shape = outputs.shape
    classes = out_shape[-1] if len(out_shape) == 2 and out_shape[-1] >= 2 else None
    for name in ("y", "y_test"):  # out of range, optax's cross-entropy reads NaN, and flax's one_hot a row of zeros
        a = np.asarray(out.get(name, np.zeros(0, int)))
        if classes and a.ndim == 1 and np.issubdtype(a.dtype, np.integer) and a.size and (a.min() < 0 or a.max() >= classes):
            raise TaskFailed(f"{model.fn} returned {name} with class indices {a.min()}…{a.max()} for {classes} outputs: classes are 0…{classes - 1}")
    try:
        shape = jax.eval_shape(lambda w: per_sample(predict(w, x[:k]), y[:k]), w0).shape
    except Exception as e:
        hint = " (y is floating: class indices must be an integer array)" if "integer" in str(e) and not jnp.issubdtype(y.dtype, jnp.integer) else ""
        raise TaskFailed(f"{model.fn}: loss(outputs, y) raised {type(e).__name__}{hint}: {e}") from e
    if shape != () and math.prod(shape) != k:
        raise TaskFailed(f"{model.fn}: loss(outputs, y) returned shape {shape} for {k} samples; it must return one value per sample (sum over outputs)")
    at_w0 = np.asarray(jax.jit(lambda w: per_sample(predict(w, x), y))(w0))
    if not np.isfinite(at_w0).all():
        first = f" (the first: sample {int(np.argmax(~np.isfinite(at_w0.ravel())))})" if at_w0.size == len(x) else ""
        raise TaskFailed(
            f"{model.fn}: loss(apply(params, x), y) is not finite at the initial params for {int((~np.isfinite(at_w0)).sum())} of {at_w0.size} values{first}: check y and the loss"
        )
    _check_per_sample(model.fn, predict, per_sample, w0, x, y, out_shape[1:])

    def loss(w, batch):
        return sample_mean(per_sample(predict(w, batch[0]), batch[1]))

    test = (lambda: tuple(_as_data(out[k], dtype) for k in ("x_test", "y_test"))) if "x_test" in out else None
    # class indices (or one-hot rows) and a score per class: a classifier, whose accuracy the target records
    classify = len(out_shape) == 2 and out_shape[-1] >= 2 and (y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer) or _one_hot(y, out_shape[-1]))
    return Problem(x, y, loss, predict, None, jax.device_put(np.asarray(w0, dtype)), test, classify, llc_true)


def _check_params(fn: str, params) -> list[str]:
    """Every leaf of a custom target's params a floating number or array: ravel_pytree casts an
    integer leaf back after each move, so it would enter d, take no gradient and jump where the
    chains cross an integer. Returns the paths of lists of numbers (for apply's error)."""
    import jax
    import jax.numpy as jnp

    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise TaskFailed(f"{fn} returned params with no arrays: params is the pytree of the model's parameters")
    for path, leaf in leaves:
        kind = np.asarray(leaf).dtype if isinstance(leaf, (int, float)) or hasattr(leaf, "dtype") else None
        if kind is None or not jnp.issubdtype(kind, jnp.floating):  # jnp's: numpy's misses bfloat16
            what = f"dtype {kind}" if kind is not None else type(leaf).__name__
            raise TaskFailed(
                f"{fn}: params{jax.tree_util.keystr(path)} is {what}, not a floating array: every parameter is a float (an integer one takes no gradient)"
            )
    lists = [jax.tree_util.keystr(k[:-1]) for k, v in leaves if isinstance(v, float) and k and isinstance(k[-1], jax.tree_util.SequenceKey)]
    return list(dict.fromkeys(lists))


def _one_hot(y, classes: int) -> bool:
    y = np.asarray(y)
    return y.ndim == 2 and y.shape[1] == classes and bool(np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all())


def _check_per_sample(fn: str, predict, per_sample, w0, x, y, per_output: tuple, k: int = 3) -> None:
    """A sample's loss must not depend on the others in its batch: SGLD's minibatches and L_n's
    mean assume it (`per_output`: the shape of one sample's outputs). The usual slip is y of shape (n,) against outputs (n, 1), which broadcasts
    every output against every label; batch statistics in `apply` do it too."""
    import jax
    import jax.numpy as jnp

    k = min(k, len(x))
    if k < 2:
        return

    @jax.jit
    def both(w):
        together = jnp.ravel(per_sample(predict(w, x[:k]), y[:k]))
        alone = jnp.stack([jnp.ravel(per_sample(predict(w, x[i : i + 1]), y[i : i + 1]))[0] for i in range(k)])
        return together, alone

    with jax.default_matmul_precision("highest"):  # a GPU's TF32 matmuls would differ by batch shape on their own
        together, alone = (np.asarray(a, float) for a in both(w0))
    close = lambda a, b: np.allclose(a, b, rtol=1e-3, atol=1e-6 * (1 + np.abs(alone).max()))  # noqa: E731
    if together.shape == (1,) and not close(together[0], alone.mean()):  # one value for the batch: it must be the mean
        raise TaskFailed(
            f"{fn}: loss(outputs, y) returned one value for {k} samples, {together[0]:.4g}, not the mean of theirs one at a time "
            f"({alone.mean():.4g}): return each sample's negative log-likelihood (or their mean, not their sum)"
        )
    if together.shape == (k,) and not close(together, alone):
        why = (
            f"outputs {(k, *per_output)} against y {tuple(y[:k].shape)} broadcast to ({k}, {k}): give y shape (n, 1), or compare outputs[:, 0]"
            if per_output == (1,) and y.ndim == 1
            else "a reduction over the batch axis, or batch statistics in apply?"
        )
        raise TaskFailed(
            f"{fn}: the loss of a sample depends on the other samples in its batch ({np.round(together, 4).tolist()} for {k} together, "
            f"{np.round(alone, 4).tolist()} one at a time; {why}): loss(outputs, y) must give each sample's own negative log-likelihood"
        )


def problem(sem: dict, generate: bool = True) -> Problem:
    """Regenerate a data target's data, teacher and loss from its config (all seeded). Without
    `generate`, only the loss and predict functions, for a task that loads the stored data.
    Every step is jitted: run eagerly, each op compiles a program of
    its own (~2 s of a task's start on a small DLN, none of it kept by the persistent cache)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from lambda_hat.llc import data as datagen
    from lambda_hat.llc.models import in_out, network, teacher

    model, data, _ = typed(sem)
    if model.kind == "custom":
        return custom_problem(model, sem["seed"])
    classify = data.source == "digits"
    net = network(model)
    din, dtype = in_out(model)[0], jnp.result_type(float)
    box = {}

    def init(key):  # flax initialises float32 even under x64
        flat, box["unravel"] = ravel_pytree(net.init(key, jnp.zeros((1, din), dtype)))
        return flat.astype(dtype)

    def keys(seed):
        k_teacher, k_data, k_init = jax.random.split(jax.random.PRNGKey(seed), 3)
        return k_teacher, k_data, k_init, jax.random.fold_in(k_data, 1)

    if not generate:  # the parameters' flat layout, traced: nothing compiled or run
        jax.eval_shape(lambda seed: init(jax.random.PRNGKey(seed)), sem["seed"])
        return _with_loss(Problem(classify=classify), net, box["unravel"], data.noise_scale)
    # on the host (numpy): indexing a device array eagerly compiles a program too
    k_teacher, k_data, k_init, k_test = (np.asarray(k) for k in jax.jit(keys)(sem["seed"]))
    w0 = jax.jit(init)(k_init)
    if classify:
        (x, y), held_out = datagen.digits(data.n)
        truth, test = None, lambda: held_out
    else:
        spec = typed_teacher(sem)
        truth = teacher(model, k_teacher, spec)
        make = jax.jit(lambda k, n: datagen.make(data, din, truth, k, n, spec and spec.dropout_rate), static_argnums=1)
        x, y = make(k_data, data.n)
        test = lambda: make(k_test, data.n_test or data.n)  # noqa: E731
    return _with_loss(Problem(x, y, teacher=truth, w0=w0, test=test, classify=classify), net, box["unravel"], data.noise_scale)


def _with_loss(prob: Problem, net, unravel, noise_scale: float) -> Problem:
    """prob with the network's loss and predict functions over flat parameters."""
    import jax.numpy as jnp

    inv_2s2 = 1.0 / (2 * noise_scale**2)

    def predict(w, bx):
        return net.apply(unravel(w), bx)

    def loss(w, batch):
        bx, by = batch
        if prob.classify:
            return sample_mean(_softmax_ce(predict(w, bx), by))
        return inv_2s2 * sample_mean(jnp.sum((by - predict(w, bx)) ** 2, axis=-1))

    return prob._replace(loss=loss, predict=predict)


# bump when training, data generation or a model's code changes w* (a custom model's 5: flax
# state beside params is held fixed, no longer trained as parameters)
@task(TargetTask, version=lambda c: 5 if c["model"]["kind"] == "custom" else 4, preload=("jax", "optax", "lambda_hat.llc.posterior"))
def train_target(ctx, cfg: TargetTask) -> dict:
    """Task: generate data, train to w*, store w*, data and L_n(w*) (full data set)."""
    import jax
    import jax.numpy as jnp
    import optax

    from lambda_hat.llc.data import Batcher

    # Step t's batch and key are split(key, steps)[t] whatever `steps` is, so a checkpoint trained
    # for s steps is the first s steps of the full run: JAX guarantees that prefix only with
    # partitionable threefry (its default since 0.5), which this process therefore pins.
    jax.config.update("jax_threefry_partitionable", True)
    sem = ctx.config
    model, data, training = typed(sem)
    t0 = time.time()
    if model.kind == "quadratic":
        w = np.zeros(model.dim, jnp.result_type(float))
        np.savez(ctx.workdir / "target.npz", w_star=np.asarray(w))
        return {"d": model.dim, "n": model.n, "L_star": 0.0, "final_loss": 0.0, "grad_norm": 0.0, "train_sec": 0.0}

    prob = problem(sem)
    x, y, loss, w0, test = prob.x, prob.y, prob.loss, prob.w0, prob.test
    opt = {"adam": optax.adam, "sgd": optax.sgd}[training.optimizer](training.lr)
    full = (x, y)
    draw_batch = Batcher(full, jax.jit(jax.random.PRNGKey)(sem["seed"] + 2), training.batch_size)

    def train(w, ring, keys):  # the data as an argument, not a constant of the program (calibration._hvp)
        def step(carry, key):
            w, state = carry
            value, g = jax.value_and_grad(loss)(w, draw_batch.take(draw_batch.offsets(key), ring))
            updates, state = opt.update(g, state, w)
            return (optax.apply_updates(w, updates), state), value

        return jax.lax.scan(step, (w, opt.init(w)), keys)

    # every step jitted, as in problem()
    keys = jax.jit(lambda s: jax.random.split(jax.random.PRNGKey(s), training.steps))(sem["seed"] + 1)
    initial_loss = float(jax.jit(loss)(w0, full))
    (w, _), curve = jax.jit(train)(w0, draw_batch.ring, keys)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    trained_loss, g = value_and_grad(w, full)
    curve = np.asarray(curve)
    if not np.isfinite(float(trained_loss)):
        bad = int(np.argmax(~np.isfinite(curve)))
        raise TaskFailed(f"training diverged: loss {curve[bad]} at step {bad} (lower training.lr)")
    trained_grad = float(np.linalg.norm(np.asarray(g)))
    w = polish(loss, w, full, training.polish_steps)
    L_star, g = value_and_grad(w, full)
    L_star, grad_norm = float(L_star), float(np.linalg.norm(np.asarray(g)))
    np.savez(ctx.workdir / "target.npz", w_star=np.asarray(w), x=np.asarray(x), y=np.asarray(y), train_curve=curve)
    held_out = test() if test else None
    test_loss = float(jax.jit(loss)(w, held_out)) if held_out else None
    extra = {"llc_true": prob.llc_true} if prob.llc_true is not None else {}
    if prob.classify:  # accuracy of the arg-max class

        def acc(xy):
            if xy is None:
                return None
            labels = np.asarray(xy[1])
            labels = labels if labels.ndim == 1 else np.argmax(labels, -1)  # class indices or one-hot
            return float(np.mean(np.argmax(np.asarray(jax.jit(prob.predict)(w, xy[0])), -1) == labels))

        extra.update(train_accuracy=acc(full), test_accuracy=acc(held_out))
    ctx.log(
        f"trained {training.steps} steps: L_n = {float(trained_loss):.6g}, |grad| = {trained_grad:.3g}; "
        f"polished {training.polish_steps} full-batch steps: L_n(w*) = {L_star:.6g}, |grad| = {grad_norm:.3g}; test {'none' if test_loss is None else f'{test_loss:.6g}'}"
        + (f"; accuracy train {_accuracy_text(extra['train_accuracy'])}, test {_accuracy_text(extra['test_accuracy'])}" if prob.classify else "")
    )
    return {
        "d": int(w.size), "n": int(x.shape[0]), "L_star": L_star, "final_loss": L_star, "test_loss": test_loss,
        "grad_norm": grad_norm, "grad_norm_trained": trained_grad, "train_sec": time.time() - t0, **extra,
        "initial_loss": initial_loss, "trained_loss": float(trained_loss),  # the runs' check `training`
    }  # fmt: skip


def _accuracy_text(a: float | None) -> str:
    return "none" if a is None else f"{a:.3f}"


def polish(loss, w, data, steps: int):
    """Full-batch L-BFGS on loss(·, data) from w; keeps w if it does not lower the loss (or goes
    non-finite)."""
    import jax
    import optax

    if steps == 0:
        return w
    opt = optax.lbfgs()

    def run(w, data):  # the data as an argument, not a constant of the program
        f = lambda v: loss(v, data)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(f)

        def step(carry, _):
            w, state = carry
            value, g = value_and_grad(w, state=state)
            updates, state = opt.update(g, state, w, value=value, grad=g, value_fn=f)
            return (optax.apply_updates(w, updates), state), None

        w2 = jax.lax.scan(step, (w, opt.init(w)), None, length=steps)[0][0]
        return w2, f(w), f(w2)

    w2, before, after = jax.jit(run)(w, data)
    before, after = float(before), float(after)
    return w2 if np.isfinite(after) and after <= before else w


def load_posterior(target_dir: Path, sem: dict, beta0: float, gamma: float):
    import jax
    import jax.numpy as jnp

    from lambda_hat.llc.posterior import Posterior, n_beta

    model, _, _ = typed(sem)
    arrays = np.load(Path(target_dir) / "target.npz")
    dtype = jnp.result_type(float)  # float64 under x64: the process's precision, not the file's
    w_star = jax.device_put(np.asarray(arrays["w_star"], dtype))
    if model.kind == "quadratic":
        return Posterior(w_star, model.n, n_beta(model.n, beta0), gamma, lambda w, batch: 0.5 * jnp.sum(w**2), None, 0.0)
    loss = problem(sem, generate=False).loss
    data = tuple(_as_data(arrays[k], dtype) for k in ("x", "y"))
    n = data[0].shape[0]
    return Posterior(w_star, n, n_beta(n, beta0), gamma, loss, data, float(jax.jit(loss)(w_star, data)))
