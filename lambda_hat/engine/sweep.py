"""Sweep files: a grid of experiments over one task, each a content-addressed task.

A sweep file names the task (a @task function "module:function", or a shell `command` with
{key} and {outdir} placeholders that writes {outdir}/metrics.json), `defaults`, a `grid` (a
mapping of lists: their Cartesian product; or a list of such mappings: the union of their
products), named `combos`, `replicates` or `seeds`, and the metrics to `rank_by`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import string
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Literal

import yaml

from lambda_hat.engine.tasks import Outcome, Status, declared, reported
from lambda_hat.engine.typed import (
    Duration,
    InputError,
    apply_overrides,
    build,
    check_given,
    current_ref,
    deep_merge,
    dotted,
    fail,
    import_ref,
    load_yaml,
    nonempty,
    plain,
    positive,
    read_yaml,
    seed_range,
)

# Metric keys a task returns that describe its cost; a returned "efficiency" mapping adds more.
EFFICIENCY = ("params", "epochs")


@dataclass(frozen=True)
class Rank:
    ALIASES: ClassVar[dict] = {"name": "metric"}  # W&B sweeps' metric: {name, goal}

    metric: str
    goal: Literal["max", "min", "maximize", "minimize"] = "max"  # W&B sweeps' words too

    def __post_init__(self):
        object.__setattr__(self, "goal", {"maximize": "max", "minimize": "min"}.get(self.goal, self.goal))  # one spelling for the report


@dataclass(frozen=True)
class LinePlot:
    """A report plot: metric `y` against factor `x`, a line per value of `by`, a panel per `facet`."""

    x: str
    y: str
    by: str | None = None
    facet: str | None = None
    log_y: bool = False


PLOTS = ("metric_per_factor", "efficiency_scatter", "time")  # the report's plots (report.py)


@dataclass(frozen=True)
class SweepFile:
    rank_by: list[Rank] = field(metadata={"min_len": 1})
    task: str | None = field(default=None, metadata=nonempty())  # a @task function, "module:function"
    command: str | None = field(default=None, metadata=nonempty())  # or a shell command line: python train.py --lr {lr} --out {outdir}
    version: int = field(default=1, metadata=positive())  # a command's code version: bump it when the program changes
    name: str | None = None  # default: the file's stem
    defaults: dict = field(default_factory=dict)
    grid: list[dict] | dict = field(default_factory=dict)
    combos: list[dict] = ()
    replicates: int | None = field(default=None, metadata=positive())
    seeds: list[int] | None = field(default=None, metadata={"min_len": 1, "each": seed_range(), "unique": "each seed is one replicate"})
    store_root: str = field(default="runs", metadata=nonempty())
    results_root: str = field(default="results/sweeps", metadata=nonempty())
    task_timeout: Duration | None = None
    tracking: list[Literal["mlflow", "wandb"]] = ()  # log every finished experiment there (tracking.py)
    env: dict = field(default_factory=dict)  # environment of each task process
    isolate: bool = True
    line_plots: list[LinePlot] = ()
    params_column: str = "params"  # the parameter count the report's efficiency uses
    plot_names: dict = field(default_factory=dict)  # the report's plots under other names, e.g. time: training_time.png

    def check(self, bad):
        if self.replicates is not None and self.seeds is not None:
            bad("replicates", "give replicates or seeds, not both")
        # the results' folder under results_root: "", "." or ".." would be results_root or its parent
        if self.name is not None and (not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name) or set(self.name) == {"."}):
            bad("name", f"{self.name!r}: use letters, digits, '_', '.', '-' (not only dots)")
        if (self.task is None) == (self.command is None):
            bad("task", "give a task (module:function) or a command (a shell command line), not both")
        if self.command is not None and self.isolate is False:
            bad("isolate", "a command always runs in its own process")
        if self.task is not None and ":" not in self.task:
            bad("task", f"{self.task!r}: expected 'module:function', e.g. lambda_hat.studies.blobs.study:train")
        for k, v in self.plot_names.items():
            if k not in PLOTS:
                bad(f"plot_names.{k}", f"unknown plot; allowed: {', '.join(PLOTS)}")
            if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+\.png", v):
                bad(f"plot_names.{k}", f"expected a file name ending in .png, got {v!r}")
        files = {k: self.plot_names.get(k, f"{k}.png").casefold() for k in PLOTS}
        for k, v in self.plot_names.items():  # one plot would overwrite the other
            if other := next((o for o in PLOTS if o != k and files[o] == files[k]), None):
                bad(f"plot_names.{k}", f"{v!r} is also the file of plot {other}; give each its own")
        for k, v in self.env.items():
            # os.environ and subprocess refuse these when the task starts: every task then failed
            if not isinstance(k, str) or not k or "=" in k or "\0" in k:
                bad("env", f"{k!r} is not an environment variable name (not empty, no '=')")
            if not isinstance(v, (str, int, float)) or "\0" in str(v):
                bad("env", f"values must be strings, numbers or true/false (no NUL), got {v!r}")

    @property
    def environment(self) -> dict[str, str]:
        """env as the task processes get it: true/false as YAML writes them (Python's str: True)."""
        return {k: _fmt(v) for k, v in self.env.items()}


@dataclass(frozen=True)
class Experiment:
    name: str
    config: dict  # what the task gets: defaults, then the point, then the seed
    section: str  # "grid" or "combos": where in the file it came from
    needs: tuple = ()  # runner.Task objects it reads, from the task's `needs`


@dataclass(frozen=True)
class Sweep:
    path: Path
    spec: SweepFile
    name: str
    experiments: list[Experiment]
    factors: list[str]  # config keys the grid or combos vary, in file order
    version: int | str = 1  # the task's code version (@task, or the file's `version` for a command)

    @property
    def results(self) -> Path:
        return Path(self.spec.results_root).expanduser() / self.name


def _fmt(v) -> str:
    if isinstance(v, bool):  # as YAML writes it, so `--only augment=false` reads back the name
        return str(v).lower()
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip() if isinstance(v, (list, dict)) else str(v)


def _one_line(text: str) -> str:
    """A grid value's text in an experiment's name, which is shown one per line: a line break
    or other control character as its escape (a\\nb)."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: m.group().encode("unicode_escape").decode(), text)


def _grid_points(spec: SweepFile, where: str) -> list[tuple[str, dict, str]]:
    grids = [spec.grid] if isinstance(spec.grid, dict) else list(spec.grid)
    points = []
    for g_i, g in enumerate(grids):
        key = "grid" if isinstance(spec.grid, dict) else f"grid[{g_i}]"
        for k, vals in g.items():
            if not isinstance(vals, list) or not vals:
                fail(where, f"{key}.{k}", f"expected a non-empty list of values, got {vals!r}")
        for combo in itertools.product(*g.values()):
            point = dict(zip(g.keys(), combo))
            points.append((",".join(f"{k}={_one_line(_fmt(v))}" for k, v in point.items()) or "defaults", point, key))
    return points


def _in_grid(key: str):
    """Where a sweep file takes several values of a key: its grid, one experiment per value
    (None for text where a comma is ordinary: an environment variable, the shell command)."""
    if key.startswith("env.") or key == "command":
        return None
    if key.split(".")[0] not in ("defaults", "grid", "combos"):  # the file's own keys (tracking, seeds, …)
        return lambda values: "only a task's keys are swept, through the grid"
    return lambda values: f"a sweep file varies a key through its grid, one experiment per value: grid: {{{key.split('.')[-1]}: [{', '.join(values)}]}}"


def _wandb_sweep(raw, where: str):
    """A W&B sweep file's grid search in our keys: method grid, metric {name, goal} (W&B's goal
    defaults to minimize) as rank_by, parameters' `values` as the grid and `value` as defaults."""
    if not isinstance(raw, dict) or not {"method", "metric", "parameters", "program"} & raw.keys():
        return raw
    raw = dict(raw)
    if raw.get("program") is not None:
        fail(
            where,
            "program",
            "W&B's program: here a command: line runs it and writes {outdir}/metrics.json, e.g. command: python train.py --lr {lr} --out {outdir}",
        )
    method = raw.pop("method", "grid")
    if method != "grid":
        fail(where, "method", f"{method!r} is a W&B search lambda-hat does not run; it runs grids: method: grid, each key's values under parameters")
    if "metric" in raw:
        if "rank_by" in raw:
            fail(where, "metric", "W&B's metric and rank_by name the same thing; give one")
        metric = raw.pop("metric")
        raw["rank_by"] = [{"goal": "minimize", **metric} if isinstance(metric, dict) else metric]
    params = raw.pop("parameters", None) or {}
    if not isinstance(params, dict):
        fail(where, "parameters", f"expected a mapping of keys to {{values: [...]}} or {{value: x}}, got {params!r}")
    if not params:
        return raw
    grid, defaults = raw.get("grid") or {}, raw.get("defaults") or {}
    if not isinstance(grid, dict):
        fail(where, "parameters", "give the grid as parameters (W&B's) or as grid, not both")
    if not isinstance(defaults, dict):
        fail(where, "defaults", f"expected a mapping, got {defaults!r}")
    grid, defaults = dict(grid), dict(defaults)
    for k, p in params.items():
        if not isinstance(p, dict) or len({"values", "value"} & p.keys()) != 1 or set(p) - {"values", "value"}:
            fail(where, f"parameters.{k}", f"lambda-hat runs grids: give values: [...] or value: x, got {p!r} (a distribution is W&B's random or bayes search)")
        into, v = (grid, p["values"]) if "values" in p else (defaults, p["value"])
        if k in grid or k in defaults:
            fail(where, f"parameters.{k}", "set again in grid or defaults; give it once")
        if into is grid and not (isinstance(v, list) and v):
            fail(where, f"parameters.{k}.values", f"expected a non-empty list, got {v!r}")
        into[k] = v
    return {**raw, **({"grid": grid} if grid else {}), **({"defaults": defaults} if defaults else {})}


