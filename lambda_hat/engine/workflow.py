"""The Workflow protocol and the one lifecycle the engine runs for every workflow.

A workflow says how to load its file, which tasks it needs, how results become table rows and
which extra outputs it writes. The engine does the rest: the dry-run listing with each task's
state and why it would run, the live progress and table, parquet/CSV, tracking, exit codes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from lambda_hat.engine.cards import gpu_warning
from lambda_hat.engine.runner import Summary, command_line, run_tasks
from lambda_hat.engine.store import Store, write_frame
from lambda_hat.engine.tasks import Outcome, Status, Task, is_forced


@dataclass
class Options:
    """What every workflow command takes; `extra` holds a workflow's own flags (--promote, --only, --stages)."""

    force: bool | frozenset = False  # every task recomputed, or the IDs of those -R/--forcerun names
    forcerun: tuple[str, ...] = ()  # Snakemake's -R NAME: these tasks and their dependants recomputed
    until: tuple[str, ...] = ()  # Snakemake's -U NAME: only these tasks and those they read
    omit_from: tuple[str, ...] = ()  # Snakemake's --omit-from NAME: all but these tasks and their dependants
    dry_run: bool = False
    timeout: float | None = None
    budget: float | None = None
    overrides: tuple[str, ...] = ()
    track: tuple[str, ...] = ()
    show_config: bool = False  # Hydra's --cfg job: print the tasks' resolved configs, run nothing
    print_commands: bool = False  # Snakemake's -p: the dry run shows each shell task's command line
    graph: str | None = None  # Snakemake's --dag / --rulegraph: the DAG as dot; --list-rules (rules), --list-code-changes (code) …
    quiet: bool = False  # Snakemake's -q: no progress lines, only failures and the summary
    failed_logs: bool = False  # Snakemake's --show-failed-logs: each failed task's log after the summary
    extra: dict = field(default_factory=dict)


class Workflow:
    """The protocol: a fourth workflow is a module of workflows/ holding WORKFLOW, an instance of
    a subclass of this, plus its task functions. Its class docstring is its command's help."""

    name: str  # the CLI command: lambda-hat workflow NAME
    file_keys: tuple[str, ...] = ()  # top-level keys that make a YAML file one of this workflow's
    config_file: str | None = None  # the --config default; None: the file is the command's argument
    config_help: str = ""  # --config's help, or the argument's metavar
    example: str = "KEY=VALUE"  # an override of its file, for the messages on a malformed one
    noun: str = "tasks"  # what its tasks are called in help and messages
    timeout_help: str = ""  # more for --timeout's help
    lists_failures = False  # finish() names every failed row itself: the engine does not repeat them

    def cli(self) -> list:
        """Click decorators of the command's own options and trailing arguments."""
        # a workflow with a default file also takes one here (cli._file_argument), as sweep its own
        return [click.argument("overrides", nargs=-1, metavar="[FILE.yaml] [KEY=VALUE]..." if self.config_file else "[KEY=VALUE]...")]

    def parse(self, kw: dict) -> tuple[tuple[str, ...], dict]:
        """(KEY=VALUE overrides, Options.extra) from the values of cli()'s options."""
        return tuple(kw.pop("overrides", ())), kw

    def preview(self, path: Path, card, overrides: tuple[str, ...], extra: dict) -> str | None:
        """Text to print instead of running (e.g. progressive --list); None: run."""
        return None

    def load(self, path: Path, overrides: tuple[str, ...]) -> Any:
        """Read and validate the workflow's file (InputError on bad input)."""
        raise NotImplementedError

    def settings(self, plan):
        """What holds the file's store_root and tracking: the loaded file itself, by default."""
        return plan

    def store_root(self, plan) -> Path:
        return Path(self.settings(plan).store_root)

    def tracking(self, plan) -> list[str]:
        return list(getattr(self.settings(plan), "tracking", ()))

    def experiment(self, plan) -> str | None:
        """The MLflow experiment / W&B group of its tasks (None: tracking's default)."""
        return getattr(self.settings(plan), "experiment", None)

    def cards(self, plan) -> dict:
        """More executors by label, for tasks that name one (tasks.Task.executor)."""
        return {}

    def tasks(self, plan, opts: Options, card) -> list[Task]:
        """The tasks to run, each after the tasks it reads."""
        raise NotImplementedError

    def header(self, plan, store: Store, tasks: list[Task]) -> str:
        return f"{plan.path}: {len(tasks)} task(s), store {store.root}/"

    def note(self, plan, store: Store, task: Task, state: str) -> str:
        """More about one task in the dry-run listing (e.g. which checkpoint a stage starts from)."""
        return ""

    def rows(self, plan, store: Store, outcomes: dict[str, Outcome]) -> list[dict]:
        """The results table, from the store; this run's outcomes fill in tasks that left nothing there."""
        raise NotImplementedError

    def tracked_tags(self, table: list[dict]) -> dict[str, dict[str, str]]:
        """Task ID → tags its tracked run gets from the table (llc: the checks' warnings as the
        table reports them, cross-run ones included)."""
        return {}

    def table_path(self, plan) -> Path:
        raise NotImplementedError

    def frame(self, table: list[dict]):
        import pandas as pd
        import yaml

        df = pd.DataFrame(table)
        for col in df.columns:
            if df[col].dtype != object:
                continue
            values = df[col].tolist()
            if any(isinstance(v, (list, tuple)) for v in values):  # lists (widths, chain values) → text
                df[col] = [yaml.safe_dump(list(v), default_flow_style=True).strip() if isinstance(v, (list, tuple)) else v for v in values]
                values = df[col].tolist()
            kinds = {type(v) for v in values if v is not None and v == v}
            if str in kinds and len(kinds) > 1:  # e.g. step_size: auto beside numbers: one type per column
                df[col] = [None if v is None or v != v else str(v) for v in values]
        return df

    def finish(self, plan, store: Store, table: list[dict], summary: Summary, opts: Options) -> list[str]:
        """Write the workflow's other outputs (retry file, gallery, report, plots); lines to print."""
        return []

    def shown(self, label: str) -> str:
        """How a task is named in the lines printed after a run."""
        return label

    def failed(self, table: list[dict]) -> bool:
        """Whether the table holds a failure that is not a task's own (e.g. --strict)."""
        return any(r.get("status") == Status.FAILED for r in table)


