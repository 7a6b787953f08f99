"""The `lambda-hat` command line."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import click

from .engine.cards import PACKAGED
from .engine.typed import YAML_SUFFIXES, InputError, yaml_named, yaml_stems

CARD_HELP = f"Executor card: a path, or a name under ./parsl_cards/ or among the packaged cards ({', '.join(sorted(yaml_stems(PACKAGED, recursive=True)))})."
# The original Lambda-Hat's --backend choices (and its LAMBDA_HAT_BACKEND), as our cards
BACKENDS = {"local": "local", "slurm-cpu": "slurm/cpu", "slurm-gpu": "slurm/a100"}
# and its `workflow sample`, the llc workflow under another name
WORKFLOW_ALIASES = {"sample": "llc"}
# The original Lambda-Hat's commands that take another form here: each is a one-line pointer
_PLOTS = "`lambda-hat workflow llc --promote` plots every target and run of the experiments file into results/gallery/ (finished tasks are reused, only the plots are computed)"
_NO_TUNER = "there is no tuner; a grid of experiments is a sweep file (`lambda-hat workflow sweep`), several values of a key `workflow llc -m`"
MOVED = {
    "build": "targets are trained as tasks of `lambda-hat workflow llc` (once per config, kept in the store; --dry-run lists them; --until train_target trains them alone)",
    "sample": "samplers run as tasks of `lambda-hat workflow llc` (also `workflow sample`; --dry-run lists them)",
    "diagnose": f"{_PLOTS}; a run's trace.nc opens in arviz",
    "diagnose-experiment": f"{_PLOTS}; a run's trace.nc opens in arviz",
    "diagnose-target": _PLOTS,
    "diagnose-targets": _PLOTS,
    "artifacts tb": "there are no TensorBoard logs; --track mlflow|wandb logs every run, `lambda-hat export` a finished store",
    "workflow tune": _NO_TUNER,
    "workflow optuna": _NO_TUNER,
}
SETTINGS_HELP = " Snakemake's --config KEY=VALUE (no such file): an override, as KEY=VALUE after the options."
TIMEOUT_HELP = "Kill any {} running longer than this (90, 30m, 1h30m, HH:MM:SS){}."
TRACK_HELP = "Log every finished task as a run in MLflow (MLFLOW_TRACKING_URI or ./mlruns) or W&B (offline in ./wandb without WANDB_API_KEY or with WANDB_MODE=offline); repeatable; needs the tracking extra."


def _track(names) -> tuple[str, ...]:
    from .engine.tracking import check

    try:
        return check(names)
    except InputError as e:
        _fail(e)


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


def _existing_store(root: Path):
    """The store at `root` for the commands that read one; a missing directory is bad input (exit 2)."""
    from .engine.store import Store

    store = Store(root)
    if not store.root.is_dir():
        _fail(InputError(f"store {store.root}: no such directory"))
    if store.is_kind_folder():  # e.g. runs/llc: it had read as an empty store
        _fail(InputError(f"store {store.root}: a folder of tasks inside a store; give the store: --store {store.root.parent}"))
    return store


def _duration(value, flag: str):
    from .engine.typed import parse_duration

    try:
        return parse_duration(value, flag) if value is not None else None
    except InputError as e:
        _fail(e)


def _overrides(args, example: str) -> tuple[str, ...]:
    for a in args:
        if "=" not in a and not a.startswith("~"):
            _fail(InputError(f"unexpected argument {a!r}: overrides are KEY=VALUE (or ~KEY to remove one), e.g. {example}"))
    return tuple(args)


def _workflow(name: str):
    import importlib

    return importlib.import_module(f"lambda_hat.workflows.{name}").WORKFLOW


def _command(wf) -> click.Command:
    """A workflow's command: the options every workflow takes (here, once), then its own (wf.cli())."""

    def callback(local, parsl_card, profile, backend, sets, executor, resources, retries, jobs, **kw):
        from .engine.cards import load_card
        from .engine.workflow import Options, run

        # each is one option under several spellings (--profile, --cores, …): given twice, say so;
        # an error names the card's flag as given
        card_flag = "--profile" if profile and not parsl_card else "--parsl-card"
        parsl_card, profile = _once(parsl_card, "--parsl-card"), _once(profile, "--profile")
        if parsl_card and profile and parsl_card != profile:
            _fail(InputError(f"--parsl-card {parsl_card} and --profile {profile}: give one"))
        parsl_card, jobs = parsl_card or profile, _once(jobs, "--jobs/--cores/-j")
        parsl_card = parsl_card and str(_from_origin(Path(parsl_card)))
        sets = (*sets, f"retries={retries}") if retries is not None else sets

        if (local or parsl_card) and click.get_current_context().get_parameter_source("backend") == click.core.ParameterSource.ENVIRONMENT:
            backend = None  # a flag given wins over LAMBDA_HAT_BACKEND
        given = [f for f, v in (("--local", local), (card_flag, parsl_card), ("--backend", backend), ("--executor", executor)) if v]
        if parsl_card and executor and not local and not backend:  # Snakemake's --profile DIR --executor slurm: the profile's, overridden
            given.remove("--executor")
        if len(given) > 1:
            _fail(InputError(f"{' and '.join(given)} exclude each other"))
        parsl_card = BACKENDS[backend] if backend else parsl_card
        jobs, kw["cfg"] = _c_flag(kw.pop("c_flag"), jobs, kw["cfg"])
        # Snakemake's --config KEY=VALUE… sets values: overrides, where no such file exists
        # (--configfile FILE --config KEY=VALUE: both, the one option given twice)
        configs, file = kw.pop("config", ()), kw.pop("file", None)
        if wf.config_file:  # `workflow sweep FILE`'s habit: a YAML file among the KEY=VALUEs is the file
            file = _file_argument(kw)
        configs, file = tuple(map(_from_origin, configs)), file and _from_origin(file)
        settings = [str(p) for p in (*configs, file) if _is_setting(p)]
        config = _one_config([p for p in configs if not _is_setting(p)])
        given = _one_file(None if _is_setting(file) else file, config, "" if wf.config_file else wf.config_help)
        path = _config_file(wf, given, kw.pop("config_path"), kw.pop("config_name"), kw.pop("config_dir"))
        other = _other_workflow(path, wf.name)
        if other:
            _fail(InputError(f"{path} is {FILES[other]}, not {FILES.get(wf.name, 'a ' + wf.name + ' file')}: run it with `{_run_it(other, path)}`"))
        changes = kw.pop("list_changes")  # Snakemake 8's --list-changes code|params|input
        if changes:
            kw["graph"] = "code" if changes == "code" else "new"
        common = {
            k: kw.pop(k)
            for k in ("force", "forcerun", "until", "omit_from", "dry_run", "timeout", "track", "cfg", "print_commands", "graph", "quiet", "failed_logs")
        }
        try:
            overrides, extra = wf.parse(kw)
            overrides = (*map(str, settings), *overrides)
            snakemake = {"executor": executor, "resources": resources} if executor or resources else None
            card = load_card(parsl_card, sets, snakemake, card_flag)
            if jobs is not None:
                card = load_card(parsl_card, (*sets, _jobs_setting(jobs, card, parsl_card, snakemake)), snakemake, card_flag)
            listing = wf.preview(path, card, overrides, extra)
            if listing is not None:  # e.g. progressive --list: a look at the file, nothing run
                click.echo(listing)
                return
            opts = Options(
                force=common["force"], forcerun=common["forcerun"], until=common["until"], omit_from=common["omit_from"], dry_run=common["dry_run"], timeout=_duration(common["timeout"], "--timeout"),
                budget=_duration(extra.pop("budget", None), "--budget"), overrides=_overrides(overrides, wf.example), track=_track(common["track"]), extra=extra,
                show_config=common["cfg"] is not None, print_commands=common["print_commands"], graph=common["graph"], quiet=common["quiet"],
                failed_logs=common["failed_logs"],
            )  # fmt: skip
            signal.signal(signal.SIGTERM, _terminate)  # scancel, a job's end, `timeout`: as Ctrl-C
            code = run(wf, path, card, opts)
        except InputError as e:
            _fail(e)
        except KeyboardInterrupt as e:
            how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            click.echo(f"\n{how}: running {wf.noun} were killed; rerun to resume", err=True)
            sys.exit(143 if isinstance(e, Terminated) else 130)
        sys.exit(code)

    noun = wf.noun
    params = [
        click.option("--local", is_flag=True, help="Run on this machine with parsl_cards/local.yaml (the default)."),
        click.option("--parsl-card", "parsl_card", multiple=True, metavar="CARD", help=CARD_HELP),
        click.option(
            "--profile",
            multiple=True,
            metavar="CARD",
            help="Snakemake's --profile: a card as --parsl-card, or a Snakemake profile (DIR with config.yaml, or NAME under ~/.config/snakemake).",
        ),
        click.option(
            "--backend",
            type=click.Choice(list(BACKENDS)),
            envvar="LAMBDA_HAT_BACKEND",
            help="The original Lambda-Hat's backends: local, slurm-cpu (card slurm/cpu), slurm-gpu (slurm/a100); also from LAMBDA_HAT_BACKEND.",
        ),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a card field, e.g. --set provider.partition=debug (repeatable)."),
        click.option(
            "--executor",
            type=click.Choice(["local", "slurm", "cluster-generic"]),
            help="Snakemake's --executor: slurm runs on the slurm/cpu card (slurm/a100 where --default-resources asks for a GPU) as its "
            "profile would (see --profile); with --profile DIR, over the profile's.",
        ),
        click.option(
            "--default-resources",
            "resources",
            multiple=True,
            metavar="KEY=VALUE…",
            help="Snakemake's --default-resources (slurm_partition=…, slurm_account=…, runtime=…, mem_mb=…, cpus_per_task=…, gpu=…), "
            "with --executor or a Snakemake --profile, over the profile's.",
        ),
        click.option(
            "--retries",
            "--restart-times",
            "-T",
            type=click.IntRange(min=0),
            help="Snakemake's --retries (--restart-times, -T): the card's `retries`, as --set retries=N: a task whose worker or node was lost "
            "runs again up to N times (a task that failed on its own is its outcome, not retried).",
        ),
        # Snakemake's spellings too: -n/--dryrun, -F/--forceall, -j/--jobs/--cores N
        click.option(
            "--dry-run",
            "--dryrun",
            "-n",
            "--summary",
            "-S",
            "--detailed-summary",
            "-D",
            "dry_run",
            is_flag=True,
            help="List every task with its state and why it would run (new, failed, forced, code changed); run nothing. "
            "Also as Snakemake's --summary/-S and --detailed-summary/-D.",
        ),
        click.option(
            "--cfg",
            type=click.Choice(["job", "all"]),
            help="Hydra's --cfg job: print every task's resolved config (what its ID hashes) as YAML and run nothing.",
        ),
        click.option("--resolve", is_flag=True, expose_value=False, help="Hydra's --resolve (with --cfg): always, the configs --cfg prints are resolved."),
        # Snakemake's -k and --ri name what the engine always does: accepted so its habits run as they are
        click.option("--keep-going", "-k", is_flag=True, expose_value=False, help="Always on: a failed task never stops the others."),
        click.option("--reason", "-r", is_flag=True, expose_value=False, help="Snakemake's --reason: always on, the dry run says why each task would run."),
        # Snakemake's habits with no counterpart here: accepted, and each named once on stderr
        click.option(
            "--latency-wait",
            "--output-wait",
            "-w",
            type=click.IntRange(min=0),
            expose_value=False,
            callback=_noted("nothing waits for files here: a task's directory is final once it appears"),
            help="Snakemake's --latency-wait: accepted; a task's result is whole once its directory appears (no shared-filesystem wait).",
        ),
        click.option(
            "--use-conda",
            "--use-singularity",
            "--use-apptainer",
            "--use-envmodules",
            is_flag=True,
            expose_value=False,
            callback=_noted("tasks run in this Python environment, not per-rule ones"),
            help="Snakemake's --use-conda (and singularity, apptainer, envmodules): accepted; tasks run in this Python environment.",
        ),
        click.option("--rerun-incomplete", "--ri", is_flag=True, expose_value=False, help="Always on: a task that never finished runs again."),
        click.option(
            "--unlock",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_unlock,
            help="Snakemake's --unlock after a crash: nothing to do here (a task's lock dies with its process); says so and exits.",
        ),
        click.option(
            "--printshellcmds",
            "-p",
            "print_commands",
            is_flag=True,
            help="Snakemake's -p: with --dry-run (-np), each shell task's command line; a shell task's log.txt starts with it.",
        ),
        click.option("--dag", "graph", flag_value="dag", help="Snakemake's --dag: print the task graph as Graphviz dot (done tasks dashed) and run nothing."),
        click.option("--rulegraph", "graph", flag_value="rulegraph", help="Snakemake's --rulegraph: the graph of the task functions, as dot; run nothing."),
        click.option("--list-rules", "-l", "graph", flag_value="rules", help="Snakemake's --list-rules: the task functions (rules), a line each; run nothing."),
        click.option(
            "--list-code-changes",
            "--lc",
            "graph",
            flag_value="code",
            help="Snakemake's --list-code-changes: the tasks whose code version changed since their result (they rerun), a label a line; run nothing.",
        ),
        click.option(
            "--list-params-changes",
            "--lp",
            "--list-input-changes",
            "--li",
            "graph",
            flag_value="new",
            help="Snakemake's --list-params-changes (and input): a changed config is a new task with its own ID; the tasks with no result yet, "
            "a label a line; run nothing.",
        ),
        click.option(
            "--list-changes",
            "list_changes",
            type=click.Choice(["code", "params", "input"]),
            help="Snakemake 8's --list-changes: code as --list-code-changes, params or input as --list-params-changes.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="Snakemake's -q: no progress lines while it runs (failures and the summary still)."),
        click.option(
            "--show-failed-logs",
            "failed_logs",
            is_flag=True,
            help="Snakemake's --show-failed-logs: after the summary, the last 20 lines of each failed task's log.",
        ),
        click.option(
            "--nolock",
            is_flag=True,
            expose_value=False,
            callback=_noted("nothing locks a whole store here: runs may share it, each task locked by its ID while it runs"),
            help="Snakemake's --nolock: accepted; runs may share a store (each task is locked by its ID while it runs).",
        ),
        click.option(
            "--rerun-triggers",
            multiple=True,
            expose_value=False,
            type=click.Choice(TRIGGERS),
            callback=_noted("a task reruns when its config (params, input) or code version changes, never for file times"),
            help="Snakemake's --rerun-triggers: accepted; a task reruns when its config or code version changes (never for file times).",
        ),
        click.option(
            "--touch",
            "-t",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_touch,
            help="Snakemake's --touch: nothing to do here (a result is found by its config and code version, never by file times); says so and exits.",
        ),
        click.option("--force", "--forceall", "-F", "force", is_flag=True, help=f"Recompute the {noun} even if their results are in the store."),
        click.option(
            "--forcerun",
            "-R",
            "forcerun",
            multiple=True,
            metavar="NAME",
            help="Snakemake's -R: recompute the tasks NAME names (a task function such as train_target, a sampler, target, stage or experiment; repeatable or comma-separated) and those downstream.",
        ),
        click.option(
            "--until",
            "-U",
            "until",
            multiple=True,
            metavar="NAME",
            help="Snakemake's -U: run only the tasks NAME names (as -R: e.g. train_target, a sampler, target or stage) and those they read; the tables are left as they were.",
        ),
        click.option(
            "--omit-from",
            "-O",
            "omit_from",
            multiple=True,
            metavar="NAME",
            help="Snakemake's --omit-from: run every task except those NAME names (as -R: e.g. sample_run, a sampler, target or stage) "
            "and those downstream; the tables are left as they were.",
        ),
        click.option(
            "--directory",
            "-d",
            metavar="DIR",
            expose_value=False,
            is_eager=True,
            callback=_directory,
            help="Snakemake's --directory: work in DIR (its config/, runs/, results/ and modules); a file named here is read from where "
            "the command ran if it is there, else from DIR.",
        ),
        click.option(
            "--jobs",
            "--cores",
            "-j",
            "jobs",
            multiple=True,
            metavar="N",
            help="Run at most N tasks at once (per node on SLURM): the card's `workers`, as --set workers=N; `all`: one per core.",
        ),
        click.option("-c", "c_flag", metavar="N|job", help="Snakemake's -c N (--cores N) or Hydra's -c job (--cfg job)."),
        click.option("--timeout", metavar="DURATION", help=TIMEOUT_HELP.format(noun.split()[0].rstrip("s"), wf.timeout_help)),
        click.option("--track", multiple=True, metavar="mlflow|wandb", help=TRACK_HELP),
        *wf.cli(),
    ]
    if wf.config_file:
        params.insert(
            0,
            click.option(
                "--config",
                "--configfile",
                "config",
                multiple=True,
                type=click.Path(path_type=Path),
                help=f"{wf.config_help} Also a .yaml/.yml file among the arguments.{SETTINGS_HELP}  [default: {wf.config_file}]",
            ),
        )
    else:  # the file as an argument, or as --config like the other workflows' files
        params[0:0] = [
            click.argument("file", metavar=wf.config_help, required=False, type=click.Path(path_type=Path)),
            click.option(
                "--config", "--configfile", "config", multiple=True, type=click.Path(path_type=Path), help=f"The same as {wf.config_help}.{SETTINGS_HELP}"
            ),
        ]
    # Hydra's spelling of the same choice: --config-path DIR --config-name NAME is DIR/NAME.yaml (or .yml)
    default = f"{Path(wf.config_file).parent}, the directory of the default file" if wf.config_file else "config/sweeps"
    params[1:1] = [
        click.option("--config-path", "-cp", "config_path", metavar="DIR", help=f"Hydra's --config-path: the directory of --config-name (default: {default})."),
        click.option("--config-name", "-cn", "config_name", metavar="NAME", help="Hydra's --config-name: the file NAME.yaml (or NAME.yml) in --config-path."),
        click.option("--config-dir", "-cd", "config_dir", metavar="DIR", help="Hydra's --config-dir: a directory searched for the file before --config-path."),
    ]
    for decorate in reversed(params):
        callback = decorate(callback)
    return click.command(wf.name, cls=_SnakemakeCommand, help=type(wf).__doc__)(callback)


TRIGGERS = ("mtime", "params", "input", "software-env", "code")  # Snakemake's --rerun-triggers
# Snakemake's options that take several words, and which words after the first are still theirs
SEVERAL = {"--default-resources": lambda a: "=" in a and not a.startswith("-"), "--rerun-triggers": lambda a: a in TRIGGERS}


class _SnakemakeCommand(click.Command):
    """Snakemake's --default-resources takes every KEY=VALUE after it up to the next option
    (`--default-resources slurm_partition=gpu runtime=60 -j 4`), --rerun-triggers every trigger:
    each word is given its own option here."""

    def parse_args(self, ctx, args):
        out, taking = [], None  # taking: the option of SEVERAL whose first word has been read
        for i, a in enumerate(args):
            if taking and SEVERAL[taking](a):
                out.append(taking)
            else:
                prev = args[i - 1] if i else ""
                taking = prev if prev in SEVERAL else next((o for o in SEVERAL if a.startswith(o + "=")), None)
            out.append(a)
        return super().parse_args(ctx, out)


def _noted(why: str):
    """A callback that accepts a Snakemake option with no counterpart here and says so once."""

    def callback(ctx, param, value):
        if value:
            click.echo(f"note: {'/'.join(param.opts)}: {why}", err=True)

    return callback


def _touch(ctx, param, value):
    if value:
        click.echo("nothing to touch: a result is found by its config and code version, never by file times; --dry-run shows what would run")
        ctx.exit(0)


def _directory(ctx, param, value):
    if value is None:
        return
    origin = Path.cwd()
    try:
        os.chdir(value)
    except OSError as e:
        _fail(InputError(f"--directory {value}: {e.strerror.lower()}"))
    ctx.meta["lambda_hat.origin"] = origin  # where the command ran
    sys.path.insert(0, os.getcwd())  # the project's modules from there, as main() puts the first one


def _from_origin(p: Path) -> Path:
    """A file named on the command line, after -d DIR: from where the command ran if it is there
    (as Snakemake reads --configfile), else from DIR."""
    origin = click.get_current_context().meta.get("lambda_hat.origin")
    return origin / p if origin and not p.is_absolute() and (origin / p).exists() else p


def _unlock(ctx, param, value):
    if value:
        click.echo("nothing to unlock: a task's lock is released when its process ends, crashed or killed; `lambda-hat status` shows what is running")
        ctx.exit(0)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the running tasks killed and left for the next run."""


def _terminate(signum, frame):
    raise Terminated


def _jobs_setting(jobs: str, card, name, snakemake: dict | None) -> str:
    """The card field -j N sets: workers (tasks at once; per node on SLURM), or, on a Snakemake
    SLURM profile or --executor slurm, where each Snakemake job is a block, its jobs at once as
    Snakemake reads -j."""
    from .engine.cards import find_card, snakemake_profile

    if card.provider.type == "slurm" and (snakemake or (name and snakemake_profile(find_card(name)))):
        if not jobs.isdigit() or int(jobs) < 1:
            raise InputError(
                f"--jobs/--cores/-j: with a Snakemake SLURM profile, its SLURM jobs at once (max_blocks): expected a positive integer, got {jobs!r}"
            )
        return f"provider.max_blocks={jobs}"
    return f"workers={_jobs(jobs, card)}"


def _jobs(jobs: str, card) -> int:
    """-j/--jobs/--cores N, or Snakemake's `all`: a task per core (per node on SLURM: the card's cores_per_node)."""
    from .engine.cards import node_cores

    if jobs == "all":
        if not (cores := node_cores(card)):
            raise InputError("--jobs/--cores/-j all: the card names no provider.cores_per_node, so a node's cores are unknown; give a number")
        return cores
    if not jobs.isdigit() or int(jobs) < 1:
        raise InputError(f"--jobs/--cores/-j: expected a positive integer or 'all', got {jobs!r}")
    return int(jobs)


def _is_setting(p: Path | None) -> bool:
    """KEY=VALUE given where a file goes (Snakemake's --config): no such file, a key without a slash."""
    return p is not None and "=" in str(p) and "/" not in str(p).split("=", 1)[0] and not str(p).endswith(YAML_SUFFIXES) and not p.exists()


def _c_flag(value: str | None, jobs: str | None, cfg: str | None) -> tuple[str | None, str | None]:
    """-c: Snakemake's -c N (--cores N) or Hydra's -c job (--cfg job); `all` would be either."""
    if value is None:
        return jobs, cfg
    if value == "all":
        _fail(InputError("-c all: Snakemake's --cores all (a task per core) or Hydra's --cfg all (every task's config printed)? give the long form"))
    if value == "job":
        if cfg is not None:
            _fail(InputError("-c job and --cfg: give it once"))
        return jobs, "job"
    if not value.isdigit() or int(value) < 1:
        _fail(InputError(f"-c: expected a number of cores (Snakemake's -c N, as --cores N) or job (Hydra's -c job, as --cfg job), got {value!r}"))
    if jobs is not None:
        _fail(InputError(f"-c {value} and --jobs/--cores: give it once"))
    return value, cfg


def _once(values: tuple[str, ...], flag: str) -> str | None:
    """An option's value where it was given at most once, or each time the same."""
    if len(set(values)) > 1:
        _fail(InputError(f"{flag} given as {' and '.join(values)}: give one"))
    return values[0] if values else None


def _file_argument(kw: dict) -> Path | None:
    """A YAML file named among a workflow's trailing arguments (KEY=VALUEs, progressive's stage
    names too), taken out of them; or None."""
    args = kw.get("overrides", ())
    files = [a for a in args if "=" not in a and not a.startswith("~") and a.endswith(YAML_SUFFIXES)]
    if len(files) > 1:
        _fail(InputError(f"{' and '.join(files)}: give one file"))
    kw["overrides"] = tuple(a for a in args if a not in files)
    return Path(files[0]) if files else None


def _one_config(files: list[Path]) -> Path | None:
    """The file of --config/--configfile, given (once, or as the same file) among their settings."""
    if len(set(files)) > 1:
        _fail(InputError(f"{' and '.join(f'--config {f}' for f in files)}: give the file once"))
    return files[0] if files else None


def _one_file(arg: Path | None, config: Path | None, name: str = "") -> Path | None:
    """A workflow file given as an argument or as --config (each workflow's habit in the other's place): once."""
    if arg is not None and config is not None and arg != config:
        _fail(InputError(f"{name + ' ' if name else ''}{arg} and --config {config}: give the file once"))
    return arg or config


def _default_exists(path: Path) -> None:
    """A default file that is missing: most often, the command ran outside the project's directory."""
    if not path.exists():
        _fail(InputError(f"{path}: file not found (the default, relative to {Path.cwd()}): run in the project's directory, or give --config FILE"))


def _config_file(wf, given: Path | None, config_path: str | None, config_name: str | None, config_dir: str | None = None) -> Path:
    """The workflow's file: --config (or FILE), Hydra's --config-dir/--config-path/--config-name, or the default."""
    hydra = [flag for flag, v in (("--config-name", config_name), ("--config-path", config_path), ("--config-dir", config_dir)) if v]
    if given is not None and hydra:
        _fail(InputError(f"{'--config' if wf.config_file else wf.config_help} and {hydra[0]} exclude each other"))
    if given is not None:
        return given
    if config_name is None and wf.config_file is None:
        _fail(InputError(f"missing {wf.config_help}: give the file (e.g. config/sweeps/blobs.yaml) or --config-name NAME"))
    # Hydra's search path: --config-dir first, then --config-path (or the default file's folder)
    searched = [Path(config_dir)] if config_dir else []
    if searched and not searched[0].is_dir():
        _fail(InputError(f"--config-dir {config_dir}: no such directory"))
    for folder in searched:
        if found := yaml_named(folder, config_name or Path(wf.config_file).name):
            return found
    if config_name is None:
        path = Path(config_path or Path(wf.config_file).parent) / Path(wf.config_file).name
        if config_path is None:
            _default_exists(path)
        return path
    folder = Path(config_path or (Path(wf.config_file).parent if wf.config_file else "config/sweeps"))
    searched.append(folder)
    path = yaml_named(folder, config_name)
    if path is None:
        path = folder / (config_name if config_name.endswith(YAML_SUFFIXES) else f"{config_name}.yaml")
        if any(f.is_dir() for f in searched):  # Hydra's habit: a name, so list the names
            names = sorted({n for f in searched if f.is_dir() for n in yaml_stems(f)})
            where = f"{path}: file not found" if len(searched) == 1 else f"{path.name}: in neither {searched[0]} nor {folder}"
            _fail(InputError(f"{where}; --config-name takes one of: {', '.join(names) or f'(no YAML files in {folder})'}"))
    return path


def _moved(name: str) -> click.Command:
    """The original's command `name`, whatever its arguments: an error naming what does its job here."""

    def callback(args):
        _fail(InputError(f"`lambda-hat {name}` is the original Lambda-Hat's command: here {MOVED[name]}"))

    return click.Command(
        name.split()[-1], callback=callback, hidden=True, add_help_option=False, context_settings={"ignore_unknown_options": True},
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
    )  # fmt: skip


class _Moved(click.Group):
    """A group that answers the original's commands it does not have with their pointer (MOVED)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's own, but a usage error (an unknown option, a bad value) is one line, as any
        other bad input is: `error: …` with the command whose --help lists what it takes, exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # `lambda-hat` alone: its help
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            click.echo(f"error: {' '.join(e.format_message().split())}{where}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def get_command(self, ctx, name):
        path = f"{'' if ctx.parent is None else ctx.info_name + ' '}{name}"
        return super().get_command(ctx, name) or (_moved(path) if path in MOVED else None)


class _Workflows(_Moved):
    """The modules of lambda_hat.workflows (the project's workflows/ folder), each a command."""

    def list_commands(self, ctx) -> list[str]:
        import pkgutil

        import lambda_hat.workflows as w

        return sorted(m.name for m in pkgutil.iter_modules(w.__path__) if not m.name.startswith("_"))

    def get_command(self, ctx, name):
        name = WORKFLOW_ALIASES.get(name, name)
        if name in self.list_commands(ctx):
            return _command(_workflow(name))
        return super().get_command(ctx, name) or _pointer(name)


def _pointer(name: str) -> click.Command | None:
    """`workflow FILE.yaml` or `workflow kkt` (a study's name): an error naming the command that runs
    it, not click's "No such command"; None where the name is neither."""
    if Path(name).suffix in YAML_SUFFIXES and Path(name).is_file():
        try:
            found = _which(Path(name))
        except InputError:
            return None
        hint = f"it is {FILES[found.name]}: `{_run_it(found.name, Path(name))}`" if found else None
    else:
        files = [yaml_named(Path("config/sweeps"), s) for s in sorted(yaml_stems(Path("config/sweeps"))) if s.startswith(name)]
        hint = (
            f"a sweep file runs it: `lambda-hat workflow sweep {files[0]}`" + (f" (also {', '.join(f.stem for f in files[1:])})" if files[1:] else "")
            if files
            else None
        )
    if hint is None:
        return None

    def callback(args):
        _fail(InputError(f"`lambda-hat workflow {name}`: no such workflow ({', '.join(_Workflows().list_commands(None))}); {hint}"))

    return click.Command(
        name,
        callback=callback,
        hidden=True,
        add_help_option=False,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True},
    )


@click.group(cls=_Moved, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lambda-hat", prog_name="lambda-hat")
def main():
    """lambda-hat: Parsl workflows for ML sweeps; estimates Local Learning Coefficients (λ̂).

    Every task's result lives in a content-addressed directory of the store (default runs/):
    the same config is never computed twice and an interrupted sweep resumes where it stopped.
    Exit codes: 0 all done, 1 some tasks failed (or a tracker did), 2 bad input, 130 interrupted (143 on SIGTERM).
    """
    # The project's own modules (a custom target's `fn`, a sweep's task) import here as they do
    # in its task processes, which run with the working directory first on sys.path (python -m's)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


@main.group(cls=_Workflows)
def workflow():
    """Run a workflow (llc, sweep, progressive: one per module of workflows/)."""


def _which(path: Path):
    """The workflow a YAML file belongs to, by its top-level keys."""
    from .engine.typed import load_yaml

    raw = load_yaml(path)
    for name in _Workflows().list_commands(None):
        wf = _workflow(name)
        if isinstance(raw, dict) and any(k in raw for k in wf.file_keys):
            return wf
    raise InputError(f"{path}: not a workflow file: expected an experiments file (targets:), a sweep file (rank_by:) or a stages file (stages:)")


FILES = {"llc": "an experiments file", "sweep": "a sweep file", "progressive": "a stages file"}


def _other_workflow(path: Path, name: str) -> str | None:
    """The workflow a file belongs to where that is plainly not `name` (its top-level keys are another's)."""
    try:
        other = _which(path).name if path.is_file() else name
    except InputError:
        return None  # the workflow's own loader names what is wrong
    return other if other != name and other in FILES else None


def _run_it(name: str, path: Path) -> str:
    return f"lambda-hat workflow sweep {path}" if name == "sweep" else f"lambda-hat workflow {name} --config {path}"


@main.command("report")
@click.argument("sweep_file", type=click.Path(path_type=Path), required=False)
@click.option("--config", "--configfile", "config", type=click.Path(path_type=Path), help="The same as SWEEP_FILE.")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Report only experiments whose KEY is one of the values (repeatable; all must hold; as --only).",
)
@click.option("--no-plots", is_flag=True, help="Write the table and summary without plots.")
@click.option("--output-dir", type=click.Path(path_type=Path), help="Write the report here instead of results/sweeps/<name>/.")
def report_cmd(sweep_file, config, filters, no_plots, output_dir):
    """Rebuild a sweep's table and report from the store without computing anything."""
    from lambda_hat.workflows import sweep as wf

    if (sweep_file := _one_file(sweep_file, config, "SWEEP_FILE")) is None:
        _fail(InputError("missing SWEEP_FILE: give the sweep file (e.g. config/sweeps/blobs.yaml)"))
    try:
        _not_sweep_outputs(sweep_file)
        other = _other_workflow(sweep_file, "sweep")
        if other:  # the other workflows' outputs come back from a rerun, which reuses what is done
            gallery = f", `lambda-hat promote --config {sweep_file}` its gallery" if other == "llc" else ""
            raise InputError(
                f"{sweep_file} is {FILES[other]}, not a sweep file: `{_run_it(other, sweep_file)}` rebuilds its table (finished tasks are reused){gallery}"
            )
        sys.exit(wf.report(sweep_file, tuple(filters), plots=not no_plots, output_dir=output_dir))
    except InputError as e:
        _fail(e)


def _not_sweep_outputs(path: Path) -> None:
    """A sweep's output folder or one of its tables given to `report`, which reads the sweep file:
    name the file that wrote them (the summary report's first line records it)."""
    if path.suffix in YAML_SUFFIXES:
        return
    from lambda_hat.engine import report

    folder = path if path.is_dir() else path.parent
    if not (folder / report.SUMMARY).is_file():
        if path.is_dir():
            raise InputError(f"{path}: a folder; report takes the sweep file (e.g. config/sweeps/blobs.yaml)")
        if path.is_file() and path.suffix in (".parquet", ".csv"):  # not .json: YAML reads a JSON sweep file
            if path.name.startswith("llc_"):
                raise InputError(
                    f"{path}: the llc workflow's table, not a sweep file: `lambda-hat workflow llc` rebuilds it (finished tasks are reused), `lambda-hat promote` its gallery"
                )
            raise InputError(f"{path}: a table, not a sweep file; report takes the sweep file that wrote it (e.g. config/sweeps/blobs.yaml)")
        return
    src = report.sweep_file_of(folder)
    what = "a sweep's output folder" if path.is_dir() else "a sweep's output"
    wrote = f" ({src}, relative to where it ran)" if src else ""
    raise InputError(f"{path}: {what}; report takes the sweep file that wrote it{wrote}")


@main.command("promote")
@click.option(
    "--config",
    "--configfile",
    "config",
    type=click.Path(path_type=Path),
    help="Experiments file whose runs the gallery shows.  [default: config/experiments.yaml]",
)
@click.option("--promote-plots", metavar="PLOTS", help="The run plots it shows, comma-separated (trace, running_llc, rank, hmc, mclmc, elbo; .png optional).")
@click.option("--plot-name", metavar="PLOTS", help="The original Lambda-Hat's name for --promote-plots.")
@click.option("--runs-root", type=click.Path(path_type=Path), help="The store to read.  [default: the experiments file's store_root]")
@click.option("--samplers", metavar="NAMES", help="Only the runs of these samplers, comma-separated (their names in the experiments file).")
@click.option("--outdir", type=click.Path(path_type=Path), help="Where the gallery goes (a new or empty folder, or a gallery's).  [default: results/gallery]")
@click.option("--snippet-out", type=click.Path(path_type=Path), help="Also write the gallery's Markdown here, its links leading to the gallery's plots.")
@click.argument("what", required=False, metavar="[gallery|single|FILE]")
def promote_cmd(config, promote_plots, plot_name, runs_root, samplers, outdir, snippet_out, what):
    """Rebuild results/gallery/ (index.html, README.md) from the store without computing anything.
    The original Lambda-Hat's spellings work: `promote gallery` and `promote single` are the same
    command, with --runs-root, --samplers, --outdir, --plot-name and --snippet-out. A .yaml file
    as the argument is --config FILE, as `status FILE`."""
    from lambda_hat.llc.gallery import run_plot_names
    from lambda_hat.workflows import llc as wf

    if what is not None and what not in ("gallery", "single"):
        if not what.endswith(YAML_SUFFIXES):
            _fail(InputError(f"promote {what}: expected gallery, single or an experiments file (.yaml, .yml)"))
        config = _one_file(Path(what), config, "promote")
    if config is None:
        _default_exists(config := Path("config/experiments.yaml"))
    if other := _other_workflow(config, "llc"):
        _fail(InputError(f"{config} is {FILES[other]}, not an experiments file: `promote` builds the llc workflow's gallery"))
    try:
        if promote_plots is not None and plot_name is not None:
            raise InputError("--promote-plots and --plot-name name the same thing: give one")
        flag, plots = ("--plot-name", plot_name) if plot_name is not None else ("--promote-plots", promote_plots)
        only = run_plot_names(plots, flag) if plots is not None else None
        names = tuple(dict.fromkeys(n.strip() for n in samplers.split(",") if n.strip())) if samplers is not None else None
        if names == ():
            raise InputError(f"--samplers {samplers!r}: no sampler named")
        sys.exit(wf.rebuild_gallery(config, only=only, store_root=runs_root, samplers=names, outdir=outdir, snippet=snippet_out))
    except InputError as e:
        _fail(e)


@main.command()
@click.argument("workflow_file", type=click.Path(path_type=Path), required=False)
@click.option("--config", "--configfile", "config", type=click.Path(path_type=Path), help="The same as WORKFLOW_FILE.")
@click.option("--store", "store_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True, help="Store directory.")
def status(workflow_file, config, store_root):
    """Show what is done, failed, running or incomplete: every task of WORKFLOW_FILE (an
    experiments, sweep or stages file) with its state, or without it, the whole store."""
    from .engine.progress import last_line
    from .engine.store import read_json
    from .engine.tasks import Status

    workflow_file = _one_file(workflow_file, config, "WORKFLOW_FILE")
    if workflow_file is not None:
        from .engine import workflow as engine

        try:
            click.echo(engine.status(_which(workflow_file), workflow_file))
        except InputError as e:
            _fail(e)
        return

    store = _existing_store(store_root)
    counts: dict[str, dict[str, int]] = {}
    problems = []
    for kind, tid, m in store.entries():
        st = m.get("status", "incomplete")
        counts.setdefault(kind, {}).setdefault(st, 0)
        counts[kind][st] += 1
        if st != Status.DONE:
            problems.append(f"  {kind}/{tid} {st}: {m.get('label', '')}: {m.get('error')}")
    for p, tid in store.leftovers():
        st = Status.RUNNING if store.is_running(tid) else "incomplete"
        counts.setdefault(p.parent.name, {}).setdefault(st, 0)
        counts[p.parent.name][st] += 1
        if st == Status.RUNNING:  # how far it is: its log's last line (the samplers log their progress)
            spec = read_json(p / "task.json") or {}
            problems.append(f"  {p.parent.name}/{tid} running: {spec.get('label', '')}: {last_line(p / 'log.txt') or 'started'}")
    if not counts:
        click.echo(f"{store.root}: empty")
    for kind, c in sorted(counts.items()):
        click.echo(f"{kind}: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items())))
    for line in problems:
        click.echo(line)


@main.command()
@click.option("--store", "store_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True, help="Store directory.")
@click.option(
    "--mlflow",
    "mlflow_uri",
    is_flag=False,
    flag_value="mlruns",
    default=None,
    metavar="[URI]",
    help="To MLflow: a tracking URI or a local directory (default ./mlruns).",
)
@click.option(
    "--wandb",
    "wandb_dir",
    is_flag=False,
    flag_value=".",
    default=None,
    metavar="[DIR]",
    help="To W&B: offline runs under DIR/wandb/ (default .) without WANDB_API_KEY or with WANDB_MODE=offline, else online.",
)
def export(store_root, mlflow_uri, wandb_dir):
    """Log every finished task of a store as an MLflow and/or W&B run (keyed by task ID: a task
    already there is left alone, so exporting twice duplicates nothing)."""
    from .engine import tracking

    try:
        if mlflow_uri is None and wandb_dir is None:
            raise InputError("export: give --mlflow [URI] and/or --wandb [DIR]")
        store = _existing_store(store_root)
        names = [n for n, v in (("mlflow", mlflow_uri), ("wandb", wandb_dir)) if v is not None]
        backends = tracking.trackers(names, mlflow_uri, wandb_dir)
    except InputError as e:
        _fail(e)
    tracking.export(store, backends)
    click.echo(tracking.report(backends))
    sys.exit(1 if tracking.failed(backends) else 0)


@main.command()
@click.option("--store", "store_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True, help="Store directory.")
@click.option("--dry-run", "--dryrun", "-n", "dry_run", is_flag=True, help="List what would be removed.")
@click.option("--ttl-days", metavar="DAYS", help="Only leftovers older than this many days (the original Lambda-Hat's option).")
def gc(store_root, dry_run, ttl_days):
    """Remove leftovers of tasks that never finished (crashed or killed)."""
    if ttl_days is not None:
        text = ttl_days
        try:
            ttl_days = float(text)
        except ValueError:
            ttl_days = float("nan")
        if not 0 <= ttl_days < float("inf"):  # NaN had removed nothing, as no age is over it
            _fail(InputError(f"--ttl-days: expected a finite number of days >= 0, got {text}"))
    store = _existing_store(store_root)
    cutoff = time.time() - 86400 * ttl_days if ttl_days is not None else float("inf")
    found = [p for p, tid in store.leftovers() if not store.is_running(tid) and p.stat().st_mtime < cutoff]
    for p in found:
        click.echo(f"{'would remove' if dry_run else 'removing'} {p}")
        if not dry_run:
            shutil.rmtree(p, ignore_errors=True)
    if not found:
        click.echo(f"{store.root}: nothing to remove")


@main.group(cls=_Moved)
def artifacts():
    """The original Lambda-Hat's store commands: `artifacts ls` is `status`, `artifacts gc` is `gc`."""


artifacts.add_command(gc)
artifacts.add_command(
    click.Command(
        "ls",
        params=[p for p in status.params if p.name == "store_root"],
        callback=lambda store_root: status.callback(workflow_file=None, config=None, store_root=store_root),
        help="The store's tasks by state (`status`).",
    )
)

if __name__ == "__main__":
    main()
