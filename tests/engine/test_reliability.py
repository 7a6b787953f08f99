"""Crash safety, concurrency, bad stores, stale retry files, worker loss (issue: reliability)."""

import contextlib
import json
import os
import signal
import subprocess
import time

import pandas as pd
import psutil
import pytest
import yaml

from conftest import LH, ROOT, TINY, cli, fork_servers, task_processes, write_config

TWO = {**TINY, "samplers": TINY["samplers"] + [{"name": "sgld", "overrides": {"step_size": 5e-4, "batch_size": None, "draws": 100, "burnin": 20, "chains": 2}}]}


def store_state(project):
    """(finished task dirs by status, leftover temporary dirs); asserts every final dir is whole."""
    done, other = set(), set()
    for d in project.glob("runs/*/*"):
        if d.name.startswith(".") or d.parent.name.startswith("."):  # temporaries, locks, Parsl logs
            continue
        manifest = json.loads((d / "manifest.json").read_text())  # a final dir always has one
        assert manifest["status"] in ("done", "failed", "timeout")
        if manifest["status"] == "done":
            assert (d / "config.json").exists() and (d / "metrics.json").exists()
            done.add(d.name)
        else:
            other.add(d.name)
    return done, other


@pytest.mark.parametrize(
    "point",
    ["write:manifest.json", "commit", "committed", "submitted", "write:llc_runs.parquet", "write:retry.yaml"],
)
def test_sigkill_anywhere_then_resume(project, point):
    cfg = TWO
    if point == "write:retry.yaml":  # only written when something failed
        cfg = {**TWO, "samplers": TWO["samplers"] + [{"name": "sgld", "overrides": {"step_size": 50.0, "batch_size": None}}]}
    write_config(project / "config" / "experiments.yaml", cfg)
    r = cli("workflow", "llc", "--local", cwd=project, env={"LAMBDA_HAT_CRASHPOINT": point})
    assert r.returncode == -signal.SIGKILL, (point, r.stdout, r.stderr)
    done_before, _ = store_state(project)
    for f in ("llc_runs.parquet", "llc_runs.csv", "retry.yaml"):  # results are whole or absent
        p = project / "results" / f
        if p.exists() and f.endswith("parquet"):
            pd.read_parquet(p)
    # the task processes died with the workflow
    time.sleep(0.5)
    assert not task_processes(project) and not fork_servers(project)

    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == (1 if point == "write:retry.yaml" else 0), r.stdout + r.stderr
    n_bad = len(cfg["samplers"]) - 2
    n_tasks = 1 + len(cfg["samplers"])
    # nothing finished is recomputed; the rest runs (and the diverging run fails again)
    assert f"{n_tasks - len(done_before) - n_bad} done, {len(done_before)} reused, {n_bad} failed" in r.stdout
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert len(df) == len(cfg["samplers"]) and (df["status"] == "done").sum() == 2
    assert store_state(project)[0] >= done_before
    r = cli("gc", cwd=project)
    assert r.returncode == 0 and not list(project.glob("runs/*/.tmp-*"))


def kill_worker_of(project, is_victim) -> None:
    """Kill the HTEX worker whose task (found by its work dir under `project`) `is_victim`."""
    for _ in range(600):  # HTEX workers are not our children: look for the task process by its work dir
        for p, workdir in task_processes(project):
            try:
                if is_victim(json.loads((workdir / "task.json").read_text())["config"]):
                    worker = p.parent()  # the HTEX worker running the task, or the fork server it started
                    if "multiprocessing.forkserver" in " ".join(worker.cmdline()):
                        worker = worker.parent()
                    worker.kill()
                    return
            except (psutil.Error, OSError, ValueError):
                pass
        time.sleep(0.1)
    pytest.fail("the task never started")


