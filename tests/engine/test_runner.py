"""The task runner and store: reuse, failures, dependants, timeouts, kills, HTEX."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, cli
from lambda_hat.engine.cards import Card
from lambda_hat.engine.runner import Task, run_tasks
from lambda_hat.engine.store import Store

TESTS = str(Path(__file__).parents[1])


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, str(ROOT)]))


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


CARD = Card(executor="threads", workers=2, strategy_period=0.5)


def test_reuse_failure_and_skipped_dependants(tmp_path):
    a = Task("t", "tasks:noop", {"value": 7}, "a")
    b = Task("t", "tasks:read_dep", {"of": a.id}, "b", deps=(("t", a.id),))
    bad = Task("t", "tasks:boom", {}, "bad")
    child = Task("t", "tasks:read_dep", {"of": bad.id}, "child", deps=(("t", bad.id),))
    grandchild = Task("t", "tasks:noop", {"gc": 1}, "grandchild", deps=(("t", child.id),))
    s = run_tasks([a, b, bad, child, grandchild], tmp_path, CARD)
    st = {o.label: o for o in s.outcomes.values()}
    assert [st[k].status for k in ("a", "b", "bad", "child", "grandchild")] == ["done", "done", "failed", "skipped", "skipped"]
    assert st["bad"].error == "ValueError: boom: this task always fails"
    assert st["grandchild"].error == "bad: ValueError: boom: this task always fails"  # root cause, not the chain
    store = Store(tmp_path)
    assert (store.dir("t", b.id) / "metrics.json").read_text().count("7")
    assert "Traceback" in (store.dir("t", bad.id) / "log.txt").read_text()
    assert store.manifest("t", bad.id)["status"] == "failed" and not store.is_done("t", bad.id)
    # second run: finished tasks are not submitted, the failed one is retried
    s2 = run_tasks([a, b, bad], tmp_path, CARD)
    assert [s2.outcomes[t.id].status for t in (a, b, bad)] == ["reused", "reused", "failed"]
    s3 = run_tasks([a], tmp_path, CARD, force=True)
    assert s3.outcomes[a.id].status == "done"
    # a kind's folder given as the store had read as an empty store; gc found nothing to remove there
    for command in ("status", "gc"):
        r = cli(command, "--store", str(tmp_path / "t"))
        assert r.stderr == f"error: store {tmp_path / 't'}: a folder of tasks inside a store; give the store: --store {tmp_path}\n" and r.returncode == 2, (
            r.stderr
        )
    # as a file's store_root, it had been a new store nested in that folder
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"command: true {{outdir}}\nrank_by: [{{metric: value}}]\ngrid: {{value: [1]}}\nstore_root: {tmp_path / 't'}\n")
    r = cli("workflow", "sweep", str(sweep), "--dry-run", cwd=tmp_path)
    want = f"error: {sweep}: store_root {tmp_path / 't'}: a folder of tasks inside a store; give the store: store_root: {tmp_path}\n"
    assert r.returncode == 2 and r.stderr == want, r.stderr


@pytest.mark.parametrize("where", ["fork", "fresh", "thread"])
def test_a_task_that_returns_no_metrics_mapping_fails(tmp_path, monkeypatch, where):
    """A list, a metric name that is no string, a mapping JSON cannot hold, one metric name given
    two values (nested and dotted), or no return at all
    (os._exit(0)) fail the task with what is wrong. They had been finished tasks: the list's
    metrics.json then ended the sweep's table in a traceback, os._exit(0) left a result with no
    metrics, a tuple key ended the process with "exit code 1" (a thread task: the workflow)."""
    monkeypatch.setenv("LAMBDA_HAT_FORK", "0" if where == "fresh" else "1")
    whats = ["metrics", "none", "list", "tuple_key", "nested_tuple_key", "dotted_twice", "dotted_deep_twice", "dotted_twice_equal"]
    whats += ["exits_quietly"] if where != "thread" else []
    tasks = [Task("t", "tests.tasks:returns", {"what": w}, w, isolate=where != "thread") for w in whats]
    s = run_tasks(tasks, tmp_path, CARD)
    got = {o.label: (o.status, o.error) for o in s.outcomes.values()}
    assert got.pop("metrics") == ("done", None) and got.pop("none") == ("done", None)
    assert got.pop("list") == ("failed", "TypeError: a task returns a mapping of metrics (or None), got list")
    assert got.pop("tuple_key") == ("failed", "TypeError: metric names are strings, got ('a', 1)")
    status, error = got.pop("nested_tuple_key")
    assert status == "failed" and "keys must be str" in error
    # two values under one dotted name (a literal 'acc.val' and acc → val): the trackers and the
    # sweep's table name both acc.val, and one had silently been kept; the same value twice is one
    assert got.pop("dotted_twice") == ("failed", "ValueError: metric 'acc.val' is given twice: 0.5 as 'acc.val', 0.7 as acc → val")
    want = "ValueError: metric 'per.acc.val' is given twice: 0.5 as per → acc → val, 0.7 as per → 'acc.val'"
    assert got.pop("dotted_deep_twice") == ("failed", want)
    assert got.pop("dotted_twice_equal") == ("done", None)
    if where != "thread":
        assert got.pop("exits_quietly") == ("failed", "the task process exited with code 0 before the task returned (os._exit?)")
    assert not got
    assert json.loads((Store(tmp_path).dir("t", tasks[0].id) / "metrics.json").read_text()) == {"score": 1.0}


def test_one_metric_given_twice_as_arrays_is_said():
    """Arrays under one dotted name (a task may return numpy arrays): the message, not numpy's
    "truth value of an array is ambiguous"; equal scalars of any type are one value."""
    import numpy as np

    from lambda_hat.engine.typed import given_twice

    msg = given_twice({"a.b": np.zeros(2), "a": {"b": np.ones(2)}})
    assert msg == "metric 'a.b' is given twice: array([0., 0.]) as 'a.b', array([1., 1.]) as a → b", msg
    assert given_twice({"a.b": np.float64(0.5), "a": {"b": 0.5}}) is None
    assert given_twice({"a.b": float("nan"), "a": {"b": np.nan}}) is None
    assert given_twice({"a.b": [1, 2], "a": {"b": [1, 2]}}) is None


def test_a_command_giving_one_metric_twice_fails(tmp_path):
    """A command's metrics.json with one dotted name given two values fails as a task would."""
    write = 'printf \'%s\' \'{{"acc.val": {v}, "acc": {{"val": 0.7}}}}\' > {outdir}/metrics.json'
    tasks = [Task("t", "", {"v": v}, f"v={v}", command=write) for v in (0.5, 0.7)]
    s = run_tasks(tasks, tmp_path, CARD)
    got = {o.label: (o.status, o.error) for o in s.outcomes.values()}
    assert got == {
        "v=0.5": ("failed", "the command's metrics.json: metric 'acc.val' is given twice: 0.5 as 'acc.val', 0.7 as acc → val"),
        "v=0.7": ("done", None),
    }, got


