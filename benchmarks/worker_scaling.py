"""The same CPU-bound sweep with 1 and with 2 workers (threads card, one task process each,
pinned to its worker's share of the cores): wall time of each and the speed-up (goal: ≥ 1.8×
on 2 cores).
Run: .venv/bin/python benchmarks/worker_scaling.py"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LH = [str(Path(sys.executable).parent / "lambda-hat")]

# Eight small blob-study trainings (matrix work in XLA, a few seconds each on one core).
SWEEP = {
    "name": "scaling", "task": "lambda_hat.studies.blobs.study:train", "rank_by": [{"metric": "test_loss", "goal": "min"}],
    "defaults": {"d": 256, "h": 64, "batch": 1024, "steps": 400, "n_pairs": 2000},
    "grid": {"lr": [0.005, 0.01, 0.02, 0.04], "init_scale": [0.5, 1.0]},
}  # fmt: skip


def run(workers: int, base: Path) -> float:
    d = base / f"w{workers}"
    d.mkdir(parents=True)
    (d / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    (d / "card.yaml").write_text(yaml.safe_dump({"executor": "threads", "workers": workers}))
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(base / "jax-cache")}  # both runs compile alike
    t0 = time.time()
    r = subprocess.run([*LH, "workflow", "sweep", "sweep.yaml", "--parsl-card", "card.yaml"], cwd=d, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stdout + r.stderr)
    return time.time() - t0


def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    base = Path(tempfile.mkdtemp(prefix="lh-scaling-"))
    try:
        run(1, base / "warm")  # compile once: both timed runs load the same programs from the cache
        one, two = run(1, base), run(2, base)
        print(f"cores={os.cpu_count()} experiments={len(SWEEP['grid']['lr']) * len(SWEEP['grid']['init_scale'])}")
        print(f"1 worker {one:.1f} s, 2 workers {two:.1f} s: speed-up {one / two:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
