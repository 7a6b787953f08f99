"""Targets people study: a classifier on real data (digits), user-defined targets, λ̂ over training
(checkpoints), each with the trust checks."""

import numpy as np
import pandas as pd
import pytest

from conftest import cli, write_config
from lambda_hat.llc.experiments import load_plan
from lambda_hat.llc.theory import dln

HMC = {"name": "hmc", "overrides": {"draws": 300, "warmup": 150, "chains": 2}}


def test_digits_classifier_over_training(project):
    """A softmax MLP on scikit-learn's digits, λ̂ at two checkpoints (seed 0) and at the end of
    training for a second seed: positive, below d/2, the same across seeds within a few SE; the
    trajectory table and its gallery plot; a checkpoint added later is the only new work."""
    over = {"training": {"steps": 600}, "data": {"n": 600}, "model": {"width": 4}}
    digits = {"model": "small", "data": "digits", "overrides": over}
    targets = [{**digits, "seed": 0, "checkpoints": [200, 600]}, {**digits, "seed": 1}]
    write_config(project / "config" / "experiments.yaml", {"targets": targets, "samplers": [HMC]})
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "results/llc_trajectory.parquet" in r.stdout
    traj = pd.read_parquet(project / "results" / "llc_trajectory.parquet")
    assert traj["step"].tolist() == [200, 600] and (traj["status"] == "done").all()
    assert (traj["train_accuracy"] > 0.9).all() and (traj["test_accuracy"] > 0.8).all() and (traj["test_loss"] > 0).all()
    runs = pd.read_parquet(project / "results" / "llc_runs.parquet")
    d = int(runs["d"].iloc[0])
    assert d == 64 * 4 + 4 + 4 * 10 + 10 and (runs["n"] == 600).all()  # the data set fixes 64 inputs, 10 classes
    end = runs[runs["target"].isin(["small/digits/s0", "small/digits/s1"])]  # step 600: unpolished, the targets themselves
    assert len(end) == 2 and (end["llc_mean"] > 0).all() and (end["llc_mean"] < d / 2).all() and np.isfinite(end["llc_mean"]).all()
    a, b = end["llc_mean"].tolist()
    assert abs(a - b) < 4 * np.hypot(*end["llc_sem"].tolist()) + 0.1 * max(a, b), end[["llc_mean", "llc_sem"]]
    assert runs["warnings"].notna().any()  # short chains and an unconverged w*: every point is checked, and says so

    r = cli("promote", cwd=project)
    assert r.returncode == 0, r.stderr
    page = (project / "results" / "gallery" / "index.html").read_text()
    assert "LLC over training" in page and (project / "results" / "gallery" / "trajectory-0.png").stat().st_size > 10_000

    r = cli("workflow", "llc", "--local", "targets.0.checkpoints=[100, 200, 600]", cwd=project)
    assert r.returncode == 0 and "2 done, 6 reused" in r.stdout, r.stdout + r.stderr  # the target and run at step 100
    assert pd.read_parquet(project / "results" / "llc_trajectory.parquet")["step"].tolist() == [100, 200, 600]


@pytest.mark.slow
def test_dln_last_checkpoint_matches_converged_and_aoyagi(project):
    """5→3→5 DLN, rank 3: the last checkpoint (3 000 Adam steps, unpolished) and the converged
    target (polished) agree within their SE and with Aoyagi's 10.5 within 10%; a checkpoint after
    30 steps is not a minimum and is flagged instead of reported clean."""
    hmc = {"name": "hmc", "overrides": {"draws": 1000, "chains": 4}}
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": "dln", "data": "small", "checkpoints": [30, 3000]}], "samplers": [hmc]})
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = pd.read_parquet(project / "results" / "llc_runs.parquet").set_index("target")
    last, conv, early = runs.loc["dln/small/s0@3000"], runs.loc["dln/small/s0"], runs.loc["dln/small/s0@30"]
    truth = dln([5, 3, 5], 3)
    assert abs(last["llc_mean"] - conv["llc_mean"]) < 3 * np.hypot(last["llc_sem"], conv["llc_sem"]), (last["llc_mean"], conv["llc_mean"])
    for row in (last, conv):
        assert abs(row["llc_mean"] - truth) < 0.1 * truth, row["llc_mean"]
    assert "w_star" in early["warnings"] or "not_minimum" in early["warnings"], early["warning_details"]
    traj = pd.read_parquet(project / "results" / "llc_trajectory.parquet")
    assert traj["step"].tolist() == [30, 3000]  # the converged (polished) target is not a checkpoint


