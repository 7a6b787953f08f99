"""Our users' language: the original Lambda-Hat's experiment vocabulary, cards by name, KEY=VALUE
overrides, one duration syntax, the KKT study's variant names."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import jax
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, cli, write_config
from lambda_hat.engine.cards import load_card, slurm_time
from lambda_hat.engine.typed import InputError, parse_duration, plain, sweep_values
from lambda_hat.llc.config import HMC, identity
from lambda_hat.llc.experiments import load_plan
from lambda_hat.llc.models import network
from lambda_hat.workflows.llc import build_tasks

# The experiments file of the original Lambda-Hat's sweep guide, as its users have it.
ORIGINAL = """\
store_root: "runs"
jax_enable_x64: true

targets:
  - { model: small, data: small, teacher: _null, seed: 42 }
  - { model: base,  data: base,  teacher: _null, seed: 43,
      overrides: { training: { steps: 10000 } } }

samplers:
  - { name: hmc }
  - { name: mclmc }
  - { name: sgld, overrides: { step_size: 1e-6, eval_every: 50 }, seed: 12345 }
  - { name: vi, overrides: { M: 8, r: 2, gamma: 0.001 }, seed: 54321 }
"""


def ids(path, overrides=()):
    targets, runs = build_tasks(load_plan(path, overrides), None)
    return {k: t.id for k, t in targets.items()}, {k: t.id for k, t in runs.items()}


def plan_of(tmp_path, doc: dict):
    return load_plan(write_config(tmp_path / "e.yaml", doc))


def test_original_experiments_file_runs_as_is(project):
    (project / "config" / "experiments.yaml").write_text(ORIGINAL)
    r = cli("workflow", "llc", "--dry-run", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "2 target(s), 8 run(s)" in r.stdout and "10 task(s) to run" in r.stdout
    plan = load_plan(project / "config" / "experiments.yaml")
    s = {r.name: r.sampler for r in plan.runs[:4]}
    assert (s["sgld"].seed, s["sgld"].step_size, s["sgld"].eval_every) == (12345, 1e-6, 50)
    assert (s["vi"].family, s["vi"].M, s["vi"].r, s["vi"].posterior.gamma, s["vi"].seed) == ("lowrank", 8, 2, 0.001, 54321)
    assert plan.targets[1].training.steps == 10000 and plan.targets[0].teacher is None
    # `teacher: _null` is no teacher: the same tasks as leaving the key out
    with_null = ids(project / "config" / "experiments.yaml")
    (project / "config" / "experiments.yaml").write_text(ORIGINAL.replace("teacher: _null, ", ""))
    assert ids(project / "config" / "experiments.yaml") == with_null
    assert not (project / "runs").exists()


def n_params(model) -> int:
    """The network's own parameter count, from its parameters' shapes (eval_shape: nothing is
    compiled; an eager init compiled every op per new shape: the test took 13.9 s alone, now 1.2 s)."""
    shapes = jax.eval_shape(network(model).init, jax.random.PRNGKey(0), np.zeros((1, model.in_dim)))
    return sum(a.size for a in jax.tree.leaves(shapes))


def test_model_and_data_presets(tmp_path):
    sizes = ["tiny", "small", "base", "wide", "large"]
    plan = plan_of(tmp_path, {"targets": [{"model": m, "data": m} for m in sizes], "samplers": [{"name": "hmc"}]})
    d = [n_params(t.model) for t in plan.targets]
    assert d == sorted(d) and 8 <= d[0] <= 15 and 3000 <= d[-1] <= 6000, d
    assert [t.data.n for t in plan.targets] == sorted(t.data.n for t in plan.targets)  # data grow with the model
    dists = ["gauss_iso", "gauss_aniso", "mixture", "heavy_tail"]
    plan = plan_of(tmp_path, {"targets": [{"model": "small", "data": x} for x in dists], "samplers": [{"name": "hmc"}]})
    assert [t.data.x_dist for t in plan.targets] == dists
    # model keys: depth, width, activation, bias shape the network
    over = {"model": {"depth": 3, "width": 5, "activation": "gelu", "bias": False}}
    plan = plan_of(tmp_path, {"targets": [{"model": "small", "data": "small", "overrides": over}], "samplers": [{"name": "hmc"}]})
    assert n_params(plan.targets[0].model) == 4 * 5 + 5 * 5 * 2 + 5  # no biases
    assert plan.targets[0].model.activation == "gelu"
    # the original's `target_params`: the width whose parameter count is nearest (the same task as that width)
    for data, depth, target in (("base", 4, 15000), ("digits", 1, 2000), ("small", 2, 300)):
        doc = {"targets": [{"model": "base", "data": data, "overrides": {"model": {"depth": depth, "target_params": target}}}], "samplers": ["hmc"]}
        model = plan_of(tmp_path, doc).targets[0].model
        near = [abs(n_params(replace(model, width=w)) - target) for w in (model.width - 1, model.width, model.width + 1)]
        assert near[1] == min(near) and abs(n_params(model) - target) < 0.1 * target, (data, model)
        doc["targets"][0]["overrides"]["model"] = {"depth": depth, "width": model.width}
        assert ids(write_config(tmp_path / "w.yaml", doc)) == ids(tmp_path / "e.yaml")
    for over, msg in (({"target_params": 100, "width": 3}, "target_params: and width are both given"), ({"target_params": 0}, "expected a positive integer")):
        with pytest.raises(InputError, match=msg):
            plan_of(tmp_path, {"targets": [{"model": "small", "data": "small", "overrides": {"model": over}}], "samplers": ["hmc"]})
    # the original's `identity` activation: the network is affine (f(2x) − f(x) = f(x) − f(0))
    over = {"model": {"activation": "identity", "bias": True}}
    model = plan_of(tmp_path, {"targets": [{"model": "small", "data": "small", "overrides": over}], "samplers": [{"name": "hmc"}]}).targets[0].model
    net, x = network(model), np.random.default_rng(0).standard_normal((5, model.in_dim))
    params = net.init(jax.random.PRNGKey(1), x)
    f = lambda z: np.asarray(net.apply(params, z))  # noqa: E731
    assert np.allclose(f(2 * x) - f(x), f(x) - f(0 * x), atol=1e-5) and not np.allclose(f(x), f(0 * x))
    # the data section inline: the same target (and ID) as a preset with those values
    inline = {"n_data": 1000, "x_dist": "gauss_iso", "noise_model": "gauss", "noise_scale": 1.0}
    a = write_config(tmp_path / "a.yaml", {"targets": [{"model": "small", "data": inline}], "samplers": [{"name": "hmc"}]})
    b = write_config(tmp_path / "b.yaml", {"targets": [{"model": "small", "data": "small"}], "samplers": [{"name": "hmc"}]})
    assert list(ids(a)[0].values()) == list(ids(b)[0].values())
    assert load_plan(a).targets[0].label == "small/n_data=1000,x_dist=gauss_iso,noise_model=gauss,noise_scale=1.0/s0"
    plan = plan_of(tmp_path, {"targets": [{"model": "dln", "data": {"n": 20000, "x_dist": "mixture"}}], "samplers": [{"name": "hmc"}]})
    assert (plan.targets[0].data.n, plan.targets[0].data.x_dist, plan.targets[0].data.noise_scale) == (20000, "mixture", 0.1)
    for bad, msg in (({"nn": 5}, "targets[0].data.nn: unknown key"), ([1], "targets[0].data: expected a string or a mapping")):
        with pytest.raises(InputError, match=re.escape(msg)):
            plan_of(tmp_path, {"targets": [{"model": "dln", "data": bad}], "samplers": [{"name": "hmc"}]})


# The original Lambda-Hat's data preset (its conf/data/base.yaml), every key it has.
ORIGINAL_DATA = """\
# @package _global_.data
n_data: 2000
n_test: 500
x_dist: gauss_iso
cov_decay: 0.95
mixture_k: 4
mixture_spread: 2.0
x_dim_latent: 2
noise_model: gauss
noise_scale: 0.1
hetero_scale: 0.1
student_df: 4.0
outlier_frac: 0.05
outlier_scale: 2.0
"""


def test_original_data_section(tmp_path):
    from scipy.cluster.hierarchy import fcluster, linkage

    from lambda_hat.llc import data as datagen
    from lambda_hat.llc.targets import problem

    (tmp_path / "presets" / "data").mkdir(parents=True)
    (tmp_path / "presets" / "data" / "orig.yaml").write_text(ORIGINAL_DATA)
    doc = {"targets": [{"model": "small", "data": "orig"}], "samplers": ["hmc"]}
    plan = plan_of(tmp_path, doc)
    data = plan.targets[0].data
    assert (data.n, data.n_test, data.x_dist, data.student_df) == (2000, 500, "gauss_iso", 4.0)
    # the keys of distributions gauss_iso and gauss do not use leave the target as without them
    used = {"n": 2000, "n_test": 500, "x_dist": "gauss_iso", "noise_model": "gauss", "noise_scale": 0.1, "student_df": 4.0}

    def target_id(data) -> str:
        return next(iter(ids(write_config(tmp_path / "s.yaml", {**doc, "targets": [{"model": "small", "data": data}]}))[0].values()))

    assert target_id(used) == target_id("orig")
    # ... and a key at its built-in value, or n_test = n, as leaving it out
    same = [{"x_dist": "mixture", "mixture_k": 3}, {"x_dist": "mixture"}, {"n": 300, "n_test": 300}, {"n": 300}]
    got = [target_id(d) for d in same]
    assert got[0] == got[1] != got[2] == got[3]

    def draw(n=20000, dim=6, **keys):
        d = plan_of(tmp_path, {**doc, "targets": [{"model": "small", "data": {"n": n, **keys}}]}).targets[0].data
        kx, kn = jax.random.split(jax.random.PRNGKey(0))
        x = np.asarray(datagen.inputs(d, dim, kx))
        return x, np.asarray(datagen.noise(d, (n, 1), kn, x))[:, 0]

    x, _ = draw(x_dist="gauss_aniso", cov_decay=0.6)
    assert np.allclose(x.var(0), 0.6 ** np.arange(6), rtol=0.05), x.var(0)
    x, _ = draw(n=2000, x_dist="mixture", mixture_k=5, mixture_spread=30.0)  # far apart: 5 clumps of sd 0.5
    assert fcluster(linkage(x, "single"), 5.0, "distance").max() == 5
    x, _ = draw(x_dist="lowdim_manifold", x_dim_latent=2)  # tanh of a 2-D linear image
    inner = x[np.abs(x).max(1) < 0.9]  # where float32's arctanh is still exact enough
    sv = np.linalg.svd(np.arctanh(inner), compute_uv=False)
    assert len(inner) > 1000 and sv[2] < 1e-4 * sv[0] < sv[1], sv
    x, e = draw(noise_model="hetero", noise_scale=0.1, hetero_scale=1.0)
    r = np.linalg.norm(x, axis=1)
    assert np.allclose(np.mean(e**2 / (0.1 * (1 + r)) ** 2), 1.0, rtol=0.05)
    _, e = draw(noise_model="outliers", noise_scale=0.1, outlier_frac=0.2, outlier_scale=2.0)
    assert abs(np.mean(np.abs(e) > 0.5) - 0.2 * 0.8026) < 0.015  # P(|N(0, 2²)| > 0.5) = 0.8026
    # n_test: the held-out draw's size
    t = plan.targets[0]
    prob = problem({"model": plain(t.model), "data": plain(t.data), "training": plain(t.training), "seed": 0, "x64": True})
    assert prob.x.shape[0] == 2000 and prob.test()[0].shape[0] == 500
    for bad, msg in (
        ({"x_dist": "spiral"}, "allowed values: gauss_iso, gauss_aniso, mixture, lowdim_manifold, heavy_tail"),
        ({"cov_decay": 1.5}, "targets[0].data.cov_decay: must be <= 1"),
        ({"outlier_frac": -0.1}, "targets[0].data.outlier_frac: must be >= 0"),
        ({"source": "digits", "n": 100, "n_test": 50}, "targets[0].data.n_test: digits holds out its own 360 test images"),
    ):
        with pytest.raises(InputError, match=re.escape(msg)):
            plan_of(tmp_path, {**doc, "targets": [{"model": "small", "data": bad}]})


# The original Lambda-Hat's model and teacher presets (its conf/model/base.yaml and
# conf/teacher/base.yaml, smaller), and its guide's example model preset.
ORIGINAL_MODEL = """\
# @package _global_.model
in_dim: 8
out_dim: 1
depth: 3
widths: null
activation: relu
bias: true
layernorm: false
init: he
target_params: 300
hidden: 300
"""
ORIGINAL_TEACHER = "depth: 3\nwidths: null\nactivation: relu\ndropout_rate: 0.1\ntarget_params: 100\nhidden: null\n"


def test_original_model_and_teacher_sections(tmp_path):
    from lambda_hat.llc import data as datagen

    for group, name, text in (
        ("model", "orig", ORIGINAL_MODEL),
        ("teacher", "orig", ORIGINAL_TEACHER),
        ("model", "deep", "depth: 6\ntarget_params: 500\nactivation: relu\n"),
    ):
        (tmp_path / "presets" / group).mkdir(parents=True, exist_ok=True)
        (tmp_path / "presets" / group / f"{name}.yaml").write_text(text)

    def target(preset="small", teacher_preset=None, **over):
        entry = {"model": preset, "data": "small", **({"teacher": teacher_preset} if teacher_preset else {}), "overrides": over}
        return plan_of(tmp_path, {"targets": [entry], "samplers": ["hmc"]}).targets[0]

    m = target("orig").model  # target_params wins over the fallback `hidden`; widths: null is no widths
    assert (m.depth, m.activation, m.init, m.in_dim) == (3, "relu", "he", 8) and abs(n_params(m) - 300) < 30
    assert n_params(m) == m.n_params()
    t = target("orig", "orig").teacher  # its depth and activation are the student's: only what differs stays
    assert (t.depth, t.activation, t.width, t.dropout_rate) == (None, None, 5, 0.1)
    m = target("deep").model
    assert (m.kind, m.depth, m.activation) == ("mlp", 6, "relu") and abs(n_params(m) - 500) < 50
    # widths: equal ones are depth × width (one task); differing ones shape the network layer by layer
    assert target(model={"widths": [5, 5]}).semantic() == target(model={"depth": 2, "width": 5}).semantic()
    m = target(model={"widths": [6, 3]}).model
    assert (m.depth, m.width, m.hidden) == (2, None, [6, 3]) and n_params(m) == m.n_params() == 4 * 6 + 6 * 3 + 3 + 6 + 3 + 1
    assert target(model={"hidden": 7}).model.width == 7 and target(model={"hidden": 7, "width": 3}).model.width == 3
    # init: the hidden layers' weight variance (he 2/fan_in, lecun 1/fan_in, xavier 2/(fan_in + fan_out)); orthogonal
    for init, var in (("he", 2 / 300), ("lecun", 1 / 300), ("xavier", 2 / 600)):
        m = target(model={"in_dim": 300, "widths": [300], "init": init}).model
        kernel = np.asarray(network(m).init(jax.random.PRNGKey(0), np.zeros((1, 300)))["params"]["Dense_0"]["kernel"])
        assert abs(kernel.var() / var - 1) < 0.03, (init, kernel.var())
    m = target(model={"in_dim": 50, "widths": [50], "init": "orthogonal"}).model
    kernel = np.asarray(network(m).init(jax.random.PRNGKey(0), np.zeros((1, 50)))["params"]["Dense_0"]["kernel"])
    assert np.allclose(kernel.T @ kernel, np.eye(50), atol=1e-4)
    # layernorm: 2 parameters per hidden unit, and the output no longer sees the first layer's scale
    x = np.random.default_rng(0).standard_normal((7, 4))
    for ln in (True, False):
        m = target(model={"layernorm": ln}).model
        net = network(m)
        params = net.init(jax.random.PRNGKey(0), x)
        scaled = jax.tree_util.tree_map_with_path(lambda p, a: 3 * a if "Dense_0" in str(p) else a, params)
        assert (n_params(m) - target().model.n_params(), np.allclose(net.apply(params, x), net.apply(scaled, x), atol=1e-5)) == (
            (2 * sum(m.hidden), True) if ln else (0, False)
        )
    # skip connections: with the hidden layers zeroed (tanh(0) = 0), a layer that skips passes its input on
    for skip in (True, False):
        m = target(model={"in_dim": 4, "widths": [4, 4], "skip_connections": skip, "residual_period": 1}).model
        net = network(m)
        params = net.init(jax.random.PRNGKey(0), x)
        zeroed = jax.tree_util.tree_map_with_path(lambda p, a: a if "Dense_2" in str(p) else 0 * a, params)
        out = params["params"]["Dense_2"]
        assert np.allclose(net.apply(zeroed, x), (x if skip else 0 * x) @ out["kernel"] + out["bias"], atol=1e-5)
    # a teacher's dropout_rate zeroes that fraction of the clean labels
    d = target().data
    _, y = datagen.make(replace(d, n=20000, noise_scale=1e-9), 4, lambda x: np.ones((x.shape[0], 1)), jax.random.PRNGKey(0), None, 0.25)
    assert abs(np.mean(np.abs(np.asarray(y)) < 1e-6) - 0.25) < 0.015
    # a null depth beside target_params is the student's (small: 1 hidden layer on 4 inputs: 6w + 1 ≈ 100)
    assert target(teacher={"depth": None, "target_params": 100}).teacher.width == 16
    # a teacher given only in the overrides is labelled by its keys (it read t:None)
    assert target(teacher={"width": 3}).label == "small/small/t:width=3/s0"
    # targets that use none of these keys hash what they did before the keys existed
    sem = target(teacher_preset="small").semantic()
    assert set(sem["model"]) == {"kind", "in_dim", "out_dim", "depth", "width", "activation", "bias"}
    assert set(sem["data"]) == {"source", "n", "x_dist", "noise_model", "noise_scale", "student_df"}
    assert set(sem["teacher"]) == {"depth", "width", "activation", "bias"}
    for over, msg in (
        ({"model": {"widths": [4, 0]}}, "targets[0].model.widths: all widths must be > 0"),
        ({"model": {"widths": []}}, "targets[0].model.widths: needs at least 1 entry; for a linear model (no hidden layer) give kind: dln"),
        ({"model": {"hidden": -3}}, "targets[0].model.hidden: expected a positive integer, got -3"),
        ({"teacher": {"hidden": "x"}}, "targets[0].teacher.hidden: expected a positive integer, got 'x'"),
        ({"model": {"widths": [4, 4], "depth": 3}}, "targets[0].model.depth: is 3 where widths has 2 layers"),
        ({"model": {"widths": [4, 4], "target_params": 50}}, "targets[0].model.target_params: and widths are both given"),
        ({"model": {"widths": [4, 4], "width": 3}}, "targets[0].model.widths: and width are both given"),
        ({"model": {"init": "kaiming"}}, "allowed values: lecun, he, xavier, orthogonal"),
        (
            {"model": {"widths": [6, 3], "skip_connections": True}},
            "targets[0].model.skip_connections: hidden layer 2 adds its input (6 wide) to its output (3 wide)",
        ),
        ({"model": {"widths": [6, 3]}, "teacher": {"depth": 3}}, "targets[0].teacher.depth: is 3, and the student's widths [6, 3] differ"),
        ({"teacher": {"dropout_rate": 1.0}}, "targets[0].teacher.dropout_rate: must be < 1"),
    ):
        with pytest.raises(InputError, match=re.escape(msg)):
            target(**over)


def test_aliases_resolve_to_one_field(tmp_path):
    """Each concept has one field: an alias and its canonical key give the same task IDs."""

    def doc(data_over, sampler_over):
        return {
            "targets": [{"model": "small", "data": "small", "overrides": {"data": data_over}}],
            "samplers": [{"name": "vi_lowrank", "overrides": sampler_over}],
        }

    a = write_config(tmp_path / "a.yaml", doc({"noise": "student_t", "n_data": 500}, {"components": 3, "rank": 4, "gamma": 0.5, "beta0": 2.0}))
    b = write_config(tmp_path / "b.yaml", doc({"noise_model": "student_t", "n": 500}, {"M": 3, "r": 4, "posterior": {"gamma": 0.5, "beta0": 2.0}}))
    assert list(ids(a)[0].values()) == list(ids(b)[0].values()) and list(ids(a)[1].values()) == list(ids(b)[1].values())
    # training's learning_rate (the original's) is lr, over a preset's lr too
    lr = {k: ids(a, [f"targets.0.overrides.training={{{k}: 0.003}}"]) for k in ("learning_rate", "lr")}
    assert lr["learning_rate"] == lr["lr"] != ids(a) and load_plan(a, ["targets.0.overrides.training={learning_rate: 0.003}"]).targets[0].training.lr == 0.003
    plan = load_plan(a)
    assert plan.targets[0].data.noise_model == "student_t" and plan.runs[0].sampler.M == 3
    # an alias in the overrides replaces the preset's canonical value (vi_lowrank has M: 2)
    assert plan.runs[0].sampler.M == 3
    # other samplers' aliases
    p = plan_of(tmp_path, {"targets": [{"model": "quadratic"}], "samplers": [
        {"name": "sgld", "overrides": {"warmup": 77}}, {"name": "hmc", "overrides": {"target_acceptance": 0.9}},
        {"name": "mclmc", "overrides": {"num_steps": 300}}]})  # fmt: skip
    assert (p.runs[0].sampler.burnin, p.runs[1].sampler.target_accept, p.runs[2].sampler.tune_steps) == (77, 0.9, 300)
    # SGLD's `steps`, the original's burn-in + draws per chain: the draws it leaves, one task ID
    sgld = lambda over: {"targets": [{"model": "quadratic"}], "samplers": [{"name": "sgld", "overrides": {"step_size": 1e-6, **over}}]}  # noqa: E731
    a = write_config(tmp_path / "a.yaml", sgld({"steps": 2000, "warmup": 200}))
    assert ids(a) == ids(write_config(tmp_path / "b.yaml", sgld({"draws": 1800, "burnin": 200}))) and load_plan(a).runs[0].sampler.draws == 1800
    for over, msg in [
        ({"steps": 2000}, "steps: is burn-in + draws per chain (the original Lambda-Hat's): give burnin (or warmup) as a number, not 'auto', or draws alone"),
        ({"steps": 200, "burnin": 200}, "steps: is burn-in + draws per chain: must be > burnin 200, got 200"),
        ({"steps": 2000, "burnin": 20, "draws": 5}, "and draws is also given; keep one"),
    ]:
        with pytest.raises(InputError, match=re.escape(msg)):
            plan_of(tmp_path, sgld(over))
    # a sampler's `dtype` (the original's): the file's precision, the same task; another one is an error
    for x64, same, other in ((True, "float64", "float32"), (False, "float32", "float64")):
        doc = lambda over: {"jax_enable_x64": x64, "targets": [{"model": "quadratic"}], "samplers": [{"name": "hmc", "overrides": over}]}  # noqa: E731
        assert ids(write_config(tmp_path / "a.yaml", doc({"dtype": same}))) == ids(write_config(tmp_path / "b.yaml", doc({})))
        with pytest.raises(InputError, match=re.escape(f"samplers[0].overrides.dtype: {other}: every task computes in the file's precision, {same}")):
            plan_of(tmp_path, doc({"dtype": other}))


def test_original_sampler_keys(tmp_path):
    """The original Lambda-Hat's HMC and MCLMC presets' keys, and its SGLD RMSProp's beta2 and
    eps, as entries' overrides; samplers that use none of them keep their task IDs."""
    hmc = {"draws": 1000, "warmup": 200, "num_integration_steps": 10, "step_size": 0.01, "dtype": "float64", "adapt_step_size": True, "target_acceptance": 0.8}
    mclmc = {"draws": 1000, "L": 1.0, "step_size": 0.1, "dtype": "float64", "diagonal_preconditioning": False, "num_steps": 500, "frac_tune1": 0.1,
             "frac_tune2": 0.1, "frac_tune3": 0.1, "desired_energy_var": 0.0005, "trust_in_estimate": 1.0, "num_effective_samples": 150.0,
             "integrator": "isokinetic_mclachlan"}  # fmt: skip

    def runs(*entries):
        return [r.sampler for r in plan_of(tmp_path, {"targets": [{"model": "quadratic"}], "samplers": list(entries)}).runs]

    h, m = runs({"name": "hmc", "overrides": hmc}, {"name": "mclmc", "overrides": mclmc})
    assert (h.step_size, h.adapt_step_size, h.target_accept, h.num_integration_steps) == (0.01, True, 0.8, 10)
    assert (m.L, m.step_size, m.tune_steps, m.trust_in_estimate, m.integrator) == (1.0, 0.1, 500, 1.0, "isokinetic_mclachlan")
    a = write_config(
        tmp_path / "a.yaml", {"targets": [{"model": "quadratic"}], "samplers": [{"name": "sgld_rmsprop", "overrides": {"beta2": 0.999, "eps": 1e-8}}]}
    )
    b = write_config(
        tmp_path / "b.yaml",
        {"targets": [{"model": "quadratic"}], "samplers": [{"name": "sgld_rmsprop", "overrides": {"rmsprop_decay": 0.999, "rmsprop_eps": 1e-8}}]},
    )
    assert ids(a) == ids(b) and load_plan(a).runs[0].sampler.rmsprop_decay == 0.999
    # what a run's ID hashes holds none of these keys where they are at their defaults
    for s in runs("hmc", "mclmc"):
        assert not set(identity(s)) & set(type(s).ADDED), identity(s)
    # its sampler presets' own form: `name: hmc` and the keys under `hmc:` (its conf/sample/sampler/hmc.yaml)
    (tmp_path / "presets" / "sampler").mkdir(parents=True)
    original = "# @package _global_.sampler\nname: hmc\nhmc:\n" + "".join(f"  {k}: {v}\n" for k, v in hmc.items())
    (tmp_path / "presets" / "sampler" / "ohmc.yaml").write_text(original)
    assert runs("ohmc") == [replace(h, burnin=HMC().burnin)]  # the rest at HMC's defaults, not the hmc preset's
    (tmp_path / "presets" / "sampler" / "ohmc32.yaml").write_text(original.replace("float64", "float32"))  # (a preset file is read once a process)
    with pytest.raises(
        InputError, match=re.escape(f"{tmp_path / 'presets' / 'sampler' / 'ohmc32.yaml'}: dtype: float32: every task computes in the file's precision")
    ):
        runs("ohmc32")
    # its SGLD preset: steps (burn-in + draws), float32, and its Adam keys, which precond none leaves unused
    sgld = "name: sgld\nsgld:\n  steps: 7000\n  warmup: 500\n  batch_size: 256\n  step_size: 1e-6\n  dtype: float32\n  precond: none\n"
    (tmp_path / "presets" / "sampler" / "osgld.yaml").write_text(
        sgld + "  beta1: 0.9\n  beta2: 0.999\n  eps: 1e-8\n  bias_correction: true\n  eval_every: 100\n"
    )
    doc = {"jax_enable_x64": False, "targets": [{"model": "quadratic"}], "samplers": ["osgld"]}
    (g,) = [r.sampler for r in plan_of(tmp_path, doc).runs]
    assert (g.draws, g.burnin, g.step_size, g.precond, g.rmsprop_decay, g.rmsprop_eps, g.eval_every) == (6500, 500, 1e-6, "none", 0.999, 1e-8, 100)
    assert runs({"name": "osgld", "overrides": {"dtype": "float64"}})[0] == g  # the entry's dtype over the preset's
    (tmp_path / "presets" / "sampler" / "nokind.yaml").write_text("draws: 100\n")
    assert runs({"name": "nokind", "overrides": {"kind": "hmc"}})[0].draws == 100
    for over, msg in (
        ("nokind", "samplers[0].kind: missing: the nokind preset and the entry's overrides give none; allowed values: sgld, hmc, mclmc, vi"),
        ({"name": "hmc", "overrides": {"adapt_step_size": False}}, "samplers[0].adapt_step_size: false needs a step_size"),
        ({"name": "mclmc", "overrides": {"integrator": "leapfrog"}}, "allowed values: isokinetic_mclachlan, isokinetic_velocity_verlet"),
        (
            {"name": "mclmc", "overrides": {"frac_tune1": 0, "frac_tune2": 0, "frac_tune3": 0}},
            "samplers[0].frac_tune1: frac_tune1 + frac_tune2 + frac_tune3 must be > 0",
        ),
        ({"name": "hmc", "overrides": {"step_size": -1}}, "samplers[0].step_size: must be > 0"),
    ):
        with pytest.raises(InputError, match=re.escape(msg)):
            runs(over)