def test_a_number_named_efficiency_is_a_metric(project):
    """A task's `efficiency` mapping is reported as efficiency; a number of that name is a metric
    (it had ended the sweep's table in a traceback: 'float' object is not iterable)."""
    from conftest import write_config
    from lambda_hat.engine.sweep import load_sweep
    from lambda_hat.workflows.sweep import records

    doc = {"task": "tests.tasks:returns", "rank_by": [{"metric": "score"}], "grid": {"what": ["efficiency_number", "metrics"]}}
    sweep = load_sweep(write_config(project / "s.yaml", doc))
    run_tasks([Task("sweep", "tests.tasks:returns", e.config, e.name) for e in sweep.experiments], project / "runs", CARD)
    recs = {r["experiment_id"]: r for r in records(sweep, Store(project / "runs"))}
    assert recs["what=efficiency_number"]["metrics"] == {"score": 1.0, "efficiency": 0.9} and recs["what=metrics"]["status"] == "done"


@pytest.mark.parametrize("fork", ["1", "0"])
def test_task_processes_get_their_own_environment(tmp_path, monkeypatch, fork):
    """Forked from the server that imported JAX before any task's JAX_* variables, or a fresh
    interpreter: either way each task sees its own, in its own session."""
    monkeypatch.setenv("LAMBDA_HAT_FORK", fork)
    tasks = [Task("t", "tasks:jax_state", {"value": v}, f"x64={v}", env={"JAX_ENABLE_X64": str(v)}) for v in (0, 1, 1, 0)]
    s = run_tasks(tasks, tmp_path, Card(executor="threads", workers=1))
    assert s.ok
    got = [json.loads((Store(tmp_path).dir("t", t.id) / "metrics.json").read_text()) for t in tasks[:2]]
    assert [g["x64"] for g in got] == [False, True]
    assert all(g["sid"] == g["pid"] for g in got) and len({g["pid"] for g in got}) == 2
    assert (got[0]["ppid"] == os.getpid()) == (fork == "0")  # forked: the server's child


