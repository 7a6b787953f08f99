"""The sweep workflow: every experiment of a sweep file as a cached task; live table; report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click

from lambda_hat.engine import report as rep
from lambda_hat.engine import tracking
from lambda_hat.engine.runner import Task, run_tasks
from lambda_hat.engine.store import Store, read_json, task_id, write_frame, write_json
from lambda_hat.engine.sweep import Experiment, Sweep, flat_row, load_sweep, record, select

KIND = "sweep"


def tasks(sweep: Sweep, experiments: list[Experiment], timeout: float | None) -> dict[str, Task]:
    """A task per experiment, by name; the task gets its config, and the directories of the
    tasks it needs."""
    env = {k: str(v) for k, v in sweep.spec.env.items()}
    timeout = timeout or sweep.spec.task_timeout
    fn = sweep.spec.task
    return {
        e.name: Task(
            KIND, fn, e.config, f"{sweep.name}/{e.name}", deps=tuple((u.kind, u.id) for u in e.needs), timeout=timeout,
            isolate=sweep.spec.isolate, env=env, id=_id(fn, e, sweep.version),
        )
        for e in experiments
    }  # fmt: skip


def _id(fn: str, e: Experiment, version: int) -> str:
    """The task's name, code version and config, and the IDs of what it reads."""
    key = {"task": fn, "version": version, "config": e.config}
    if e.needs:
        key["needs"] = [u.id for u in e.needs]
    return task_id(KIND, key)


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


def records(sweep: Sweep, store: Store, outcomes: dict | None = None) -> list[dict]:
    """A result record for every experiment of the file, from the store (or this run's outcome)."""
    out = []
    for e, t in zip(sweep.experiments, tasks(sweep, sweep.experiments, None).values()):
        m = store.manifest(KIND, t.id)
        metrics = read_json(store.dir(KIND, t.id) / "metrics.json") if m else None
        out.append(record(sweep, e, t.id, m, metrics, (outcomes or {}).get(t.id)))
    return out


def write_results(sweep: Sweep, recs: list[dict]) -> Path:
    """experiments/<name>.json per experiment that has a result, and the table (parquet + CSV)."""
    import pandas as pd

    d = sweep.results / "experiments"
    d.mkdir(parents=True, exist_ok=True)
    for r in recs:
        if r["status"] not in ("missing",):
            path = d / f"{r['experiment_id'].replace('/', '_')}.json"
            if read_json(path) != r:
                write_json(path, r)
    df = pd.DataFrame([flat_row(r, sweep.factors) for r in recs]).convert_dtypes()
    return write_frame(df, sweep.results / "results.parquet")


def describe(sweep: Sweep, chosen: list[Experiment], store: Store, ts: dict[str, Task]) -> str:
    lines = [f"{sweep.path}: sweep {sweep.name!r}, task {sweep.spec.task}, {len(chosen)} of {len(sweep.experiments)} experiment(s), store {store.root}/"]
    names = {t.id: n for n, t in ts.items()}
    todo = 0
    for t in in_order(chosen, ts):
        st = "done" if store.is_done(t.kind, t.id) else (store.manifest(t.kind, t.id) or {}).get("status", "to run")
        todo += st != "done"
        lines.append(f"  {names.get(t.id, '(needed) ' + t.label):<40} [{t.id}] {st}")
    lines.append(f"{todo} task(s) to run, {len(lines) - 1 - todo} done")
    return "\n".join(lines)


def report(path: Path, filters: tuple[str, ...] = (), plots: bool = True, output_dir: Path | None = None) -> int:
    """`lambda-hat report FILE`: table and report again from the store, computing nothing; the
    report covers the experiments `filters` (--filter, as --only) keep, in `output_dir` if given."""
    sweep = load_sweep(path)
    names = {e.name for e in select(sweep, filters, "--filter")}
    store = Store(Path(sweep.spec.store_root))
    recs = records(sweep, store)
    if output_dir is None:
        write_results(sweep, recs)  # the sweep's own table always holds every experiment
    recs = [r for r in recs if r["experiment_id"] in names]
    note = f"Filtered: {' '.join(filters)} ({len(recs)} of {len(sweep.experiments)} experiments)." if filters else ""
    summary = rep.build(sweep, [flat_row(r, sweep.factors) for r in recs], out=output_dir, plots=plots, note=note)
    missing = sum(r["status"] == "missing" for r in recs)
    click.echo(f"report: {summary}" + (f" ({missing} experiment(s) not run yet)" if missing else ""))
    return 0


def run(
    path: Path, card, only: tuple[str, ...], force: bool, dry_run: bool, timeout: float | None, budget: float | None, overrides: tuple[str, ...] = (),
    track: tuple[str, ...] = (),
) -> int:
    sweep = load_sweep(path, overrides)
    chosen = select(sweep, only)
    store = Store(Path(sweep.spec.store_root))
    ts = tasks(sweep, chosen, timeout)
    if dry_run:
        if overrides:
            click.echo(f"overrides: {' '.join(overrides)}")
        click.echo(describe(sweep, chosen, store, ts))
        return 0
    backends = tracking.trackers([*track, *sweep.spec.tracking])
    store.check_writable()
    outcomes: dict[str, dict] = {}
    last = [0.0]

    def live(out: dict) -> None:  # the table follows the sweep, at most every 2 s
        outcomes[out["id"]] = out
        if time.time() - last[0] > 2:
            write_results(sweep, records(sweep, store, outcomes))
            last[0] = time.time()

    summary = run_tasks(in_order(chosen, ts), store.root, card, force=force, on_outcome=live, budget=budget)
    recs = records(sweep, store, summary.outcomes)
    table = write_results(sweep, recs)
    summary_md = rep.build(sweep, [flat_row(r, sweep.factors) for r in recs])
    click.echo(f"sweep {sweep.name}: {summary.line()}; table {table}; report {summary_md}")
    name = {t.id: e.name for e, t in zip(chosen, ts.values())}
    for tid, o in summary.outcomes.items():
        if o["status"] not in ("done", "reused", "left"):
            click.echo(f"  {o['status']}: {name.get(tid, o['label'])}: {o['error']}")
    left = [name.get(tid, o["label"]) for tid, o in summary.outcomes.items() if o["status"] == "left"]
    if left:
        click.echo(f"budget reached: {len(left)} experiment(s) not started: {', '.join(left)}; rerun to continue")
    if backends:
        click.echo(tracking.track(store, ts.values(), backends))
    return 0 if summary.ok else 1
