"""The task contract: how a task function is declared, what a planned task is, how it ends.

Every task function is declared with @task(ConfigClass, version=N) and called as fn(ctx, cfg)
with its config validated into ConfigClass. A planned Task's ID hashes the function, its code
version, its config and the IDs of the tasks it reads: bumping a version recomputes exactly the
results that code produced, and never mixes them with the old ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable

# Bump when the meaning of stored results changes; every ID changes with it.
SCHEMA_VERSION = 2


class Status(StrEnum):
    """A task's state; a str, so manifests and tables hold the plain word."""

    DONE = "done"  # computed now
    REUSED = "reused"  # found done in the store
    FAILED = "failed"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"  # a task it reads did not finish
    LEFT = "left"  # not started: the --budget would have been exceeded
    INTERRUPTED = "interrupted"  # killed by Ctrl-C: resumes on the next run
    RUNNING = "running"
    MISSING = "missing"  # never run

    @property
    def ok(self) -> bool:
        return self in (Status.DONE, Status.REUSED)


@dataclass
class Outcome:
    id: str
    label: str
    kind: str
    status: Status
    error: str | None = None
    cause: str | None = None  # for a skipped task: what made the task it reads fail
    walltime_sec: float | None = None

    def root_cause(self) -> str:
        return self.cause or f"{self.label}: {self.error}"


def reported(manifest: dict | None, outcome: Outcome | None) -> dict:
    """The manifest a table reports: the stored one, or none where this run failed to redo a done
    task (--force, and its target or executor failed): then this run's outcome speaks."""
    m = manifest or {}
    return {} if outcome and not outcome.status.ok and m.get("status") == Status.DONE else m


def is_forced(force: bool | frozenset, tid: str) -> bool:
    """--force (True: every task) or -R/--forcerun (the IDs it names)."""
    return force is True or (bool(force) and tid in force)


class TaskFailed(Exception):
    """Raised by a task for an expected failure (divergence, bad numerics): no traceback kept."""


@dataclass(frozen=True)
class Declared:
    config: type  # a dataclass the task's config is validated into
    version: int | str | Callable[[dict], int | str]  # a callable reads the plain config
    needs: Callable | None = None  # sweep tasks: needs(cfg) -> [Task], cached tasks it reads
    preload: tuple[str, ...] = ()  # modules imported once by the server its task processes fork from
    requires: tuple[str, ...] = ()  # modules of an optional extra it imports: checked before anything runs


# The optional extras (pyproject.toml) that install a module a task may require
EXTRAS = {"torch": "torch", "torch_geometric": "torch", "peft": "torch", "mlflow": "tracking", "wandb": "tracking"}


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module.split(".")[0])
    return f"; pip install -e '.[{extra}]' (or 'lambda-hat[{extra}]')" if extra else ""


def task(
    config: type,
    version: int | str | Callable[[dict], int | str] = 1,
    needs: Callable | None = None,
    preload: tuple[str, ...] = (),
    requires: tuple[str, ...] = (),
):
    """Declare a task function fn(ctx, cfg). Bump `version` when a change to the code changes
    its results. `needs(cfg)` (sweep tasks) names the cached tasks an experiment reads (data, a
    pretrained model), in dependency order: each runs once for all experiments that need it,
    and the experiment gets their store directories, in that order, as ctx.deps. `preload`:
    heavy modules it imports (jax, optax, …), imported once by the server its task processes
    fork from; only modules that start no thread pool or backend on import (not torch, blackjax).
    `requires`: modules of an optional extra it imports (torch, peft): a workflow with such a task
    to run stops before anything runs where one is not installed, naming the extra."""

    def wrap(fn):
        fn.declared = Declared(config, version, needs, tuple(preload), tuple(requires))
        return fn

    return wrap


@functools.cache
def declared(ref: str) -> tuple[Callable, Declared]:
    """The function a "module:function" reference names, and its declaration."""
    from lambda_hat.engine.typed import InputError, import_ref

    fn = import_ref(ref, "<task>", "task")  # import_ref follows the studies' old module names
    if not isinstance(getattr(fn, "declared", None), Declared):
        raise InputError(f"{ref}: not a task function; declare it with @lambda_hat.engine.tasks.task(ConfigClass, version=N)")
    return fn, fn.declared


def call(fn: Callable, ctx) -> dict:
    """Run a declared task function on ctx, its config validated as the runner does (tests, notebooks)."""
    from lambda_hat.engine.typed import build, given_twice

    out = fn(ctx, build(fn.declared.config, ctx.config, "<task config>"))
    if out is None:
        return {}
    if not isinstance(out, Mapping):  # a list had been stored as a finished task's metrics, and ended the table
        raise TypeError(f"a task returns a mapping of metrics (or None), got {type(out).__name__}")
    if bad := [k for k in out if not isinstance(k, str)]:
        raise TypeError(f"metric names are strings, got {bad[0]!r}")
    if twice := given_twice(dict(out)):  # trackers and the sweep's table name metrics by dotted path
        raise ValueError(twice)
    return dict(out)


def version_of(ref: str, config: dict) -> str:
    v = declared(ref)[1].version
    return str(v(config) if callable(v) else v)


def digest(blob: Any) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass
class Task:
    """One planned task: its store directory is ROOT/<kind>/<id>."""

    kind: str  # store subdirectory
    fn: str  # "module:function" of a @task function
    config: dict  # plain config: hashed into the ID, saved as config.json
    label: str
    deps: tuple[tuple[str, str], ...] = ()  # (kind, id) of tasks whose directories it reads
    timeout: float | None = None
    isolate: bool = True
    env: dict = field(default_factory=dict)  # extra environment for the child process
    executor: str = "lh"  # Parsl executor label: "lh" is the command's card, others run_tasks' `cards`
    command: str | None = None  # a shell task: this command line instead of fn
    priority: float = 0.0  # among tasks ready at once, the highest runs first (e.g. its expected cost)
    version: str = ""  # the code version (default: the function's declared version)
    id: str = ""
    key: str = ""  # the ID without the code version: finds results of other versions

    def __post_init__(self):
        if not self.version:
            self.version = version_of(self.fn, self.config) if not self.command else "1"
        if not self.key:
            self.key = digest(
                {"schema": SCHEMA_VERSION, "kind": self.kind, "fn": self.command or self.fn, "config": self.config, "deps": [i for _, i in self.deps]}
            )
        self.id = self.id or digest([self.key, self.version])
