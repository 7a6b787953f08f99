"""Tracking: finished tasks as MLflow and W&B runs (read back through MLflow's client and W&B's
offline run files), keyed by task ID so exporting twice duplicates nothing."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, cli, needs, write_config

pytestmark = needs("mlflow", "wandb")
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # reading ./mlruns back, as tracking.MLflow writes it


def mlflow_client(project, folder="mlruns"):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(project / folder).as_uri())


def mlflow_runs(project, experiment: str) -> list:
    client = mlflow_client(project)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def wandb_records(path: Path):
    """The protobuf records of a W&B run file (.wandb): 7-byte header, then 32 KiB blocks of
    chunks (4-byte checksum, 2-byte length, 1-byte type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    buf, pos, pending, block = path.read_bytes(), 7, b"", 32768
    assert buf[:4] == b":W&B"
    while pos + 7 <= len(buf):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(buf[pos + 4 : pos + 6], "little"), buf[pos + 6]
        data, pos = buf[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            yield rec


def wandb_run(project, task_id: str) -> dict:
    (run_dir,) = (project / "wandb").glob(f"offline-run-*-{task_id}")
    out = {"history": [], "config": {}, "summary": {}, "run": None}
    for r in wandb_records(next(run_dir.glob("run-*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    out["images"] = sorted(p.name for p in run_dir.glob("files/media/images/**/*.png"))
    return out


def test_llc_runs_in_mlflow_and_export_adds_nothing(project):
    write_config(project / "config" / "experiments.yaml", TINY)
    # a project in git: its commit is tagged beside lambda-hat's code version
    for args in (["init", "-q"], ["add", "config"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, check=True, capture_output=True, text=True).stdout.strip()
    r = cli("workflow", "llc", "--local", "--track", "mlflow", cwd=project, env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tracking: 2 new run(s) logged to mlflow file://" in r.stdout
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    (run,) = mlflow_runs(project, "lambda-hat-llc")
    (target,) = mlflow_runs(project, "lambda-hat-targets")
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["lambda_hat.task_id"] == df["run_id"][0] and tags["lambda_hat.kind"] == "llc" and tags["lambda_hat.status"] == "done"
    assert tags["lambda_hat.code_version"] and target.data.tags["lambda_hat.task_id"] == df["target_id"][0]
    assert tags["lambda_hat.project_version"] == target.data.tags["lambda_hat.project_version"] == head
    assert params["sampler.kind"] == "sgld" and params["target"] == df["target_id"][0] and float(params["sampler.step_size"]) == 1e-3
    assert metrics["llc_mean"] == pytest.approx(df["llc_mean"][0]) and metrics["ess_bulk"] == pytest.approx(df["ess_bulk"][0])
    assert run.info.status == "FINISHED"
    m = json.loads(next(project.glob(f"runs/llc/{df['run_id'][0]}/manifest.json")).read_text())
    assert (run.info.start_time, run.info.end_time) == (int(m["started"] * 1000), int(m["finished"] * 1000))  # the task's times, not the export's
    # its checks go with its λ̂: the table's warnings as tags (`none` where clean), W&B's as run tags
    codes = df["warnings"][0]
    assert codes and tags["lambda_hat.warnings"] == codes and tags["lambda_hat.warning_details"] == df["warning_details"][0], (codes, tags)
    assert "lambda_hat.warnings" not in target.data.tags  # a target has no checks of its own
    r = cli("export", "--mlflow", "mlruns", "--wandb", cwd=project, env={"WANDB_API_KEY": ""})
    # counted per backend: MLflow had both, W&B gets both
    assert r.returncode == 0 and "tracking: 0 new run(s) logged to mlflow file://" in r.stdout and ", 2 new run(s) logged to wandb offline" in r.stdout, (
        r.stdout + r.stderr
    )
    w = wandb_run(project, df["run_id"][0])
    assert [t for t in w["run"].tags if t.startswith("warning:")] == [f"warning:{c}" for c in codes.split(",")], w["run"].tags
    assert w["summary"]["lambda_hat.warnings"] == codes
    assert len(mlflow_runs(project, "lambda-hat-llc")) == 1 and len(mlflow_runs(project, "lambda-hat-targets")) == 1
    # the original Lambda-Hat's `experiment` (file key, or --experiment): the sweep's own MLflow
    # experiment and a table column, computing nothing again (it is in no task ID)
    assert df["experiment"].isna().all()
    r = cli("workflow", "llc", "--local", "--track", "mlflow", "--experiment", "my study", cwd=project, env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0 and "0 done, 2 reused" in r.stdout and "tracking: 2 new run(s)" in r.stdout, r.stdout + r.stderr
    named = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert list(named["experiment"]) == ["my study"] and list(named["run_id"]) == list(df["run_id"])
    assert {x.data.tags["lambda_hat.task_id"] for x in mlflow_runs(project, "my study")} == {df["run_id"][0], df["target_id"][0]}
    write_config(project / "config" / "experiments.yaml", {**TINY, "experiment": "my study"})
    r = cli("workflow", "llc", "--local", "--track", "mlflow", cwd=project, env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0 and "tracking: 0 new run(s)" in r.stdout, r.stdout + r.stderr


def test_sweep_histories_and_plots_in_both_trackers(project):
    """Per-epoch history (loss = 1/(1 + lr·epoch)), plots, params and metrics of each experiment,
    in MLflow and in W&B's offline files; the sweep file's `tracking:` key works like --track."""
    sweep = write_config(project / "s.yaml", {
        "task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "defaults": {"curve": 4},
        "grid": {"lr": [0.5, 2.0]}, "tracking": ["wandb"]})  # fmt: skip
    r = cli("workflow", "sweep", str(sweep), "--local", "--track", "mlflow", cwd=project, env={"MLFLOW_TRACKING_URI": "", "WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tracking: 2 new run(s) logged to mlflow" in r.stdout and ", 2 new run(s) logged to wandb" in r.stdout, r.stdout  # 2 experiments in each
    recs = {json.loads(f.read_text())["config"]["lr"]: json.loads(f.read_text()) for f in (project / "results/sweeps/s/experiments").glob("*.json")}
    client = mlflow_client(project)
    for run in mlflow_runs(project, "s"):  # a sweep's experiment is named after the sweep
        lr = float(run.data.params["lr"])
        rec = recs[lr]
        assert run.data.tags["lambda_hat.task_id"] == rec["task_id"] and run.data.metrics["score"] == pytest.approx(rec["metrics"]["score"])
        hist = client.get_metric_history(run.info.run_id, "history/loss")
        assert sorted((m.step, m.value) for m in hist) == [(e, pytest.approx(1 / (1 + lr * e))) for e in range(4)]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/curve.png"]
    assert len(mlflow_runs(project, "s")) == 2
    for lr, rec in recs.items():
        w = wandb_run(project, rec["task_id"])
        assert w["run"].run_id == rec["task_id"] and w["run"].display_name == f"s/{rec['experiment_id']}"
        assert w["config"]["lr"] == lr and w["summary"]["score"] == pytest.approx(rec["metrics"]["score"])
        losses = [h["history/loss"] for h in w["history"] if "history/loss" in h]
        assert losses == pytest.approx([1 / (1 + lr * e) for e in range(4)])
        assert len(w["images"]) == 1 and w["images"][0].startswith("curve")
    # after the fact, to both: nothing is logged twice
    r = cli("export", "--mlflow", "--wandb", cwd=project, env={"MLFLOW_TRACKING_URI": "", "WANDB_API_KEY": ""})
    assert r.returncode == 0 and "tracking: 0 new run(s)" in r.stdout, r.stdout + r.stderr
    assert len(list((project / "wandb").glob("offline-run-*"))) == 2 and len(mlflow_runs(project, "s")) == 2


SHAPES = """
import json, sys
lr, out = float(sys.argv[1]), sys.argv[2]
if lr == 0.5:  # a failed experiment's metrics.json that is not a JSON object
    open(out + "/metrics.json", "w").write("[1, 2]")
    sys.exit(0)
json.dump({"score": lr, "note": "text", "curve": [lr, 1], "acc@1": lr, "acc_1": 2 * lr, "val/loss": 3 * lr}, open(out + "/metrics.json", "w"))
open(out + "/history.csv", "w").write("epoch,loss,phase,top@5\\n0,1.0,warmup,0.1\\n1,0.5,main,0.2\\n")
"""


def test_export_takes_what_a_program_wrote(project):
    """A command's metrics of any shape and a history.csv with text columns: the numbers are logged,
    the rest left out, a failed experiment's odd metrics.json skipped; export never stops on them.
    A name MLflow refuses (acc@1, a factor opt@x) is logged with '_' (it had kept every run out)."""
    (project / "shapes.py").write_text(SHAPES)
    import sys

    sweep = write_config(
        project / "s.yaml",
        {"command": f"{sys.executable} shapes.py {{lr}} {{outdir}}", "rank_by": [{"metric": "score"}], "grid": {"lr": [0.1, 0.5], "opt@x": [1]}},
    )
    r = cli("workflow", "sweep", str(sweep), "--local", cwd=project)
    assert r.returncode == 1 and "1 done, 0 reused, 1 failed" in r.stdout, r.stdout + r.stderr
    r = cli("export", "--mlflow", cwd=project, env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0 and "tracking: 2 new run(s)" in r.stdout, r.stdout + r.stderr
    runs = {float(run.data.params["lr"]): run for run in mlflow_runs(project, "s")}
    assert runs[0.1].data.metrics["score"] == 0.1 and "note" not in runs[0.1].data.metrics and "curve" not in runs[0.1].data.metrics
    client = mlflow_client(project)
    assert sorted((m.step, m.value) for m in client.get_metric_history(runs[0.1].info.run_id, "history/loss")) == [(0, 1.0), (1, 0.5)]
    assert sorted((m.step, m.value) for m in client.get_metric_history(runs[0.1].info.run_id, "history/top_5")) == [(0, 0.1), (1, 0.2)]
    metrics = runs[0.1].data.metrics  # a name that MLflow takes keeps it; a changed one that meets it gets _2
    assert (metrics["acc_1"], metrics["acc_1_2"], metrics["val/loss"]) == pytest.approx((0.2, 0.1, 0.3)) and runs[0.1].data.params["opt_x"] == "1"
    assert runs[0.5].data.tags["lambda_hat.status"] == "failed" and runs[0.5].data.metrics == {}
    # a file: URI in either spelling is MLflow's file store there (file:/x was once a directory "file:/x"
    # under the project), which lambda-hat opts into itself (MLflow 3 refused file:///x without it)
    # (and a directory under ~, as the user's home, not a folder named "~")
    for name, uri, shown in [("a", f"file:{project}/a", None), ("b", (project / "b").as_uri(), None), ("c", "~/c", (project / "c").as_uri())]:
        r = cli("export", "--mlflow", uri, cwd=project, env={"MLFLOW_ALLOW_FILE_STORE": "false", "HOME": str(project)})
        assert r.returncode == 0 and f"tracking: 2 new run(s) logged to mlflow {shown or uri}" in r.stdout, r.stdout + r.stderr
        client = mlflow_client(project, name)
        assert len(client.search_runs([client.get_experiment_by_name("s").experiment_id])) == 2
    assert not (project / "file:").exists() and not (project / "~").exists()


def test_trackers_own_environment_variables_name_the_experiment_and_project(project):
    """MLFLOW_EXPERIMENT_NAME (where the file names no experiment) and WANDB_PROJECT are honoured,
    as MLflow's and W&B's own clients honour them."""
    sweep = write_config(project / "s.yaml", {"task": "tests.tasks:toy", "rank_by": [{"metric": "score"}], "grid": {"lr": [0.5]}})
    env = {"MLFLOW_TRACKING_URI": "", "WANDB_API_KEY": "", "MLFLOW_EXPERIMENT_NAME": "mine", "WANDB_PROJECT": "proj"}
    r = cli("workflow", "sweep", str(sweep), "--local", "--track", "mlflow", "--track", "wandb", cwd=project, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(mlflow_runs(project, "mine")) == 1 and not mlflow_runs(project, "s")
    (rec,) = [json.loads(f.read_text()) for f in (project / "results/sweeps/s/experiments").glob("*.json")]
    assert wandb_run(project, rec["task_id"])["run"].project == "proj"
    # W&B's WANDB_MODE before the key: offline with a key set (a node without internet; online here
    # would fail: its server is a closed port), online without one (`wandb login`'s), a typo refused
    key = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    r = cli("export", "--wandb", "w", cwd=project, env={**key, "WANDB_MODE": "offline"})
    assert r.returncode == 0 and f"tracking: 1 new run(s) logged to wandb offline {project / 'w' / 'wandb'}" in r.stdout, r.stdout + r.stderr
    r = cli("export", "--wandb", "w", cwd=project, env={"WANDB_MODE": "disabled"})
    assert r.returncode == 0 and "tracking: 0 new run(s) logged to wandb (WANDB_MODE=disabled)" in r.stdout, r.stdout + r.stderr
    for mode, msg in [
        ("online", "W&B online (WANDB_MODE=online) cannot be used: "),
        ("onlin", "WANDB_MODE 'onlin' is not allowed; allowed values: online, offline"),
    ]:
        r = cli("export", "--wandb", "w2", cwd=project, env={**key, "WANDB_MODE": mode})
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (project / "w2").exists()


def test_tracking_input_errors(project, tmp_path):
    write_config(project / "config" / "experiments.yaml", TINY)
    shadow = tmp_path / "shadow"  # a Python where the mlflow client is missing
    shadow.mkdir()
    (shadow / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")
    from conftest import ROOT

    missing = "error: --track mlflow: the mlflow client is not installed; pip install -e '.[tracking]' (or 'lambda-hat[tracking]')"
    for args in (("--track", "mlflow"), ("--track", "mlflow", "--dry-run"), ("tracking=[mlflow]", "--dry-run")):  # a dry run says so too
        r = cli("workflow", "llc", "--local", *args, cwd=project, env={"PYTHONPATH": f"{shadow}:{ROOT}"})
        assert r.returncode == 2 and r.stderr.strip() == missing, (args, r.stderr)
    assert not (project / "runs").exists() and not (project / "results").exists()
    (project / "afile").write_text("")
    for args, msg in [
        (("workflow", "llc", "--local", "--track", "neptune"), "--track neptune: unknown tracker; allowed values: mlflow, wandb"),
        (("workflow", "llc", "--local", "tracking=[tensorboard]"), "tracking[0]: 'tensorboard' is not allowed; allowed values: mlflow, wandb"),
        (("export",), "export: give --mlflow [URI] and/or --wandb [DIR]"),
        (("export", "--store", "nowhere", "--mlflow"), "store nowhere: no such directory"),
        # W&B's directory a file: it had failed every run's logging after the tasks ran (exit 1)
        (("workflow", "llc", "--local", "--track", "wandb"), f"--track wandb: {project / 'afile'} is a file, not a directory for W&B's runs"),
    ]:
        r = cli(*args, cwd=project, env={"WANDB_DIR": "afile"})
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert not (project / "runs").exists() and not (project / "mlruns").exists()


def test_a_tracker_it_cannot_use(project):
    """A tracking URI mlflow-skinny cannot open, or a server that is down, is a one-line error
    before anything runs (it had been a traceback after the whole sweep, behind minutes of MLflow's
    retries); a server that fails mid-way costs the tracking, not the results: a line saying what
    was not logged and how to log it later, exit 1."""
    import http.server
    import socket
    import threading

    write_config(project / "config" / "experiments.yaml", TINY)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for uri, msg in [
        (f"sqlite:///{project}/ml.db", "(a database URI needs the full MLflow: pip install mlflow)"),
        (f"http://127.0.0.1:{closed}", "Connection refused"),
    ]:
        r = cli("workflow", "llc", "--local", "--track", "mlflow", cwd=project, env={"MLFLOW_TRACKING_URI": uri})
        err = r.stderr.strip()
        assert r.returncode == 2 and err.startswith(f"error: --track mlflow: MLflow cannot use {uri}: ") and msg in err, err
        assert len(err.splitlines()) == 1 and not (project / "runs").exists() and not (project / "results").exists(), err
    online = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{closed}"}  # W&B online, its server down
    # within 2 minutes: W&B's check in this process once hung it after the error (its service busy)
    r = cli("workflow", "llc", "--local", "--track", "wandb", cwd=project, env=online, timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: --track wandb: W&B online (WANDB_API_KEY is set) cannot be used: "), err
    assert err.endswith("; unset WANDB_API_KEY to log offline") and len(err.splitlines()) == 1 and not (project / "runs").exists(), err

    class Half(http.server.BaseHTTPRequestHandler):  # answers the check before the run, nothing after
        def reply(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ok = "experiments/search" in self.path
            body = b'{"experiments": []}' if ok else b'{"error_code": "INTERNAL_ERROR", "message": "disk full"}'
            self.send_response(200 if ok else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = reply

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Half)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        r = cli("workflow", "llc", "--local", "--track", "mlflow", cwd=project, env={"MLFLOW_TRACKING_URI": uri})
    finally:
        server.shutdown()
    assert r.returncode == 1 and "llc: 2 done, 0 reused, 0 failed" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and pd.read_parquet(project / "results" / "llc_runs.parquet")["status"].tolist() == ["done"]
    line = next(x for x in r.stdout.splitlines() if x.startswith("tracking failed:"))
    assert f"mlflow {uri}: " in line and "disk full" in line and f"2 run(s) not logged there (`lambda-hat export --mlflow {uri}`" in line, line