# The original Lambda-Hat's VI preset (conf/sample/sampler/vi.yaml, its last form), as it is.
ORIGINAL_VI = """\
# @package _global_.sampler
name: vi
vi:
  algo: mfa         # "mfa" (mixture of factor analyzers) or "flow"
  M: 8
  r: 2
  steps: 5000
  batch_size: 256
  lr: 0.01
  eval_every: 50    # how often to record metrics
  eval_samples: 64  # MC samples for final estimate
  dtype: float32
  use_whitening: true  # deprecated, use whitening_mode
  whitening_mode: none
  whitening_decay: 0.99
  clip_global_norm: 5.0
  alpha_temperature: 1.0
  tensorboard: false
  r_per_component: null
  alpha_dirichlet_prior: null
  lr_schedule: null
  lr_warmup_frac: 0.05
  entropy_bonus: 0.0
"""


def test_original_presets_wrapped_in_their_groups_key(tmp_path):
    """Some of the original's presets hold their keys under their group's name (its
    conf/sample/sampler/mclmc.yaml: `sampler: {name: mclmc, mclmc: …}`; its conf/target/data/*.yaml:
    `data: {n_data: …}`): the same presets as without that key."""
    for group in ("sampler", "data", "teacher"):
        (tmp_path / "presets" / group).mkdir(parents=True)
    mclmc = {"draws": 1000, "L": 1.0, "step_size": 0.1, "dtype": "float64", "num_steps": 500, "trust_in_estimate": 1.0}
    (tmp_path / "presets" / "sampler" / "wrapped.yaml").write_text(yaml.safe_dump({"sampler": {"name": "mclmc", "mclmc": mclmc}}))
    (tmp_path / "presets" / "sampler" / "flat.yaml").write_text(yaml.safe_dump({"name": "mclmc", "mclmc": mclmc}))
    data = {"n_data": 100, "x_dist": "gauss_iso", "cov_decay": 0.95, "noise_model": "gauss", "noise_scale": 0.1, "x_dim_latent": 2}
    (tmp_path / "presets" / "data" / "wrapped.yaml").write_text(yaml.safe_dump({"data": data}))
    (tmp_path / "presets" / "teacher" / "wrapped.yaml").write_text(yaml.safe_dump({"teacher": {"depth": 1, "widths": [4]}}))
    plan = plan_of(tmp_path, {"targets": [{"model": "small", "data": "wrapped", "teacher": "wrapped"}], "samplers": ["wrapped"]})
    (t,) = plan.targets
    assert (t.data.n, t.teacher.width) == (100, 4)  # depth 1: the student's, held as None
    (a,) = (r.sampler for r in plan.runs)
    assert (a.kind, a.tune_steps, a.L) == ("mclmc", 500, 1.0)
    assert plan_of(tmp_path, {"targets": [{"model": "quadratic"}], "samplers": ["flat"]}).runs[0].sampler == a
    (tmp_path / "presets" / "data" / "bad.yaml").write_text(yaml.safe_dump({"data": {**data, "n_train": 128}}))
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'presets' / 'data' / 'bad.yaml'}: n_train: unknown key")):
        plan_of(tmp_path, {"targets": [{"model": "small", "data": "bad"}], "samplers": ["hmc"]})