EXAMPLE = "defaults.lr=0.01"  # an override, for the messages on a malformed one


def load_sweep(path: Path, overrides: tuple[str, ...] = ()) -> Sweep:
    where = str(path)
    raw = _wandb_sweep(apply_overrides(load_yaml(path), overrides, where, several=_in_grid, example=EXAMPLE), where)
    # a list or a string (a CSV given by mistake) is left to build's "expected a mapping"
    for i, r in enumerate((raw.get("rank_by") if isinstance(raw, dict) else None) or []):
        # W&B's {name: …} alone means minimize there and max here: not guessed either way
        if isinstance(r, dict) and "name" in r and "goal" not in r:
            fail(
                where,
                f"rank_by[{i}].goal",
                "missing: W&B's {name: …} form minimizes by default and rank_by maximizes; give goal (max, min, maximize, minimize)",
            )
    spec = build(SweepFile, raw, where)
    if spec.task:
        spec = dataclasses.replace(spec, task=current_ref(spec.task))
        import_ref(spec.task, where, "task")  # an import error names the file and key
        try:
            _, decl = declared(spec.task)
        except InputError as e:
            fail(where, "task", str(e))
        cls, needs_of, version = decl.config, decl.needs, decl.version
    else:
        cls, needs_of, version = None, None, spec.version
    allowed = [f for f in cls.__dataclass_fields__] if cls else None

    def check_keys(d: dict, key: str) -> None:
        for k in d:
            if allowed is not None and k not in allowed:
                fail(where, f"{key}.{k}", f"unknown key for {spec.task}; allowed keys: {', '.join(allowed)}")

    check_keys(spec.defaults, "defaults")
    if cls:  # the defaults' own types, so that an error names them rather than the first experiment
        check_given(cls, spec.defaults, where, "defaults")
    points = []
    order = [k for k in (raw or {}) if k in ("grid", "combos")]  # the file's own order
    for section in order:
        if section == "grid":
            for name, point, key in _grid_points(spec, where):
                check_keys(point, "grid")
                points.append((name, point, key))
        else:
            for i, c in enumerate(spec.combos):
                if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
                    fail(where, f"combos[{i}]", "each combo needs a `name` (a non-empty string) and the keys it sets")
                if _one_line(c["name"]) != c["name"]:
                    fail(where, f"combos[{i}].name", f"{c['name']!r}: a name is shown one per line; give it no line break or control character")
                point = {k: v for k, v in c.items() if k != "name"}
                check_keys(point, f"combos[{i}]")
                points.append((c["name"], point, f"combos[{i}]"))
    if not points:
        points = [("defaults", {}, "grid")]
    first: dict[str, tuple[dict, str]] = {}
    for name, point, key in points:  # a point listed again runs once; a name given to two configs is an error
        if name in first and first[name][0] != point:
            fail(where, key, f"names an experiment {name!r} that {first[name][1]} names too, with other values")
        first.setdefault(name, (point, key))
    points = [(n, p, k.split("[")[0]) for n, (p, k) in first.items()]
    seeds = list(spec.seeds) if spec.seeds is not None else list(range(spec.replicates or 1))
    seeded = allowed is None or "seed" in allowed  # a task config without a seed field gets none
    varied = "seeds" if spec.seeds is not None else "replicates" if spec.replicates is not None else None
    if not seeded and varied:
        fail(where, varied, f"{spec.task}'s config ({cls.__name__}) has no `seed` field to vary; add one (seed: int = 0)")
    experiments, seen = [], set()
    for name, point, section in points:
        if varied and "seed" in point:
            fail(where, varied, f"experiment '{name}' sets its seed in {section} as well; vary seeds in one place ({section}, or {varied})")
        base = deep_merge(spec.defaults, point)
        # a seed of the grid, a combo or the defaults is the experiment's own: replicates and
        # seeds vary it, and only without them is it 0
        own = [base["seed"]] if "seed" in base and not varied else seeds
        for s in own:
            cfg = dict(base)
            if seeded:
                cfg["seed"] = s
            label = f"{name},seed={s}" if len(own) > 1 else name
            needs: tuple = ()
            if cls:  # the full typed config: the record shows every value, and a changed default changes the ID
                typed = build(cls, cfg, where, f"experiment '{label}'")
                cfg = plain(typed)
                needs = tuple(needs_of(typed)) if needs_of else ()
            else:
                _check_command(spec.command, cfg, where, label)
            frozen = json.dumps(cfg, sort_keys=True, default=str)  # as the task ID sees it (yaml's dump: 0.5 ms an experiment)
            if frozen in seen:  # e.g. the reference value listed again in a one-factor grid
                continue
            seen.add(frozen)
            experiments.append(Experiment(label, cfg, section, needs))
    factors = list(dict.fromkeys(k for _, p, _ in points for k in p))
    return Sweep(Path(path), spec, spec.name or Path(path).stem, experiments, factors, version)