def test_custom_target_matches_its_known_llc(project):
    """tests/custom_target.py: linear regression in 5 inputs built by the user's function; the
    workflow trains it, samples it and checks λ̂ against the λ = 2.5 its build reports."""
    custom = {"kind": "custom", "fn": "tests.custom_target:build", "version": 1, "dim": 5, "n": 400}
    hmc = {"name": "hmc", "overrides": {"draws": 1000, "chains": 2}}
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": custom, "overrides": {"training": {"steps": 300}}}], "samplers": [hmc]})
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    row = pd.read_parquet(project / "results" / "llc_runs.parquet").iloc[0]
    assert row["d"] == 5 and row["n"] == 400 and row["llc_true"] == 2.5 and row["model"] == "tests.custom_target:build"
    assert abs(row["llc_mean"] - 2.5) < 0.1 * 2.5, row["llc_mean"]
    assert row["model.options.dim"] == 5 and row["model.version"] == 1
    # the options and the version are the target's identity: changing either is another target
    plan = lambda **c: load_plan(write_config(project / "e.yaml", {"targets": [{"model": {**custom, **c}}], "samplers": [hmc]})).targets[0].semantic()  # noqa: E731
    assert plan() != plan(version=2) and plan() != plan(dim=6) and plan() == plan(options={})


def test_flax_state_beside_params_is_held_fixed(tmp_path):
    """flax variables with batch_stats beside params: only params are the model's parameters
    (d = 3 here); the running statistics enter apply as they are. They had been flattened into
    w and trained and sampled as parameters (d = 9), inflating λ̂."""
    import jax.numpy as jnp

    from lambda_hat.llc.targets import custom_problem

    custom = {"kind": "custom", "fn": "tests.custom_target:build_batch_norm_eval", "version": 1}
    (target,) = load_plan(write_config(tmp_path / "e.yaml", {"targets": [{"model": custom}], "samplers": [HMC]})).targets
    p = custom_problem(target.model, 0)
    assert p.w0.size == 3
    w = jnp.asarray([0.5, -1.0, 2.0])
    expected = ((p.x[:4] - 1.0) / jnp.sqrt(4.0 + 1e-5)) @ w  # the BatchNorm at its stored mean 1, variance 4
    assert np.allclose(p.predict(w, p.x[:4])[:, 0], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "mistake, fragment",
    [
        ("per_output_loss", "loss(outputs, y) returned shape (2, 2) for 2 samples; it must return one value per sample (sum over outputs)"),
        ("broadcast_y", "the loss of a sample depends on the other samples in its batch"),
        ("summed_loss", "loss(outputs, y) returned one value for 3 samples"),
        ("short_y", "returned x with 500 rows and y with 499: one label per input"),
        ("no_y_test", "returned only one of x_test, y_test: give both or neither"),
        ("text_llc", "returned llc_true = '1.5': a known λ is a number ≥ 0 (or leave it out)"),
        ("not_a_mapping", "returned tuple, not a mapping: build(cfg) must return a dict of apply, params, x, y, loss"),
        ("batch_norm", "apply(params, x[:2]) raised ModifyScopeVariableError"),  # flax's own words, and no hint, before
        ("tuple_outputs", "apply(params, x) returned tuple, not one array of outputs (one row per input)"),
        ("list_params", "apply(params, x[:2]) raised TypeError (params['w'][0] is a Python list of numbers, which apply receives as a list, not an array"),
        ("int_params", "params['scale'] is dtype int32, not a floating array: every parameter is a float (an integer one takes no gradient)"),
        ("no_params", "returned params with no arrays: params is the pytree of the model's parameters"),
        ("class_out_of_range", "returned y with class indices 1…3 for 3 outputs: classes are 0…2"),
        ("float_class_labels", "loss(outputs, y) raised TypeError (y is floating: class indices must be an integer array)"),
        ("nan_x", "returned x with 1 non-finite values (the first at index (7, 2)): the data must be finite"),
        ("nan_loss", "loss(apply(params, x), y) is not finite at the initial params for"),
    ],
)
def test_what_a_custom_build_returns_is_checked(tmp_path, mistake, fragment):
    """Mistakes in build()'s result fail the target with what is wrong, before anything is
    trained: a loss left per output would have divided λ̂ by the number of outputs silently."""
    from lambda_hat.engine.tasks import TaskFailed
    from lambda_hat.llc.targets import custom_problem

    custom = {"kind": "custom", "fn": "tests.custom_target:build_broken", "version": 1, "mistake": mistake}
    (target,) = load_plan(write_config(tmp_path / "e.yaml", {"targets": [{"model": custom}], "samplers": [HMC]})).targets
    with pytest.raises(TaskFailed) as e:
        custom_problem(target.model, 0)
    sep = (
        ":"
        if mistake
        in ("per_output_loss", "broadcast_y", "summed_loss", "batch_norm", "tuple_outputs", "list_params", "int_params", "float_class_labels", "nan_loss")
        else ""
    )
    assert str(e.value).startswith(f"tests.custom_target:build_broken{sep} {fragment}"), str(e.value)
    if mistake == "batch_norm":
        assert (
            "raised ModifyScopeVariableError (apply must be a pure function of params and x: a flax BatchNorm or Dropout needs use_running_average=True"
            in str(e.value)
        )


