"""Engine overhead: no-op tasks through the runner vs bare Parsl, and a no-op rerun of a sweep.

    python benchmarks/engine_overhead.py [--tasks 500] [--sweep 200]

Prints ms/task for bare Parsl and for the engine (same thread card), their difference and
ratio, then the wall time of `lambda-hat workflow llc` re-run on a finished sweep of --sweep
run tasks (everything reused: config resolution, store checks, aggregation, retry file).
Goals: overhead ≤ 2 ms/task above bare Parsl; rerun ≤ 3 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lambda_hat.engine.cards import Card, parsl_config  # noqa: E402
from lambda_hat.llc.config import load_plan  # noqa: E402
from lambda_hat.engine.progress import Progress  # noqa: E402
from lambda_hat.engine.runner import Task, run_tasks  # noqa: E402
from lambda_hat.workflows.llc import build_tasks  # noqa: E402

CARD = Card(executor="threads", workers=2)


def noop(ctx=None):
    return {}


def fake_result(ctx):
    """Stands in for training/sampling so a 200-run store can be filled in seconds."""
    return {"llc_mean": 1.0, "llc_std": 0.1, "llc_sem": 0.01, "ess_bulk": 100.0, "ess_tail": 100.0, "r_hat": 1.0, "fge": 10.0, "n": 10, "d": 2}


def bare_parsl(n: int, run_dir: Path) -> float:
    import parsl

    dfk = parsl.load(parsl_config(CARD, run_dir))
    app = parsl.python_app(noop, data_flow_kernel=dfk, executors=["lh"])
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
    assert s.count("done") == n, s.line()
    return time.perf_counter() - t0


def rerun(n_runs: int, work: Path) -> float:
    per = 4
    cfg = {
        "targets": [{"model": "quadratic", "seed": i} for i in range(n_runs // per)],
        "samplers": [{"name": s} for s in ("sgld", "hmc", "mclmc", "vi")][:per],
    }
    (work / "config").mkdir(parents=True)
    (work / "config" / "experiments.yaml").write_text(yaml.safe_dump(cfg))
    os.chdir(work)
    targets, runs = build_tasks(load_plan(Path("config/experiments.yaml")), None)
    fill = [Task(t.kind, "engine_overhead:fake_result", t.config, t.label, t.deps, isolate=False) for t in [*targets.values(), *runs.values()]]
    run_tasks(fill, Path("runs"), CARD, progress=Progress(len(fill), stream=open(os.devnull, "w")))
    lh = Path(sys.executable).parent / "lambda-hat"
    cmd = [str(lh)] if lh.exists() else [sys.executable, "-m", "lambda_hat.cli"]
    t0 = time.perf_counter()
    r = subprocess.run([*cmd, "workflow", "llc", "--local"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    sec = time.perf_counter() - t0
    assert r.returncode == 0 and f"0 done, {len(fill)} reused" in r.stdout, r.stdout + r.stderr
    return sec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--sweep", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bare_parsl(50, tmp / "warm")  # first load pays imports
        b = bare_parsl(a.tasks, tmp / "bare")
        e = engine(a.tasks, tmp / "engine")
        bm, em = 1e3 * b / a.tasks, 1e3 * e / a.tasks
        print(f"bare Parsl : {bm:7.3f} ms/task ({a.tasks} no-op tasks, threads x2)")
        print(f"engine     : {em:7.3f} ms/task (store, lock, manifest per task)")
        print(f"overhead   : {em - bm:7.3f} ms/task above bare Parsl, ratio {em / bm:.2f}x  (goal <= 2 ms)")
        r = rerun(a.sweep, tmp / "sweep")
        print(f"rerun      : {r:7.3f} s for `lambda-hat workflow llc` on a finished sweep of {a.sweep} runs (goal <= 3 s)")


if __name__ == "__main__":
    main()