def _check_command(command: str, cfg: dict, where: str, label: str) -> None:
    """Every {placeholder} of a command names a config key, outdir or deps[i]: fail at load, not mid-sweep."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(command) if f is not None]
    except ValueError as e:
        fail(where, "command", f"{e} (write a literal brace as {{{{ or }}}})")
    for f in fields:
        root = re.split(r"[.\[]", f, maxsplit=1)[0]
        if root not in cfg and root not in ("outdir", "deps"):
            keys = ", ".join(["outdir", *sorted(cfg)])
            # not a name at all (a dict or set literal in inline code): a brace meant literally
            literal = "" if root.isidentifier() else " (write a literal brace as {{ or }})"
            fail(where, "command", f"{{{f}}} is not a key of experiment '{label}'{literal}; placeholders: {keys}")
    if "outdir" not in (re.split(r"[.\[]", f, maxsplit=1)[0] for f in fields):  # it runs where the workflow was started
        fail(where, "command", "no {outdir}: the command writes {outdir}/metrics.json, e.g. python train.py --lr {lr} --out {outdir}")


def select(sweep: Sweep, only: tuple[str, ...], flag: str = "--only") -> list[Experiment]:
    """`--only key=v1,v2` (repeatable, all must hold); `name=` matches experiment names (one
    whole name, or several separated by commas)."""
    chosen = list(sweep.experiments)
    for o in only:
        key, eq, values = o.partition("=")
        if not eq or not key or not values:
            raise InputError(f"{flag} {o!r}: expected KEY=VALUE[,VALUE...], e.g. {flag} lr=0.02,0.04")
        if key == "name" and values in {e.name for e in sweep.experiments}:  # names hold commas
            wanted = [values]
        else:
            wanted = [v if key == "name" else _value(v) for v in values.split(",")]
        get = (lambda e: e.name) if key == "name" else (lambda e: e.config.get(key, _MISSING))  # noqa: E731
        present = [get(e) for e in sweep.experiments if get(e) is not _MISSING]
        if not present:
            keys = sorted({k for e in sweep.experiments for k in e.config} - {"name"})  # name: listed first, once
            raise InputError(f"{flag} {key}: no experiment of {sweep.path} has this key; keys: name, {', '.join(keys)}")
        unknown = [v for v in wanted if v not in present]
        if unknown:
            have = list(dict.fromkeys(_fmt(v) for v in present))
            have = "; ".join(have[:10]) + ("; …" if len(have) > 10 else "")
            raise InputError(f"{flag} {key}={_fmt(unknown[0])}: no experiment of {sweep.path} has it; values: {have}")
        chosen = [e for e in chosen if get(e) in wanted]
    if not chosen:
        raise InputError(f"{flag} {' '.join(only)}: no experiment of {sweep.path} matches all of these")
    return chosen


_MISSING = object()


def _value(text: str):
    """A --only value as YAML reads it (lr=0.02 a number), or as written where it is not YAML."""
    try:
        return read_yaml(text)
    except yaml.YAMLError:
        return text


def record(sweep: Sweep, exp: Experiment, task_id: str, manifest: dict | None, metrics: dict | None, outcome: Outcome | None) -> dict:
    """The result JSON of one experiment, from its store manifest, or this run's outcome where it
    left nothing in the store (lost worker, left by the budget) or failed to redo a stored result
    (--force: the stored one is not what this run did)."""
    m = reported(manifest, outcome)
    status = m.get("status") or (outcome.status if outcome else Status.MISSING)
    error = m.get("error") if m else (outcome.error if outcome else None)
    metrics = dict(metrics) if status == Status.DONE and isinstance(metrics, dict) else {}
    eff = {k: metrics.pop(k, None) for k in EFFICIENCY}
    if isinstance(metrics.get("efficiency"), dict):  # a task's own efficiency measures; a number stays a metric
        eff.update(metrics.pop("efficiency"))
    finished = m.get("finished")
    return {
        "experiment_id": exp.name,
        "task_id": task_id,
        "sweep": sweep.name,
        "task": sweep.spec.task or sweep.spec.command,
        "config": exp.config,
        "metrics": metrics,
        "efficiency": {**eff, "time_sec": m.get("walltime_sec")},
        "status": status,
        "error": error,
        "timestamp": datetime.fromtimestamp(finished, timezone.utc).isoformat(timespec="seconds") if finished else None,
        "code_version": m.get("versions", {}).get("git") or m.get("versions", {}).get("lambda-hat"),
        "project_version": m.get("versions", {}).get("project_git"),  # the git checkout it ran in, if another
        "host": m.get("host"),
        "slurm_job_id": m.get("slurm_job_id"),
    }


# the table's own columns besides the factors and metrics (rank: the report's first)
COLUMNS = ("rank", "experiment_id", "status", "seed", "error", "task_id", "timestamp", "code_version", "project_version")


def flat_row(rec: dict, factors: list[str]) -> dict:
    """One table row: experiment, status, the factors, the metrics, the efficiency."""
    row = {"experiment_id": rec["experiment_id"], "status": rec["status"], "seed": rec["config"].get("seed")}
    for k in factors:
        v = rec["config"].get(k)
        row[k] = _fmt(v) if isinstance(v, (list, dict)) else v
    last = {"error": rec["error"], "task_id": rec["task_id"], "timestamp": rec["timestamp"], "code_version": rec["code_version"]}
    if rec.get("project_version"):
        last["project_version"] = rec["project_version"]
    taken = {*COLUMNS, *factors}
    for k, v in {**dotted(rec["metrics"]), **rec["efficiency"]}.items():  # a task's nested metrics by dotted name, as trackers log them
        # a metric named like a factor or a column of the table never replaces it: an equal
        # value (a task returning its own epochs) is already there, another one is kept beside it
        if k not in taken:
            row[k] = v
        elif v != row.get(k, last.get(k)):
            row[f"metric_{k}"] = v
    return {**row, **last}


def table(rows: list[dict]):
    """The rows as a pandas table parquet can hold: a column whose values mix types (a number
    in one experiment, text in another) or hold lists or mappings is written as text."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for c in [c for c in df.columns if pd.api.types.is_object_dtype(df[c])]:
        kinds = {"number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v) for v in df[c] if v is not None and v == v}
        if len(kinds) > 1 or kinds & {list, dict}:
            df[c] = [None if v is None or v != v else _fmt(v) for v in df[c]]
    return df.convert_dtypes()