CLASSIFIER = """
import flax.linen as nn, jax, numpy as np, optax

def build(cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((300, 4)).astype(np.float32)
    y = (x[:, 0] + cfg.get("label_noise", 0.5) * rng.standard_normal(300) > 0).astype(np.int32) + (x[:, 1] > 0.5)  # class indices
    net = nn.Sequential([nn.Dense(cfg["hidden"]), nn.tanh, nn.Dense(3)])
    if cfg.get("labels") == "one_hot":
        y = np.eye(3, dtype=np.float32)[y]
        return {"apply": net.apply, "params": net.init(jax.random.PRNGKey(0), x[:1]), "x": x, "y": y, "loss": optax.softmax_cross_entropy}
    if cfg.get("labels") == "scores":  # three regression outputs, not classes
        return {"apply": net.apply, "params": net.init(jax.random.PRNGKey(0), x[:1]), "x": x, "y": x[:, :3] * 0.5,
                "loss": lambda out, y: ((out - y) ** 2).sum(-1) / 2}
    return {"apply": net.apply, "params": net.init(jax.random.PRNGKey(0), x[:1]), "x": x, "y": y,
            "loss": optax.softmax_cross_entropy_with_integer_labels}
"""


def test_custom_classifier_from_the_project_directory(project):
    """A module beside the experiments file (not installed, not on PYTHONPATH) whose loss indexes
    with integer class labels, its data size unknown until built, under SGLD's preset (auto batch):
    the module was not found, the labels were cast to floats, and ordering the runs by their
    work divided by log 1. Its accuracy is recorded. Without label noise the classes separate and polishing drives
    cross-entropy toward its infimum at infinity, where λ̂ falls toward 0 (0.11 for d = 35 under
    HMC) with every other check clean: flagged `saturated`, and the noisy classifier is not."""
    (project / "my_targets.py").write_text(CLASSIFIER)
    custom = {"kind": "custom", "fn": "my_targets:build", "version": 1, "hidden": 4}
    separable = {**custom, "label_noise": 0.0}
    sgld = {"name": "sgld", "overrides": {"draws": 400, "burnin": 200, "chains": 2}}
    targets = [
        {"model": custom, "overrides": {"training": {"steps": 300}}},
        {"model": separable, "overrides": {"training": {"steps": 300, "polish_steps": 100}}},
    ]
    write_config(project / "config" / "experiments.yaml", {"targets": targets, "samplers": [sgld]})
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    row, flat = pd.read_parquet(project / "results" / "llc_runs.parquet").to_dict("records")
    assert row["status"] == "done" and row["n"] == 300 and row["d"] == 4 * 4 + 4 + 4 * 3 + 3, row
    assert 0 < row["llc_mean"] < row["d"] / 2, row["llc_mean"]
    assert "saturated" not in (row["warnings"] or "") and "saturated" in (flat["warnings"] or ""), (row["warnings"], flat["warning_details"])
    # class indices and a score per class: the target records its accuracy (no held-out set here)
    assert 0.7 < row["train_accuracy"] < 1 and flat["train_accuracy"] == 1 and pd.isna(row["test_accuracy"]), row
    assert flat["llc_mean"] < 0.2 * row["llc_mean"], flat["llc_mean"]  # what the check is for