# ---------------------------------------------------------------- the lifecycle


def rule(t: Task) -> str:
    """A task's function name (a shell task's: command), as Snakemake names a job by its rule."""
    return "command" if t.command else t.fn.rsplit(":", 1)[-1]


def names_of(t: Task) -> set[str]:
    """What -R/--forcerun and -U/--until NAME may call a task by: its rule (task function), its
    label, without its kind's word (`target dln/small/s0`, `stage b32`), each side of an @
    (sampler and target), and each side of the first / (a sweep and its experiment; a model preset)."""
    label = t.label
    body = label.split(" ", 1)[1] if re.match(r"[a-z]+ ", label) else label
    parts = {label, body, *body.split("@")}
    return parts | {q for p in parts if "/" in p for q in p.split("/", 1)} | {rule(t)}


def named_ids(tasks: list[Task], names: tuple[str, ...], flag: str) -> set[str]:
    """The IDs of the tasks NAMES (comma-separated or repeated) call by any of names_of."""
    from lambda_hat.engine.typed import InputError

    wanted = {n.strip() for name in names for n in name.split(",")}
    if "" in wanted:  # `-U ''` had run nothing and `-R ''` everything as cached, both with exit 0
        given = next(name for name in names if "" in (n.strip() for n in name.split(",")))
        raise InputError(f"{flag} {given!r}: an empty name; give a task function, label, sampler, target, stage or experiment (comma-separated)")
    for n in sorted(wanted):
        if not any(n in names_of(t) for t in tasks):
            some = ", ".join([*dict.fromkeys(map(rule, tasks)), *sorted({t.label.split(" ", 1)[-1].split("@")[0] for t in tasks})][:8])
            raise InputError(f"{flag} {n}: names no task (a task function, a task's label, a sampler, target, stage or experiment name: {some}, …)")
    return {t.id for t in tasks if wanted & names_of(t)}


