"""Runs that differ only in seed (and MCLMC's step_scale) load every compiled program from JAX's
persistent cache (the store's .jax-cache): no seed-dependent constant (a PRNG key closed over)
may make a program another one. HMC's and MCLMC's did, and recompiled 1.2–2.8 s a run; MCLMC's
tuning, with step_scale inside it, 3–6 s."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
from pathlib import Path
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
import numpy as np, jax.numpy as jnp
sys.path.insert(0, sys.argv[2])
from regimes import preset
from lambda_hat.llc.posterior import Posterior, n_beta
from lambda_hat.llc.sampling import estimate

rng = np.random.default_rng(0)
x = rng.standard_normal((500, 4))
y = x @ rng.standard_normal((4, 3)) + rng.standard_normal((500, 3))
loss = lambda w, b: 0.5 * jnp.mean(jnp.sum((b[1] - b[0] @ w.reshape(4, 3)) ** 2, -1))
w = jnp.asarray(np.linalg.lstsq(x, y, rcond=None)[0].ravel())
data = (jnp.asarray(x), jnp.asarray(y))
post = Posterior(w, 500, n_beta(500, 1.0), 1.0, loss, data, float(loss(w, data)))
model = {"kind": "dln", "widths": [4, 3], "rank": 3}
short = {"hmc": {"warmup": 20, "draws": 20}, "mclmc": {"draws": 50}, "sgld": {"draws": 200}, "vi_meanfield": {"steps": 100, "draws": 50}}
again = {"mclmc": {"step_scale": 0.3}}  # applied to the tuned step outside its program
new = {}
for name, over in short.items():
    for seed in (0, 1):
        before = set(Path(sys.argv[1]).iterdir())
        estimate(post, preset(name, **over, seed=seed, **(again.get(name, {}) if seed else {})), model)
        if seed:
            new[name] = sorted(p.name for p in set(Path(sys.argv[1]).iterdir()) - before)
print(json.dumps(new))
"""


def test_a_second_seed_compiles_nothing(tmp_path):
    (tmp_path / "cache").mkdir()
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "cache"), str(Path(__file__).parent)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    new = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(new) == {"hmc", "mclmc", "sgld", "vi_meanfield"}
    assert all(not files for files in new.values()), new


STEPS = r"""
import json, sys
from pathlib import Path
import jax
jax.config.update("jax_enable_x64", True)
compiled = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiled.append(secs) if event == "/jax/core/compile/backend_compile_duration" else None
)
from lambda_hat.engine.runner import Context
from lambda_hat.engine.tasks import call
from lambda_hat.llc.targets import load_posterior, train_target
sem, workdir = json.loads(sys.argv[1]), Path(sys.argv[2])
if sys.argv[3] == "train":
    call(train_target, Context(sem, workdir, []))
else:
    load_posterior(workdir, sem, 1.0, 1.0)
print(len(compiled))
"""


def test_a_target_task_compiles_its_steps_not_each_op(tmp_path):
    """Run eagerly, each JAX op compiles a program of its own (10–60 ms apiece, too short for the
    persistent cache to keep): data generation, initialisation and the losses once cost a
    training task ~70 programs and loading its posterior ~45, 1.5–2.5 s of each task's start."""
    sem = {
        "model": {"kind": "mlp", "in_dim": 3, "out_dim": 2, "width": 4, "depth": 1, "activation": "tanh", "bias": True},
        "data": {"n": 200, "noise_model": "student_t", "noise_scale": 0.5, "source": "teacher", "student_df": 5.0, "x_dist": "mixture"},
        "training": {"batch_size": 32, "lr": 0.01, "optimizer": "adam", "polish_steps": 10, "steps": 50},
        "seed": 1, "x64": True,
    }  # fmt: skip

    def programs(step):
        r = subprocess.run([sys.executable, "-c", STEPS, json.dumps(sem), str(tmp_path), step], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        return int(r.stdout.strip().splitlines()[-1])

    assert programs("train") <= 12
    assert programs("load") <= 1
