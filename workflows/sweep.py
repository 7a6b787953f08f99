"""The sweep workflow: every experiment of a sweep file as a cached task; live table; report."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from pathlib import Path

import click

from lambda_hat.engine.runner import Summary
from lambda_hat.engine.store import Store, read_json, write_json
from lambda_hat.engine.sweep import EXAMPLE, Experiment, Sweep, flat_row, load_sweep, record, select, table
from lambda_hat.engine.tasks import Outcome, Status, Task
from lambda_hat.engine.typed import InputError
from lambda_hat.engine.workflow import Options, Workflow, write_table

KIND = "sweep"


def tasks(sweep: Sweep, experiments: list[Experiment], timeout: float | None) -> dict[str, Task]:
    """A task per experiment, by name; its ID covers the task (or command), its code version,
    its config and the IDs of the tasks it needs."""
    env = sweep.spec.environment
    timeout = timeout or sweep.spec.task_timeout
    s = sweep.spec
    return {
        e.name: Task(
            KIND, s.task or "", e.config, f"{sweep.name}/{e.name}", deps=tuple((u.kind, u.id) for u in e.needs), timeout=timeout,
            isolate=s.isolate or bool(s.command), env=env, command=s.command, version=str(sweep.version),
        )
        for e in experiments
    }  # fmt: skip


def in_order(experiments: list[Experiment], ts: dict[str, Task]) -> list[Task]:
    """File order, each experiment preceded by the needed tasks not already listed; those run
    with the experiments' environment and timeout unless they set their own."""
    out, seen = [], set()
    for e in experiments:
        x = ts[e.name]
        for t in (*e.needs, x):
            if t.id not in seen:
                seen.add(t.id)
                if t is not x:
                    t = dataclasses.replace(t, env={**x.env, **t.env}, timeout=t.timeout or x.timeout)
                out.append(t)
    return out


def records(sweep: Sweep, store: Store, outcomes: dict | None = None, ts: dict[str, Task] | None = None) -> list[dict]:
    """A result record for every experiment of the file, from the store (or this run's outcome);
    read from the store alone (a report), one that a process is running now says so."""
    ts = ts or tasks(sweep, sweep.experiments, None)
    out = []
    for e in sweep.experiments:
        t = ts[e.name]
        m = store.manifest(KIND, t.id)
        metrics = read_json(store.dir(KIND, t.id) / "metrics.json") if m else None
        o = (outcomes or {}).get(t.id)
        if m is None and outcomes is None and store.is_running(t.id):
            o = Outcome(t.id, e.name, KIND, Status.RUNNING)
        out.append(record(sweep, e, t.id, m, metrics, o))
    return out


def record_files(names: list[str]) -> dict[str, str]:
    """The file name of each experiment's record: NAME.json, or where NAME is no file name of its
    own (a '/' or NUL in it, past 200 bytes, or equal to another's but for case, as macOS's file
    system sees it) NAME made one, plus a hash of NAME: two experiments never share a file."""
    stems = {n: re.sub(r"[/\0]", "_", n).encode()[:200].decode(errors="ignore") for n in names}
    folded = Counter(s.casefold() for n, s in stems.items() if s == n)  # a changed name is hashed anyway
    return {n: f"{s}.json" if s == n and folded[s.casefold()] == 1 else f"{s}-{hashlib.sha256(n.encode()).hexdigest()[:8]}.json" for n, s in stems.items()}


def write_records(sweep: Sweep, recs: list[dict]) -> None:
    """experiments/<name>.json per experiment that has a result."""
    d = sweep.results / "experiments"
    d.mkdir(parents=True, exist_ok=True)
    files = record_files([r["experiment_id"] for r in recs])
    kept = {files[r["experiment_id"]] for r in recs if r["status"] != Status.MISSING}
    for p in d.glob("*.json"):  # an experiment no longer in the file, or under its old file name
        if p.name not in kept:
            p.unlink()
    for r in recs:
        if r["status"] != Status.MISSING:
            path = d / files[r["experiment_id"]]
            if read_json(path) != r:
                write_json(path, r)