def test_original_vi_keys(tmp_path):
    """The original's VI preset runs as it is: algo as the family, eval_samples as q's draws, its
    fit's schedule and clipping honoured, its whitening dropped, its other options at the values
    that leave the fit as ours; the original's `algo: flow` beside a preset's M and r is a flow."""
    (tmp_path / "presets" / "sampler").mkdir(parents=True)
    (tmp_path / "presets" / "sampler" / "ovi.yaml").write_text(ORIGINAL_VI)

    def runs(*entries, x64=False):
        return [r.sampler for r in plan_of(tmp_path, {"jax_enable_x64": x64, "targets": [{"model": "quadratic"}], "samplers": list(entries)}).runs]

    (v,) = runs("ovi")
    assert (v.family, v.M, v.r, v.steps, v.batch_size, v.lr, v.draws, v.eval_every) == ("lowrank", 8, 2, 5000, 256, 0.01, 64, 50)
    assert (v.lr_schedule, v.lr_warmup_frac, v.clip_global_norm) == (None, 0.0, 5.0)
    # the smoke config's flow line: M and r are the mixture's, which a flow has not
    (f,) = runs({"name": "vi", "overrides": {"algo": "flow", "M": 8, "r": 2, "gamma": 0.001}, "seed": 54322})
    (g,) = runs({"name": "vi", "overrides": {"family": "flow", "M": 1, "gamma": 0.001}, "seed": 54322})
    assert (f.family, f.M, f.posterior.gamma) == ("flow", 1, 0.001) and identity(f) == identity(g)
    (w,) = runs({"name": "vi", "overrides": {"whitening_mode": "adam", "use_whitening": False, "algo": "mfa"}})
    (plain_vi,) = runs("vi")
    assert identity(w) == identity(plain_vi) and not set(identity(plain_vi)) & set(type(plain_vi).ADDED)
    for over, msg in (
        ({"algo": "nuts"}, "samplers[0].overrides.algo: 'nuts' is not allowed; allowed values: mfa, flow"),
        ({"algo": "mfa", "family": "lowrank"}, "samplers[0].overrides.algo: is the original Lambda-Hat's name of family, which is also given"),
        ({"entropy_bonus": 0.1}, "samplers[0].overrides.entropy_bonus: 0.1: a bonus λ·H(q) in the ELBO widens q past the posterior"),
        ({"tensorboard": True}, "samplers[0].overrides.tensorboard: True: no TensorBoard logs here"),
        ({"whitening_mode": "diag"}, "samplers[0].overrides.whitening_mode: 'diag' is not allowed; allowed values: none, rmsprop, adam"),
        ({"lr_schedule": "step"}, "samplers[0].lr_schedule"),
        ({"eval_samples": 2}, "samplers[0].draws (alias eval_samples): must be ≥ 4"),
    ):
        with pytest.raises(InputError, match=re.escape(msg)):
            runs({"name": "vi", "overrides": over})
    (tmp_path / "presets" / "sampler" / "bad.yaml").write_text(ORIGINAL_VI.replace("entropy_bonus: 0.0", "entropy_bonus: 0.5"))
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'presets' / 'sampler' / 'bad.yaml'}: entropy_bonus: 0.5")):
        runs("bad")


def test_a_files_posterior_is_every_samplers(project):
    """The original's docs set γ for every sampler in a top-level `posterior:`: here it lies over
    each sampler's preset and under its entry's own; its beta_mode is ours, its loss no choice."""
    doc = {
        "targets": [{"model": "base", "data": "base", "teacher": "_null", "seed": 43}],
        "samplers": [
            {"name": "vi", "overrides": {"M": 4, "r": 1, "whitening_mode": "none", "lr": 0.01}, "seed": 1001},
            {"name": "hmc", "overrides": {"gamma": 5}},
            {"name": "sgld", "overrides": {"posterior": {"beta0": 2}}},
        ],
        "posterior": {"gamma": 0.001, "beta_mode": "1_over_log_n"},
    }
    path = write_config(project / "config" / "experiments.yaml", doc)
    post = [r.sampler.posterior for r in load_plan(path).runs]
    assert [(p.gamma, p.beta0) for p in post] == [(0.001, 1.0), (5.0, 1.0), (0.001, 2.0)]
    without = write_config(project / "config" / "w.yaml", {**doc, "posterior": {}, "samplers": [{"name": "hmc", "overrides": {"gamma": 0.001}}]})
    assert ids(without)[1]["hmc@base/base/s43"] == ids(path, ("samplers=[{name: hmc}]",))[1]["hmc@base/base/s43"]
    for extra, msg in (
        ({"loss": "mse"}, "posterior.loss: 'mse': L_n here is the data's mean negative log-likelihood"),
        ({"beta_mode": "manual"}, "posterior.beta_mode: 'manual' is not allowed; allowed values: 1_over_log_n"),
        ({"prior_radius": 2.0}, "posterior.prior_radius: 2.0: no hard radius around w* here"),
        ({"gamma": -1}, "posterior.gamma: must be >= 0"),
    ):
        write_config(path, {**doc, "posterior": {**doc["posterior"], **extra}})
        r = cli("workflow", "llc", "--dry-run", cwd=project)
        assert r.returncode == 2 and r.stderr.strip().startswith(f"error: config/experiments.yaml: {msg}"), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (project / "runs").exists()


def test_an_integer_written_as_1e5_is_that_integer(tmp_path):
    """YAML reads 1e5 as a float; an integer key takes it where it names an integer exactly (the
    same task IDs and labels as 100000), in the file and on the command line; 2.5 stays an error."""
    (tmp_path / "a.yaml").write_text("targets: [{model: dln, data: {n: 1e5}}]\nsamplers: [{name: sgld, overrides: {draws: 2.0e+3, max_steps: 1e6}}]\n")
    (tmp_path / "b.yaml").write_text("targets: [{model: dln, data: {n: 100000}}]\nsamplers: [{name: sgld, overrides: {draws: 2000, max_steps: 1000000}}]\n")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert ids(a) == ids(b) == ids(b, ["targets.0.data.n=1e5", "samplers.0.overrides.draws=2e3"])
    plan = load_plan(a)
    assert plan.targets[0].label == "dln/n=100000/s0" and plan.runs[0].sampler.draws == 2000 and type(plan.runs[0].sampler.max_steps) is int
    for bad in ("2.5e0", "1e300"):
        with pytest.raises(InputError, match=re.escape("targets[0].data.n (alias n_data): expected an integer")):
            load_plan(b, [f"targets.0.data.n={bad}"])


def test_teacher_presets(tmp_path):
    def target(**entry):
        return plan_of(tmp_path, {"targets": [{"model": "small", "data": "small", **entry}], "samplers": [{"name": "hmc"}]}).targets[0]

    t = target(teacher="small")  # depth 1 as the student's: only the width differs
    assert (t.teacher.depth, t.teacher.width, t.teacher.activation) == (None, 4, None) and "teacher" in t.semantic()
    assert (target(teacher="base").teacher.depth, target(teacher="base").teacher.width) == (2, None)
    t2 = target(teacher="small", overrides={"teacher": {"activation": "relu"}})
    assert t2.teacher.activation == "relu" and t2.semantic() != t.semantic()
    # a teacher identical to the student (small: depth 1, width 8, tanh) is no teacher
    same = target(teacher="small", overrides={"teacher": {"width": 8, "activation": "tanh"}})
    assert same.teacher is None and same.semantic() == target().semantic() == target(teacher="_null").semantic()
    # the teacher labels the data: a narrower teacher gives other labels than the student-shaped one
    from lambda_hat.llc.targets import problem

    y_t, y_0 = np.asarray(problem(t.semantic()).y), np.asarray(problem(target().semantic()).y)
    assert y_t.shape == y_0.shape and not np.allclose(y_t, y_0)