def downstream_ids(tasks: list[Task], names: tuple[str, ...], flag: str) -> frozenset[str]:
    """The tasks NAMES name and every task downstream of them: those Snakemake's -R/--forcerun
    reruns, and those its --omit-from leaves out."""
    ids = named_ids(tasks, names, flag)
    for t in tasks:  # listed dependencies first: one pass finds every dependant
        if any(i in ids for _, i in t.deps):
            ids.add(t.id)
    return frozenset(ids)


def until_ids(tasks: list[Task], names: tuple[str, ...]) -> set[str]:
    """The tasks -U/--until names and every task they read, as Snakemake's --until runs a rule's
    jobs and what they need."""
    ids = named_ids(tasks, names, "--until")
    for t in reversed(tasks):  # dependants after their dependencies: one backward pass
        if t.id in ids:
            ids.update(i for _, i in t.deps)
    return ids


def state(store: Store, t: Task, force: bool | frozenset) -> tuple[str, str, str]:
    """(state, why it would run, more about why) of a planned task."""
    force = is_forced(force, t.id)
    m = store.manifest(t.kind, t.id)
    if m and m.get("status") == Status.DONE and not force:
        return "done", "", ""
    if store.is_running(t.id):
        return "running", "by another invocation", ""
    if force:
        return "to run", "forced", ""
    if m:
        return "to run", f"{m.get('status')} before", f": {m.get('error')}"
    if store.has_resume(t.kind, t.id):
        return "to run", "interrupted before", ""
    last = store.last_version(t.key)
    if last is not None and last != t.version:
        return "to run", "code changed", f" (version {last} → {t.version})"
    return "to run", "new", ""


def check_requires(store: Store, tasks: list[Task], force: bool | frozenset) -> None:
    """Before anything runs (a dry run too): the modules of an optional extra that a task to run
    requires are installed; otherwise every such task would fail on its import."""
    import importlib.util

    from lambda_hat.engine.tasks import declared, install_hint
    from lambda_hat.engine.typed import InputError

    installed = {}
    for t in tasks:
        requires = () if t.command else declared(t.fn)[1].requires
        missing = [m for m in requires if not installed.setdefault(m, importlib.util.find_spec(m) is not None)]
        if missing and state(store, t, force)[0] != "done":
            raise InputError(f"{t.fn} ({t.label}, to run) needs {', '.join(missing)}, not installed for {sys.executable}{install_hint(missing[0])}")


def resolved(tasks: list[Task]) -> str:
    """Every task's config as its ID hashes it (presets merged, overrides applied), as YAML."""
    doc = {t.label: {"kind": t.kind, "id": t.id, **json.loads(json.dumps(t.config, default=str))} for t in tasks}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def listing(wf: Workflow, plan, store: Store, tasks: list[Task], force: bool, commands: bool = False) -> str:
    lines = [wf.header(plan, store, tasks)]
    why_counts: dict[str, int] = {}
    done = 0
    for t in tasks:
        st, why, more = state(store, t, force)
        done += st == "done"
        if why:
            why_counts[why] = why_counts.get(why, 0) + 1
        note = wf.note(plan, store, t, st)
        lines.append(f"  {t.label:<40} [{t.id}] {st}" + (f" ({why}{more})" if why else "") + (f"; {note}" if note else ""))
        if commands and t.command:  # {outdir}: the task's directory (a run writes into a temporary one, then renames it)
            lines.append(f"      $ {command_line(t.command, t.config, store.dir(t.kind, t.id), [store.dir(k, i) for k, i in t.deps])}")
    reasons = ", ".join(f"{n} {k}" for k, n in why_counts.items())
    lines.append(f"{len(tasks) - done} task(s) to run" + (f" ({reasons})" if reasons else "") + f", {done} done")
    return "\n".join(lines)


def _dot(text: str) -> str:
    """Text inside a dot string: a backslash or quote escaped (a name ending in \\ would
    otherwise run the string on), a line break as dot's own \\n."""
    return re.sub(r"\r\n?|\n", r"\\n", text.replace("\\", "\\\\").replace('"', '\\"'))