def test_killed_htex_worker_fails_its_task_only_without_retries(project):
    slow = {"name": "sgld", "overrides": {"batch_size": None, "draws": 300_000, "chains": 1}}
    write_config(project / "config" / "experiments.yaml", {**TINY, "samplers": TINY["samplers"] + [slow]})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["workflow", "llc", "--parsl-card", "local-processes", "--set", "retries=0"]
    proc = subprocess.Popen([*LH, *args], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_worker_of(project, lambda c: c.get("sampler", {}).get("draws") == 300_000)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, out + err
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert df["status"].tolist() == ["done", "failed"] and "WorkerLost" in df["error"][1], df[["status", "error"]]
    r = cli("workflow", "llc", "--parsl-card", "parsl_cards/local-processes.yaml", cwd=project)
    assert r.returncode == 0 and "1 done, 2 reused" in r.stdout, r.stdout + r.stderr


def test_killed_htex_worker_costs_a_retry_a_failed_task_none(project):
    """The HTEX card's default retries: 1. The task whose worker is killed runs again and
    finishes (its killed attempt is left in the store for gc); a task that fails on its own
    fails once, with its own error."""
    sweep = write_config(project / "s.yaml", {
        "task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "defaults": {"sleep": 4.0},
        "combos": [{"name": "victim", "width": 5}, {"name": "broken", "fail": True, "sleep": 0.0}]})  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [*LH, "workflow", "sweep", str(sweep), "--parsl-card", "local-processes"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    kill_worker_of(project, lambda c: c.get("width") == 5)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1 and "1 done, 0 reused, 1 failed" in out, out + err
    recs = {f.stem: json.loads(f.read_text()) for f in (project / "results/sweeps/s/experiments").glob("*.json")}
    assert recs["victim"]["status"] == "done" and recs["broken"]["status"] == "failed" and "toy failure" in recs["broken"]["error"]
    attempts = [d for d in (project / "runs" / "sweep").iterdir() if d.name.startswith(".tmp-")]
    assert len(attempts) == 1  # the killed attempt: the victim ran twice, the broken task once


def test_retry_handler_retries_lost_workers_only():
    from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

    from lambda_hat.engine.cards import Card, retry_lost

    assert retry_lost(WorkerLost(0, "host"), {}) == 1 and retry_lost(ManagerLost(b"m", "host"), {}) == 1
    assert retry_lost(ValueError("x"), {}) == float("inf") and retry_lost(OSError("disk full"), {}) == float("inf")
    assert (Card(executor="htex").lost_worker_retries, Card().lost_worker_retries, Card(executor="htex", retries=3).lost_worker_retries) == (1, 0, 3)


def test_a_task_started_while_its_fork_server_dies_is_a_lost_worker(monkeypatch, tmp_path):
    """A block being cancelled kills the fork server first: starting a task then reads EOF, which
    must count as a lost worker (retried, reported as lost), not as the task's own failure."""
    import multiprocessing.context

    from parsl.executors.high_throughput.errors import WorkerLost

    from lambda_hat.engine.cards import retry_lost
    from lambda_hat.engine.runner import _Forked

    def dying(self):
        raise EOFError("unexpected EOF")

    monkeypatch.setattr(multiprocessing.context.ForkServerProcess, "start", dying)
    with pytest.raises(WorkerLost) as lost:
        _Forked(str(tmp_path), str(tmp_path), {}, None)
    assert retry_lost(lost.value, {}) == 1 and "fork server gone: EOFError" in str(lost.value)


def test_fork_server_dying_while_a_task_runs_counts_as_lost(tmp_path):
    """The server killed while its task runs never sends the task's status: multiprocessing
    reads EOF and reports exit code 255, which must count as lost too, not as a failed task."""
    from types import SimpleNamespace

    from parsl.executors.high_throughput.errors import WorkerLost

    from lambda_hat.engine.cards import retry_lost
    from lambda_hat.engine.runner import _Forked

    r, w = os.pipe()
    os.write(w, b"x")  # the sentinel readable, as when the server's end closes
    forked = _Forked.__new__(_Forked)
    forked.proc = SimpleNamespace(sentinel=r, exitcode=255)
    with pytest.raises(WorkerLost) as lost:
        forked.wait(1)
    assert retry_lost(lost.value, {}) == 1 and "fork server gone: no exit status" in str(lost.value)
    forked.proc.exitcode = 1  # the task's own failure stays one
    assert forked.wait(1) == 1
    os.close(r), os.close(w)


def test_concurrent_invocations_share_the_store(project):
    a = {**TINY, "samplers": TWO["samplers"]}
    b = {**TINY, "samplers": [TWO["samplers"][0], {"name": "sgld", "overrides": {"step_size": 2e-4, "batch_size": None, "draws": 100, "chains": 2}}]}
    write_config(project / "config" / "a.yaml", a)
    write_config(project / "config" / "b.yaml", b)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [*LH, "workflow", "llc", "--local", "--config", f"config/{n}.yaml"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in "ab"
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = sum(int(o.split(" done,")[0].split()[-1]) for o, _ in outs)
    assert done == 4  # target + 3 distinct runs, each computed by exactly one invocation
    finished, _ = store_state(project)
    assert len(finished) == 4 and not list(project.glob("runs/*/.tmp-*"))


def test_unwritable_store_is_bad_input(project):
    (project / "blocker").write_text("a file where the store's parent should be")
    write_config(project / "config" / "experiments.yaml", {**TINY, "store_root": "blocker/runs"})
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 2 and "store blocker/runs: not writable" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (project / "results").exists()


def test_results_directory_in_the_way_is_bad_input(project):
    """A file where a results directory must go fails before any work (it had failed after every
    task ran, with a traceback); nothing is written."""
    write_config(project / "config" / "experiments.yaml", TINY)
    (project / "results").write_text("a file where the tables should go")
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 2 and r.stderr == "error: results directory results is a file, not a directory\n", r.stderr
    assert not (project / "runs").exists()
    sweep = write_config(project / "s.yaml", {"task": "tests.tasks:noop", "rank_by": [{"metric": "value"}], "grid": {"value": [1]}})
    r = cli("workflow", "sweep", str(sweep), "--local", cwd=project)
    assert r.returncode == 2 and r.stderr == "error: results directory results/sweeps/s: results is a file, not a directory\n", r.stderr
    assert not (project / "runs").exists()


def test_stale_retry_file_is_rejected(project):
    cfg = {**TINY, "samplers": [{"name": "sgld", "overrides": {"step_size": 50.0, "batch_size": None}}]}
    write_config(project / "config" / "experiments.yaml", cfg)
    assert cli("workflow", "llc", "--local", cwd=project).returncode == 1
    # the preset behind the failed run changes: the retry file no longer names those runs
    write_config(project / "config" / "presets" / "sampler" / "sgld.yaml", {"kind": "sgld", "chains": 3})
    before = sorted(p.name for p in project.glob("runs/[!.]*/*"))
    r = cli("workflow", "llc", "--local", "--config", "results/retry.yaml", cwd=project)
    assert r.returncode == 2 and "retry_of: its runs no longer resolve" in r.stderr
    r = cli("workflow", "llc", "--local", "--config", "results/retry.yaml", "targets.0.samplers.0.step_size=1e-3", cwd=project)
    assert r.returncode == 2 and "retry_of: its runs no longer resolve" in r.stderr  # overrides too: the file itself is stale
    assert sorted(p.name for p in project.glob("runs/[!.]*/*")) == before


def test_divergence_stops_early_and_names_the_step(project):
    # 20M steps take over 80 s on a CI core; a divergence in the first tenth must end it sooner
    cfg = {**TINY, "samplers": [{"name": "sgld", "overrides": {"step_size": 50.0, "batch_size": None, "draws": 20_000_000, "chains": 2}}]}
    write_config(project / "config" / "experiments.yaml", cfg)
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 1
    err = pd.read_parquet(project / "results" / "llc_runs.parquet")["error"][0]
    step = int(err.split("at step ")[1].split()[0])
    # a number runs unpreconditioned: an auto run's step (in curvature-preconditioned units) copied over diverges
    assert step < 100 and "lower step_size" in err and "needs precond: curvature" in err, err
    m = yaml.safe_load(open(next(project.glob("runs/llc/*/manifest.json"))))
    assert m["status"] == "failed" and m["walltime_sec"] < 40


def test_full_store_fails_before_work_without_touching_results(project):
    store = project / "store"
    store.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        write_config(project / "config" / "experiments.yaml", {**TINY, "store_root": "store"})
        assert cli("workflow", "llc", "--local", cwd=project).returncode == 0
        existing = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and "/." not in str(p.relative_to(store))}
        # fill the file system to the last block (in one suite run the first run had left it full
        # already: opening the filler failed with ENOSPC)
        with contextlib.suppress(OSError), open(store / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        write_config(project / "config" / "experiments.yaml", {**TINY, "store_root": "store", "samplers": TWO["samplers"]})
        r = cli("workflow", "llc", "--local", cwd=project)
        assert r.returncode == 2 and "store store: not writable (No space left on device)" in r.stderr, r.stderr
        assert {p: p.read_bytes() for p in existing} == existing
    finally:
        subprocess.run(["umount", str(store)])
