"""The llc workflow: train each target once, run every sampler on it, aggregate λ̂."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import yaml

from lambda_hat.engine import tracking
from lambda_hat.engine.runner import Summary
from lambda_hat.engine.store import Store, crashpoint, read_json, tmp_path
from lambda_hat.engine.tasks import Status, Task, reported
from lambda_hat.engine.typed import InputError, plain
from lambda_hat.engine.workflow import Options, Workflow, write_table
from lambda_hat.llc import checks, gallery, trajectory
from lambda_hat.llc.config import Plan, identity
from lambda_hat.llc.experiments import EXAMPLE, data_name, load_plan

TARGETS, RUNS, DIAG = "targets", "llc", "diag"
RESULTS = Path("results")


def diag_tasks(targets: dict, runs: dict, env: dict) -> tuple[dict, dict]:
    """Diagnose tasks (plots) for every target and run, keyed by the target or run ID."""

    def task(kind, dep, fn, label):
        cfg = {kind: dep.id}
        return Task(DIAG, f"lambda_hat.llc.diagnostics:{fn}", cfg, label, deps=((dep.kind, dep.id),), timeout=dep.timeout, env=env)

    return (
        {t.id: task("target", t, "diagnose_target", f"plots {t.label}") for t in targets.values()},
        {r.id: task("run", r, "diagnose_run", f"plots {r.label}") for r in runs.values()},
    )


def _data_size(target: dict) -> int:
    """n for ordering the runs by their work: a custom target's is known only once built (a
    nominal 1 000)."""
    return (target.get("data") or {}).get("n") or target["model"].get("n") or 1000


def build_tasks(plan: Plan, timeout: float | None) -> tuple[dict, dict]:
    """Target tasks by target label and run tasks by run label, in dependency order."""
    env = {"JAX_ENABLE_X64": "1" if plan.config.jax_enable_x64 else "0"}
    timeout = timeout or plan.config.task_timeout
    targets = {t.label: Task(TARGETS, "lambda_hat.llc.targets:train_target", t.semantic(), f"target {t.label}", timeout=timeout, env=env) for t in plan.targets}
    runs, sampler_cfg = {}, {}
    for r in plan.runs:
        tt = targets[r.target.label]
        if id(r.sampler) not in sampler_cfg:  # one sampler object is shared by the runs of all targets
            sampler_cfg[id(r.sampler)] = identity(r.sampler)
        cfg = {"target": tt.id, "sampler": sampler_cfg[id(r.sampler)]}
        work = r.sampler.work(_data_size(tt.config))
        runs[r.label] = Task(RUNS, "lambda_hat.llc.sampling:sample_run", cfg, r.label, deps=((TARGETS, tt.id),), timeout=timeout, env=env, priority=work)
        tt.priority += work  # the target that unblocks the most work trains first
    return targets, runs


def _flat(prefix: str, d: dict) -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(f"{prefix}{k}.", v))
        else:
            out[f"{prefix}{k}"] = v
    return out


METRIC_COLUMNS = (
    "llc_mean", "llc_std", "llc_sem", "ess_bulk", "ess_tail", "r_hat", "diag_block", "diag_noise", "fge", "llc_true", "llc_finite", "err_true", "err_finite",
    "step_size", "precond", "batch_size", "burnin", "draws", "predicted_bias", "bias_at_chains", "measured_bias", "measured_bias_se", "llc_raw", "step_shrinks", "mala_acceptance", "relax_steps", "grad_norm", "wstar_shift",
    "acceptance_rate", "divergences", "ebfmi", "energy_var", "pareto_k", "llc_is", "llc_vi", "refined", "sample_sec", "calibration_sec", "n_beta", "L_star", "initial_loss", "trained_loss",
)  # fmt: skip


def apply_strict(table: list[dict]) -> int:
    """--strict: a run with warnings counts as failed (exit 1, listed in retry.yaml); how many."""
    warned = [row for row in table if row["status"] == Status.DONE and row["warnings"]]
    for row in warned:
        row.update(status=Status.FAILED, error=f"strict: {row['warning_details']}")
    return len(warned)


def rows(plan: Plan, store: Store, targets: dict, runs: dict, outcomes: dict | None = None) -> list[dict]:
    """One row per run of the plan, from the store; `outcomes` of this invocation fill in runs
    that left nothing in the store (lost worker, skipped because their target failed)."""
    out, of_target, flat = [], {}, {}

    def target(tid: str) -> tuple[dict, dict]:  # a target's manifest and metrics, read once for all its runs
        if tid not in of_target:
            of_target[tid] = (store.manifest(TARGETS, tid) or {}, read_json(store.dir(TARGETS, tid) / "metrics.json") or {})
        return of_target[tid]

    def columns(prefix: str, obj) -> dict:  # a config section as columns, once per object
        if id(obj) not in flat:
            flat[id(obj)] = (obj, _flat(prefix, plain(obj)))
        return flat[id(obj)][1]

    for r in plan.runs:
        tt, rt = targets[r.target.label], runs[r.label]
        o = (outcomes or {}).get(rt.id)
        m = reported(store.manifest(RUNS, rt.id), o)
        tm, tmetrics = target(tt.id)
        status, error = m.get("status", Status.MISSING), m.get("error")
        if not m and o:
            status, error = o.status, o.error
        elif tm.get("status") not in (None, Status.DONE) and not m:
            status, error = Status.SKIPPED, f"target {r.target.label}: {tm.get('error')}"
        metrics = read_json(store.dir(RUNS, rt.id) / "metrics.json") if status == Status.DONE else {}
        if metrics:  # the target's losses before and after training, from the target (a run cached before runs recorded them)
            metrics.update(initial_loss=tmetrics.get("initial_loss"), trained_loss=tmetrics.get("trained_loss"))
        row = {
            "target_id": tt.id, "run_id": rt.id, "sampler": r.name, "sampler_kind": r.sampler.kind,
            "target": r.target.label, "model": model_name(r.target.entry.model), "data": data_name(r.target.entry.data, r.target.data), "seed": r.target.seed,
            "trajectory": r.target.trajectory, "step": r.target.step, "train_loss": tmetrics.get("final_loss"),
            "test_loss": tmetrics.get("test_loss"), "train_accuracy": tmetrics.get("train_accuracy"), "test_accuracy": tmetrics.get("test_accuracy"),
            "n": tmetrics.get("n"), "d": tmetrics.get("d"), "status": status, "error": error,
            "walltime_sec": m.get("walltime_sec"), "host": m.get("host"), "slurm_job_id": m.get("slurm_job_id"),
            "experiment": plan.config.experiment,
        }  # fmt: skip
        for k in METRIC_COLUMNS:
            row[k] = (metrics or {}).get(k)
        if metrics and r.sampler.kind == "sgld" and row["precond"] is None:  # cached before the column existed
            row["precond"] = r.sampler.preconditioner
        found = (metrics or {}).get("warnings") or []
        if metrics:  # the checks of this code, so that a run cached before a check was added cannot dodge it
            try:
                found = checks.run_warnings(metrics, r.sampler, data_free=r.target.model.kind == "quadratic")
            except (KeyError, TypeError):  # stored by code that did not record a number a check now reads
                pass
        row["warnings"], row["warning_details"] = tracking.warning_text(found)
        for prefix, section in (("model.", r.target.model), ("data.", r.target.data), ("training.", r.target.training), ("sampler.", r.sampler)):
            row.update(columns(prefix, section))
        out.append(row)
    mark_disagreements(out)
    return out


def mark_disagreements(table: list[dict]) -> None:
    """Add checks.disagreements' warnings to the done rows, per target and posterior (only clean
    rows get one, so it is their only warning)."""
    groups: dict[tuple, list[dict]] = {}
    for row in table:
        if row["status"] == Status.DONE and row["llc_mean"] is not None and row["llc_sem"] is not None:
            groups.setdefault((row["target_id"], row.get("sampler.posterior.beta0"), row.get("sampler.posterior.gamma")), []).append(row)
    for group in groups.values():
        runs = [
            {
                "name": r["sampler"],
                "llc_mean": r["llc_mean"],
                "llc_sem": r["llc_sem"],
                "codes": r["warnings"].split(",") if r["warnings"] else [],
                "r_hat": r.get("r_hat"),
            }
            for r in group
        ]
        for row, w in zip(group, checks.disagreements(runs)):
            if w:
                row["warnings"], row["warning_details"] = w["code"], f"{w['code']}: {w['message']}"


def model_name(model) -> str:
    """A preset's name, or an inline model's function (custom) or kind."""
    return model if isinstance(model, str) else str(model.get("fn") or model.get("kind"))


def check_retry(plan: Plan, runs: dict) -> None:
    """A retry file must still resolve to the very runs that failed (same presets, same code)."""
    r = plan.config.retry_of
    if r and {t.id for t in runs.values()} != set(r.runs):
        raise InputError(
            f"{plan.path}: retry_of: its runs no longer resolve to the failed runs of {r.config} "
            "(presets, defaults or the file changed since); rerun that config instead"
        )


def write_retry(plan: Plan, table: list[dict], runs: dict, results: Path) -> Path | None:
    """results/retry.yaml: the experiments format holding exactly the runs that did not finish."""
    path = results / "retry.yaml"
    failed = {r.label for r, row in zip(plan.runs, table) if row["status"] != Status.DONE}
    source = plan.config.retry_of.config if plan.config.retry_of else str(plan.path)
    entries, failed_of = [], {}
    for r in plan.runs:
        if r.label in failed:
            failed_of.setdefault(r.target.label, []).append(r)
    for t in plan.targets:
        samplers = [{k: v for k, v in plain(r.entry).items() if v is not None} for r in failed_of.get(t.label, ())]
        if samplers:
            entry = {k: v for k, v in plain(t.entry).items() if v is not None and v != {} and k != "checkpoints"}
            if t.trajectory and t.label != t.trajectory:  # a checkpoint: its training, stopped there
                over = entry.get("overrides", {})
                entry["overrides"] = {**over, "training": {**over.get("training", {}), "steps": t.training.steps, "polish_steps": 0}}
            entries.append({**entry, "samplers": samplers})
    if not entries:
        path.unlink(missing_ok=True)
        return None
    cfg = plain(plan.config)
    doc = {"targets": entries, "jax_enable_x64": cfg["jax_enable_x64"], "store_root": cfg["store_root"]}
    for key in ("task_timeout", "tracking", "experiment"):  # the retry runs as the sweep did
        if cfg[key]:
            doc[key] = cfg[key]
    if plan.config.posterior.layer():
        doc["posterior"] = plan.config.posterior.layer()
    doc["retry_of"] = {"config": source, "runs": sorted(runs[label].id for label in failed)}
    results.mkdir(parents=True, exist_ok=True)
    crashpoint("write:retry.yaml")
    header = f"# Failed runs of {source}; rerun with: lambda-hat workflow llc --config {path}\n"
    tmp = tmp_path(path)
    tmp.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


def promote(store: Store, table: list[dict], targets: dict, runs: dict, out: Path, only: tuple[str, ...] | None = None) -> tuple[Path, int]:
    """Build the gallery at `out` from the plots the store holds (of runs, `only` those if
    given); also says how many runs have none."""
    tdiag, rdiag = diag_tasks(targets, runs, {})
    done = lambda d: {k: store.dir(DIAG, t.id) for k, t in d.items() if store.is_done(DIAG, t.id)}  # noqa: E731
    run_plots = done(rdiag)
    missing = sum(row["status"] == Status.DONE and row["run_id"] not in run_plots for row in table)
    return gallery.build(table, run_plots, done(tdiag), out, only), missing


def rebuild_gallery(
    config: Path,
    only: tuple[str, ...] | None = None,
    store_root: Path | None = None,
    samplers: tuple[str, ...] | None = None,
    outdir: Path | None = None,
    snippet: Path | None = None,
) -> int:
    """`lambda-hat promote`: the gallery again from the store, computing nothing; the original
    Lambda-Hat's options pick the store (--runs-root), the samplers shown, where it goes and a
    Markdown copy elsewhere (--snippet-out)."""
    plan = load_plan(config)
    store = Store(store_root or Path(plan.config.store_root))
    if store_root is not None and not store.root.is_dir():  # named, so a typo; the file's own store may not be made yet
        raise InputError(f"--runs-root {store_root}: no such directory")
    if store.is_kind_folder():  # it had built a gallery of runs "not run yet" over the real one
        raise InputError(f"--runs-root {store_root}: a folder of tasks inside a store; give the store: --runs-root {store.root.parent}")
    targets, runs = build_tasks(plan, None)
    table = rows(plan, store, targets, runs)
    if samplers is not None:
        names = list(dict.fromkeys(r["sampler"] for r in table))
        if bad := [s for s in samplers if s not in names]:
            raise InputError(f"--samplers {','.join(samplers)}: {config} has no sampler {bad[0]!r}; samplers: {', '.join(names)}")
        table = [r for r in table if r["sampler"] in samplers]
    out = outdir or RESULTS / "gallery"
    if not gallery.replaceable(out):
        raise InputError(f"--outdir {out}: holds files that are not a gallery's, and the gallery replaces its folder whole; give a new or empty folder")
    index, missing = promote(store, table, targets, runs, out, only)
    if snippet is not None:
        gallery.snippet(out, snippet)
    click.echo(
        f"gallery: {index}"
        + (f", {snippet}" if snippet is not None else "")
        + (f" ({missing} run(s) without plots: run the workflow with --promote)" if missing else "")
    )
    return 0


def _sig(x: float, digits: int) -> str:
    """x to `digits` significant digits, its trailing zeros kept: 10.40 ± 0.10, not 10.4 ± 0.1."""
    return f"{x:#.{digits}g}".rstrip(".").replace(".e", "e")


class LLC(Workflow):
    """Estimate the LLC: train each target once, run every sampler on it.

    KEY=VALUE arguments change the experiments file before it is validated (dotted keys, list
    indices, YAML values), e.g. samplers.0.overrides.draws=100 targets.1.seed=3; a key under a
    preset chosen by name sets that preset's value (samplers.0.draws=100, targets.0.model.width=16).
    With -m, a key of an entry given several values runs a copy of the entry per value
    (-m samplers.0.draws=1000,4000 targets.0.seed=range(3)).
    Writes results/llc_runs.parquet (and .csv) with one row per run, and results/retry.yaml
    listing the runs that failed (rerun them with --config results/retry.yaml).
    """

    name = "llc"
    file_keys = ("targets",)
    config_file = "config/experiments.yaml"
    config_help = "Experiments file: targets × samplers, or a results/retry.yaml."
    example = EXAMPLE
    timeout_help = "; overrides task_timeout"
    lists_failures = True

    def cli(self) -> list:
        return [
            click.option("--promote", is_flag=True, help="Also plot every target and run (cached tasks) and build results/gallery/index.html."),
            click.option(
                "--promote-plots",
                metavar="PLOTS",
                help="The run plots the gallery shows, comma-separated (trace, running_llc, rank, hmc, mclmc, elbo; .png optional); implies --promote.",
            ),
            click.option("--strict", is_flag=True, help="Treat runs with health-check warnings as failed (exit 1, listed in results/retry.yaml)."),
            click.option("--experiment", metavar="NAME", help="Name the sweep (the file's `experiment`): its MLflow experiment / W&B group and table column."),
            click.option(
                "--multirun",
                "-m",
                is_flag=True,
                help="Hydra's multirun: a key of an entry given several values (a,b or range(…)) runs a copy of the entry per value, e.g. -m samplers.0.draws=1000,4000.",
            ),
            *super().cli(),
        ]

    def parse(self, kw: dict) -> tuple[tuple[str, ...], dict]:
        self.multirun = kw.pop("multirun", False)  # how load() reads this invocation's overrides
        name = kw.pop("experiment", None)
        if name is not None:
            kw["overrides"] = (*kw.get("overrides", ()), f"experiment={json.dumps(name)}")
        if kw.get("promote_plots") is not None:
            kw["promote_plots"], kw["promote"] = gallery.run_plot_names(kw["promote_plots"]), True
        return super().parse(kw)

    def load(self, path: Path, overrides: tuple[str, ...]) -> Plan:
        return load_plan(path, overrides, getattr(self, "multirun", False))

    def settings(self, plan: Plan):
        return plan.config

    def tasks(self, plan: Plan, opts: Options, card) -> list[Task]:
        targets, runs = build_tasks(plan, opts.timeout)
        if plan.config.retry_of:  # overrides change the failed runs on purpose: the file itself must still name them
            check_retry(plan, build_tasks(load_plan(plan.path), None)[1] if opts.overrides else runs)
        self.targets, self.runs = targets, runs
        extra = []
        if opts.extra.get("promote"):
            env = next(iter(targets.values())).env
            tdiag, rdiag = diag_tasks(targets, runs, env)
            extra = [*tdiag.values(), *rdiag.values()]
        of_target: dict[str, list[Task]] = {}
        for r in plan.runs:
            of_target.setdefault(r.target.label, []).append(runs[r.label])
        ordered = []
        for t in plan.targets:  # each target, then its runs: the dry run reads as a tree
            ordered += [targets[t.label], *of_target.get(t.label, ())]
        return ordered + extra

    def header(self, plan: Plan, store: Store, tasks: list[Task]) -> str:
        return f"{plan.path}: {len(plan.targets)} target(s), {len(plan.runs)} run(s), store {store.root}/"

    def note(self, plan: Plan, store: Store, task: Task, state: str) -> str:
        """A done run's warnings as it stored them (the table checks them again)."""
        if state != "done" or task.kind != RUNS:
            return ""
        found = (read_json(store.dir(task.kind, task.id) / "metrics.json") or {}).get("warnings")
        codes, _ = tracking.warning_text(found) if isinstance(found, list) else (None, None)
        return f"warnings: {codes}" if codes else ""

    def rows(self, plan: Plan, store: Store, outcomes: dict) -> list[dict]:
        return rows(plan, store, self.targets, self.runs, outcomes)

    def table_path(self, plan: Plan) -> Path:
        return RESULTS / "llc_runs.parquet"

    def tracked_tags(self, table: list[dict]) -> dict[str, dict[str, str]]:
        return {row["run_id"]: tracking.warning_tags(row["warnings"], row["warning_details"]) for row in table if row["status"] == Status.DONE}

    def finish(self, plan: Plan, store: Store, table: list[dict], summary: Summary, opts: Options) -> list[str]:
        strict = 0
        if opts.extra.get("strict"):
            strict = apply_strict(table)
            write_table(self, plan, table)
        retry = write_retry(plan, table, self.runs, RESULTS)
        traj = trajectory.write(trajectory.rows(table), RESULTS)
        lines = [f"λ̂ over training: {traj}"] if traj else []
        if opts.extra.get("promote"):
            lines.append(f"gallery: {promote(store, table, self.targets, self.runs, RESULTS / 'gallery', opts.extra.get('promote_plots'))[0]}")
        for row in table:
            if row["status"] == Status.DONE:
                truth = [f"{k} {row[c]:.4g}" for k, c in (("truth", "llc_true"), ("finite-n", "llc_finite")) if row[c] is not None]
                truth = f" ({', '.join(truth)})" if truth else ""
                flag = f"  WARNING {row['warnings']}" if row["warnings"] else ""
                # VI whose own checks failed: λ̂ is HMC's, and q's own reading is shown beside it
                note = f"  refined by hmc: q read {row['llc_vi']:.4g} (PSIS k̂ {row['pareto_k']:.2f})" if row.get("refined") == "hmc" else ""
                # SGLD whose step-halving check measured its step's bias: λ̂ is corrected for it
                raw = row.get("llc_raw")
                if raw is not None and raw == raw:
                    note = f"  step's bias removed ({100 * row['measured_bias']:+.1f}% ± {100 * row['measured_bias_se']:.1f}%): chains read {raw:.4g}"
                lines.append(f"  {row['sampler']:<12} {row['target']:<24} λ̂ = {_sig(row['llc_mean'], 4):>9} ± {_sig(row['llc_sem'], 2)}{truth}{note}{flag}")
                for line in (row["warning_details"] or "").split(" | ") if row["warnings"] else ():
                    lines.append(f"      {line}")
            else:
                lines.append(f"  {row['sampler']:<12} {row['target']:<24} {gallery.status_text(row)}")
        warned = sum(bool(r["warnings"]) for r in table if r["status"] == Status.DONE)
        if warned:
            lines.append(f"{warned} run(s) with warnings: read them before trusting those λ̂ (--strict makes them failures)")
        if strict:
            # their results are done in the store: a rerun as they are reuses them and fails again
            lines.append(
                f"{strict} run(s) failed --strict's health checks; a rerun reuses their stored results, so change what the warnings "
                f"name first (KEY=VALUE on the retry file, e.g. lambda-hat workflow llc --config {retry} --strict targets.0.samplers.0.overrides.draws=4000)"
            )
        if retry and strict < sum(row["status"] != Status.DONE for row in table):
            lines.append(f"failed runs listed in {retry}; rerun with: lambda-hat workflow llc --config {retry}")
        if plan.config.retry_of:  # the source's table was replaced by this one: say how to get it back
            source = plan.config.retry_of.config
            lines.append(
                f"{self.table_path(plan)} holds these runs only; lambda-hat workflow llc --config {source} writes the whole table, reusing every finished run"
            )
        return lines


WORKFLOW = LLC()