def graph(store: Store, tasks: list[Task], force: bool | frozenset, rules: bool = False) -> str:
    """Snakemake's --dag (a node per task, done ones dashed) or --rulegraph (a node per task
    function) as Graphviz dot: `… --dag | dot -Tpdf > dag.pdf`."""
    names = list(dict.fromkeys(rule(t) for t in tasks))
    color = {n: f"{i / max(len(names), 1):.2f} 0.6 0.85" for i, n in enumerate(names)}  # a hue per rule, as Snakemake's
    lines = ["digraph lambda_hat {", "  graph [bgcolor=white, margin=0];", "  node [shape=box, style=rounded, fontname=sans, fontsize=10, penwidth=2];"]
    edges: set[tuple[int, int]] = set()
    if rules:
        lines += [f'  {i} [label="{_dot(n)}", color="{color[n]}"];' for i, n in enumerate(names)]
        of = {t.id: names.index(rule(t)) for t in tasks}
        edges = {(of[i], of[t.id]) for t in tasks for _, i in t.deps if i in of and of[i] != of[t.id]}
    else:
        index = {t.id: k for k, t in enumerate(tasks)}
        for k, t in enumerate(tasks):
            label = "\\n".join(_dot(part) for part in re.split(r"[ @]", t.label, maxsplit=1))
            dashed = ", dashed" if state(store, t, force)[0] == "done" else ""
            lines.append(f'  {k} [label="{label}", color="{color[rule(t)]}", style="rounded{dashed}"];')
        edges = {(index[i], index[t.id]) for t in tasks for _, i in t.deps if i in index}
    lines += [f"  {a} -> {b};" for a, b in sorted(edges)]
    return "\n".join([*lines, "}"])


def outcome_lines(wf: Workflow, summary: Summary, listed: bool, logs: Store | None = None) -> list[str]:
    """A line per task that failed (unless the workflow's own lines `listed` them), one naming
    those a --budget left unstarted, and with `logs` (Snakemake's --show-failed-logs) the last 20
    lines of each failed or timed-out task's log in that store."""
    out = [f"  {o.status}: {wf.shown(o.label)}: {o.error}" for o in summary.outcomes.values() if not listed and not o.status.ok and o.status != Status.LEFT]
    left = [wf.shown(o.label) for o in summary.outcomes.values() if o.status == Status.LEFT]
    out += [f"budget reached: {len(left)} task(s) not started: {', '.join(left)}; rerun to continue"] if left else []
    for o in summary.outcomes.values() if logs is not None else ():
        log = logs.dir(o.kind, o.id) / "log.txt"
        if o.status in (Status.FAILED, Status.TIMEOUT) and log.exists():
            tail = log.read_text(errors="replace").splitlines()[-20:]
            out += [f"log of {o.label} ({log}, last {len(tail)} lines):", *(f"    {t}" for t in tail)]
    return out


