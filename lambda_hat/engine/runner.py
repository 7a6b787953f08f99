"""The one task runner: skip what is done, submit the rest to Parsl, record every outcome.

A task (tasks.Task) is a declared function called as fn(ctx, cfg) -> dict of metrics, or a shell
command. By default it runs in a child process: the only way to enforce a timeout on C code
(Parsl's walltime does not), to survive a crash in native code, and to fix JAX's precision per
process instead of toggling it globally. A shell task's command is that child process: its
output goes to the task's log, it writes metrics.json into its directory ({outdir}). (Parsl's
bash_app would run it too, but leaves a command past its walltime running and knows no process
group: here a timeout or Ctrl-C kills the command and everything it started.)
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import heapq
import json
import os
import platform
import queue as _queue
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lambda_hat.engine.progress import Progress
from lambda_hat.engine.store import Store, crashpoint, read_json, write_json
from lambda_hat.engine.tasks import Outcome, Status, Task, TaskFailed, call, declared, is_forced
from lambda_hat.engine.typed import given_twice

# arviz < 1 is pinned (pyproject): its daily notice of the 1.x refactor, printed by the first
# process to import it each day, would only land among the progress lines
warnings.filterwarnings("ignore", message="\nArviZ is undergoing a major refactor", category=FutureWarning)

__all__ = ["Context", "Summary", "Task", "TaskFailed", "run_tasks"]
SPEC_FIELDS = [f.name for f in dataclasses.fields(Task)]  # a task as the Parsl app gets it (asdict deep-copies: slow)


@dataclass
class Context:
    config: dict
    workdir: Path
    deps: list[Path]
    # Survives a killed or timed-out attempt (the workdir does not): for checkpoints to resume
    # from. Removed when the task finishes, and before a forced rerun.
    resume_dir: Path | None = None

    def log(self, msg: str) -> None:
        with open(self.workdir / "log.txt", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")


@dataclass
class Summary:
    outcomes: dict[str, Outcome]

    def count(self, status: Status) -> int:
        return sum(o.status == status for o in self.outcomes.values())

    @property
    def ok(self) -> bool:
        """Nothing failed: tasks left unsubmitted by a budget are not failures."""
        return all(o.status.ok or o.status == Status.LEFT for o in self.outcomes.values())

    def line(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in (Status.DONE, Status.REUSED, Status.FAILED, Status.TIMEOUT, Status.SKIPPED)]
        left = self.count(Status.LEFT)
        return ", ".join(parts) + (f", {left} left by the budget" if left else "")


# ---------------------------------------------------------------- executing one task

_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


class _Cores:
    """This process's cores, split into one block per concurrent task process.

    XLA, BLAS, OpenMP and torch size their thread pools by the cores a process may run on: a
    child pinned to its own block gets pools of its share instead of every task's pools fighting
    over all the cores. A child that starts while no other runs stays unpinned: the OS then
    balances it against other programs (a second workflow, another test worker), where a fixed
    block could put two lone tasks on one core. Set for the threads executor (share_cores); an
    HTEX worker is pinned by Parsl (cpu_affinity) and its children inherit that.
    """

    def __init__(self):
        self.lock, self.free, self.running = threading.Lock(), [], 0

    def share(self, workers: int) -> None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        per = len(cores) // workers
        with self.lock:  # more workers than cores: nothing is pinned
            self.free = [cores[i * per : (i + 1) * per] for i in range(workers)] if per else []

    def take(self) -> list[int] | None:
        with self.lock:
            self.running += 1
            return self.free.pop() if self.free and self.running > 1 else None

    def give(self, block: list[int] | None) -> None:
        with self.lock:
            self.running -= 1
            if block:
                self.free.append(block)


_cores = _Cores()
share_cores = _cores.share
_stopping = threading.Event()  # set on Ctrl-C: killed tasks are left incomplete, not "failed"


def kill_children() -> None:
    _stopping.set()
    with _children_lock:
        for p in list(_children):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _where() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "python": platform.python_version(),
    }


@functools.cache
def _versions(cwd: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lambda-hat", "jax", "blackjax", "parsl", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    repo = Path(__file__).resolve().parents[2]
    checkout = (repo / ".git").exists()
    if checkout:  # a source checkout: which commit, and whether it was edited
        out["git"] = _describe(repo)
    # the project the workflow was started in (cwd), where it is another git checkout: the
    # user's own code (a custom target, a sweep's task or command) is versioned there
    project = Path(cwd).resolve()
    if not (checkout and project.is_relative_to(repo)):
        out["project_git"] = _describe(project)
    return {k: v for k, v in out.items() if v}


def _describe(folder: Path) -> str | None:
    """`git describe --always --dirty` of the checkout holding folder; None outside one."""
    try:
        r = subprocess.run(["git", "-C", str(folder), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git installed, or a hung file system
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _call(spec: dict, workdir: Path) -> dict:
    fn, _ = declared(spec["fn"])
    return call(fn, Context(spec["config"], workdir, [Path(d) for d in spec["dep_dirs"]], Path(spec["resume_dir"])))


def command_line(command: str, config: dict, outdir: Path, dep_dirs) -> str:
    """A shell task's command line: {key} is a config value (true/false, null and lists as JSON),
    {outdir} its directory, {deps[i]} the directory of the i-th task it reads."""
    values = {k: json.dumps(v) if isinstance(v, (bool, list, dict)) or v is None else str(v) for k, v in config.items()}
    return fill_command(command, {**values, "outdir": str(Path(outdir).resolve()), "deps": [str(d) for d in dep_dirs]})


def fill_command(template: str, values: dict) -> str:
    """The template with each {field} replaced by its value as one literal word wherever it
    stands: shell-quoted in the open, escaped inside the user's own '…' or "…" (where a quoted
    value would keep its quotes, and a value with a space would split)."""
    formatter, out, quote = string.Formatter(), [], None  # quote: None, "'" or '"' at this point
    for literal, field, spec, conversion in formatter.parse(template):
        out.append(literal)
        escaped = False
        for ch in literal:  # bash's quoting state after the literal text
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "'":
                escaped = True
            elif quote is None and ch in "'\"":
                quote = ch
            elif ch == quote:
                quote = None
        if field is None:
            continue
        value = formatter.format_field(formatter.convert_field(formatter.get_field(field, (), values)[0], conversion), spec)
        if quote == "'":
            out.append(value.replace("'", "'\\''"))
        elif quote == '"':
            out.append("".join("\\" + c if c in '\\"$`' else c for c in value))
        else:
            out.append(shlex.quote(value))
    return "".join(out)


def _last_line(log: Path, start: int = 0) -> str:
    """The last non-blank line the task wrote to its log from byte `start` (past the command line)."""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _one_line(msg: str, limit: int = 300) -> str:
    """An executor's multi-line error (Parsl's block failure with sbatch's stderr) as one line,
    its start and its end kept: the cause is often the last line (`sbatch: fatal: …`)."""
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else f"{msg[: limit // 2 - 1]} … {msg[-(limit // 2 - 2) :]}"


def _error(e: BaseException) -> tuple[str, str]:
    """One line for tables and logs; the full traceback goes to the task directory."""
    msg = str(e) if isinstance(e, TaskFailed) else f"{type(e).__name__}: {e}"
    line = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return line[:300], traceback.format_exc()


def _run_child(spec: dict, workdir: Path, root: Path) -> tuple[Status, dict, str | None]:
    env = {**os.environ, **spec["env"], "LAMBDA_HAT_PARENT": str(os.getpid())}
    env.pop("LAMBDA_HAT_CRASHPOINT", None)  # crash tests target the workflow process
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # workers may share one GPU
    # One JAX compilation cache per store: runs that differ only in seed (or are forced again)
    # load the compiled program instead of spending 0.5–1 s compiling it.
    if not env.get("JAX_COMPILATION_CACHE_DIR"):  # a user's own cache wins
        env["JAX_COMPILATION_CACHE_DIR"] = str(root.resolve() / ".jax-cache")
    # Every program, however short its compilation: a task compiles dozens of small ones (keys,
    # eager ops in libraries) at 10–100 ms each, which a cache hit serves in ~1 ms. At 0.1 s they
    # were compiled anew in each task (an llc run of negligible sampling on the default DLN, its
    # programs cached: 2.6–3.2 s against 2.8–4.1 s, five seeds each, interleaved).
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    p = None
    with open(workdir / "log.txt", "ab") as log:
        block = _cores.take()
        if block:  # a user's own thread counts win
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                env.setdefault(var, str(len(block)))
        try:
            if spec["command"] or not _forks():
                if spec["command"]:
                    line = command_line(spec["command"], spec["config"], workdir, spec["dep_dirs"])
                    log.write(f"$ {line}\n".encode())  # what ran, as Snakemake's -p prints it
                    log.flush()
                    start = log.tell()
                argv = ["bash", "-c", line] if spec["command"] else [sys.executable, "-m", "lambda_hat.engine.runner", str(workdir)]
                p = subprocess.Popen(argv, cwd=spec["cwd"], stdout=log, stderr=log, env=env, start_new_session=True)
            else:
                if not _forkserver_started:  # an HTEX worker: the runner started its own
                    start_forkserver([spec["fn"]])
                p = _Forked(str(workdir), spec["cwd"], env, block)
            with _children_lock:
                _children.add(p)
            if block:  # before the child has started a thread: all it starts inherit the block
                with contextlib.suppress(OSError):  # it may have exited already
                    os.sched_setaffinity(p.pid, block)
            p.wait(timeout=spec["timeout"])
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the whole group: the task's own children too
            p.wait()
            return Status.TIMEOUT, {}, f"timed out after {spec['timeout']:g} s (killed)"
        finally:
            _cores.give(block)
            with _children_lock:
                _children.discard(p)
    died = f"{'signal ' + str(-p.returncode) if p.returncode < 0 else 'exit code ' + str(p.returncode)}"
    if spec["command"]:
        if p.returncode != 0:
            return Status.FAILED, {}, _last_line(workdir / "log.txt", start) or f"command failed with {died}"
        metrics = read_json(workdir / "metrics.json")
        if not isinstance(metrics, dict):
            what = "no metrics.json" if not (workdir / "metrics.json").exists() else "a metrics.json that is not a JSON object"
            return Status.FAILED, {}, f"the command exited 0 but wrote {what} into {{outdir}} (expected a JSON object of metrics)"
        if twice := given_twice(metrics):
            return Status.FAILED, {}, f"the command's metrics.json: {twice}"
        return Status.DONE, metrics, None
    if p.returncode == 0:
        if not (workdir / "metrics.json").exists():  # os._exit(0): it had been a finished task with no metrics
            return Status.FAILED, {}, "the task process exited with code 0 before the task returned (os._exit?)"
        return Status.DONE, read_json(workdir / "metrics.json") or {}, None
    err = read_json(workdir / "error.json")
    if err:
        return Status.FAILED, {}, err["error"]
    return Status.FAILED, {}, f"process died with {died}"


def _forks() -> bool:
    """Task processes fork from a preloaded server (LAMBDA_HAT_FORK=0: fresh interpreters)."""
    import multiprocessing

    return os.environ.get("LAMBDA_HAT_FORK", "1") != "0" and "forkserver" in multiprocessing.get_all_start_methods()


_forkserver_started = False


def start_forkserver(fns: list[str]) -> None:
    """Start (in the background) the server task processes are forked from, with the modules
    the tasks declare (@task preload) already imported: a fresh interpreter spends ~2.5 s
    importing JAX, optax, arviz and the like, more than many a task's own work. Forked before
    any task starts a JAX backend or a thread pool, so each task is still a process of its
    own (real timeouts, crashes contained), with its own threads and accelerators."""
    global _forkserver_started
    if not fns or not _forks():
        return
    import multiprocessing.forkserver as fs

    # Only what tasks declare, not their own modules: one importing torch at the top would load
    # OpenMP into the server, which neither a fork nor the task's OMP_NUM_THREADS gets right.
    mods = sorted({m for fn in fns for m in declared(fn)[1].preload})
    # this module first: its warning filter is in place before the others are imported
    fs.set_forkserver_preload(["lambda_hat.engine.runner", *mods])  # only the first start in a process uses it
    _forkserver_started = True
    threading.Thread(target=fs.ensure_running, daemon=True).start()


# multiprocessing's Process is not thread-safe: start() polls every other live child
# (process._cleanup), and when two threads read one child's exit status from its pipe, the
# second reads EOF, which multiprocessing reports as exit code 255 (a task that succeeded shown
# as "process died"; seen with 2 workers). Starts and status reads take this lock.
_mp_lock = threading.Lock()


class _Forked:
    """A task process forked from the preloaded server, with Popen's pid/wait/returncode.
    (The server exits when this process dies; the task then gets SIGKILL: _die_with_parent.)"""

    def __init__(self, workdir: str, cwd: str, env: dict, block: list[int] | None):
        import multiprocessing

        self.proc = multiprocessing.get_context("forkserver").Process(target=_forked_main, args=(workdir, cwd, env, block))
        try:
            with _mp_lock:
                self.proc.start()
        except (EOFError, ConnectionError) as e:
            # the server died under this worker: its block is being cancelled or its node lost
            raise _server_gone(type(e).__name__) from e
        self.pid = self.proc.pid

    def wait(self, timeout: float | None = None) -> int:
        from multiprocessing.connection import wait

        wait([self.proc.sentinel], timeout)  # readable once the server sent the status
        if self.returncode is None:
            raise subprocess.TimeoutExpired("task", timeout)
        if self.returncode == 255:  # multiprocessing's code for a status the server never sent
            raise _server_gone("no exit status")
        return self.returncode

    @property
    def returncode(self) -> int | None:
        with _mp_lock:
            return self.proc.exitcode


def _server_gone(why: str):
    """Parsl's own WorkerLost, so that the retry handler and the outcome say the task was lost
    (its block cancelled or its node gone), not that it failed."""
    import socket

    from parsl.executors.high_throughput.errors import WorkerLost

    return WorkerLost(f"pid {os.getpid()} (fork server gone: {why})", socket.gethostname())


def _forked_main(workdir: str, cwd: str, env: dict, block: list[int] | None) -> None:
    """A forked task process: what Popen and `python -m lambda_hat.engine.runner` give a fresh
    one (own session, log as stdout/stderr, cwd first on sys.path, its environment, its cores)."""
    import multiprocessing.forkserver as fs

    # Every forked process holds the server's "alive" pipe, which keeps the server running: let
    # go of it, so that the server exits when the workflow does (and this process with it).
    server = getattr(fs, "_forkserver", None)
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    os.setsid()
    if block:  # before any thread starts (the parent pins it too, once it knows the pid)
        os.sched_setaffinity(0, block)
    fd = os.open(Path(workdir) / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    sys.path.insert(0, cwd)
    os.environ.clear()
    os.environ.update(env, LAMBDA_HAT_PARENT=str(os.getppid()))  # the server: it dies with the workflow
    jax = sys.modules.get("jax")  # (the engine imports no science itself)
    if jax:  # imported by the server: JAX read its JAX_* variables then, so apply the task's
        if getattr(sys.modules.get("jax._src.xla_bridge"), "_backends", None):  # a preloaded module started a backend, whose threads a fork loses
            print("task process: the fork server had started JAX (a @task preload module does); starting afresh", flush=True)
            os.execv(sys.executable, [sys.executable, "-m", "lambda_hat.engine.runner", workdir])

        for key, value in env.items():
            name = key.lower()
            if key.startswith("JAX_") and name in jax.config.values:
                jax.config.update(name, _typed_like(jax.config.values[name], value))
    _child_main(workdir)


def _typed_like(current, value: str):
    if isinstance(current, bool):
        return value.strip().lower() in ("1", "true", "yes", "on", "t", "y")
    if isinstance(current, (int, float)):
        return type(current)(value)
    return value


def execute(spec: dict, root: str, *dep_outcomes: Outcome) -> Outcome:
    """Parsl app body: run one task into the store and return its outcome; the task's own
    errors are caught and recorded (only a failing store write escapes, as an exception)."""
    base = {"id": spec["id"], "label": spec["label"], "kind": spec["kind"]}
    for o in dep_outcomes:
        if not o.status.ok:
            return Outcome(**base, status=Status.SKIPPED, error=o.root_cause(), cause=o.root_cause())
    store = Store(Path(root))
    kind, tid = spec["kind"], spec["id"]
    with store.lock(tid):
        if not spec["force"] and store.is_done(kind, tid):  # finished by a concurrent invocation
            return Outcome(**base, status=Status.REUSED)
        resume = store.resume_dir(kind, tid)
        if spec["force"]:
            shutil.rmtree(resume, ignore_errors=True)
        spec = {**spec, "resume_dir": str(resume)}
        tmp = store.begin(kind, tid)
        # one fsync per task, of the manifest that marks it finished: the files before it need none
        write_json(tmp / "config.json", spec["config"], sync=False)
        t0 = time.time()
        manifest = {
            **base,
            "status": Status.RUNNING,
            "started": t0,
            "code_version": spec["version"],
            "key": spec["key"],
            **_where(),
            "versions": _versions(spec.get("cwd", os.getcwd())),
        }
        if spec["isolate"]:
            write_json(tmp / "task.json", spec, sync=False)
            status, metrics, error = _run_child(spec, tmp, store.root)
            if _stopping.is_set():  # interrupted, not failed: leave it for the next run
                shutil.rmtree(tmp, ignore_errors=True)
                return Outcome(**base, status=Status.INTERRUPTED, error="interrupted")
        else:
            try:
                status, metrics, error = Status.DONE, _call(spec, tmp), None
            except Exception as e:
                error, tb = _error(e)
                status, metrics = Status.FAILED, {}
                (tmp / "traceback.txt").write_text(tb)
        if metrics:
            try:
                write_json(tmp / "metrics.json", metrics, sync=False)
            except (TypeError, ValueError) as e:  # a thread task's metrics JSON cannot hold (a child's are JSON)
                status, metrics, error = Status.FAILED, {}, f"its metrics are not JSON: {_error(e)[0]}"
        manifest.update(status=status, finished=time.time(), walltime_sec=time.time() - t0, error=error)
        write_json(tmp / "manifest.json", manifest)  # last: its presence marks the directory finished
        store.commit(tmp, kind, tid)
        if status == Status.DONE:
            if resume.exists():
                shutil.rmtree(resume, ignore_errors=True)
            store.note_version(spec["key"], spec["version"])
    return Outcome(**base, status=status, error=error, walltime_sec=manifest["walltime_sec"])


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the workflow process dies, even by SIGKILL (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != os.environ.get("LAMBDA_HAT_PARENT"):  # it died before prctl
        os._exit(1)


def _child_main(workdir: str) -> None:
    """Entry point of the child process: python -m lambda_hat.engine.runner WORKDIR."""
    _die_with_parent()
    wd = Path(workdir)
    spec = json.loads((wd / "task.json").read_text())
    try:
        write_json(wd / "metrics.json", _call(spec, wd), sync=False)  # metrics that JSON cannot hold fail the task too
    except BaseException as e:
        msg, tb = _error(e)
        print(tb, file=sys.stderr)
        write_json(wd / "error.json", {"error": msg, "traceback": tb}, sync=False)
        sys.exit(1)


# ---------------------------------------------------------------- running a DAG


def _running(store: Store, tasks, since: float) -> list[tuple[str, float, Path]]:
    """(label, seconds, log) of the tasks that have started since `since` (submitted ones may
    still be queued in Parsl; a killed run's leftovers are older): an attempt's temporary
    directory, whose config.json is written as it starts."""
    now, out = time.time(), []
    for t in tasks:
        started = []
        for c in (store.root / t.kind).glob(f".tmp-{t.id}-*/config.json"):
            with contextlib.suppress(OSError):  # finished and renamed meanwhile
                started.append((c.stat().st_mtime, c))
        if started and (latest := max(started))[0] >= since:
            out.append((t.label, now - latest[0], latest[1].parent / "log.txt"))
    return out


def run_tasks(
    tasks: list[Task],
    root: Path,
    card,
    force: bool | frozenset = False,
    progress: Progress | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    budget: float | None = None,
    cards: dict | None = None,
    quiet: bool = False,
) -> Summary:
    """Run `tasks` (dependencies listed before dependants). Reused tasks are never submitted;
    `force`: every task recomputed, or the IDs of those to recompute.

    `on_outcome` sees every outcome as it arrives. With a `budget` (seconds from now), tasks are
    submitted in order, only as many as the card can run at once, and submission stops at the
    first task that would not finish in time by the longest task seen so far; the rest are
    reported with status "left". `cards` maps executor labels to more cards, for tasks that
    name one of them (e.g. a progressive stage with its own card).
    """
    t_start = time.time()
    store = Store(root)
    outcomes: dict[str, Outcome] = {}
    pending: list[Task] = []

    def record(out: Outcome) -> None:
        outcomes[out.id] = out
        if on_outcome:
            on_outcome(out)

    for t in dict((t.id, t) for t in tasks).values():
        if not is_forced(force, t.id) and store.is_done(t.kind, t.id):
            record(Outcome(t.id, t.label, t.kind, Status.REUSED))
        else:
            pending.append(t)
    progress = progress or Progress(len(pending), reused=len(outcomes), quiet=quiet)
    if not pending:
        progress.finish()
        return Summary(outcomes)

    # first: the server's imports (~1.2 s) run while Parsl is imported (~0.3 s) and started
    start_forkserver(sorted({t.fn for t in pending if t.isolate and not t.command}))
    import parsl

    from lambda_hat.engine.cards import parsl_config

    _stopping.clear()
    # Parsl numbers its run directories 000, 001, …: a directory per invocation keeps two
    # concurrent invocations on one store from racing for the same number.
    run_dir = store.root / ".parsl" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    dfk = parsl.load(parsl_config(card, run_dir, cards))
    # Only tasks whose inputs are finished are submitted, the highest Task.priority first, and
    # no more than the card runs at once (unless other cards take tasks too): Parsl would run
    # them in submission order, and the longest started last sets the sweep's wall time.
    window = card.capacity if budget is not None or not cards else len(pending)
    longest = 0.0
    try:
        apps = {label: parsl.python_app(execute, data_flow_kernel=dfk, executors=[label]) for label in ["lh", *(cards or {})]}
        futures: dict[cf.Future, Task] = {}
        by_id: dict[str, cf.Future] = {}
        order = {t.id: i for i, t in enumerate(pending)}
        waiting = {t.id: {i for _, i in t.deps if i in order and i != t.id} for t in pending}
        dependents = collections.defaultdict(list)
        for t in pending:
            for i in waiting[t.id]:
                dependents[i].append(t)
        ready: list[tuple[float, int, Task]] = []
        unsubmitted = {t.id: t for t in pending}

        def release(t: Task) -> None:
            heapq.heappush(ready, (-t.priority, order[t.id], t))

        for t in pending:
            if not waiting[t.id]:
                release(t)
        finished: _queue.SimpleQueue[cf.Future] = _queue.SimpleQueue()  # O(1) per completion, unlike cf.wait over all
        cwd = os.getcwd()

        def submit_more() -> None:
            while ready and len(futures) < window:
                if budget is not None and time.time() - t_start + longest > budget:
                    why = f"budget: {budget:g} s would be exceeded (longest task so far {longest:.0f} s)"
                    for t in sorted(unsubmitted.values(), key=lambda t: order[t.id]):
                        record(Outcome(t.id, t.label, t.kind, Status.LEFT, why))
                    unsubmitted.clear()
                    ready.clear()
                    return
                t = heapq.heappop(ready)[2]
                del unsubmitted[t.id]
                spec = {
                    **{f: getattr(t, f) for f in SPEC_FIELDS},
                    "force": is_forced(force, t.id),
                    "cwd": cwd,
                    "dep_dirs": [str(store.dir(k, i).resolve()) for k, i in t.deps],
                }
                dep_futs = [by_id[i] for _, i in t.deps if i in by_id]
                fut = apps[t.executor](spec, str(store.root), *dep_futs)
                futures[fut], by_id[t.id] = t, fut
                fut.add_done_callback(finished.put)

        submit_more()
        crashpoint("submitted")
        while futures:
            try:
                fut = finished.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except _queue.Empty:
                progress.heartbeat(lambda: _running(store, futures.values(), t_start))
                continue
            t = futures.pop(fut)
            try:
                out = fut.result()
            except Exception as e:  # lost worker, dependency failure inside Parsl, …
                out = Outcome(t.id, t.label, t.kind, Status.FAILED, _one_line(f"{type(e).__name__}: {e}"))
                failed_dep = next((outcomes[i] for _, i in t.deps if i in outcomes and not outcomes[i].status.ok), None)
                if failed_dep:
                    out = Outcome(t.id, t.label, t.kind, Status.SKIPPED, failed_dep.root_cause(), failed_dep.root_cause())
            longest = max(longest, out.walltime_sec or 0.0)
            record(out)
            progress.update(out)
            for d in dependents.pop(t.id, []):
                waiting[d.id].discard(t.id)
                if not waiting[d.id] and d.id in unsubmitted:
                    release(d)
            submit_more()
    except KeyboardInterrupt:
        kill_children()
        raise
    finally:
        dfk.cleanup()
        parsl.clear()
    progress.finish()
    return Summary(outcomes)


if __name__ == "__main__":
    from lambda_hat.engine.runner import _child_main as main  # the module's own classes, not __main__'s

    main(sys.argv[1])
