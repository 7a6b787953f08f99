"""Experiment tracking: finished tasks of the store as MLflow or W&B runs, keyed by task ID.

A task's run gets its flattened config as params, the numbers of metrics.json (and the rows of
its history.csv, one step per epoch, where the task keeps one) as metrics, its task ID, kind,
status and code version as tags, and its plots as artifacts (an llc run's plots are its diagnose
task's). A task already logged (found by its task ID) is never logged again, so tracking during a
workflow and exporting afterwards do not duplicate runs. The clients come with the `tracking`
extra: pip install -e '.[tracking]'.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from lambda_hat.engine.store import Store, read_json
from lambda_hat.engine.tasks import Status, install_hint
from lambda_hat.engine.typed import InputError, dotted

BACKENDS = ("mlflow", "wandb")
TAG = "lambda_hat.task_id"
PLOT_SUFFIXES = (".png", ".svg")


def _need(module: str, flag: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing(module, flag) from None


def _missing(module: str, flag: str) -> InputError:
    return InputError(f"{flag}: the {module.split('.')[0]} client is not installed{install_hint(module)}")


def _float(text) -> bool:
    """A history.csv cell that is a number (a task's own columns may hold text)."""
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def record(store: Store, kind: str, tid: str, plots_of: dict) -> dict | None:
    """What a tracker logs of one finished task, from its store directory."""
    d = store.dir(kind, tid)
    manifest = read_json(d / "manifest.json")
    if not manifest:
        return None
    metrics = read_json(d / "metrics.json")
    metrics = metrics if isinstance(metrics, dict) else {}  # a command's metrics.json may hold anything
    history = []
    if (d / "history.csv").exists():
        with open(d / "history.csv") as f:
            history = [{k: float(v) for k, v in row.items() if _float(v)} for row in csv.DictReader(f)]
    plot_dir = plots_of.get(tid, d)
    plots = sorted(p for p in plot_dir.iterdir() if p.suffix in PLOT_SUFFIXES) if plot_dir.is_dir() else []
    config = read_json(d / "config.json")
    config = config if isinstance(config, dict) else {}
    versions = manifest.get("versions", {})
    found = metrics.get("warnings")  # an llc run's checks, as it stored them: a run's λ̂ never goes out without them
    tags = {}
    if isinstance(found, list) and all(isinstance(w, dict) and "code" in w for w in found):
        tags = warning_tags(*warning_text(found))
    if isinstance(metrics.get("refined"), str):  # a VI run's λ̂: q's (none) or HMC's (hmc)
        tags["lambda_hat.refined"] = metrics["refined"]
    if versions.get("project_git"):  # the user's own checkout the workflow ran in
        tags["lambda_hat.project_version"] = versions["project_git"]
    return {
        "id": tid, "kind": kind, "label": manifest.get("label") or tid, "status": manifest.get("status", "incomplete"),
        "params": {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in dotted(config).items()},
        "metrics": {k: float(v) for k, v in dotted(metrics).items() if _number(v)},
        "history": history, "plots": plots, "code_version": versions.get("git") or versions.get("lambda-hat", ""),
        "error": manifest.get("error"), "walltime_sec": manifest.get("walltime_sec"), "tags": tags,
        "started": _ms(manifest.get("started")), "finished": _ms(manifest.get("finished")),
    }  # fmt: skip


def _ms(t) -> int | None:
    """A manifest's Unix time as MLflow's milliseconds."""
    return int(t * 1000) if _number(t) else None


def warning_text(found: list[dict]) -> tuple[str | None, str | None]:
    """A run's checks ({code, message} each) as the table shows them: the codes, comma-separated,
    and one `code: message` per check; None, None where there are none."""
    codes = ",".join(dict.fromkeys(w["code"] for w in found))
    return codes or None, " | ".join(f"{w['code']}: {w.get('message', '')}" for w in found) or None


def warning_tags(codes: str | None, details: str | None) -> dict[str, str]:
    """A run's warnings as tags: `none` where it is clean, so that a tracker's search can filter on it."""
    return {"lambda_hat.warnings": codes or "none", "lambda_hat.warning_details": (details or "")[:5000]}


def diagnose_dirs(store: Store) -> dict:
    """Target or run ID → the directory of its diagnose task (the llc workflow's plots)."""
    out = {}
    for kind, tid, m in store.entries():
        if kind == "diag" and m.get("status") == Status.DONE:
            cfg = read_json(store.dir(kind, tid) / "config.json") or {}
            for key in ("run", "target"):
                if key in cfg:
                    out[cfg[key]] = store.dir(kind, tid)
    return out


def experiment_name(rec: dict, default: str | None = None) -> str:
    """The workflow file's `experiment` if it names one; else `default` (a tracker's own
    variable); else a sweep's experiments share the sweep's name and other tasks are grouped by kind."""
    if name := rec.get("experiment") or default:
        return name
    return rec["label"].split("/", 1)[0] if rec["kind"] == "sweep" else f"lambda-hat-{rec['kind']}"


def mlflow_keys(values: dict) -> dict:
    """The names MLflow takes: a character other than a letter, digit or _ - . space : / is '_',
    so is an empty, . or .. piece between slashes (MLflow refuses them: one such metric of a task,
    acc@1, had kept the whole sweep out); a name changed into one already there gets _2, _3 …"""

    fixed = {k: "/".join(p if p.strip(".") else "_" for p in re.sub(r"[^/\w.\- :]", "_", str(k)).split("/"))[:250] for k in values}
    out = {k: values[k] for k in values if fixed[k] == k}
    for k in values:
        if fixed[k] != k:
            new, n = fixed[k], 1
            while new in out:
                n += 1
                new = f"{fixed[k]}_{n}"
            out[new] = values[k]
    return out


class MLflow:
    def __init__(self, uri: str | None = None):
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
        # a URI has a scheme (file:/x as well as file:///x; "C:" is a drive), else a directory
        if not re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", self.uri) and self.uri not in ("databricks", "databricks-uc"):
            self.uri = Path(self.uri).expanduser().resolve().as_uri()
        if self.uri.startswith("file:"):  # MLflow's file store (no server, no database), opt-in since MLflow 3
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        tracking = _need("mlflow.tracking", "--track mlflow")
        self.entities = _need("mlflow.entities", "--track mlflow")
        self.experiments: dict[str, str] = {}
        self.error, self.missed, self.new = None, 0, 0
        # Asked once before anything runs: a URI mlflow-skinny cannot open, or a server that is
        # down, had ended a finished sweep in a traceback after minutes of MLflow's retries.
        try:
            self.client = tracking.MlflowClient(tracking_uri=self.uri)
            with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_TIMEOUT="15"):
                self.client.search_experiments(max_results=1)
        except Exception as e:
            db = self.uri.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql")
            hint = " (a database URI needs the full MLflow: pip install mlflow)" if db else ""
            raise InputError(f"--track mlflow: MLflow cannot use {self.uri}: {one_line(e)}{hint}") from None

    def _experiment(self, name: str) -> str:
        if name not in self.experiments:
            exp = self.client.get_experiment_by_name(name)
            self.experiments[name] = exp.experiment_id if exp else self.client.create_experiment(name)
        return self.experiments[name]

    def logged(self, rec: dict) -> bool:
        ids = [self._experiment(experiment_name(rec, os.environ.get("MLFLOW_EXPERIMENT_NAME")))]
        return bool(self.client.search_runs(ids, filter_string=f"tags.`{TAG}` = '{rec['id']}'", max_results=1))

    def log(self, rec: dict) -> bool:
        if self.logged(rec):
            return False
        E = self.entities
        tags = {
            TAG: rec["id"],
            "lambda_hat.kind": rec["kind"],
            "lambda_hat.status": rec["status"],
            "lambda_hat.code_version": rec["code_version"],
            **rec["tags"],
        }
        # the task's own start and end, not the export's: MLflow's Created and Duration read the run
        run = self.client.create_run(
            self._experiment(experiment_name(rec, os.environ.get("MLFLOW_EXPERIMENT_NAME"))), start_time=rec["started"], run_name=rec["label"], tags=tags
        )
        rid = run.info.run_id
        at = rec["finished"] or 0
        params = [E.Param(k, str(v)[:6000]) for k, v in mlflow_keys(rec["params"]).items()]
        metrics = [E.Metric(k, v, at, 0) for k, v in mlflow_keys(rec["metrics"]).items()]
        for i, row in enumerate(rec["history"]):
            step = int(row.get("epoch", i))
            metrics += [E.Metric(f"history/{k}", v, at, step) for k, v in mlflow_keys(row).items() if k != "epoch" and math.isfinite(v)]
        for i in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1 000 metrics
            self.client.log_batch(rid, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(rid, metrics=metrics[i : i + 1000])
        for p in rec["plots"]:
            self.client.log_artifact(rid, str(p), artifact_path="plots")
        self.client.set_terminated(rid, "FINISHED" if rec["status"] == Status.DONE else "FAILED", end_time=rec["finished"])
        return True


WANDB_MODES = {"online": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}  # W&B's, dryrun its old offline


class Wandb:
    def __init__(self, directory: str | None = None, project: str | None = None):
        self.wandb = _need("wandb", "--track wandb")
        self.error, self.missed, self.new = None, 0, 0
        self.dir = Path(directory or os.environ.get("WANDB_DIR") or ".").expanduser().resolve()
        if self.dir.exists() and not self.dir.is_dir():  # asked before anything runs, as MLflow's URI is (it had failed every run after the tasks)
            raise InputError(f"--track wandb: {self.dir} is a file, not a directory for W&B's runs")
        self.project = project or os.environ.get("WANDB_PROJECT") or "lambda-hat"  # W&B's own variable, as wandb.init reads it
        # W&B's own WANDB_MODE first (offline on nodes without internet, a key set or not; online
        # with the key of `wandb login`); else online with an API key, offline (for `wandb sync`) without
        mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if mode and mode not in WANDB_MODES:
            raise InputError(f"--track wandb: WANDB_MODE {mode!r} is not allowed; allowed values: {', '.join(WANDB_MODES)}")
        self.mode = WANDB_MODES.get(mode) or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        if self.mode == "online":  # asked before anything runs, as MLflow is (its init waits 90 s, then fails)
            why, fix = ("WANDB_MODE=online", "set WANDB_MODE=offline") if mode else ("WANDB_API_KEY is set", "unset WANDB_API_KEY")
            if problem := _wandb_unusable():
                raise InputError(f"--track wandb: W&B online ({why}) cannot be used: {problem}; {fix} to log offline")

    def logged(self, rec: dict) -> bool:
        return any((self.dir / "wandb").glob(f"*run-*-{rec['id']}"))

    def log(self, rec: dict) -> bool:
        if self.mode == "disabled" or self.logged(rec):  # disabled: W&B's no-op runs, nothing to count
            return False
        wb = self.wandb
        self.dir.mkdir(parents=True, exist_ok=True)
        run = wb.init(
            project=self.project, id=rec["id"], name=rec["label"], dir=str(self.dir), mode=self.mode, resume="allow",
            job_type=rec["kind"], group=experiment_name(rec), config=rec["params"], tags=[rec["kind"], rec["status"], *warned(rec)],
            settings=wb.Settings(silent=True, console="off"),
        )  # fmt: skip
        for i, row in enumerate(rec["history"]):
            run.log({f"history/{k}": v for k, v in row.items() if k != "epoch"}, step=int(row.get("epoch", i)))
        if rec["plots"]:
            run.log({f"plots/{p.stem}": wb.Image(str(p)) for p in rec["plots"] if p.suffix == ".png"})
        run.summary.update(
            {**rec["metrics"], TAG: rec["id"], "lambda_hat.status": rec["status"], "lambda_hat.code_version": rec["code_version"], **rec["tags"]}
        )
        run.finish(exit_code=0 if rec["status"] == Status.DONE else 1)
        return True


# W&B's check in a process of its own: a process that started W&B's service waits for it at exit,
# and a server that did not answer kept it busy (the command hung after printing its error)
_WANDB_CHECK = """import os, sys, wandb
try:
    wandb.Api(timeout=10).viewer
    msg = ""
except Exception as e:
    msg = str(e) or type(e).__name__
sys.stdout.write(msg)
sys.stdout.flush()
os._exit(0)  # not wandb's exit: its service ends with this process (it watches our pid)
"""


def _wandb_unusable(timeout: float = 60) -> str | None:
    """Why W&B online cannot be used here (its API, asked with the user's key), or None. The
    answer comes in a file: W&B's service inherits the child's stdout and holds a pipe open."""
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen([sys.executable, "-c", _WANDB_CHECK], stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return f"no answer in {timeout:g} s"
        out.seek(0)
        text = out.read().strip()
    if code:  # the check itself failed: its last line says why
        text = text.splitlines()[-1] if text else f"exit {code}"
    return one_line(RuntimeError(text)) if text else None


def warned(rec: dict) -> list[str]:
    """W&B run tags for its warnings (`warning:pareto_k`), `clean` for a checked run without any."""
    codes = rec["tags"].get("lambda_hat.warnings")
    return [] if codes is None else ["clean"] if codes == "none" else [f"warning:{c}" for c in codes.split(",")]


def check(names) -> tuple[str, ...]:
    """Known trackers whose client is installed (found without importing it: a dry run says so too)."""
    import importlib.util

    for n in names:
        if n not in BACKENDS:
            raise InputError(f"--track {n}: unknown tracker; allowed values: {', '.join(BACKENDS)}")
        if importlib.util.find_spec(n) is None:
            raise _missing(n, f"--track {n}")
    return tuple(dict.fromkeys(names))


def trackers(names, mlflow_uri: str | None = None, wandb_dir: str | None = None) -> list:
    """The clients of the named backends (MLflow: MLFLOW_TRACKING_URI or ./mlruns; W&B: offline
    under ./wandb/ without WANDB_API_KEY or with WANDB_MODE=offline); a missing client is a one-line error."""
    return [MLflow(mlflow_uri) if n == "mlflow" else Wandb(wandb_dir) for n in check(names)]


def report(backends: list) -> str:
    """Where each backend's new runs went, counted per backend (a task logged to two is one run in each)."""

    def where(b):
        if isinstance(b, MLflow):
            return f"mlflow {b.uri}"
        return "wandb (WANDB_MODE=disabled)" if b.mode == "disabled" else f"wandb {b.mode} {b.dir / 'wandb'}"

    lines = ["tracking: " + ", ".join(f"{b.new} new run(s) logged to {where(b)}" for b in backends)]
    for b in failed(backends):
        again = f"lambda-hat export --mlflow {b.uri}" if isinstance(b, MLflow) else f"lambda-hat export --wandb {b.dir}"
        lines.append(f"tracking failed: {where(b)}: {b.error}; {b.missed} run(s) not logged there (`{again}` logs them, nothing twice)")
    return "\n".join(lines)


def failed(backends: list) -> list:
    return [b for b in backends if b.error is not None]


def one_line(e: Exception, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    cause = re.search(r"\[Errno -?\d+\] [^\"')\]]+", text)  # the OS's reason, deep in a wrapped HTTP error
    text = f"{cause.group(0).strip()}: {text}" if cause else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def _env(**values):
    """Environment variables set for a block, unless the user set them."""
    values = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(values)
    try:
        yield
    finally:
        for k in values:
            os.environ.pop(k, None)


def log_tasks(store: Store, tasks, backends: list, experiment: str | None = None, tags_of: dict | None = None) -> None:
    """Log the finished tasks of `tasks` ((kind, id) pairs; diagnose tasks ride with their run)
    to every backend, under `experiment` if given, with `tags_of` (task ID → tags) over what the
    store holds; each backend counts the runs it newly logged (`new`)."""
    if not backends:
        return
    plots_of = diagnose_dirs(store)
    for kind, tid in dict.fromkeys(tasks):
        if kind == "diag":
            continue
        rec = record(store, kind, tid, plots_of)
        if rec is None or rec["status"] == Status.RUNNING:
            continue
        rec["experiment"] = experiment
        rec["tags"].update((tags_of or {}).get(tid, {}))
        for b in backends:
            if b.error is None:  # a backend that failed once is not asked again (its retries take minutes)
                try:
                    b.new += b.log(rec)
                    continue
                except Exception as e:
                    b.error = one_line(e)
            b.missed += 1


def track(store: Store, tasks, backends: list, experiment: str | None = None, tags_of: dict | None = None) -> str:
    """After a workflow: log its tasks (runner.Task) and say where."""
    log_tasks(store, [(t.kind, t.id) for t in tasks], backends, experiment, tags_of)
    return report(backends)


def export(store: Store, backends: list) -> None:
    log_tasks(store, [(kind, tid) for kind, tid, _ in store.entries()], backends)