def check_results_dir(path: Path) -> None:
    """Before any work: the results directory can be made and written (else the tables would
    fail after every task had run)."""
    from lambda_hat.engine.typed import InputError

    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    at = f": {p}" if p != Path(path) else ""  # the ancestor in the way, where it is not the directory itself
    if not p.is_dir():
        raise InputError(f"results directory {path}{at} is a file, not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"results directory {path}{at} is not writable")


def write_table(wf: Workflow, plan, table: list[dict]) -> Path:
    path = wf.table_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_frame(wf.frame(table), path)


def _store(wf: Workflow, plan, path: Path) -> Store:
    store = Store(wf.store_root(plan))
    if store.is_kind_folder():  # runs/llc: a store nested in a store's folder of tasks
        from lambda_hat.engine.typed import InputError

        raise InputError(f"{path}: store_root {store.root}: a folder of tasks inside a store; give the store: store_root: {store.root.parent}")
    return store


def status(wf: Workflow, path: Path) -> str:
    """`lambda-hat status FILE`: every task of a workflow file and its state, computing nothing."""
    plan = wf.load(path, ())
    store = _store(wf, plan, path)
    return listing(wf, plan, store, wf.tasks(plan, Options(), None), False)


def run(wf: Workflow, path: Path, card, opts: Options) -> int:
    from lambda_hat.engine import tracking

    plan = wf.load(path, opts.overrides)
    store = _store(wf, plan, path)
    tasks = wf.tasks(plan, opts, card)
    if opts.forcerun and not opts.force:
        opts = dataclasses.replace(opts, force=downstream_ids(tasks, opts.forcerun, "--forcerun"))
    part, planned = [], len(tasks)  # -U/--omit-from: a part of the DAG
    if opts.until:
        keep = until_ids(tasks, opts.until)
        tasks, part = [t for t in tasks if t.id in keep], [f"--until {','.join(opts.until)}"]
    if opts.omit_from:
        drop = downstream_ids(tasks, opts.omit_from, "--omit-from")
        tasks, part = [t for t in tasks if t.id not in drop], [*part, f"--omit-from {','.join(opts.omit_from)}"]
    later = planned - len(tasks)
    if opts.show_config:
        click.echo(resolved(tasks), nl=False)
        return 0
    if opts.graph == "rules":  # Snakemake's --list-rules: the task functions, a line each
        click.echo("\n".join(dict.fromkeys(rule(t) for t in tasks)))
        return 0
    if opts.graph in ("code", "new"):  # Snakemake's --list-code-changes (params, input): labels that -R takes
        why = {"code": "code changed", "new": "new"}[opts.graph]
        for t in tasks:
            if state(store, t, opts.force)[1] == why:
                click.echo(t.label)
        return 0
    if opts.graph:
        click.echo(graph(store, tasks, opts.force, rules=opts.graph == "rulegraph"))
        return 0
    tracking.check([*opts.track, *wf.tracking(plan)])  # a missing client: before a dry run says all is well
    check_requires(store, tasks, opts.force)
    for warning in {gpu_warning(c) for c in (card, *wf.cards(plan).values())} - {None}:
        click.echo(warning)
    if opts.dry_run:
        if opts.overrides:
            click.echo(f"overrides: {' '.join(opts.overrides)}")
        click.echo(listing(wf, plan, store, tasks, opts.force, opts.print_commands))
        cards = wf.cards(plan)
        own = f"; tasks that name a card of their own ({len(cards)} in the file) run on it" if cards else ""
        n = card.lost_worker_retries
        retried = f", a lost worker's task retried up to {n} time{'s' * (n > 1)}" if n else ""
        click.echo(f"executor: {card.executor}, {card.capacity} task(s) at once{retried}{own}")
        return 0
    if part:  # a part of the DAG: its tasks run and are stored, the sweep's tables stay as they were
        store.check_writable()
        summary = run_tasks(tasks, store.root, card, force=opts.force, budget=opts.budget, cards=wf.cards(plan), quiet=opts.quiet)
        click.echo(
            f"{wf.name}: {summary.line()}; {' '.join(part)}: {later} task(s) {'' if opts.omit_from else 'after them '}not run, {wf.table_path(plan)} not rewritten"
        )
        for line in outcome_lines(wf, summary, listed=False, logs=store if opts.failed_logs else None):
            click.echo(line)
        return 0 if summary.ok else 1
    backends = tracking.trackers([*opts.track, *wf.tracking(plan)])
    check_results_dir(wf.table_path(plan).parent)
    store.check_writable()
    outcomes: dict[str, Outcome] = {}
    last = [time.time(), 0.0]  # when the table was last written, and how long writing it took

    def live(out: Outcome) -> None:
        # the table follows the run: at most every 2 s, and at most a fifth of the time (a table of
        # 1e5 rows takes seconds to write, time the loop that starts the next tasks would lose)
        outcomes[out.id] = out
        if time.time() - last[0] > max(2.0, 4 * last[1]):
            t0 = time.time()
            write_table(wf, plan, wf.rows(plan, store, outcomes))
            last[:] = [time.time(), time.time() - t0]

    summary = run_tasks(tasks, store.root, card, force=opts.force, on_outcome=live, budget=opts.budget, cards=wf.cards(plan), quiet=opts.quiet)
    table = wf.rows(plan, store, summary.outcomes)
    path = write_table(wf, plan, table)
    lines = wf.finish(plan, store, table, summary, opts)
    click.echo(f"{wf.name}: {summary.line()}; results in {path}")
    for line in lines:
        click.echo(line)
    for line in outcome_lines(wf, summary, listed=wf.lists_failures, logs=store if opts.failed_logs else None):
        click.echo(line)
    if backends:
        click.echo(tracking.track(store, tasks, backends, wf.experiment(plan), wf.tracked_tags(table)))
    return 0 if summary.ok and not wf.failed(table) and not tracking.failed(backends) else 1
