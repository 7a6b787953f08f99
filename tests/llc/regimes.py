"""Targets and assertions shared by the trust tests: linear models and deep linear networks
trained once per process (a module-level cache), the shipped sampler presets, and `check`, the
central property: a run is within tolerance of the truth, or it carries a warning."""

import tempfile
from pathlib import Path

import jax
import yaml

from lambda_hat.engine.runner import Context
from lambda_hat.engine.tasks import call
from lambda_hat.engine.typed import build, plain
from lambda_hat.llc.config import DLN, SAMPLER_KINDS, Data, Training
from lambda_hat.llc.targets import load_posterior, train_target

jax.config.update("jax_enable_x64", True)
PRESETS = Path(__file__).resolve().parents[2] / "lambda_hat" / "llc" / "presets" / "sampler"


def preset(name, **over):
    data = {**yaml.safe_load((PRESETS / f"{name}.yaml").read_text()), **over}
    return build(SAMPLER_KINDS[data["kind"]], data, name)


def target(widths, n, x_dist="gauss_iso", noise=1.0, steps=500, polish=200, gamma=1.0):
    model = DLN(widths=tuple(widths), rank=min(widths))
    sem = {
        "model": plain(model),
        "data": plain(Data(n=n, x_dist=x_dist, noise_scale=noise)),
        "training": plain(Training(steps=steps, lr=0.01, polish_steps=polish)),
        "seed": 0,
        "x64": True,
    }
    wd = Path(tempfile.mkdtemp())
    call(train_target, Context(sem, wd, []))
    return load_posterior(wd, sem, 1.0, gamma), sem["model"]


def codes(m):
    return {w["code"] for w in m["warnings"]}


def check(m, truth, tol):
    """Within tol of the truth, allowing 3 MCSE; a run without warnings within tol itself."""
    err = abs(m["llc_mean"] - truth)
    assert err <= tol * truth + 3 * m["llc_sem"], (m["llc_mean"], truth, m["llc_sem"], m["warnings"])
    assert err <= tol * truth or m["warnings"], (m["llc_mean"], truth, "off by more than the tolerance without a warning")


_targets = {}


def regular(n, x_dist, noise, gamma=1.0, widths=(4, 3)):
    """Linear regression y = Wx + ε, W 3×4 by default: regular, λ = d/2 (6); llc_finite from its Hessian."""
    key = (n, x_dist, noise, gamma, tuple(widths))
    if key not in _targets:
        _targets[key] = target(widths, n, x_dist, noise, gamma=gamma)
    return _targets[key]


def deep_linear(widths, n):
    """A DLN of rank = narrowest width, trained 3 000 steps: one per shape and n (three presets
    share [4, 3, 3, 4] at n = 1e3)."""
    key = (tuple(widths), n, "dln")
    if key not in _targets:
        _targets[key] = target(widths, n, steps=3000)
    return _targets[key]