class SweepWorkflow(Workflow):
    """Run a grid of experiments from SWEEP_FILE (e.g. config/sweeps/blobs.yaml).

    KEY=VALUE arguments change the sweep file before it is validated, e.g. defaults.lr=0.01.
    Each experiment is a cached task (a task function, or a shell `command`); results/sweeps/<name>/
    gets a JSON per experiment, a table (results.parquet/.csv) updated as experiments finish,
    and the report (comparison_table.csv, plots/, summary_report.md).
    """

    name = "sweep"
    file_keys = ("rank_by",)
    config_help = "SWEEP_FILE"
    example = EXAMPLE
    noun = "experiments"
    timeout_help = " (it is reported as timeout)"

    def cli(self) -> list:
        return [
            click.option(
                "--only", multiple=True, metavar="KEY=V1,V2",
                help="Run only experiments whose KEY is one of the values (repeatable; all must hold; KEY name matches experiment names).",
            ),
            click.option("--budget", metavar="DURATION", help="Wall time for the whole sweep (90, 30m, 1h30m, HH:MM:SS): no experiment is started that would not fit."),
            *super().cli(),
        ]  # fmt: skip

    def load(self, path: Path, overrides: tuple[str, ...]) -> Sweep:
        return load_sweep(path, overrides)

    def settings(self, sweep: Sweep):
        return sweep.spec

    def tasks(self, sweep: Sweep, opts: Options, card) -> list[Task]:
        self.chosen = select(sweep, tuple(opts.extra.get("only", ())))
        self.all = tasks(sweep, sweep.experiments, opts.timeout)
        return in_order(self.chosen, {e.name: self.all[e.name] for e in self.chosen})

    def header(self, sweep: Sweep, store: Store, ts: list[Task]) -> str:
        what = f"task {sweep.spec.task}" if sweep.spec.task else f"command {sweep.spec.command!r}"
        return f"{sweep.path}: sweep {sweep.name!r}, {what}, {len(self.chosen)} of {len(sweep.experiments)} experiment(s), store {store.root}/"

    def rows(self, sweep: Sweep, store: Store, outcomes: dict) -> list[dict]:
        self.recs = records(sweep, store, outcomes, self.all)
        return [flat_row(r, sweep.factors) for r in self.recs]

    def table_path(self, sweep: Sweep) -> Path:
        return sweep.results / "results.parquet"

    def frame(self, rows: list[dict]):
        return table(rows)

    def shown(self, label: str) -> str:
        return label.split("/", 1)[-1]  # the experiment's name, without the sweep's

    def failed(self, table: list[dict]) -> bool:
        return False  # only this run's outcomes count: an experiment left out by --only is not a failure

    def finish(self, sweep: Sweep, store: Store, table: list[dict], summary: Summary, opts: Options) -> list[str]:
        from lambda_hat.engine import report as rep  # pandas and matplotlib: not before the tasks start

        write_records(sweep, self.recs)
        return [*(f"warning: {w}" for w in rep.unranked(sweep, table)), f"report: {rep.build(sweep, table)}"]


WORKFLOW = SweepWorkflow()


def report(path: Path, filters: tuple[str, ...] = (), plots: bool = True, output_dir: Path | None = None) -> int:
    """`lambda-hat report FILE`: table and report again from the store, computing nothing; the
    report covers the experiments `filters` (--filter, as --only) keep, in `output_dir` if given."""
    from lambda_hat.engine import report as rep

    sweep = load_sweep(path)
    names = {e.name for e in select(sweep, filters, "--filter")}
    if output_dir is not None:
        if Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise InputError(f"--output-dir {output_dir}: not a directory")
        try:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--output-dir {output_dir}: cannot write there ({e.strerror})") from None
    store = Store(Path(sweep.spec.store_root))
    recs = records(sweep, store)
    if output_dir is None:  # the sweep's own table always holds every experiment
        write_records(sweep, recs)
        write_table(WORKFLOW, sweep, [flat_row(r, sweep.factors) for r in recs])
    recs = [r for r in recs if r["experiment_id"] in names]
    note = f"Filtered: {' '.join(filters)} ({len(recs)} of {len(sweep.experiments)} experiments)." if filters else ""
    rows = [flat_row(r, sweep.factors) for r in recs]
    summary = rep.build(sweep, rows, out=output_dir, plots=plots, note=note)
    for w in rep.unranked(sweep, rows):
        click.echo(f"warning: {w}")
    running, missing = (sum(r["status"] == s for r in recs) for s in (Status.RUNNING, Status.MISSING))
    left = [f"{n} {what}" for n, what in ((running, "running"), (missing, "not run yet")) if n]
    click.echo(f"report: {summary}" + (f" ({', '.join(left)})" if left else ""))
    return 0