@pytest.mark.parametrize("labels, classify", [("indices", True), ("one_hot", True), ("scores", False)])
def test_a_custom_classifier_is_known_by_its_labels(project, monkeypatch, labels, classify):
    """Class indices or one-hot rows against a score per class make a classifier (its accuracy is
    recorded); real-valued targets of the same shape do not."""
    from lambda_hat.llc.targets import custom_problem

    (project / "my_targets.py").write_text(CLASSIFIER)
    monkeypatch.syspath_prepend(project)  # as the task processes import it
    custom = {"kind": "custom", "fn": "my_targets:build", "version": 1, "hidden": 4, "labels": labels}
    (target,) = load_plan(write_config(project / "e.yaml", {"targets": [{"model": custom}], "samplers": [HMC]})).targets
    assert custom_problem(target.model, 0).classify is classify


@pytest.mark.parametrize(
    "target, fragment",
    [
        (
            {"model": {"kind": "custom", "fn": "tests.no_such_module:build"}},
            "targets[0].model.fn: 'tests.no_such_module:build' cannot be imported (ModuleNotFoundError",
        ),
        ({"model": {"kind": "custom", "fn": "tests.custom_target:nope"}}, "cannot be imported (AttributeError"),
        ({"model": {"kind": "custom", "fn": "tests.custom_target:jnp"}}, "targets[0].model.fn: 'tests.custom_target:jnp' is a module, not a function"),
        ({"model": {"kind": "custom", "fn": "no colon"}}, "targets[0].model.fn: expected 'module:function'"),
        (
            {"model": {"kind": "custom", "fn": "tests.custom_target:build", "dim": 2}, "data": "small"},
            "targets[0].data: not used by model kind 'custom' (build() makes its data)",
        ),
        ({"model": "dln", "data": "digits"}, "targets[0].data: digits is a classification data set for mlp models, not 'dln'"),
        ({"model": "small", "data": "digits", "teacher": "small"}, "targets[0].teacher: digits has its own labels"),
        (
            {"model": "small", "data": "digits", "overrides": {"data": {"n": 2000}}},
            "targets[0].data.n (alias n_data): digits has 1437 training images, got n = 2000",
        ),
        ({"model": "small", "data": "small", "checkpoints": [0, 10]}, "targets[0].checkpoints: steps must be within 1…3000 (training.steps), got 0"),
        ({"model": "small", "data": "small", "checkpoints": {"every": 5000}}, "targets[0].checkpoints.every: must be <= training.steps (3000), got 5000"),
        (
            {"model": "small", "data": "small", "checkpoints": [1], "overrides": {"training": {"steps": 0}}},
            "targets[0].checkpoints: training.steps is 0 (no training)",
        ),
        ({"model": "small", "data": "small", "checkpoints": {"every": 0}}, "targets[0].checkpoints.every: must be > 0"),
        ({"model": "quadratic", "checkpoints": [1]}, "targets[0].checkpoints: model kind 'quadratic' is not trained"),
        # a mapping (or list) with a bad entry: that form's error, not every form checkpoints take
        ({"model": "small", "data": "small", "checkpoints": {"every": 100, "evry": 1}}, "targets[0].checkpoints.evry: unknown key; allowed keys: every"),
        ({"model": "small", "data": "small", "checkpoints": [100, "end"]}, "targets[0].checkpoints[1]: expected an integer, got 'end'"),
    ],
)
def test_bad_targets_are_one_line_errors(project, target, fragment):
    write_config(project / "config" / "experiments.yaml", {"targets": [target], "samplers": [HMC]})
    r = cli("workflow", "llc", "--dry-run", cwd=project)
    assert r.returncode == 2 and fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_end_of_unpolished_training_closes_its_trajectory(project):
    """Checkpoints listed short of training.steps: an unpolished target is the same training at
    its last step, so it is the trajectory's last point (the plot had stopped at the last listed
    step); a polished one is a converged target beside the trajectory, not a point of it."""
    path = project / "config" / "experiments.yaml"
    for polish, steps in ((0, [100, 200, 600]), (200, [100, 200])):
        over = {"training": {"steps": 600, "polish_steps": polish}}
        write_config(path, {"targets": [{"model": "small", "data": "small", "checkpoints": [100, 200], "overrides": over}], "samplers": [HMC]})
        targets = load_plan(path).targets
        assert [t.step for t in targets if t.trajectory] == steps and len(targets) == 3, [(t.label, t.step) for t in targets]
        assert targets[-1].label == "small/small/s0" and targets[-1].training.polish_steps == polish