def test_forked_task_processes_report_their_exit_status_under_concurrency(tmp_path):
    """Worker threads start and reap forked task processes at the same time; multiprocessing is
    not thread-safe there. Unguarded, 34 of 400 such children read as exit code 255 ("process
    died") whatever they exited with. Here each exits 1: its directory has no task.json."""
    import threading

    from lambda_hat.engine.runner import _Forked

    codes = []

    def worker(k):
        for i in range(25):
            wd = tmp_path / f"{k}-{i}"
            wd.mkdir()
            codes.append(_Forked(str(wd), str(tmp_path), dict(os.environ), None).wait(timeout=60))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(codes) == 100 and set(codes) == {1}, sorted(set(codes))


def test_an_executors_multi_line_error_is_one_line_with_its_cause():
    """Parsl's block failure carries sbatch's stderr over several lines; the table and the
    progress get one line, and its end, where sbatch says what is wrong, is kept."""
    from lambda_hat.engine.runner import _one_line

    msg = "BadStateException: Executor lh failed due to: Error 1:\n\tFailed to start block 0: " + "x" * 400 + "\nsbatch: fatal: no configuration\n"
    line = _one_line(msg)
    assert "\n" not in line and len(line) <= 300 and line.startswith("BadStateException: Executor lh failed due to: Error 1: Failed")
    assert line.endswith("sbatch: fatal: no configuration") and " … " in line
    assert _one_line("short\n  error") == "short error"


def test_ready_tasks_start_highest_priority_first(tmp_path):
    root = Task("t", "tasks:noop", {"value": 0}, "root")
    tasks = [root] + [Task("t", "tasks:noop", {"value": v}, f"p{p}", deps=(("t", root.id),), priority=p, isolate=False) for v, p in ((1, 1), (2, 5), (3, 2))]
    run_tasks(tasks, tmp_path, Card(executor="threads", workers=1))
    started = {t.label: Store(tmp_path).manifest("t", t.id)["started"] for t in tasks[1:]}
    assert sorted(started, key=started.get) == ["p5", "p2", "p1"]


def test_timeout_kills_the_task_process(tmp_path):
    t = Task("t", "tasks:sleeper", {"sleep": 60}, "sleepy", timeout=2)
    fast = Task("t", "tasks:noop", {}, "fast")
    t0 = time.time()
    s = run_tasks([t, fast], tmp_path, CARD)
    assert time.time() - t0 < 30
    assert s.outcomes[t.id].status == "timeout" and "timed out after 2 s" in s.outcomes[t.id].error
    assert s.outcomes[fast.id].status == "done"
    assert not alive(int((Store(tmp_path).dir("t", t.id) / "pid").read_text()))
    assert not Store(tmp_path).is_done("t", t.id)


KILL_SCRIPT = """
import sys
from lambda_hat.engine.cards import Card
from lambda_hat.engine.runner import Task, run_tasks
run_tasks([Task("t", "tasks:sleeper", {"sleep": 60}, "sleepy")], sys.argv[1], Card(executor="threads", workers=1))
"""