@pytest.mark.parametrize(
    "entry, sampler, fragments",
    [
        ({"model": "small", "data": "small", "teacher": "huge"}, {}, ["targets[0].teacher", "unknown teacher preset 'huge'", "_null, base, small"]),
        ({"model": "dln", "data": "small", "teacher": "small"}, {}, ["targets[0].teacher", "teacher presets apply to mlp models"]),
        ({"model": "quadratic", "teacher": "small"}, {}, ["targets[0].teacher", "not used by model kind 'quadratic'"]),
        ({"model": "small", "data": "small", "teacher": 3}, {}, ["targets[0].teacher", "expected a string"]),
        (
            {"model": "small", "data": "small", "teacher": "small", "overrides": {"teacher": {"activation": "sigmoid"}}},
            {},
            ["targets[0].teacher.activation", "allowed values: tanh, relu, gelu"],
        ),
        ({"model": "small", "data": "small", "overrides": {"teacher": {"depth": 0}}}, {}, ["targets[0].teacher.depth", "must be > 0"]),
        ({"model": "small", "data": "small", "overrides": {"model": {"bias": "yes"}}}, {}, ["targets[0].model.bias", "expected true/false"]),
        (
            {"model": "small", "data": "small", "overrides": {"model": {"activation": "sigmoid"}}},
            {},
            ["targets[0].model.activation", "allowed values: tanh, relu, gelu"],
        ),
        (
            {"model": "small", "data": "small", "overrides": {"data": {"noise_model": "cauchy"}}},
            {},
            ["targets[0].data.noise_model", "allowed values: gauss, hetero, student_t, outliers"],
        ),
        (
            {"model": "small", "data": "small", "overrides": {"data": {"noise": "gauss", "noise_model": "gauss"}}},
            {},
            ["targets[0].data.noise", "alias of noise_model, which is also given"],
        ),
        # given by an alias (the original's `noise`, `warmup`), a bad value's error names it too
        (
            {"model": "small", "data": "small", "overrides": {"data": {"noise": 0.3}}},
            {},
            ["targets[0].data.noise_model (alias noise)", "allowed values: gauss"],
        ),
        ({"model": "quadratic"}, {"name": "sgld", "overrides": {"warmup": -1}}, ["samplers[0].burnin (alias warmup)", "must be >= 0"]),
        ({"model": "small", "data": "no_such"}, {}, ["targets[0].data", "unknown data preset", "gauss_aniso, gauss_iso, heavy_tail"]),
        ({"model": "quadratic"}, {"name": "vi", "overrides": {"M": 0}}, ["samplers[0].M", "must be > 0"]),
        ({"model": "quadratic"}, {"name": "vi", "overrides": {"r": 1.5}}, ["samplers[0].r", "expected an integer"]),
        ({"model": "quadratic"}, {"name": "vi", "overrides": {"M": 2, "components": 2}}, ["samplers[0].overrides.components", "alias of M"]),
        ({"model": "quadratic"}, {"name": "vi_meanfield", "overrides": {"M": 4}}, ["samplers[0].M", "family: lowrank"]),
        ({"model": "quadratic"}, {"name": "vi", "overrides": {"steps": 0}}, ["samplers[0].steps", "must be > 0"]),
        ({"model": "quadratic"}, {"name": "hmc", "overrides": {"num_integration_steps": 0}}, ["samplers[0].num_integration_steps", "must be > 0"]),
        ({"model": "quadratic"}, {"name": "hmc", "overrides": {"draws": -1}}, ["samplers[0].draws", "must be > 0"]),
        ({"model": "quadratic"}, {"name": "sgld", "overrides": {"step_size": "fast"}}, ["samplers[0].step_size", "expected a number or one of 'auto'"]),
        ({"model": "quadratic"}, {"name": "hmc", "overrides": {"eval_every": 0}}, ["samplers[0].eval_every", "must be > 0"]),
        # thinned to nothing, λ̂ read NaN and the run was shown done
        (
            {"model": "quadratic"},
            {"name": "hmc", "overrides": {"eval_every": 100_000, "draws": 100}},
            ["samplers[0].eval_every", "keeps 0 of draws = 100", "eval_every ≤ 25"],
        ),
        ({"model": "quadratic"}, {"name": "vi", "overrides": {"entropy_bonus": 0.1}}, ["samplers[0].overrides.entropy_bonus", "allowed value: 0.0"]),
        ({"model": "quadratic"}, {"name": "sgld", "overrides": {"draws": 3}}, ["samplers[0].draws", "must be ≥ 4"]),
        ({"model": "quadratic"}, {"name": "hmc", "seed": -1}, ["samplers[0].seed", "must be >= 0"]),
        (
            {"model": "quadratic"},
            {"name": "hmc", "seed": [1, 2]},
            ["samplers[0].seed: one seed per entry, got [1, 2]; for one entry per seed run with -m samplers.0.seed=1,2"],
        ),
        ({"model": "quadratic", "seed": [0, 1, 2]}, {"name": "hmc"}, ["targets[0].seed: one seed per entry", "-m targets.0.seed=0,1,2"]),
        ({"model": "quadratic"}, {"name": "hmc", "seed": 1, "overrides": {"seed": 2}}, ["samplers[0].seed", "given here and in overrides"]),
    ],
)
def test_bad_vocabulary_is_one_line_exit_2(project, entry, sampler, fragments):
    doc = {"targets": [entry], "samplers": [{"name": "hmc", **sampler}]}
    write_config(project / "config" / "experiments.yaml", doc)
    r = cli("workflow", "llc", "--dry-run", cwd=project)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error: config/experiments.yaml: "), err
    for f in fragments:
        assert f in err, (f, err)


def test_cards_by_name(project, tmp_path, monkeypatch):
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": "quadratic"}], "samplers": [{"name": "hmc"}]})
    for name in ("slurm/a100", "slurm/a100.yaml", "parsl_cards/slurm/cpu.yaml", "local-processes"):
        r = cli("workflow", "llc", "--dry-run", "--parsl-card", name, cwd=project)
        assert r.returncode == 0, (name, r.stderr)
    (project / "parsl_cards" / "mine.yaml").write_text("executor: threads\nworkers: 3\n")
    monkeypatch.chdir(project)
    assert load_card("mine").workers == 3
    (project / "parsl_cards" / "other.yml").write_text("executor: threads\nworkers: 1\n")  # .yml too, and listed
    assert load_card("other").workers == 1
    with pytest.raises(InputError, match=r"available cards: local, local-gpu, local-processes, mine, other, slurm/a100"):
        load_card("nothing")
    # outside a checkout: the packaged cards
    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.chdir(bare)
    card = load_card("slurm/a100")
    assert card.provider.type == "slurm" and card.provider.gpus_per_node == 4 and slurm_time(card.provider.walltime) == "08:00:00"
    with pytest.raises(
        InputError,
        match=r"--parsl-card mine: no such file, card or Snakemake profile; available cards: local, local-gpu, local-processes, slurm/a100, slurm/cpu$",
    ):
        load_card("mine")
    with pytest.raises(InputError, match=r"--parsl-card a100: no such file, card or Snakemake profile \(did you mean slurm/a100\?\); available"):
        load_card("a100")  # a card's own name without its folder
    r = cli("workflow", "progressive", "--list", "--parsl-card", "slurm/cpu.yaml", "--config", str(ROOT / "config/progressive.yaml"), cwd=bare)
    assert r.returncode == 0 and "b128" in r.stdout, r.stderr


