"""Engine overhead: no-op tasks through the runner vs bare Parsl; planning and rerunning at scale.

    python benchmarks/engine_overhead.py [--tasks 500] [--scale 10000] [--sweep-scale 100000]

Prints, measured side by side in one run:
- ms/task for bare Parsl and for the engine (same thread card), their difference and ratio
  (goal: ≤ 1 ms/task above bare Parsl);
- the wall time of `lambda-hat workflow llc --dry-run` planning --scale tasks (goal ≤ 1 s of
  planning; the command's own start-up, imports included, is printed beside it);
- the wall time of `lambda-hat workflow llc` re-run on a finished sweep of --scale tasks
  (everything reused: config resolution, store checks, aggregation, retry file; goal ≤ 5 s);
- the wall time of `lambda-hat workflow sweep --dry-run` on a command sweep's grid of
  --sweep-scale experiments (default 1e5);
- a task's fixed cost beside the bare start-up of Python + JAX (import, one jitted op): a task
  process through the runner doing the same, training the default DLN (5→3→5, n = 1 000), and an
  llc run on it whose sampling is negligible (HMC, 10 draws: imports, loading the target,
  calibration, compilation, diagnostics, trace), with its
  programs compiled afresh and loaded from the store's compilation cache; each with task
  processes started as fresh interpreters (LAMBDA_HAT_FORK=0) and forked from the runner's
  preloaded server (the default).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lambda_hat.engine.cards import Card, parsl_config  # noqa: E402
from lambda_hat.engine.progress import Progress  # noqa: E402
from lambda_hat.engine.runner import run_tasks, start_forkserver  # noqa: E402
from lambda_hat.engine.tasks import Task, task  # noqa: E402
from lambda_hat.engine.workflow import Options  # noqa: E402
from lambda_hat.llc.config import RunTask, TargetTask  # noqa: E402
from lambda_hat.llc.experiments import load_plan  # noqa: E402
from lambda_hat.workflows.llc import WORKFLOW  # noqa: E402

CARD = Card(executor="threads", workers=2)


@dataclass(frozen=True)
class Index:
    i: int = 0


def bare_noop():
    return {}


@task(Index)
def noop(ctx, cfg):
    return {}


JAX_OP = "import jax, jax.numpy as jnp; jax.jit(lambda x: x + 1)(jnp.zeros(1)).block_until_ready()"


@task(Index, preload=("jax",))
def jax_op(ctx, cfg):
    exec(JAX_OP)
    return {}


@task(TargetTask)
def fake_target(ctx, cfg):
    """Stands in for training so a large store can be filled in seconds."""
    return {"n": 10, "d": 2}


@task(RunTask)
def fake_run(ctx, cfg):
    """Stands in for sampling."""
    return {"llc_mean": 1.0, "llc_std": 0.1, "llc_sem": 0.01, "ess_bulk": 100.0, "ess_tail": 100.0, "r_hat": 1.0, "fge": 10.0, "n": 10, "d": 2}


def bare_parsl(n: int, run_dir: Path) -> float:
    import parsl

    dfk = parsl.load(parsl_config(CARD, run_dir))
    app = parsl.python_app(bare_noop, data_flow_kernel=dfk, executors=["lh"])
    t0 = time.perf_counter()
    for f in [app() for _ in range(n)]:
        f.result()
    sec = time.perf_counter() - t0
    dfk.cleanup()
    parsl.clear()
    return sec


def engine(n: int, root: Path) -> float:
    tasks = [Task("bench", "engine_overhead:noop", {"i": i}, f"noop {i}", isolate=False) for i in range(n)]
    t0 = time.perf_counter()
    s = run_tasks(tasks, root, CARD, progress=Progress(n, stream=open(os.devnull, "w")))
    assert s.line().startswith(f"{n} done"), s.line()
    return time.perf_counter() - t0


def lh(*args) -> tuple[float, str]:
    script = Path(sys.executable).parent / "lambda-hat"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lambda_hat.cli"]
    t0 = time.perf_counter()
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    return time.perf_counter() - t0, r.stdout


def at_scale(n_tasks: int, work: Path) -> None:
    per = 4  # a target and its 4 runs: 5 tasks
    cfg = {
        "targets": [{"model": "quadratic", "seed": i} for i in range(n_tasks // (per + 1))],
        "samplers": [{"name": s} for s in ("sgld", "hmc", "mclmc", "vi")][:per],
    }
    (work / "config").mkdir(parents=True)
    (work / "config" / "experiments.yaml").write_text(yaml.safe_dump(cfg))
    os.chdir(work)
    t0 = time.perf_counter()
    plan = load_plan(Path("config/experiments.yaml"))
    tasks = WORKFLOW.tasks(plan, Options(), CARD)
    plan_sec = time.perf_counter() - t0
    dry, out = lh("workflow", "llc", "--dry-run")
    assert f"{len(tasks)} task(s) to run" in out
    print(f"plan       : {plan_sec:7.3f} s to plan {len(tasks)} tasks in-process (goal <= 1 s); `--dry-run` command {dry:.2f} s in all")
    fake = {"targets": "engine_overhead:fake_target", "llc": "engine_overhead:fake_run"}
    fill = [Task(t.kind, fake[t.kind], t.config, t.label, t.deps, isolate=False, id=t.id, key=t.key, version=t.version) for t in tasks]
    run_tasks(fill, Path("runs"), CARD, progress=Progress(len(fill), stream=open(os.devnull, "w")))
    sec, out = lh("workflow", "llc", "--local")
    assert f"0 done, {len(fill)} reused" in out, out[-2000:]
    print(f"rerun      : {sec:7.3f} s for `lambda-hat workflow llc` on a finished sweep of {len(fill)} tasks (goal <= 5 s)")


def sweep_plan(n: int, work: Path) -> None:
    """A command sweep's grid of n experiments, planned and listed by `--dry-run` (peers' users ask
    for DAGs of 1e5 tasks that build in seconds)."""
    work.mkdir(parents=True)
    os.chdir(work)
    grid = {"a": list(range(100)), "b": list(range(max(n // 100, 1)))}
    Path("grid.yaml").write_text(yaml.safe_dump({"command": "true {a} {b} {outdir}", "version": 1, "rank_by": [{"metric": "x"}], "grid": grid}))
    sec, out = lh("workflow", "sweep", "grid.yaml", "--dry-run")
    k = 100 * len(grid["b"])
    assert f"{k} task(s) to run" in out, out[-500:]
    print(f"sweep plan : {sec:7.3f} s for `lambda-hat workflow sweep --dry-run` to plan and list a grid of {k} experiments (start-up included)")


def startup(work: Path) -> None:
    def bare() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", JAX_OP], check=True)
        return time.perf_counter() - t0

    def task_sec(tasks, root) -> list[float]:
        s = run_tasks(tasks, root, Card(executor="threads", workers=1), progress=Progress(len(tasks), stream=open(os.devnull, "w")))
        assert s.ok, [o.error for o in s.outcomes.values()]
        return [s.outcomes[t.id].walltime_sec for t in tasks]

    bare_sec = min(bare() for _ in range(3))
    env = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "benchmarks"), str(ROOT), env]))
    cfg = {
        "targets": [{"model": "dln", "data": "small", "seed": 0}],
        "samplers": [{"name": "hmc", "overrides": {"warmup": 10, "draws": 10, "seed": s}} for s in (0, 1)],
    }
    start_forkserver(["engine_overhead:jax_op", "lambda_hat.llc.targets:train_target", "lambda_hat.llc.sampling:sample_run"])
    line = f"start-up   : bare Python + JAX (import, one jitted op) {bare_sec:.2f} s"
    for mode, name in (("0", "a fresh interpreter"), ("1", "forked from the preloaded server")):
        os.environ["LAMBDA_HAT_FORK"] = mode
        task = min(task_sec([Task("bench", "engine_overhead:jax_op", {"i": i}, f"jax {i}") for i in range(3)], work / mode / "jax"))
        (work / mode / "llc" / "config").mkdir(parents=True)
        (work / mode / "llc" / "config" / "experiments.yaml").write_text(yaml.safe_dump(cfg))
        os.chdir(work / mode / "llc")
        tasks = WORKFLOW.tasks(load_plan(Path("config/experiments.yaml")), Options(), CARD)
        secs = task_sec(tasks, Path("runs").resolve())  # the target, then the same program twice (seeds 0 and 1)
        line += (f"\n  task process, {name}: the same {task:.2f} s ({task - bare_sec:+.2f} s); training the DLN {secs[0]:.2f} s; "
                 f"an llc run of negligible sampling {secs[1]:.2f} s compiling, {secs[2]:.2f} s with its programs cached")  # fmt: skip
    print(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--scale", type=int, default=10_000)
    ap.add_argument("--sweep-scale", type=int, default=100_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bare_parsl(50, tmp / "warm")  # first load pays imports
        b = bare_parsl(a.tasks, tmp / "bare")
        e = engine(a.tasks, tmp / "engine")
        bm, em = 1e3 * b / a.tasks, 1e3 * e / a.tasks
        print(f"bare Parsl : {bm:7.3f} ms/task ({a.tasks} no-op tasks, threads x2)")
        print(f"engine     : {em:7.3f} ms/task (store, lock, manifest per task)")
        print(f"overhead   : {em - bm:7.3f} ms/task above bare Parsl, ratio {em / bm:.2f}x  (goal <= 1 ms)")
        at_scale(a.scale, tmp / "scale")
        sweep_plan(a.sweep_scale, tmp / "sweep")
        startup(tmp / "startup")


if __name__ == "__main__":
    main()
