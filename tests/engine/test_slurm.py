"""The SLURM card against a real single-node SLURM cluster on localhost (tests/engine/slurm/cluster.py).

Skipped with the reason where the cluster cannot run (not root, no apt-get for the packages).
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, cli, write_config

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
import cluster  # noqa: E402

CONFIG = {**TINY, "samplers": TINY["samplers"] + [{"name": "hmc", "overrides": {"draws": 60, "warmup": 60, "chains": 2}}]}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    try:
        env = cluster.start(d)
    except cluster.Unavailable as e:
        pytest.skip(f"no SLURM test cluster: {e}")
    yield {"SLURM_CONF": env["SLURM_CONF"]}
    cluster.stop(d)


def slurm_args():
    """The shipped cpu card, adapted to the test cluster only through --set, as a user would."""
    bindir = Path(sys.executable).parent
    sets = [
        "provider.partition=debug", f"provider.worker_init=export PATH={bindir}:$PATH", "provider.cores_per_node=2",
        "provider.mem_per_node=null", "provider.init_blocks=1", "provider.max_blocks=1", "provider.walltime=00:10:00",
        "workers=2", "address=127.0.0.1", "strategy_period=0.5", "heartbeat_period=2", "heartbeat_threshold=8",
    ]  # fmt: skip
    return ["--parsl-card", "parsl_cards/slurm/cpu.yaml", *[a for s in sets for a in ("--set", s)]]


def submit_scripts(project):
    """The job scripts Parsl submitted (parsl.<label>.block-N.<time>, beside their .sh, .stdout, .stderr)."""
    found = project.glob("runs/.parsl/**/submit_scripts/parsl.*")
    return sorted(p for p in found if not p.name.endswith((".sh", ".stdout", ".stderr")))


def test_llc_through_slurm_matches_local(project, slurm, tmp_path):
    write_config(project / "config" / "experiments.yaml", CONFIG)
    r = cli("workflow", "llc", *slurm_args(), cwd=project, env=slurm)
    assert r.returncode == 0, r.stdout + r.stderr
    on_slurm = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert on_slurm["slurm_job_id"].notna().all()  # each run ran inside a SLURM job
    target_manifest = next(project.glob("runs/targets/*/manifest.json")).read_text()
    assert '"slurm_job_id": null' not in target_manifest

    local = tmp_path / "local"
    (local / "config").mkdir(parents=True)
    write_config(local / "config" / "experiments.yaml", CONFIG)
    assert cli("workflow", "llc", "--local", cwd=local).returncode == 0
    here = pd.read_parquet(local / "results" / "llc_runs.parquet")
    assert here["run_id"].tolist() == on_slurm["run_id"].tolist()
    assert here["llc_mean"].tolist() == on_slurm["llc_mean"].tolist()  # deterministic samplers: identical
    assert here["slurm_job_id"].isna().all()

    jobs = submit_scripts(project)
    assert jobs  # the blocks the first run submitted
    r = cli("workflow", "llc", *slurm_args(), cwd=project, env=slurm)
    assert r.returncode == 0 and "0 done, 3 reused" in r.stdout
    assert submit_scripts(project) == jobs  # nothing submitted


def test_cancelled_block_reports_lost_tasks_and_rerun_completes(project, slurm):
    slow = {"name": "sgld", "overrides": {"step_size": 1e-3, "batch_size": None, "draws": 2_000_000, "chains": 1}}
    write_config(project / "config" / "experiments.yaml", {**TINY, "samplers": TINY["samplers"] + [slow]})

    def cancel_when_slow_task_runs():
        for _ in range(600):
            specs = [p.read_text() for p in project.glob("runs/llc/.tmp-*/task.json")]
            if any("2000000" in s for s in specs):
                time.sleep(1)
                subprocess.run("squeue -h -o %i | xargs -r scancel", shell=True, env={**os.environ, **slurm})
                return
            time.sleep(0.1)

    canceller = threading.Thread(target=cancel_when_slow_task_runs)
    canceller.start()
    t0 = time.time()
    r = cli("workflow", "llc", *slurm_args(), "--set", "retries=0", cwd=project, env=slurm)  # lost for good
    canceller.join()
    assert r.returncode == 1, r.stdout + r.stderr
    assert time.time() - t0 < 120
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    lost = df[df["status"] != "done"]  # the slow run, and the fast one if it shared the block
    assert "sgld#1" in lost["sampler"].tolist(), df[["sampler", "status", "error"]]
    assert all("lost" in e.lower() for e in lost["error"]), lost["error"].tolist()

    r = cli("workflow", "llc", *slurm_args(), cwd=project, env=slurm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(lost)} done, {3 - len(lost)} reused" in r.stdout  # only the lost runs ran again


def test_snakemake_profile_runs_on_slurm(project, slurm):
    """A Snakemake SLURM profile as the card (--profile DIR): its partition, runtime and cpus in the
    job script, each Snakemake job a block of one task; only the test cluster's plumbing is --set."""
    write_config(project / "config" / "experiments.yaml", TINY)
    profile = project / "profiles" / "slurm"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text(
        "executor: slurm\njobs: 1\nlatency-wait: 30\ndefault-resources:\n  slurm_partition: debug\n  runtime: 10\n  cpus_per_task: 2\n"
    )
    bindir = Path(sys.executable).parent
    sets = [f"provider.worker_init=export PATH={bindir}:$PATH", "provider.init_blocks=1", "address=127.0.0.1", "strategy_period=0.5"]
    r = cli("workflow", "llc", "--profile", "profiles/slurm", *[a for s in sets for a in ("--set", s)], cwd=project, env=slurm)
    assert r.returncode == 0 and "not used here: latency-wait" in r.stderr, r.stdout + r.stderr
    assert pd.read_parquet(project / "results" / "llc_runs.parquet")["slurm_job_id"].notna().all()
    (script,) = submit_scripts(project)  # one block: jobs: 1
    text = script.read_text()
    assert "#SBATCH --partition=debug" in text and "#SBATCH --time=10\n" in text and "#SBATCH --cpus-per-task=2" in text, text