def test_killed_workflow_leaves_no_done_directory(tmp_path):
    store = Store(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(store.root)])
    pid_files = []
    for _ in range(200):
        pid_files = list(store.root.glob("t/.tmp-*/pid"))
        if pid_files:
            break
        time.sleep(0.1)
    assert pid_files, "task never started"
    task_pid = int(pid_files[0].read_text())
    proc.send_signal(signal.SIGKILL)  # mid-task: no cleanup code runs in the workflow process
    proc.wait()
    for _ in range(50):  # the task child dies with its parent (PR_SET_PDEATHSIG)
        if not alive(task_pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail("task process outlived the killed workflow")
    assert [d.name for d in (store.root / "t").iterdir() if not d.name.startswith(".")] == []
    assert len(store.leftovers()) == 1
    r = cli("gc", "-n", "--store", str(store.root))  # Snakemake's spelling of --dry-run
    assert r.returncode == 0 and "would remove" in r.stdout and len(store.leftovers()) == 1
    r = cli("artifacts", "ls", "--store", str(store.root))  # the original Lambda-Hat's spelling of `status`
    assert r.returncode == 0 and r.stdout == cli("status", "--store", str(store.root)).stdout and "t: 1 incomplete" in r.stdout, r.stdout
    r = cli("artifacts", "gc", "--ttl-days", "1", "--store", str(store.root))  # of `gc`; younger than a day: kept
    assert r.returncode == 0 and r.stdout == f"{store.root}: nothing to remove\n" and len(store.leftovers()) == 1, r.stdout
    old = time.time() - 2 * 86400
    os.utime(store.leftovers()[0][0], (old, old))
    r = cli("artifacts", "gc", "-n", "--ttl-days", "1", "--store", str(store.root))
    assert r.returncode == 0 and "would remove" in r.stdout, r.stdout
    for bad in ("nan", "inf", "-1", "x"):  # NaN had read as "nothing to remove" (no age is over it); inf is never
        r = cli("gc", "-n", "--ttl-days", bad, "--store", str(store.root))
        assert r.returncode == 2 and r.stderr == f"error: --ttl-days: expected a finite number of days >= 0, got {bad}\n", r.stderr
    r = cli("gc", "--store", str(store.root))
    assert r.returncode == 0 and "removing" in r.stdout and store.leftovers() == []
    r = cli("gc", "--store", str(store.root))
    assert r.returncode == 0 and r.stdout == f"{store.root}: nothing to remove\n", r.stdout
    r = cli("gc", "--store", str(store.root / "nowhere"))  # as `status`: a missing store is bad input
    assert r.returncode == 2 and r.stderr == f"error: store {store.root / 'nowhere'}: no such directory\n", r.stderr


def pinned(root, summary, workers: int) -> list[list[int]]:
    """The cores of each task that was pinned: its share of this machine's, its thread count set
    to it, in blocks that overlap no other's."""
    share = len(os.sched_getaffinity(0)) // workers
    metrics = [json.loads((Store(root).dir("t", i) / "metrics.json").read_text()) for i in summary.outcomes]
    blocks = [m["cores"] for m in metrics if len(m["cores"]) < len(os.sched_getaffinity(0))]
    for m in metrics:
        assert m["omp"] == (str(share) if m["cores"] in blocks else os.environ.get("OMP_NUM_THREADS")), m
    assert all(len(b) == share for b in blocks), blocks
    assert all(set(a) == set(b) or not set(a) & set(b) for a in blocks for b in blocks), blocks
    return blocks


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to share")
def test_task_processes_share_the_cores(tmp_path):
    """Two workers: a task process that runs beside another is pinned to its own half of the
    cores, its thread pools sized to it, instead of both tasks' XLA/BLAS pools fighting over every
    core; one that starts alone is left to the OS."""
    tasks = [Task("t", "tasks:cores", {"value": i, "sleep": 1.0}, f"c{i}") for i in range(4)]
    assert pinned(tmp_path, run_tasks(tasks, tmp_path, CARD), 2)  # they overlap: some were pinned
    lone = [Task("t", "tasks:cores", {"value": 10 + i}, f"lone{i}") for i in range(2)]
    assert not pinned(tmp_path, run_tasks(lone, tmp_path, Card(executor="threads", workers=1)), 1)


def test_htex_card(tmp_path):
    card = Card(executor="htex", workers=2, strategy_period=0.5)
    tasks = [Task("t", "tasks:cores", {"value": i}, f"n{i}") for i in range(4)]
    s = run_tasks(tasks, tmp_path, card)
    assert s.ok and s.count("done") == 4
    m = Store(tmp_path).manifest("t", tasks[0].id)
    assert m["host"] and m["pid"] != os.getpid()  # ran in an HTEX worker process
    if len(os.sched_getaffinity(0)) >= 2:  # Parsl pins each worker to its block; its tasks inherit it
        pinned(tmp_path, s, 2)


def test_a_task_running_long_is_shown_with_its_logs_last_line(tmp_path, monkeypatch):
    """With nothing finishing for HEARTBEAT_SEC, a line per started task: its label, how long it
    has run, and the last line of its log (where the samplers write their progress)."""
    import io
    import threading

    from lambda_hat.engine import progress

    monkeypatch.setattr(progress, "HEARTBEAT_SEC", 1.0)
    stream = io.StringIO()
    seen = []

    def logged() -> bool:
        try:
            return any("sleeping" in p.read_text() for p in tmp_path.glob("t/.tmp-*/log.txt"))
        except OSError:  # finished and renamed meanwhile
            return False

    def status_meanwhile():  # `lambda-hat status` on the store shows it too, from another process
        deadline = time.time() + 60
        while not logged() and time.time() < deadline:
            time.sleep(0.2)
        seen.append(cli("status", "--store", str(tmp_path)))

    watcher = threading.Thread(target=status_meanwhile)
    watcher.start()
    s = run_tasks([Task("t", "tasks:sleeper", {"sleep": 6.0}, "slow")], tmp_path, CARD, progress=progress.Progress(1, stream=stream))
    watcher.join()
    assert s.ok
    r = seen[0]
    assert r.returncode == 0 and "t: 1 running" in r.stdout and "running: slow: " in r.stdout and r.stdout.rstrip().endswith("sleeping 6.0 s"), r.stdout
    beats = [ln for ln in stream.getvalue().splitlines() if ln.startswith("  running slow (0:00:0")]
    assert beats and all(ln.endswith(" sleeping 6.0 s") for ln in beats), stream.getvalue()  # after its time stamp
    assert stream.getvalue().splitlines()[-1].startswith("[1/1] done slow")