def test_snakemake_profiles(project, tmp_path, monkeypatch):
    """--profile DIR (or NAME under ~/.config/snakemake): a Snakemake profile read as a card, a
    Snakemake job as a block running one task; what has no counterpart here is named in one note."""
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": "quadratic"}], "samplers": [{"name": "hmc"}]})

    def profile(name, text, root=project / "profiles"):
        (root / name).mkdir(parents=True)
        (root / name / "config.yaml").write_text(text)
        return str(root / name)

    v8 = profile(
        "slurm",
        "executor: slurm\njobs: 20\nrestart-times: 2\nlatency-wait: 60\nuse-conda: true\nkeep-going: true\n"
        "default-resources:\n  slurm_partition: long\n  slurm_account: \"'lab'\"\n  runtime: 90\n  mem_mb: 4000\n  cpus_per_task: 2\n  disk_mb: 100\n",
    )
    r = cli("workflow", "llc", "--dry-run", "--profile", v8, cwd=project)
    assert r.returncode == 0 and "executor: htex, 20 task(s) at once" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "--dry-run", "--profile", v8, "-j", "5", cwd=project)  # Snakemake's -j: SLURM jobs at once
    assert r.returncode == 0 and "executor: htex, 5 task(s) at once" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("note: ") == 1 and "not used here: latency-wait, use-conda, default-resources.disk_mb" in r.stderr, r.stderr
    c = load_card(v8)
    p = c.provider
    assert (c.workers, c.retries, p.type, p.partition, p.account, slurm_time(p.walltime)) == (1, 2, "slurm", "long", "lab", "01:30:00")
    assert (p.max_blocks, p.cores_per_node, p.mem_per_node, p.gpus_per_node) == (20, 2, 4, 0)
    # a GPU asked for: the a100 card, its gres as asked; v7's sbatch command and KEY=VALUE resources
    gpu = load_card(profile("gpu", "executor: slurm\ndefault-resources:\n  gpu: 2\n  slurm_extra: \"'--qos=high'\"\n"))
    assert gpu.provider.gpus_per_node == 2 and gpu.provider.scheduler_options == "#SBATCH --gres=gpu:2\n#SBATCH --qos=high"
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in gpu.provider.worker_init
    v7 = load_card(profile("v7", "cluster: sbatch -p short -A proj --time=30 --qos=normal\njobs: 5\ndefault-resources: [mem_mb=2000]\n"))
    assert (v7.provider.partition, v7.provider.account, v7.provider.qos, v7.provider.walltime, v7.provider.max_blocks) == ("short", "proj", "normal", 1800.0, 5)
    assert v7.provider.mem_per_node == 2 and v7.provider.gpus_per_node == 0
    # its command's cpus, memory and gres read; a flag with no counterpart named; a partition called gpu is no GPU
    v7 = profile("v7b", "cluster: sbatch -p gpu -c 4 --mem=8G --gres gpu:a100:3 --exclusive -J smk\n")
    r = cli("workflow", "llc", "-n", "--profile", v7, cwd=project)
    assert r.returncode == 0 and r.stderr.strip().endswith("not used here: cluster --exclusive"), r.stderr
    p = load_card(v7).provider
    assert (p.cores_per_node, p.mem_per_node, p.gpus_per_node, p.scheduler_options) == (4, 8, 3, "#SBATCH --gres=gpu:a100:3"), p
    assert load_card(profile("v7c", "cluster: sbatch -p gpu\n")).provider.gpus_per_node == 0
    # memory as Snakemake's SLURM executor books it: mem_mb_per_cpu first, a 0 books none (a
    # partition's default; it had been 1 GB), sbatch's own --mem=0 the whole node
    memory = (
        ("{mem: 8GB}", 8, ""),
        ("{mem: 1.5T}", 1536, ""),
        ("{mem_mb_per_cpu: 1800, cpus_per_task: 4}", 8, ""),
        ("{mem_mb_per_cpu: 1000, mem_mb: 9000, cpus_per_task: 2}", 2, ""),
        ("{mem_mb_per_cpu: 0, mem_mb: 3000}", 3, ""),
        ("{mem_mb: 0}", None, ""),
        ("[mem_mb=0, mem=0G]", None, ""),
    )
    for i, (resources, gb, options) in enumerate(memory):
        p = load_card(profile(f"mem{i}", f"executor: slurm\ndefault-resources: {resources}\n")).provider
        assert (p.mem_per_node, p.scheduler_options) == (gb, options), resources
    for i, (flags, resources, gb, options) in enumerate(
        (
            ("--mem=0", "", None, "#SBATCH --mem=0"),
            ("--mem 0", "[mem_mb=2048]", 2, ""),
            ("--mem=0", "[mem_mb=0]", None, "#SBATCH --mem=0"),
            ("--mem=1500", "", 2, ""),
        )
    ):
        p = load_card(profile(f"sbatch{i}", f"cluster: sbatch -p short {flags}\n" + (f"default-resources: {resources}\n" if resources else ""))).provider
        assert (p.mem_per_node, p.scheduler_options) == (gb, options), (flags, resources)
    # Snakemake's command line: --executor and --default-resources (every KEY=VALUE up to the next option), over a profile's
    r = cli("workflow", "llc", "-n", "--executor", "slurm", "--default-resources", "slurm_partition=gpu", "runtime=60", "disk_mb=5", "-j", "7", cwd=project)
    assert r.returncode == 0 and "executor: htex, 7 task(s) at once" in r.stdout, r.stdout + r.stderr
    assert r.stderr.strip() == "note: --executor/--default-resources: a Snakemake profile, read as a card; not used here: default-resources.disk_mb"
    c = load_card(None, (), {"executor": "slurm", "resources": ("slurm_partition=gpu", "runtime=60", "gpu=1")})
    assert (c.provider.partition, c.provider.walltime, c.provider.gpus_per_node, c.workers) == ("gpu", 3600.0, 1, 1)
    c = load_card(v8, (), {"executor": None, "resources": ("slurm_partition=short",)})  # the profile's, one resource changed
    assert (c.provider.partition, c.provider.account, c.provider.max_blocks) == ("short", "lab", 20)
    r = cli("workflow", "llc", "-n", "--parsl-card", "slurm/cpu", "--default-resources", "runtime=5", cwd=project)
    assert r.returncode == 2 and "slurm/cpu is a card, not a Snakemake profile; set its fields with --set" in r.stderr, r.stderr
    # locally: cores are tasks at once; Snakemake's NAME under $XDG_CONFIG_HOME/snakemake
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    profile("laptop", "cores: 3\nkeep-going: true\n", root=tmp_path / "xdg" / "snakemake")
    assert load_card("laptop").executor == "threads" and load_card("laptop").workers == 3
    r = cli("workflow", "llc", "--dry-run", "--profile", "laptop", "-j", "2", cwd=project, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert r.returncode == 0 and "executor: threads, 2 task(s) at once" in r.stdout, r.stdout + r.stderr  # locally: tasks at once
    for text, msg in (
        ("executor: lsf\n", "executor: 'lsf' has no card here; allowed values: slurm, cluster-generic (an sbatch command), local"),
        ("executor: slurm\njobs: many\n", "jobs: expected a whole number >= 1, got 'many'"),
        ("executor: slurm\ndefault-resources: {mem: 4000}\n", "default-resources.mem: expected a size with its unit, such as 4000MB or 4G, got '4000'"),
        ("executor: slurm\ndefault-resources: [mem_mb]\n", "default-resources: expected KEY=VALUE entries, got ['mem_mb']"),
    ):
        bad = profile(f"bad{len(msg)}", text)
        r = cli("workflow", "llc", "--dry-run", "--profile", bad, cwd=project)
        assert r.returncode == 2 and r.stderr.strip() == f"error: {bad}/config.yaml: {msg}", r.stderr
    # no task at once: the profile's key named (it had been our `workers`, or `provider.max_blocks`)
    for name, text, msg in (
        ("cores0", "cores: 0\n", "cores: expected a whole number >= 1, got 0"),
        ("jobs0", "executor: slurm\njobs: 0\n", "jobs: expected a whole number >= 1, got 0"),
    ):
        with pytest.raises(InputError) as e:
            load_card(profile(name, text))
        assert str(e.value).endswith(f"{name}/config.yaml: {msg}")
    (project / "empty").mkdir()
    r = cli("workflow", "llc", "--dry-run", "--profile", "empty", cwd=project)
    assert r.returncode == 2 and "--profile empty: a directory with no Snakemake profile (config.yaml) in it" in r.stderr, r.stderr


def test_original_card_names_and_flat_keys(project):
    """The original Lambda-Hat's cards: config/parsl/{local,slurm/cpu,slurm/gpu-a100}.yaml, flat
    keys (walltime, gpus_per_node, max_workers at the top) in --set and in a card file of its own."""
    a100 = load_card("slurm/a100")
    for name in ("config/parsl/slurm/gpu-a100.yaml", "slurm/gpu-a100", "config/parsl/slurm/gpu-a100"):
        assert load_card(name) == a100, name
    assert load_card("config/parsl/slurm/cpu.yaml") == load_card("slurm/cpu") and load_card("config/parsl/local.yaml") == load_card("local")
    c = load_card("config/parsl/slurm/gpu-a100.yaml", ("walltime=04:00:00", "gpus_per_node=2", "max_workers=2", "provider.partition=a100"))
    assert (c.workers, c.provider.walltime, c.provider.gpus_per_node, c.provider.partition) == (2, 4 * 3600, 2, "a100")
    assert c.provider.cores_per_node == a100.provider.cores_per_node  # the rest of the card is kept
    (project / "old.yaml").write_text('type: slurm\npartition: gpu\nmax_blocks: 4\nwalltime: "00:30:00"\ngpus_per_node: 1\nmax_workers: 1\n')
    old = load_card("old.yaml")
    assert (old.executor, old.workers, old.provider.type, old.provider.walltime, old.provider.max_blocks) == ("htex", 1, "slurm", 1800, 4)
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": "quadratic"}], "samplers": [{"name": "hmc"}]})
    r = cli("workflow", "llc", "-n", "--parsl-card", "config/parsl/slurm/gpu-a100.yaml", "--set", "max_workers=1", "--set", "max_blocks=3", cwd=project)
    assert r.returncode == 0 and "executor: htex, 3 task(s) at once" in r.stdout, r.stdout + r.stderr
    (project / "both.yaml").write_text("walltime: 1h\nprovider: {walltime: 2h}\n")
    for args, msg in [
        (("--parsl-card", "both.yaml"), "both.yaml: walltime: is an alias of provider.walltime, which is also given; keep one"),
        (("--parsl-card", "slurm/gpu-a100", "--set", "walltime=soon"), "walltime: 'soon' is not a duration"),
        (
            ("--parsl-card", "config/parsl/slurm/gpu-h100.yaml"),
            "no such file, card or Snakemake profile; available cards: local, local-gpu, local-processes, slurm/a100, slurm/cpu",
        ),
    ]:
        r = cli("workflow", "llc", "--dry-run", *args, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_original_cli_spellings(project):
    """The original Lambda-Hat's `workflow sample` (the llc workflow) and --backend
    local|slurm-cpu|slurm-gpu (or LAMBDA_HAT_BACKEND, which a flag given overrides)."""
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": "quadratic"}], "samplers": [{"name": "hmc"}]})
    llc = cli("workflow", "llc", "-n", cwd=project)
    assert llc.returncode == 0 and cli("workflow", "sample", "-n", cwd=project).stdout == llc.stdout
    for backend, line in [("local", "executor: threads"), ("slurm-cpu", "executor: htex, 32 task(s)"), ("slurm-gpu", "executor: htex, 8 task(s)")]:
        r = cli("workflow", "llc", "-n", "--backend", backend, cwd=project)
        assert r.returncode == 0 and line in r.stdout, (backend, r.stdout + r.stderr)
    r = cli("workflow", "llc", "-n", cwd=project, env={"LAMBDA_HAT_BACKEND": "slurm-gpu"})
    assert r.returncode == 0 and "executor: htex, 8 task(s)" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "--local", cwd=project, env={"LAMBDA_HAT_BACKEND": "slurm-gpu"})
    assert r.returncode == 0 and "executor: threads" in r.stdout, r.stdout + r.stderr
    for args, msg in [
        (("--backend", "slurm-gpu", "--local"), "--local and --backend exclude each other"),
        (("--backend", "gpu"), "'gpu' is not one of"),
        (("--local", "--profile", "local"), "--local and --profile exclude each other"),  # the spelling given, not --parsl-card
        (("--parsl-card", "local", "--backend", "local"), "--parsl-card and --backend exclude each other"),
        # click's own usage errors, one line as every other bad input (they had been four, with the usage)
        (("--verbose",), "error: No such option '--verbose'. (see lambda-hat workflow llc --help)"),
        (("-T", "-1"), "error: Invalid value for '--retries' / '--restart-times' / '-T': -1 is not in the range x>=0. (see lambda-hat workflow llc --help)"),
    ]:
        r = cli("workflow", "llc", "-n", *args, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.splitlines()) == 1, (args, r.stderr)
    # its commands that take another form here, with their options as its docs give them: one line naming that form
    for args, msg in [
        (("diagnose-experiment", "--experiment", "dev", "--mode", "light"), "here `lambda-hat workflow llc --promote` plots every target and run"),
        (("diagnose", "--run-dir", "runs/x"), "a run's trace.nc opens in arviz"),
        (("diagnose-targets", "--experiment", "dev"), "`lambda-hat workflow llc --promote`"),
        (("build", "--config-yaml", "c.yaml", "--target-id", "tgt_abc123"), "targets are trained as tasks of `lambda-hat workflow llc`"),
        (("sample", "--help"), "samplers run as tasks of `lambda-hat workflow llc`"),
        (("artifacts", "tb"), "`lambda-hat artifacts tb` is the original Lambda-Hat's command: here there are no TensorBoard logs"),
        (("workflow", "tune", "--config", "x.yaml"), "a grid of experiments is a sweep file"),
        (("workflow", "optuna", "--config", "config/optuna_demo.yaml", "--local"), "`lambda-hat workflow optuna` is the original Lambda-Hat's command"),
    ]:
        r = cli(*args, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert "diagnose" not in cli("--help", cwd=project).stdout and "No such command 'nosuch'" in cli("nosuch", cwd=project).stderr
    # a study's name or a workflow's file in place of the workflow: the command that runs it (it had been click's "No such command")
    sweep = {"command": "true {outdir}", "rank_by": [{"metric": "score"}], "grid": {"x": [1]}}
    for name in ("kkt_ci", "kkt_full"):
        write_config(project / "config" / "sweeps" / f"{name}.yaml", sweep)
    write_config(project / "mine.yaml", {"targets": [{"model": "quadratic"}], "samplers": ["hmc"]})
    for args, msg in [
        (
            ("workflow", "kkt", "--local"),
            "`lambda-hat workflow kkt`: no such workflow (llc, progressive, sweep); a sweep file runs it: `lambda-hat workflow sweep config/sweeps/kkt_ci.yaml` (also kkt_full)",
        ),
        (
            ("workflow", "mine.yaml"),
            "`lambda-hat workflow mine.yaml`: no such workflow (llc, progressive, sweep); it is an experiments file: `lambda-hat workflow llc --config mine.yaml`",
        ),
    ]:
        r = cli(*args, cwd=project)
        assert r.returncode == 2 and r.stderr == f"error: {msg}\n", (args, r.stderr)
    assert "No such command 'nosuch'" in cli("workflow", "nosuch", cwd=project).stderr
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_key_value_overrides(project):
    p = write_config(project / "config" / "experiments.yaml", {
        "targets": [{"model": "quadratic", "seed": 0}, {"model": "quadratic", "seed": 1}],
        "samplers": [{"name": "hmc", "overrides": {"draws": 300}}, {"name": "mclmc"}]})  # fmt: skip
    r = cli("workflow", "llc", "--dry-run", "samplers.0.overrides.draws=100", "targets.1.seed=5", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("overrides: samplers.0.overrides.draws=100 targets.1.seed=5\n") and "quadratic/s5" in r.stdout
    plan = load_plan(p, ("samplers.0.overrides.draws=100", "samplers.1.overrides={draws: 7, chains: 2}"))
    assert plan.runs[0].sampler.draws == 100 and (plan.runs[1].sampler.draws, plan.runs[1].sampler.chains) == (7, 2)
    # the task IDs come from the resolved config: an override equal to the file's value is the same task
    assert ids(p, ("samplers.0.overrides.draws=300",)) == ids(p)
    assert ids(p, ("samplers.0.overrides.draws=100",))[1]["hmc@quadratic/s0"] != ids(p)[1]["hmc@quadratic/s0"]
    # the index one past a list's end appends an entry, whole or key by key
    plan = load_plan(p, ("+samplers.2={name: sgld, overrides: {draws: 50}}",))
    assert [r.name for r in plan.runs[:3]] == ["hmc", "mclmc", "sgld"] and plan.runs[2].sampler.draws == 50
    assert ids(p, ("samplers.2.name=sgld", "samplers.2.overrides.draws=50")) == ids(p, ("samplers.2={name: sgld, overrides: {draws: 50}}",))
    for bad, msg in [
        (("samplers.0.overrides.drawz=1",), "config/experiments.yaml: samplers[0].drawz: unknown key"),
        (("samplers.5.name=hmc",), "override samplers.5.name: index 5 out of range; samplers has 2 entries (index 2 appends one)"),
        (("~samplers.2",), "override samplers.2: index 2 out of range; samplers has 2 entries"),
        (("draws=100",), "config/experiments.yaml: draws: unknown key"),
        (("samplers.0.overrides.draws=-3",), "samplers[0].draws: must be > 0"),
        (("samplers.0.overrides.draws=[1",), "the value is not valid YAML"),
        (("--force", "nonsense"), "unexpected argument 'nonsense': overrides are KEY=VALUE"),
    ]:
        r = cli("workflow", "llc", "--local", *bad, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_hydra_and_snakemake_spellings(project):
    """Hydra's +KEY=, ++KEY= (set) and ~KEY (remove); Snakemake's -n/--dryrun, -F/--forceall and
    -j/--jobs/--cores N (tasks at once). Bad ones are one-line errors, exit 2, nothing written."""
    p = write_config(project / "config" / "experiments.yaml", {
        "targets": [{"model": "quadratic", "seed": 0}, {"model": "quadratic", "seed": 1}],
        "samplers": [{"name": "hmc", "overrides": {"draws": 300}}]})  # fmt: skip
    assert ids(p, ("+samplers.0.overrides.chains=2",)) == ids(p, ("++samplers.0.overrides.chains=2",)) == ids(p, ("samplers.0.overrides.chains=2",))
    assert ids(p, ("~samplers.0.overrides.draws",)) == ids(p, ("samplers.0.overrides={}",)) != ids(p)
    assert ids(p, ("~samplers.0.overrides.draws=300",)) == ids(p, ("~samplers.0.overrides",))
    assert len(load_plan(p, ("~targets.0",)).targets) == 1 and load_plan(p, ("~targets.0",)).targets[0].seed == 1
    dry = cli("workflow", "llc", "--dry-run", cwd=project)
    for flags in (["-n"], ["--dryrun"]):
        r = cli("workflow", "llc", *flags, cwd=project)
        assert r.returncode == 0 and r.stdout == dry.stdout and "4 task(s) to run (4 new)" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "-F", "-j", "1", "~targets.1", cwd=project)
    assert r.returncode == 0 and "2 task(s) to run (2 forced)" in r.stdout and "1 task(s) at once" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "-k", "--ri", "-r", cwd=project)  # what the engine always does
    assert r.returncode == 0 and r.stdout == dry.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "--use-conda", "--latency-wait", "60", cwd=project)  # no counterpart: accepted, each named once
    assert r.returncode == 0 and r.stdout == dry.stdout and r.stderr.count("note: ") == 2, r.stdout + r.stderr
    assert "tasks run in this Python environment" in r.stderr and "a task's directory is final once it appears" in r.stderr, r.stderr
    for flags in (["--summary"], ["-S"], ["--detailed-summary"], ["-D"]):  # Snakemake's: every task's state, nothing run
        r = cli("workflow", "llc", *flags, cwd=project)
        assert r.returncode == 0 and r.stdout == dry.stdout and not (project / "runs").exists(), r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "--retries", "3", "--parsl-card", "local-processes", cwd=project)  # the card's retries
    assert r.returncode == 0 and "2 task(s) at once, a lost worker's task retried up to 3 times" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "--restart-times", "0", "--parsl-card", "local-processes", cwd=project)
    assert r.returncode == 0 and "executor: htex, 2 task(s) at once\n" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "-T", "2", "--profile", "local-processes", cwd=project)  # Snakemake's short -T
    assert r.returncode == 0 and "2 task(s) at once, a lost worker's task retried up to 2 times" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "lambda_hat", "workflow", "llc", "-n"], cwd=project, capture_output=True, text=True)  # no script on PATH
    assert r.returncode == 0 and r.stdout == dry.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "--unlock", cwd=project)  # Snakemake's after a crash: flock dies with its holder
    assert r.returncode == 0 and r.stdout.startswith("nothing to unlock") and not (project / "runs").exists(), r.stdout + r.stderr
    for flag in ("--touch", "-t"):  # results are found by config and code version, not file times
        r = cli("workflow", "llc", flag, cwd=project)
        assert r.returncode == 0 and r.stdout.startswith("nothing to touch") and not (project / "runs").exists(), r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "--nolock", "--rerun-triggers", "mtime", "params", "code", cwd=project)
    assert r.returncode == 0 and r.stdout == dry.stdout and r.stderr.count("note: ") == 2, r.stdout + r.stderr
    assert "never for file times" in r.stderr and "each task locked by its ID" in r.stderr, r.stderr
    r = cli("workflow", "llc", "--dryrun", "--forceall", "--cores", "3", cwd=project)
    assert r.returncode == 0 and "(4 forced)" in r.stdout and "3 task(s) at once" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "llc", "-n", "--cores", "all", cwd=project)  # Snakemake's: a task per core
    assert r.returncode == 0 and f"{len(os.sched_getaffinity(0))} task(s) at once" in r.stdout, r.stdout + r.stderr
    for bad, msg in [
        (("~targets.0.nope",), "override ~targets.0.nope: targets.0.nope is not in the file; nothing to remove"),
        (("~samplers.0.overrides.draws=7",), "samplers.0.overrides.draws is 300, not 7; nothing removed"),
        (("~targets.4",), "index 4 out of range; targets has 2 entries"),
        (("-j", "0"), "--jobs/--cores/-j: expected a positive integer or 'all', got '0'"),
        (("--jobs", "many"), "--jobs/--cores/-j: expected a positive integer or 'all', got 'many'"),
        (("--cores", "0"), "--jobs/--cores/-j: expected a positive integer or 'all', got '0'"),  # had named --jobs alone
        # Hydra's own settings name what stands for them here (the store, cards, -m)
        (
            ("hydra.run.dir=outputs",),
            "override 'hydra.run.dir=outputs': Hydra's own setting; every task has its own run directory in the store: store_root=DIR",
        ),
        (("-m", "hydra/launcher=submitit_slurm"), "Hydra's own setting; tasks run through an executor card: --parsl-card NAME"),
        (("hydra.launcher.n_jobs=1,2",), "Hydra's own setting; tasks run through an executor card"),
        (("hydra.sweeper.params.x=1",), "Hydra's own setting; -m runs a copy of an entry per value"),
        (("hydra.verbose=true",), "Hydra's own setting; lambda-hat has no Hydra runtime to configure"),
    ]:
        r = cli("workflow", "llc", "--local", *bad, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    r = cli("workflow", "llc", "--cores", "all", "--parsl-card", "slurm/cpu", "--set", "cores_per_node=null", cwd=project)
    assert r.returncode == 2 and "--jobs/--cores/-j all: the card names no provider.cores_per_node" in r.stderr, r.stderr
    assert not (project / "runs").exists() and not (project / "results").exists()


# two targets × two samplers, cheap: what -R and -U select among
TWO_BY_TWO = {
    "targets": [{"model": "quadratic", "seed": 0}, {"model": "quadratic", "seed": 1}],
    "samplers": [{"name": "hmc", "overrides": {"draws": 300}}, {"name": "mclmc", "overrides": {"draws": 300}}],
}


def test_snakemake_forcerun_recomputes_what_it_names_and_downstream(project):
    """-R/--forcerun NAME (repeatable or comma-separated): a sampler's runs, a target with the runs
    on it, a sweep experiment; the rest is reused. A name that matches nothing is a one-line error."""
    write_config(project / "config" / "experiments.yaml", TWO_BY_TWO)

    def forced(*flags):
        r = cli("workflow", "llc", "-n", *flags, cwd=project)
        assert r.returncode == 0, r.stdout + r.stderr
        return sorted(line.split()[0] for line in r.stdout.splitlines() if line.endswith("(forced)"))

    assert forced("-R", "hmc") == ["hmc@quadratic/s0", "hmc@quadratic/s1"]
    assert forced("-R", "quadratic/s1") == ["hmc@quadratic/s1", "mclmc@quadratic/s1", "target"]
    assert forced("-R", "mclmc", "--forcerun", "hmc@quadratic/s0") == forced("-R", "mclmc,hmc@quadratic/s0") == [
        "hmc@quadratic/s0", "mclmc@quadratic/s0", "mclmc@quadratic/s1"]  # fmt: skip
    r = cli("workflow", "llc", "-n", "-R", "nuts", cwd=project)
    assert r.returncode == 2 and r.stderr.startswith("error: --forcerun nuts: names no task") and len(r.stderr.splitlines()) == 1, r.stderr
    write_config(project / "config" / "sweeps" / "toy.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "grid": {"width": [4, 8]}})
    assert cli("workflow", "sweep", "-cn", "toy", "--local", cwd=project).returncode == 0
    r = cli("workflow", "sweep", "-cn", "toy", "--local", "-R", "width=8", cwd=project)
    assert r.returncode == 0 and "1 done, 1 reused" in r.stdout and "done toy/width=8" in r.stderr, r.stdout + r.stderr
    # a store under ~ (a cluster's scratch), from the file or the command line, is the home's
    r = cli("workflow", "sweep", "-cn", "toy", "--local", "store_root=~/scratch/runs", "results_root=~/res", cwd=project, env={"HOME": str(project / "home")})
    assert (
        r.returncode == 0
        and "2 done, 0 reused" in r.stdout
        and (project / "home/scratch/runs/sweep").is_dir()
        and (project / "home/res/toy/results.csv").is_file()
        and not (project / "~").exists()
    ), r.stdout


def test_hydra_config_path_and_name(project):
    """Hydra's -cp/--config-path DIR and -cn/--config-name NAME pick DIR/NAME.yaml on every
    workflow (the directory defaults to the default file's, config/sweeps for a sweep)."""
    doc = {"targets": [{"model": "quadratic", "seed": 0}], "samplers": [{"name": "hmc", "overrides": {"draws": 300}}]}
    write_config(project / "config" / "experiments.yaml", doc)
    write_config(project / "config" / "two.yaml", {**doc, "targets": [{"model": "quadratic", "seed": s} for s in (0, 1)]})
    write_config(project / "elsewhere" / "experiments.yaml", {**doc, "samplers": [{"name": "hmc"}, {"name": "sgld"}, {"name": "mclmc"}]})
    for flags, tasks in (
        (["-cn", "two"], 4),
        (["--config-name=two.yaml"], 4),
        (["--config-path", "elsewhere"], 4),
        (["-cp", "elsewhere", "-cn", "experiments"], 4),
        ([], 2),
    ):
        r = cli("workflow", "llc", "-n", *flags, cwd=project)
        assert r.returncode == 0 and f"{tasks} task(s) to run ({tasks} new)" in r.stdout, (flags, r.stdout + r.stderr)
    write_config(project / "config" / "sweeps" / "toy.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "grid": {"width": [4, 8, 16]}})
    r = cli("workflow", "sweep", "-cn", "toy", "-n", cwd=project)
    assert r.returncode == 0 and "3 task(s) to run (3 new)" in r.stdout, r.stdout + r.stderr
    (project / "config" / "sweeps" / "toy.yaml").rename(project / "config" / "sweeps" / "toy.yml")  # Hydra reads either
    r = cli("workflow", "sweep", "-cn", "toy", "-n", cwd=project)
    assert r.returncode == 0 and "3 task(s) to run (3 new)" in r.stdout, r.stdout + r.stderr
    r = cli("workflow", "progressive", "-cp", str(ROOT / "config"), "-cn", "progressive", "--list", cwd=project)
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:2] == ["b32", "32"], r.stdout + r.stderr
    for args, msg in [
        (["llc", "-cn", "nope"], "config/nope.yaml: file not found; --config-name takes one of: experiments, two"),
        (["sweep", "-cn", "tyo"], "config/sweeps/tyo.yaml: file not found; --config-name takes one of: toy"),
        (["llc", "-cp", "nowhere", "-cn", "two"], "nowhere/two.yaml: file not found"),
        (["llc", "--config", "config/two.yaml", "-cn", "two"], "--config and --config-name exclude each other"),
        (["sweep", "config/sweeps/toy.yaml", "-cp", "config"], "SWEEP_FILE and --config-path exclude each other"),
        (["sweep"], "missing SWEEP_FILE: give the file (e.g. config/sweeps/blobs.yaml) or --config-name NAME"),
    ]:
        r = cli("workflow", *args, "-n", cwd=project)
        assert r.returncode == 2 and r.stderr == f"error: {msg}\n", (args, r.stderr)
    # the default file, from outside the project: where it was looked for, and what to do
    r = cli("workflow", "llc", "-n", cwd=project / "elsewhere")
    where = f"config/experiments.yaml: file not found (the default, relative to {project / 'elsewhere'}): run in the project's directory, or give --config FILE"
    assert r.returncode == 2 and r.stderr == f"error: {where}\n", r.stderr
    r = cli("promote", cwd=project / "elsewhere")  # the gallery reads the same default
    assert r.returncode == 2 and r.stderr == f"error: {where}\n" and not (project / "elsewhere" / "results").exists(), r.stderr


def test_snakemake_config_profile_and_short_flags(project):
    """Snakemake's --configfile FILE, --config KEY=VALUE… (values, not a file), --profile CARD and
    -c N (its --cores); Hydra's -c job (--cfg job) and -cd/--config-dir DIR (searched before the
    default folder). `-c all` is either tool's, so an error asks for the long form."""
    doc = {"targets": [{"model": "quadratic", "seed": 0}], "samplers": [{"name": "hmc", "overrides": {"draws": 300}}]}
    write_config(project / "config" / "experiments.yaml", doc)
    write_config(project / "mine" / "experiments.yaml", {**doc, "targets": [{"model": "quadratic", "seed": s} for s in (0, 1)]})
    write_config(project / "mine" / "three.yaml", {**doc, "samplers": ["hmc", "mclmc", "sgld"]})
    dry = cli("workflow", "llc", "-n", cwd=project).stdout
    assert cli("workflow", "llc", "-n", "--configfile", "config/experiments.yaml", cwd=project).stdout == dry
    r = cli("workflow", "llc", "-n", "--config", "samplers.0.draws=100", "targets.0.seed=4", cwd=project)
    assert r.returncode == 0 and r.stdout == cli("workflow", "llc", "-n", "samplers.0.draws=100", "targets.0.seed=4", cwd=project).stdout, r.stderr
    assert r.stdout.startswith("overrides: samplers.0.draws=100 targets.0.seed=4\n") and "quadratic/s4" in r.stdout
    # --configfile FILE beside --config KEY=VALUE (the one option twice): the file and the values
    for args in (["--configfile", "mine/three.yaml", "--config", "targets.0.seed=4"], ["--config", "targets.0.seed=4", "--configfile", "mine/three.yaml"]):
        r = cli("workflow", "llc", "-n", *args, cwd=project)
        assert r.returncode == 0 and "\nmine/three.yaml: 1 target(s), 3 run(s)" in r.stdout and "quadratic/s4" in r.stdout, (args, r.stdout + r.stderr)
    r = cli("workflow", "llc", "-n", "--profile", "slurm/cpu", cwd=project)
    assert r.returncode == 0 and "executor: htex, 32 task(s)" in r.stdout, r.stdout + r.stderr
    once = cli("workflow", "llc", "-n", "--profile", "slurm/cpu", "-j", "3", cwd=project).stdout
    r = cli("workflow", "llc", "-n", "--profile", "slurm/cpu", "--parsl-card", "slurm/cpu", "-j", "3", "--cores", "3", cwd=project)
    assert r.returncode == 0 and r.stdout == once, r.stdout + r.stderr  # the same value twice is fine
    for flags in (["-c", "3"], ["-c3"]):
        r = cli("workflow", "llc", "-n", *flags, cwd=project)
        assert r.returncode == 0 and "3 task(s) at once" in r.stdout, (flags, r.stdout + r.stderr)
    assert cli("workflow", "llc", "-c", "job", cwd=project).stdout == cli("workflow", "llc", "--cfg", "job", cwd=project).stdout
    assert cli("workflow", "llc", "--cfg", "job", "--resolve", cwd=project).stdout == cli("workflow", "llc", "--cfg", "job", cwd=project).stdout
    for flags, tasks in ((["-cd", "mine"], 4), (["--config-dir", "mine", "-cn", "three"], 4), (["-cd", "mine", "-cn", "experiments"], 4)):
        r = cli("workflow", "llc", "-n", *flags, cwd=project)
        assert r.returncode == 0 and f"{tasks} task(s) to run ({tasks} new)" in r.stdout, (flags, r.stdout + r.stderr)
    (project / "mine" / "experiments.yaml").unlink()  # not in --config-dir: the default folder's
    assert cli("workflow", "llc", "-n", "-cd", "mine", cwd=project).stdout == dry
    for args, msg in [
        (["-c", "all"], "-c all: Snakemake's --cores all (a task per core) or Hydra's --cfg all (every task's config printed)? give the long form"),
        (["-c", "x"], "-c: expected a number of cores (Snakemake's -c N, as --cores N) or job (Hydra's -c job, as --cfg job), got 'x'"),
        (["-c", "2", "-j", "2"], "-c 2 and --jobs/--cores: give it once"),
        (["--cores", "2", "--jobs", "4"], "--jobs/--cores/-j given as 2 and 4: give one"),  # one option: the last had won
        (["--profile", "slurm/cpu", "--parsl-card", "local"], "--parsl-card local and --profile slurm/cpu: give one"),
        (["--profile", "slurm/cpu", "--profile", "local"], "--profile given as slurm/cpu and local: give one"),
        (["-c", "0"], "-c: expected a number of cores (Snakemake's -c N, as --cores N) or job (Hydra's -c job, as --cfg job), got '0'"),
        (["-cd", "nowhere"], "--config-dir nowhere: no such directory"),
        (["-cd", "mine", "-cn", "nope"], "nope.yaml: in neither mine nor config; --config-name takes one of: experiments, three"),
        (["--config", "mine/three.yaml", "-cd", "mine"], "--config and --config-dir exclude each other"),
        (["--config", "samplers.0.drawz=1"], "config/experiments.yaml: samplers[0].drawz: unknown key"),
        (
            ["--configfile", "mine/three.yaml", "--config", "config/experiments.yaml"],
            "--config mine/three.yaml and --config config/experiments.yaml: give the file once",
        ),
    ]:
        r = cli("workflow", "llc", "-n", *args, cwd=project)
        assert r.returncode == 2 and r.stderr.startswith(f"error: {msg}") and len(r.stderr.splitlines()) == 1, (args, r.stderr)
    write_config(project / "config" / "sweeps" / "toy.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "grid": {"width": [4, 8]}})
    r = cli("workflow", "sweep", "config/sweeps/toy.yaml", "--config", "grid.width=[4, 8, 16]", "-n", cwd=project)
    assert r.returncode == 0 and "3 task(s) to run (3 new)" in r.stdout, r.stdout + r.stderr
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_snakemake_until_runs_what_it_names_and_what_those_read(project):
    """-U/--until NAME (Snakemake's): only the tasks NAME names (a task function, as --rulegraph
    shows it, or a name -R takes) and those they read run; the tables are left as they were. -R
    takes a task function too."""
    write_config(project / "config" / "experiments.yaml", TWO_BY_TWO)

    def listed(*flags):
        r = cli("workflow", "llc", "-n", *flags, cwd=project)
        assert r.returncode == 0, r.stdout + r.stderr
        return sorted(" ".join(line.split(" [")[0].split()) for line in r.stdout.splitlines() if line.startswith("  "))

    assert listed("-U", "train_target") == ["target quadratic/s0", "target quadratic/s1"]
    assert listed("--until", "hmc@quadratic/s0") == ["hmc@quadratic/s0", "target quadratic/s0"]
    assert listed("-U", "mclmc,quadratic/s1") == ["hmc@quadratic/s1", "mclmc@quadratic/s0", "mclmc@quadratic/s1", "target quadratic/s0", "target quadratic/s1"]
    r = cli("workflow", "llc", "-n", "-R", "train_target", cwd=project)
    assert r.stdout.count("(forced)") == 6, r.stdout  # the targets and every run on them
    r = cli("workflow", "llc", "--local", "-U", "train_target", cwd=project)
    assert r.returncode == 0 and "llc: 2 done" in r.stdout, r.stdout + r.stderr
    assert "--until train_target: 4 task(s) after them not run, results/llc_runs.parquet not rewritten" in r.stdout
    assert not (project / "results").exists() and len(list((project / "runs" / "targets").iterdir())) == 2
    assert "2 done" in cli("workflow", "llc", "-n", cwd=project).stdout  # the targets are reused by the whole sweep
    r = cli("workflow", "llc", "-n", "-U", "nuts", cwd=project)
    assert r.returncode == 2 and r.stderr.startswith("error: --until nuts: names no task") and len(r.stderr.splitlines()) == 1, r.stderr


def test_snakemake_omit_from_and_directory(project, tmp_path):
    """--omit-from NAME (-O, Snakemake's): every task but those NAME names and their dependants
    runs; the tables are left as they were. -d/--directory DIR works from DIR (its config/, runs/,
    results/), wherever the command starts."""
    write_config(project / "config" / "experiments.yaml", TWO_BY_TWO)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def listed(*flags):
        r = cli("workflow", "llc", "-n", "-d", str(project), *flags, cwd=elsewhere)
        assert r.returncode == 0, r.stdout + r.stderr
        return sorted(" ".join(line.split(" [")[0].split()) for line in r.stdout.splitlines() if line.startswith("  "))

    assert listed("--omit-from", "sample_run") == ["target quadratic/s0", "target quadratic/s1"]
    assert listed("--omit-from", "mclmc") == ["hmc@quadratic/s0", "hmc@quadratic/s1", "target quadratic/s0", "target quadratic/s1"]
    assert listed("-O", "quadratic/s1") == ["hmc@quadratic/s0", "mclmc@quadratic/s0", "target quadratic/s0"]
    assert listed("-O", "train_target") == []
    r = cli("workflow", "llc", "--local", "--directory", str(project), "--omit-from", "sample_run", cwd=elsewhere)
    assert r.returncode == 0 and "llc: 2 done" in r.stdout, r.stdout + r.stderr
    assert "--omit-from sample_run: 4 task(s) not run, results/llc_runs.parquet not rewritten" in r.stdout
    assert not (project / "results").exists() and len(list((project / "runs" / "targets").iterdir())) == 2
    assert not any(elsewhere.iterdir())
    # a file named on the command line is read from where the command ran, if it is there (as
    # Snakemake's --configfile), else from DIR
    write_config(elsewhere / "mine.yaml", {**TWO_BY_TWO, "samplers": [TWO_BY_TWO["samplers"][0]]})
    for flags, file in ((["--configfile", "mine.yaml"], elsewhere / "mine.yaml"), (["config/experiments.yaml"], "config/experiments.yaml")):
        r = cli("workflow", "llc", "-n", "-d", str(project), *flags, cwd=elsewhere)
        assert r.returncode == 0 and r.stdout.startswith(f"{file}: 2 target(s)"), r.stdout + r.stderr
    assert r.stdout.count("done") == 3 and "(new)" in r.stdout  # DIR's store: the targets trained above
    for flags, msg in (
        (["-O", "nuts"], "--omit-from nuts: names no task"),
        # an empty name had left -R and -O without effect and made -U run nothing, all with exit 0
        (["-U", ""], "--until '': an empty name; give a task function"),
        (["-R", "hmc,"], "--forcerun 'hmc,': an empty name; give a task function"),
        (["-d", str(tmp_path / "missing")], f"--directory {tmp_path / 'missing'}: no such file"),
    ):
        r = cli("workflow", "llc", "-n", *flags, cwd=project)
        assert r.returncode == 2 and r.stderr.startswith(f"error: {msg}") and len(r.stderr.splitlines()) == 1, r.stderr


def test_snakemake_dag_rulegraph_and_quiet(project):
    """Snakemake's --dag prints the task graph as Graphviz dot (done tasks dashed), --rulegraph
    the graph of its task functions and --list-rules (-l) their names, running nothing; -q runs
    without progress lines; --show-failed-logs prints the end of each failed task's log."""
    doc = {"targets": [{"model": "quadratic", "seed": s} for s in (0, 1)], "samplers": ["hmc", "mclmc"]}
    write_config(project / "config" / "experiments.yaml", doc)

    def dot(*args, cwd=project):
        r = cli(*args, cwd=cwd)
        assert r.returncode == 0 and r.stdout.startswith("digraph lambda_hat {") and r.stdout.rstrip().endswith("}"), r.stdout + r.stderr
        nodes = dict(re.findall(r'^  (\d+) \[label="(.*?)"', r.stdout, re.M))
        return nodes, set(re.findall(r"^  (\d+) -> (\d+);$", r.stdout, re.M)), r.stdout

    nodes, edges, _ = dot("workflow", "llc", "--dag")
    assert sorted(nodes.values()) == sorted(rf"{k}\nquadratic/s{s}" for k in ("target", "hmc", "mclmc") for s in (0, 1))
    assert {(nodes[a].split(r"\n")[1], nodes[b]) for a, b in edges} == {(f"quadratic/s{s}", rf"{k}\nquadratic/s{s}") for k in ("hmc", "mclmc") for s in (0, 1)}
    nodes, edges, _ = dot("workflow", "llc", "--rulegraph", "--promote")
    named = {(nodes[a], nodes[b]) for a, b in edges}
    assert named == {("train_target", "sample_run"), ("train_target", "diagnose_target"), ("sample_run", "diagnose_run")}
    for flag in ("--list-rules", "-l"):
        r = cli("workflow", "llc", flag, "--promote", cwd=project)
        assert r.returncode == 0 and r.stdout.split() == ["train_target", "sample_run", "diagnose_target", "diagnose_run"], r.stdout + r.stderr
    assert not (project / "runs").exists()
    write_config(project / "config" / "sweeps" / "toy.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "grid": {"width": [4, 8]}})
    r = cli("workflow", "sweep", "config/sweeps/toy.yaml", "-q", cwd=project)
    assert r.returncode == 0 and "task(s), 0 already done" not in r.stderr and "[1/2]" not in r.stderr + r.stdout, r.stderr
    assert "sweep: 2 done" in r.stdout
    _, _, text = dot("workflow", "sweep", "config/sweeps/toy.yaml", "--dag")
    assert text.count('style="rounded, dashed"') == 2
    bad = {"command": "echo start; : {outdir}; echo 'went wrong at {x}' >&2; exit 3", "rank_by": [{"metric": "score"}], "grid": {"x": [1, 2]}}
    write_config(project / "config" / "sweeps" / "bad.yaml", bad)
    for flags in ([], ["-U", "bad/x=2"]):  # after the summary, or after --until's line
        r = cli("workflow", "sweep", "config/sweeps/bad.yaml", "-q", "--show-failed-logs", *flags, cwd=project)
        logs = re.findall(r"^log of bad/x=(\d) \((.*?/log\.txt), last 3 lines\):\n    \$ echo start.*\n    start\n    went wrong at \1$", r.stdout, re.M)
        assert r.returncode == 1 and sorted(x for x, _ in logs) == (["2"] if flags else ["1", "2"]), r.stdout + r.stderr
        assert all((project / path).exists() for _, path in logs)
    r = cli("workflow", "sweep", "config/sweeps/bad.yaml", "-q", cwd=project)
    assert r.returncode == 1 and "failed: x=1: went wrong at 1" in r.stdout and "log of" not in r.stdout, r.stdout


def test_every_command_takes_its_file_as_config(project):
    """`--config FILE`, the habit from `workflow llc`, also names the file of `workflow sweep`,
    `status` and `report`, which take it as an argument; given both ways, it must be one file."""
    write_config(project / "config" / "sweeps" / "toy.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "grid": {"width": [4, 8]}})
    toy = "config/sweeps/toy.yaml"
    for args in (["--config", toy], [toy], [toy, "--config", toy]):
        r = cli("workflow", "sweep", *args, "-n", cwd=project)
        assert r.returncode == 0 and "2 task(s) to run (2 new)" in r.stdout, (args, r.stdout + r.stderr)
    # and the other way round: `workflow llc FILE` (the sweep's habit) is --config FILE, beside KEY=VALUEs
    write_config(project / "mine.yaml", {"targets": [{"model": "quadratic", "seed": 0}], "samplers": ["sgld"]})
    for args in (["mine.yaml"], ["targets.0.seed=4", "mine.yaml"], ["mine.yaml", "--config", "mine.yaml"]):
        r = cli("workflow", "llc", *args, "-n", cwd=project)
        assert r.returncode == 0 and "\nmine.yaml: 1 target(s), 1 run(s)" in f"\n{r.stdout}", (args, r.stdout + r.stderr)
        assert ("quadratic/s4" in r.stdout) == ("targets.0.seed=4" in args), r.stdout
    for flag in ("--config", "--configfile"):  # Snakemake's spelling too
        r = cli("status", flag, toy, cwd=project)
        assert r.returncode == 0 and "0 done" in r.stdout and "tests.tasks:toy" not in r.stderr, r.stdout + r.stderr
    r = cli("report", "--configfile", toy, "--no-plots", cwd=project)
    assert r.returncode == 0 and (project / "results" / "sweeps" / "toy" / "summary_report.md").exists(), r.stdout + r.stderr
    for args, msg in [
        (
            ["workflow", "sweep", toy, "--config", "config/sweeps/other.yaml", "-n"],
            f"SWEEP_FILE {toy} and --config config/sweeps/other.yaml: give the file once",
        ),
        (["status", toy, "--config", "config/experiments.yaml"], f"WORKFLOW_FILE {toy} and --config config/experiments.yaml: give the file once"),
        (["report", "--no-plots"], "missing SWEEP_FILE: give the sweep file (e.g. config/sweeps/blobs.yaml)"),
        (["workflow", "llc", "mine.yaml", "--config", "config/experiments.yaml", "-n"], "mine.yaml and --config config/experiments.yaml: give the file once"),
        (["workflow", "llc", "mine.yaml", "other.yml", "-n"], "mine.yaml and other.yml: give one file"),
        (["workflow", "llc", toy, "-n"], f"{toy} is a sweep file, not an experiments file: run it with `lambda-hat workflow sweep {toy}`"),
    ]:
        r = cli(*args, cwd=project)
        assert r.returncode == 2 and r.stderr == f"error: {msg}\n", (args, r.stderr)


def test_hydra_sweep_values():
    assert sweep_values("100,200", "x") == ["100", "200"] and sweep_values("choice(sgld, hmc)", "x") == ["sgld", "hmc"]
    assert sweep_values("range(3)", "x") == ["0", "1", "2"] and sweep_values("range(start=1, stop=7, step=3)", "x") == ["1", "4"]
    assert sweep_values("range(0, 1, 0.25)", "x") == ["0.0", "0.25", "0.5", "0.75"] and sweep_values("range(3, 0, -1)", "x") == ["3", "2", "1"]
    assert sweep_values("[1, 2]", "x") is None and sweep_values("{M: 4, r: 1}", "x") is None and sweep_values("'a,b'", "x") is None
    assert sweep_values("[1, 2],[3]", "x") == ["[1, 2]", "[3]"] and sweep_values("1e-4", "x") is None
    for bad in ("1,,2", "range(2, 2)", "range(1, 5, 0)", "range(a)"):
        with pytest.raises(InputError):
            sweep_values(bad, "x")


def test_hydra_multirun_copies_an_entry_per_value(project):
    """-m/--multirun: a key of a target or sampler entry given several values makes a copy of
    the entry per value (per combination), each run as usual; plain overrides apply to every copy.
    Several values without -m, or on a key outside an entry, are one-line errors (exit 2)."""
    p = write_config(project / "config" / "experiments.yaml", {
        "targets": [{"model": "quadratic", "seed": 0, "overrides": {"model": {"dim": 2}}}],
        "samplers": [{"name": "sgld", "overrides": {"step_size": 1e-3, "batch_size": None, "draws": 100, "burnin": 50, "chains": 2}}]})  # fmt: skip
    plan = load_plan(p, ("samplers.0.draws=200,300", "targets.0.seed=range(2)", "samplers.0.chains=3", "targets.0.model.dim=3"), multirun=True)
    assert [(r.target.seed, r.sampler.draws, r.sampler.chains, r.target.model.dim) for r in plan.runs] == [(s, d, 3, 3) for s in (0, 1) for d in (200, 300)], (
        plan.runs
    )
    both = load_plan(p, ("samplers.0.draws=200,300", "samplers.0.chains=2,3"), multirun=True)
    assert [(r.sampler.draws, r.sampler.chains) for r in both.runs] == [(200, 2), (200, 3), (300, 2), (300, 3)]
    r = cli("workflow", "llc", "--local", "-m", "samplers.0.draws=200,300", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    table = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert list(table["sampler"]) == ["sgld#0", "sgld#1"] and list(table["sampler.draws"]) == [200, 300]
    assert (table["status"] == "done").all() and table["run_id"].nunique() == 2
    r = cli("workflow", "llc", "--cfg", "job", "-m", "samplers.0.draws=200,300", cwd=project)  # Hydra's --cfg job
    shown = yaml.safe_load(r.stdout)
    assert r.returncode == 0 and {v["id"] for v in shown.values()} == set(table["run_id"]) | set(table["target_id"]), r.stdout + r.stderr
    assert sorted((v["sampler"]["draws"], v["target"]) for v in shown.values() if v["kind"] == "llc") == sorted(zip(table["sampler.draws"], table["target_id"]))
    r = cli("workflow", "llc", "--dry-run", "--multirun", "samplers.0.draws=300,200", cwd=project)
    assert r.returncode == 0 and "0 task(s) to run, 3 done" in r.stdout, r.stdout + r.stderr  # copies are tasks like any other
    shutil.rmtree(project / "runs")
    shutil.rmtree(project / "results")
    for bad, msg in [
        (("samplers.0.draws=200,300",), "several values; sweep them with -m/--multirun"),
        (("-m", "jax_enable_x64=true,false"), "-m jax_enable_x64: only a key inside an entry takes several values"),
        # Hydra's group sweep (-m db=mysql,postgresql) on a sampler entry: the form here named
        (("-m", "samplers.0=sgld,hmc"), "-m samplers.0: a whole entry takes one value; sweep its preset with -m samplers.0.name=sgld,hmc"),
        (("-m", "targets.0=dln,quadratic"), "-m targets.0: a whole entry takes one value; sweep a key inside it (-m targets.0.model=…)"),
        # a key of a target's own samplers where it has none: that had been named as -m samplers.0.draws
        (
            ("-m", "targets.0.samplers.0.draws=1,2"),
            "-m targets.0.samplers.0.draws: targets.0 has no samplers of its own (it runs the file's): sweep samplers.0.draws",
        ),
        (("-m", "samplers.7.draws=200,300"), "-m samplers.7.draws: samplers.7 is not an entry of the file (samplers has 1)"),
        (("-m", "samplers.0.draws=200,,300"), "an empty value"),
        # the copy's error says what it is a copy of: samplers[1] alone would be another entry of the file
        (("-m", "samplers.0.draws=200,-1"), "samplers[1].draws: must be > 0, got -1 (samplers[1] is the -m copy of samplers[0] with overrides.draws=-1)"),
        (("-m", "targets.0.seed=0,-2"), "targets[1].seed: must be >= 0, got -2 (targets[1] is the -m copy of targets[0] with seed=-2)"),
        (
            ("-m", "samplers.0.draws=200,200"),
            "duplicates samplers[0] (same resolved config) (samplers[1] is the -m copy of samplers[0] with overrides.draws=200)",
        ),
        (("-m", "samplers.0.draws=200,300", "~samplers.0"), "another override replaced or removed an entry"),
    ]:
        r = cli("workflow", "llc", "--local", *bad, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_overrides_of_a_preset_chosen_by_name(project):
    """Hydra's group.key=value: a key under a preset named in the file (or under a sampler entry)
    is that entry's override, the same resolved config and task IDs as the long form."""
    p = write_config(project / "config" / "experiments.yaml", {
        "targets": [{"model": "dln", "data": "tiny", "seed": 0},
                    {"model": {"kind": "quadratic", "dim": 3}, "samplers": [{"name": "hmc"}]}],
        "samplers": [{"name": "sgld", "overrides": {"chains": 2}}]})  # fmt: skip
    short = ("targets.0.model.widths=[4,3,4]", "targets.0.data.n=300", "targets.0.training.steps=50",
             "samplers.0.draws=100", "targets.1.samplers.0.warmup=40", "targets.1.model.dim=4")  # fmt: skip
    long = ("targets.0.overrides.model.widths=[4,3,4]", "targets.0.overrides.data.n=300", "targets.0.overrides.training.steps=50",
            "samplers.0.overrides.draws=100", "targets.1.samplers.0.overrides.warmup=40", "targets.1.model.dim=4")  # fmt: skip
    assert ids(p, short) == ids(p, long) != ids(p)
    plan = load_plan(p, short)
    t, q = plan.targets
    assert t.model.widths == (4, 3, 4) and t.data.n == 300 and t.training.steps == 50 and q.model.dim == 4
    assert {r.name: r.sampler.draws for r in plan.runs}["sgld"] == 100 and plan.runs[0].sampler.chains == 2
    assert ids(p, ("samplers.0.seed=7",)) == ids(p, ("samplers.0.overrides.seed=7",)) != ids(p)  # the entry's own key
    # as Hydra picks a group's option before it sets keys in it: an entry set by name, then a key of it, in either order
    picked = ids(p, ("samplers.0={name: mclmc, overrides: {draws: 200}}",))
    assert ids(p, ("samplers.0=mclmc", "samplers.0.draws=200")) == ids(p, ("samplers.0.draws=200", "samplers.0=mclmc")) == picked
    multi = load_plan(p, ("samplers.0.draws=200,300", "samplers.0=mclmc", "targets.1.samplers.0=mclmc"), multirun=True)
    assert sorted((r.name, r.sampler.kind, r.sampler.draws) for r in multi.runs if r.target.label == t.label) == [
        ("mclmc#0", "mclmc", 200),
        ("mclmc#1", "mclmc", 300),
    ]
    for bad, msg in [
        (("targets.0.model.widht=3",), "config/experiments.yaml: targets[0].model.widht: unknown key; allowed keys: kind, widths, rank"),
        (("samplers.0.drawz=1",), "config/experiments.yaml: samplers[0].drawz: unknown key"),
        (("targets.1.data.n=5",), "targets[1].overrides.data: not used by model kind 'quadratic'"),
        (("targets.0.samplers.0.draws=5",), "override targets.0.samplers.0.draws: targets.0.samplers is not in the file; index 0 needs a list there"),
    ]:
        r = cli("workflow", "llc", "--local", *bad, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_a_malformed_override_names_the_file_and_shows_one_of_its_own():
    """A pair that is no KEY=VALUE is an error naming the file it was to change, with an example
    of that file's keys (a card's for --set), not the experiments file's for every workflow."""
    from lambda_hat.engine.sweep import load_sweep
    from lambda_hat.studies.progressive.study import load

    card = ROOT / "lambda_hat/parsl_cards/local.yaml"
    for bad in ("=3", "draws", " =1"):
        for loader, path, example in (
            (load_plan, ROOT / "config/experiments.yaml", "samplers.0.overrides.draws=100"),
            (load_sweep, ROOT / "config/sweeps/blobs.yaml", "defaults.lr=0.01"),
            (load, ROOT / "config/progressive.yaml", "stages.1.epochs=5"),
            (load_card, card, "provider.partition=debug"),
        ):
            flag = "--set" if loader is load_card else "override"
            with pytest.raises(InputError) as e:
                loader(path, (bad,))
            assert str(e.value) == f"{path}: {flag} {bad!r}: expected KEY=VALUE (or ~KEY to remove it), e.g. {example}"


def test_overrides_on_sweep_and_progressive(project):
    sweep = write_config(project / "s.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "defaults": {"lr": 0.1}, "grid": {"width": [4, 8]}})
    r = cli("workflow", "sweep", str(sweep), "--dry-run", "defaults.lr=0.01", cwd=project)
    assert r.returncode == 0 and "overrides: defaults.lr=0.01" in r.stdout, r.stderr
    from lambda_hat.engine.sweep import load_sweep

    assert {e.config["lr"] for e in load_sweep(sweep, ("defaults.lr=0.01",)).experiments} == {0.01}
    r = cli("workflow", "sweep", str(sweep), "--dry-run", "defaults.depth=2", cwd=project)
    assert r.returncode == 2 and "defaults.depth: unknown key for tests.tasks:toy" in r.stderr, r.stderr
    # Hydra's several values (without -m, an error in Hydra too) and a bad type name the override, not an experiment;
    # an environment variable's comma is its text
    assert load_sweep(sweep, ("env.CUDA_VISIBLE_DEVICES=0,1",)).spec.env == {"CUDA_VISIBLE_DEVICES": "0,1"}
    for arg, msg in [
        (
            "defaults.lr=0.01,0.1",
            "override 'defaults.lr=0.01,0.1': several values; a sweep file varies a key through its grid, one experiment per value: grid: {lr: [0.01, 0.1]}",
        ),
        ("defaults.lr=[0.01,0.1]", "s.yaml: defaults.lr: expected a number, got [0.01, 0.1]"),
        ("tracking=mlflow,wandb", "override 'tracking=mlflow,wandb': several values; only a task's keys are swept, through the grid; write a list as [a, b]"),
    ]:
        r = cli("workflow", "sweep", str(sweep), "--dry-run", arg, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    cfg = str(ROOT / "config/progressive.yaml")
    r = cli("workflow", "progressive", "--config", cfg, "--list", "stages.1.epochs=5", "stages.2.walltime=1h30m", cwd=project)
    assert r.returncode == 0, r.stderr
    row = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines()}
    assert row["b64"][3] == "5" and row["b128"][5] == "5400s" and row["b32"][5] == "600s"
    r = cli("workflow", "progressive", "--config", cfg, "--list", "stages.7.epochs=5", cwd=project)
    assert r.returncode == 2 and "index 7 out of range; stages has 3 entries" in r.stderr
    r = cli("workflow", "progressive", "--config", cfg, "--list", "stages.0.walltime=soon", cwd=project)
    assert r.returncode == 2 and "stages[0].walltime: 'soon' is not a duration" in r.stderr, r.stderr
    r = cli("workflow", "progressive", "--config", cfg, "--list", "stages.1.epochs=5,10", cwd=project)
    assert r.returncode == 2 and "override 'stages.1.epochs=5,10': several values; a progressive run trains one chain of stages" in r.stderr, r.stderr


def test_one_duration_syntax(project):
    good = {"90": 90, 90: 90, "90s": 90, "30m": 1800, "1h30m": 5400, "2.5m": 150, "1d": 86400, "1d12h": 129600,
            "01:30:00": 5400, "30:00": 1800, "2-00:00:00": 172800, "1-12": 129600,
            "45min": 2700, "2 hours": 7200, "1 day 12 hrs": 129600, "10 sec": 10, "1w": 604800, "1.5 Hours": 5400}  # fmt: skip
    assert {k: parse_duration(k) for k in good} == good
    for bad in ("", "soon", "30m1h", "1h1h", "0", "-5", "1:2:3:4", "00:75:00", True, None, "10ms", "2 hours 1 hour", "hours", "5 fortnights"):
        with pytest.raises(InputError):
            parse_duration(bad)
    assert slurm_time(5400) == "01:30:00" and slurm_time(86400 * 2 + 61) == "2-00:01:01"
    # the same syntax in the experiments file, on the command line and in a card
    p = write_config(project / "config" / "experiments.yaml", {"targets": [{"model": "quadratic"}], "samplers": [{"name": "hmc"}], "task_timeout": "1h30m"})
    assert load_plan(p).config.task_timeout == 5400
    targets, _ = build_tasks(load_plan(p), parse_duration("00:10:00"))
    assert next(iter(targets.values())).timeout == 600
    assert load_card("slurm/cpu", ("provider.walltime=1d",)).provider.walltime == 86400
    for args, msg in [(("--timeout", "1h30"), "--timeout: '1h30' is not a duration"), (("task_timeout=soon",), "task_timeout: 'soon' is not a duration")]:
        r = cli("workflow", "llc", "--dry-run", *args, cwd=project)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    sweep = write_config(project / "s.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "grid": {"width": [4]}})
    r = cli("workflow", "sweep", str(sweep), "--budget", "0", cwd=project)
    assert r.returncode == 2 and "--budget: must be a positive duration" in r.stderr, r.stderr


def test_kkt_variant_names_are_the_original_studys(project):
    pytest.importorskip("torch_geometric")
    from lambda_hat.engine.sweep import load_sweep
    from lambda_hat.engine.typed import build
    from lambda_hat.studies.kkt import study as kkt

    names = {f"{a}_{j}_{f}" for a in ("mlp", "gnn") for j in ("baseline", "jepa_ema", "jepa_simsiam") for f in ("norm", "unnorm")}
    assert set(kkt.VARIANTS) == names
    for f in ("kkt_ci", "kkt_full", "kkt_scaling"):
        assert {e.config["variant"] for e in load_sweep(ROOT / f"config/sweeps/{f}.yaml").experiments} == names
    with pytest.raises(InputError, match="variant: 'mlp_baseline_raw' is not allowed; allowed values: mlp_baseline_norm, mlp_baseline_unnorm"):
        build(kkt.KKTConfig, {"variant": "mlp_baseline_raw"}, "<test>")
    # JEPA alone for every epoch had reported the untrained model's loss as a finished run
    with pytest.raises(InputError, match=r"pretrain_epochs: must be < epochs \(3\) for a jepa_ema variant"):
        build(kkt.KKTConfig, {"variant": "gnn_jepa_ema_norm", "epochs": 3, "pretrain_epochs": 3}, "<test>")
    assert build(kkt.KKTConfig, {"variant": "gnn_jepa_simsiam_norm", "epochs": 3, "pretrain_epochs": 3}, "<test>").epochs == 3  # EMA's only
    with pytest.raises(InputError, match="jepa_weight: must be >= 0"):
        build(kkt.KKTConfig, {"jepa_weight": -0.1}, "<test>")


def test_version_flag():
    from importlib.metadata import version

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lambda-hat, version {version('lambda-hat')}", r.stdout + r.stderr


def test_a_sampler_named_alone_is_its_entry(tmp_path):
    """`samplers: [sgld, hmc]` (also a target's own list) is the list of {name: ...} entries: the
    same task IDs, and overrides reach a named entry (samplers.0.draws=…, samplers.0=NAME)."""
    names = write_config(
        tmp_path / "a.yaml", {"targets": [{"model": "tiny", "data": "tiny"}, {"model": "quadratic", "samplers": ["mclmc"]}], "samplers": ["sgld", "hmc"]}
    )
    entries = write_config(
        tmp_path / "b.yaml",
        {
            "targets": [{"model": "tiny", "data": "tiny"}, {"model": "quadratic", "samplers": [{"name": "mclmc"}]}],
            "samplers": [{"name": "sgld"}, {"name": "hmc"}],
        },
    )
    assert ids(names) == ids(entries) and len(ids(names)[1]) == 3
    assert ids(names, ("samplers.1.draws=100",)) == ids(entries, ("samplers.1.overrides.draws=100",)) != ids(names)
    swapped = load_plan(names, ("samplers.0=vi", "targets.1.samplers.0=sgld"))
    assert sorted(r.label for r in swapped.runs) == ["hmc@tiny/tiny/s0", "sgld@quadratic/s0", "vi@tiny/tiny/s0"]
    bad = write_config(tmp_path / "c.yaml", {"targets": [{"model": "tiny", "data": "tiny"}], "samplers": ["sgld", "sgldx"]})
    r = cli("workflow", "llc", "--dry-run", "--config", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "samplers[1].name: unknown sampler preset 'sgldx'; available: hmc" in r.stderr, r.stderr