def test_an_empty_checkpoint_list_is_none(project):
    """`checkpoints: []` (as `null`): no checkpoints, the same targets (it was a traceback)."""
    path = project / "config" / "experiments.yaml"
    plans = []
    for spec in ([], None):
        write_config(path, {"targets": [{"model": "small", "data": "small", "checkpoints": spec}], "samplers": [HMC]})
        plans.append([(t.label, t.step, t.training) for t in load_plan(path).targets])
    assert plans[0] == plans[1] and len(plans[0]) == 1, plans


def test_custom_build_missing_pieces_fails_its_task(project, tmp_path):
    (project / "broken_target.py").write_text("def build(cfg):\n    return {'x': [[0.0]], 'y': [[0.0]]}\n")
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": {"kind": "custom", "fn": "broken_target:build"}}], "samplers": [HMC]})
    from conftest import ROOT

    r = cli("workflow", "llc", "--local", cwd=project, env={"PYTHONPATH": f"{project}:{ROOT}"})
    assert r.returncode == 1 and "broken_target:build returned no apply, params, loss" in r.stdout, r.stdout + r.stderr


def test_a_checkpoint_is_a_prefix_of_the_full_training(tmp_path):
    """The target trained for 40 steps took exactly the first 40 steps of the 100-step run (same
    batches, same updates): checkpoints lie on one training trajectory."""
    from lambda_hat.engine.runner import Context
    from lambda_hat.engine.tasks import call
    from lambda_hat.engine.typed import plain
    from lambda_hat.llc.config import DLN, Data, Training
    from lambda_hat.llc.targets import train_target

    curves = {}
    for steps in (40, 100):
        sem = {
            "model": plain(DLN(widths=(3, 2, 3), rank=2)),
            "data": plain(Data(n=200)),
            "training": plain(Training(steps=steps, batch_size=32, polish_steps=0)),
            "seed": 4,
            "x64": True,
        }
        (tmp_path / str(steps)).mkdir()
        call(train_target, Context(sem, tmp_path / str(steps), []))
        curves[steps] = np.load(tmp_path / str(steps) / "target.npz")["train_curve"]
    assert len(curves[40]) == 40 and np.array_equal(curves[40], curves[100][:40])


def test_no_training_steps_keeps_the_users_parameters(tmp_path):
    """training.steps: 0 is a target at build()'s own parameters (weights trained elsewhere):
    w* is them exactly without polishing, and polishing alone moves it to the minimum."""
    from lambda_hat.engine.runner import Context
    from lambda_hat.engine.tasks import call
    from lambda_hat.llc.targets import custom_problem, train_target

    custom = {"kind": "custom", "fn": "tests.custom_target:build", "version": 1, "dim": 3}
    found = {}
    for polish in (0, 50):
        doc = {"targets": [{"model": custom, "overrides": {"training": {"steps": 0, "polish_steps": polish}}}], "samplers": [HMC]}
        (target,) = load_plan(write_config(tmp_path / f"{polish}.yaml", doc)).targets
        (tmp_path / str(polish)).mkdir()
        found[polish] = call(train_target, Context(target.semantic(), tmp_path / str(polish), []))
        found[polish]["w"] = np.load(tmp_path / str(polish) / "target.npz")["w_star"]
    w0 = np.asarray(custom_problem(target.model, target.seed).w0)
    assert np.array_equal(found[0]["w"], w0) and found[0]["L_star"] == found[0]["initial_loss"] == found[0]["trained_loss"]
    assert found[50]["L_star"] < 0.5 * found[0]["L_star"] and found[50]["grad_norm"] < 1e-6 * found[0]["grad_norm"]
