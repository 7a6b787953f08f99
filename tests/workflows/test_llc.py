"""The llc workflow end to end through the real command line."""

import json
import os
import re

import arviz as az
import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY, cli, task_processes, write_config

matplotlib.use("Agg")


def test_run_rerun_force_status(project):
    cfg = {**TINY, "samplers": TINY["samplers"] + [{"name": "hmc", "overrides": {"draws": 50, "warmup": 50, "chains": 2, "eval_every": 2}}]}
    write_config(project / "config" / "experiments.yaml", cfg)

    own_cache = {"JAX_COMPILATION_CACHE_DIR": ""}  # the store's own, not the suite's shared cache
    # an empty user cache: arviz's once-a-day notice of its 1.x refactor (arviz < 1 is pinned) would print
    r = cli("workflow", "llc", "--local", cwd=project, env={**own_cache, "XDG_CACHE_HOME": str(project / "user-cache")})
    assert r.returncode == 0, r.stderr
    assert "3 done, 0 reused, 0 failed" in r.stdout and "ArviZ is undergoing" not in r.stdout + r.stderr, r.stderr
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert list(df["sampler"]) == ["sgld", "hmc"] and set(df["status"]) == {"done"}
    for col in (
        "target_id",
        "run_id",
        "model",
        "data",
        "seed",
        "n",
        "d",
        "llc_mean",
        "llc_std",
        "llc_sem",
        "ess_bulk",
        "ess_tail",
        "r_hat",
        "fge",
        "walltime_sec",
        "sampler.step_size",
        "sampler.posterior.gamma",
        "bias_at_chains",  # SGLD's bias where its chains went
        "step_shrinks",
    ):
        assert col in df.columns, col
    assert (df["d"] == 4).all() and (df["llc_true"] == 2.0).all()
    # short chains (HMC: ESS ≈ 6, SE ≈ 0.5), so within their Monte Carlo error; exactness is tested elsewhere
    assert ((df["llc_mean"] - 2.0).abs() < 0.5 + 3 * df["llc_sem"]).all(), df[["llc_mean", "llc_sem"]]
    assert (project / "results" / "llc_runs.csv").exists() and not (project / "results" / "retry.yaml").exists()
    run_dir = project / "runs" / "llc" / df["run_id"][0]
    assert {"config.json", "manifest.json", "metrics.json", "trace.nc", "log.txt"} <= {p.name for p in run_dir.iterdir()}
    # each run opens in arviz: draws, sampler statistics and the config; its numbers are the table's
    idata = az.from_netcdf(project / "runs" / "llc" / df["run_id"][1] / "trace.nc")
    assert idata.posterior["llc"].shape == (2, 25) and df["sampler.eval_every"].tolist() == [1, 2]  # every 2nd of 50 draws
    assert {"diverging", "energy", "acceptance_rate", "step_size", "fge"} <= set(idata.sample_stats.data_vars)
    attrs = idata.posterior.attrs
    assert json.loads(attrs["config"])["sampler"]["kind"] == "hmc" and attrs["target_id"] == df["target_id"][1]
    # its checks beside its numbers (short chains: flagged), as the table has them
    assert attrs["warnings"] == df["warnings"][1] and attrs["warning_details"] == df["warning_details"][1], (attrs["warnings"], df["warnings"][1])
    summary = az.summary(idata, var_names=["llc"])
    assert summary.loc["llc", "mean"] == pytest.approx(df["llc_mean"][1], abs=1e-3) and summary.loc["llc", "ess_bulk"] == pytest.approx(
        df["ess_bulk"][1], abs=1
    )
    az.plot_trace(idata, var_names=["llc"])
    az.plot_energy(idata)
    sgld = az.from_netcdf(run_dir / "trace.nc")
    assert set(sgld.sample_stats.data_vars) == {"step_size", "fge"} and sgld.posterior.attrs["predicted_bias"] > 0
    assert any((project / "runs" / ".jax-cache").iterdir())  # compiled programs, loaded by the --force run below

    r = cli("workflow", "llc", "--local", "--dry-run", cwd=project)
    assert r.returncode == 0 and "0 task(s) to run, 3 done" in r.stdout
    for row in df.itertuples():  # a done run's listing line names its warnings (short chains: flagged)
        (line,) = [ln for ln in r.stdout.splitlines() if f"[{row.run_id}]" in ln]
        assert line.endswith(f"done; warnings: {row.warnings}" if row.warnings else "done"), (line, row.warnings)
    assert df["warnings"].notna().any()

    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0 and "0 done, 3 reused" in r.stdout
    assert pd.read_parquet(project / "results" / "llc_runs.parquet")["llc_mean"].tolist() == df["llc_mean"].tolist()

    r = cli("workflow", "llc", "--local", "--force", cwd=project, env=own_cache)
    assert r.returncode == 0 and "3 done, 0 reused" in r.stdout
    # same config and seed: identical numbers after recomputation
    assert pd.read_parquet(project / "results" / "llc_runs.parquet")["llc_mean"].tolist() == df["llc_mean"].tolist()

    r = cli("status", cwd=project)
    assert r.returncode == 0 and "llc: 2 done" in r.stdout and "targets: 1 done" in r.stdout


def test_warnings_are_shown_and_strict_fails_them(project):
    """TINY's SGLD step (1e-3 on a = nβ + γ = 146) predicts a 4% bias and its 2 × 200 draws give
    ESS < 400: a number to distrust. It is flagged in the table, the parquet and the output;
    --strict makes it a failure listed in retry.yaml. The auto-step run beside it is clean of
    step_bias, and both carry the finite-n truth of the quadratic, 2·nβ/(nβ + γ)."""
    auto = {"name": "sgld", "overrides": {"batch_size": None}}
    write_config(project / "config" / "experiments.yaml", {**TINY, "samplers": TINY["samplers"] + [auto]})
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(project / "results" / "llc_runs.parquet").set_index("sampler")
    assert set(df.loc["sgld#0", "warnings"].split(",")) >= {"step_bias", "ess"}, df.loc["sgld#0", "warning_details"]
    assert "step_bias" not in str(df.loc["sgld#1", "warnings"]) and df.loc["sgld#1", "predicted_bias"] <= 0.01 + 1e-9
    nb = df["n_beta"].iloc[0]
    assert df["llc_finite"].tolist() == [2 * nb / (nb + 1)] * 2 and df["err_finite"].notna().all()
    assert "WARNING" in r.stdout and "step_bias: predicted bias" in r.stdout and "with warnings" in r.stdout
    assert not (project / "results" / "retry.yaml").exists()
    # the auto run's step halving ran: λ̂ is the chains' reading less its measured bias, and says so
    a = df.loc["sgld#1"]
    assert np.isfinite(a["llc_raw"]) and a["llc_mean"] == pytest.approx(a["llc_raw"] * (1 - a["measured_bias"]), rel=1e-9), a
    (line,) = [ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["sgld#1"]]
    assert f"step's bias removed ({100 * a['measured_bias']:+.1f}% ± {100 * a['measured_bias_se']:.1f}%): chains read {a['llc_raw']:.4g}" in line, line
    # λ̂ to 4 significant digits and its SE to 2, trailing zeros kept (10.40 ± 0.10 had read 10.4 ± 0.1)
    estimate = re.search(r"λ̂ = +(\S+) ± (\S+) ", line).groups()
    assert [len(v.replace(".", "").lstrip("0")) for v in estimate] == [4, 2], estimate
    assert float(estimate[0]) == pytest.approx(a["llc_mean"], rel=5e-4) and float(estimate[1]) == pytest.approx(a["llc_sem"], rel=0.05), estimate

    r = cli("workflow", "llc", "--local", "--strict", cwd=project)
    assert r.returncode == 1 and "0 done, 3 reused" in r.stdout
    retry = yaml.safe_load((project / "results" / "retry.yaml").read_text())
    assert df.loc["sgld#0", "run_id"] in retry["retry_of"]["runs"]
    strict = pd.read_parquet(project / "results" / "llc_runs.parquet").set_index("sampler")
    assert strict.loc["sgld#0", "status"] == "failed" and strict.loc["sgld#0", "error"].startswith("strict: ")
    # a plain rerun would reuse the stored runs and fail again: the output says to change them first
    n = (strict["status"] == "failed").sum()
    assert f"{n} run(s) failed --strict's health checks; a rerun reuses their stored results" in r.stdout, r.stdout
    assert "failed runs listed in" not in r.stdout, r.stdout

    # a run stored before a check existed (here: its stored warnings emptied) gets today's checks
    # when the table is made again: a cached run cannot dodge one
    metrics = project / "runs" / "llc" / df.loc["sgld#0", "run_id"] / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "warnings": []}))
    r = cli("workflow", "llc", "--local", cwd=project)
    again = pd.read_parquet(project / "results" / "llc_runs.parquet").set_index("sampler")
    assert r.returncode == 0 and again.loc["sgld#0", "warnings"] == df.loc["sgld#0", "warnings"], again["warnings"]


def test_vi_runs_report_psis_k(project):
    """Both VI kinds through the CLI on the quadratic (λ = 2), with PSIS k̂ in the table: a
    Gaussian posterior is in reach of both families, so their k̂ is low. With --promote their plots
    are drawn (the per-chain k̂ they label stays in trace.nc beside the table's worst chain)."""
    fast = {"steps": 300, "draws": 500, "chains": 2}
    cfg = {**TINY, "samplers": [{"name": "vi_meanfield", "overrides": fast}, {"name": "vi_flow", "overrides": {**fast, "layers": 2}}]}
    write_config(project / "config" / "experiments.yaml", cfg)
    r = cli("workflow", "llc", "--local", "--promote", cwd=project)
    assert r.returncode == 0 and "failed" not in r.stdout.replace("0 failed", ""), r.stdout + r.stderr
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert list(df["sampler"]) == ["vi_meanfield", "vi_flow"] and list(df["sampler.family"]) == ["meanfield", "flow"]
    assert (df["llc_mean"] - 2.0).abs().max() < 0.2, df["llc_mean"]
    assert (df["pareto_k"] < 0.7).all(), df["pareto_k"]
    for run_id, worst in zip(df["run_id"], df["pareto_k"]):
        per_chain = json.loads(az.from_netcdf(str(project / "runs" / "llc" / run_id / "trace.nc")).posterior.attrs["pareto_k"])
        assert len(per_chain) == 2 and max(per_chain) == worst, (per_chain, worst)
    assert len(list((project / "results" / "gallery").rglob("*.png"))) >= 2 * 4  # trace, running λ̂, rank, ELBO per run

    def shown(run_id):
        return sorted(p.name for p in (project / "results" / "gallery" / "runs" / run_id).glob("*.png"))

    # the original Lambda-Hat's spellings: `promote gallery`, --promote-plots (its name for running λ̂ too)
    r = cli("promote", "gallery", "--promote-plots", "trace.png,llc_convergence_combined.png", cwd=project)
    assert r.returncode == 0 and all(shown(i) == ["running_llc.png", "trace.png"] for i in df["run_id"]), r.stdout + r.stderr
    r = cli("workflow", "llc", "--local", "--promote-plots", "elbo", cwd=project)  # implies --promote; all cached (target, runs, plots)
    assert r.returncode == 0 and "0 done, 6 reused" in r.stdout and all(shown(i) == ["elbo.png"] for i in df["run_id"]), r.stdout + r.stderr
    r = cli("promote", "config/experiments.yaml", "--promote-plots", "trace", cwd=project)  # the file as argument, as `status FILE`
    assert r.returncode == 0 and all(shown(i) == ["trace.png"] for i in df["run_id"]), r.stdout + r.stderr
    r = cli("promote", "galery", cwd=project)
    assert r.returncode == 2 and r.stderr == "error: promote galery: expected gallery, single or an experiments file (.yaml, .yml)\n", r.stderr
    r = cli("workflow", "llc", "--local", "--promote-plots", "elbo", cwd=project)
    assert r.returncode == 0 and all(shown(i) == ["elbo.png"] for i in df["run_id"]), r.stdout + r.stderr
    for args in (("promote", "--promote-plots", "trace,energy"), ("workflow", "llc", "--local", "--promote-plots", "energy.png")):
        r = cli(*args, cwd=project)
        assert r.returncode == 2 and "unknown plot 'energy'; allowed: trace, running_llc, rank, hmc, mclmc, elbo" in r.stderr, r.stderr
        assert all(shown(i) == ["elbo.png"] for i in df["run_id"])
    # its promote options: the store, the samplers, the folder, the plot and a Markdown snippet whose links reach the plots
    # (its default --outdir, runs/promotion, is inside the store: no task there for status)
    args = ("promote", "gallery", "--runs-root", "runs", "--samplers", "vi_flow", "--plot-name", "trace.png", "--outdir", "runs/promotion")
    r = cli(*args, "--snippet-out", "docs/snippet.md", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    promo = project / "runs" / "promotion"
    assert sorted(p.relative_to(promo).as_posix() for p in (promo / "runs").rglob("*.png")) == [f"runs/{df['run_id'][1]}/trace.png"]
    links = re.findall(r"\]\(([^)]+)\)", (project / "docs" / "snippet.md").read_text())
    assert f"../runs/promotion/runs/{df['run_id'][1]}/trace.png" in links and all((project / "docs" / link).is_file() for link in links), links
    r = cli("status", cwd=project)
    assert r.returncode == 0 and "promotion" not in r.stdout, r.stdout
    (project / "mine").mkdir()
    (project / "mine" / "notes.txt").write_text("mine")
    for bad, msg in (
        (("--samplers", "nuts"), "has no sampler 'nuts'; samplers: vi_meanfield, vi_flow"),
        (("--outdir", "mine"), "holds files that are not a gallery's"),
        (("--plot-name", "energy.png"), "--plot-name 'energy.png': unknown plot 'energy'"),
        # it had built a gallery of runs "not run yet" in place of the real one
        (("--runs-root", "runs/llc"), "--runs-root runs/llc: a folder of tasks inside a store; give the store: --runs-root runs"),
    ):
        r = cli("promote", "gallery", *bad, cwd=project)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert [p.name for p in (project / "mine").iterdir()] == ["notes.txt"]


def test_refined_vi_run_shows_hmc_lambda_and_qs_own(project):
    """refine (auto where VI's checks fail; forced here on the quadratic, λ = 2): the row's λ̂ and
    diagnostics are HMC's, q's own reading is `llc_vi`, and the printed line says so."""
    vi = {"steps": 300, "draws": 500, "chains": 2}
    cfg = {**TINY, "samplers": [{"name": "vi_meanfield", "overrides": {**vi, "refine": "always"}}, {"name": "vi_meanfield", "overrides": vi}]}
    write_config(project / "config" / "experiments.yaml", cfg)
    r = cli("workflow", "llc", "--local", "--promote", "--track", "mlflow", cwd=project, env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    # the refined run's HMC plot, against its refinement's target acceptance (its own config is VI's: it had failed the plots)
    assert (project / "results" / "gallery" / "runs" / df["run_id"][0] / "hmc.png").is_file()
    assert list(df["refined"]) == ["hmc", "none"] and (df["llc_mean"] - 2.0).abs().max() < 0.2 and (df["llc_vi"] - 2.0).abs().max() < 0.2, df
    assert df["divergences"][0] == 0 and pd.isna(df["divergences"][1]) and df["warnings"].isna().all(), df["warnings"]
    (line,) = [ln for ln in r.stdout.splitlines() if "refined by hmc" in ln]
    assert f"refined by hmc: q read {df['llc_vi'][0]:.4g} (PSIS k̂ {df['pareto_k'][0]:.2f})" in line and line.split()[0] == "vi_meanfield#0", line
    idata = az.from_netcdf(str(project / "runs" / "llc" / df["run_id"][0] / "trace.nc"))
    assert idata.posterior.sizes["chain"] == 4 and "diverging" in idata.sample_stats and idata.vi_fit.sizes["fit"] == 2
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # reading ./mlruns back, as tracking.MLflow writes it
    from mlflow.tracking import MlflowClient  # the tracked runs say so too

    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("lambda-hat-llc").experiment_id])
    refined = {r.data.tags["lambda_hat.task_id"]: (r.data.tags.get("lambda_hat.refined"), r.data.metrics.get("llc_vi")) for r in runs}
    assert refined[df["run_id"][0]] == ("hmc", pytest.approx(df["llc_vi"][0])) and refined[df["run_id"][1]][0] == "none", refined


def test_failed_run_goes_to_retry_yaml_and_exit_1(project):
    cfg = {**TINY, "samplers": TINY["samplers"] + [{"name": "sgld", "overrides": {"step_size": 50.0, "batch_size": None}}]}
    write_config(project / "config" / "experiments.yaml", cfg)
    r = cli("workflow", "llc", "--local", "--experiment", "e1", cwd=project)
    assert r.returncode == 1, r.stderr
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert list(df["status"]) == ["done", "failed"]
    assert df["error"][1].startswith("diverged: non-finite L_n at step ") and pd.isna(df["llc_mean"][1])
    retry = yaml.safe_load((project / "results" / "retry.yaml").read_text())
    assert retry["targets"] == [{**TINY["targets"][0], "samplers": [cfg["samplers"][1]]}]
    assert retry["retry_of"] == {"config": "config/experiments.yaml", "runs": [df["run_id"][1]]} and retry["experiment"] == "e1"

    good = project / "runs" / "llc" / df["run_id"][0] / "manifest.json"
    stamp = good.stat().st_mtime_ns
    r = cli("workflow", "llc", "--local", "--config", "results/retry.yaml", cwd=project)
    assert r.returncode == 1 and "0 done, 1 reused, 1 failed" in r.stdout  # target reused, bad run retried
    assert good.stat().st_mtime_ns == stamp  # the finished run was not touched
    assert len(pd.read_parquet(project / "results" / "llc_runs.parquet")) == 1
    # the failed runs changed on purpose (KEY=VALUE, the short form): rerun as changed
    r = cli("workflow", "llc", "--local", "--config", "results/retry.yaml", "targets.0.samplers.0.step_size=1e-3", cwd=project)
    assert r.returncode == 0 and "1 done, 1 reused, 0 failed" in r.stdout, r.stdout + r.stderr
    assert pd.read_parquet(project / "results" / "llc_runs.parquet")["sampler.step_size"].tolist() == [1e-3]
    assert not (project / "results" / "retry.yaml").exists()
    whole = "results/llc_runs.parquet holds these runs only; lambda-hat workflow llc --config config/experiments.yaml writes the whole table"
    assert whole in r.stdout, r.stdout
    r = cli("workflow", "llc", "--local", cwd=project)  # the source: its first run reused, the second new (its step changed)
    assert r.returncode == 1 and "holds these runs only" not in r.stdout and len(pd.read_parquet(project / "results" / "llc_runs.parquet")) == 2


FLAKY = """
from pathlib import Path
from tests.custom_target import build as linear

def build(cfg):
    if Path("FAIL").exists():
        raise RuntimeError("the data server is down")
    return linear(cfg)
"""


def test_a_forced_rerun_that_fails_reports_what_it_did(project):
    """--force on a target whose build now fails: its runs are skipped and the table says so, not
    the results stored before (they stay in the store: a plain rerun finds them again)."""
    (project / "flaky_target.py").write_text(FLAKY)
    model = {"kind": "custom", "fn": "flaky_target:build", "version": 1, "dim": 2, "n": 200}
    hmc = {"name": "hmc", "overrides": {"draws": 300, "warmup": 100, "chains": 2}}
    write_config(project / "config" / "experiments.yaml", {"targets": [{"model": model, "overrides": {"training": {"steps": 100}}}], "samplers": [hmc]})
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    (project / "FAIL").write_text("")
    r = cli("workflow", "llc", "--local", "--force", cwd=project)
    assert r.returncode == 1 and "0 done, 0 reused, 1 failed, 0 timeout, 1 skipped" in r.stdout, r.stdout + r.stderr
    row = pd.read_parquet(project / "results" / "llc_runs.parquet").iloc[0]
    assert row["status"] == "skipped" and "the data server is down" in row["error"] and pd.isna(row["llc_mean"]), row
    assert "skipped: target flaky_target:build/s0: RuntimeError: the data server is down" in r.stdout, r.stdout
    (project / "FAIL").unlink()
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0 and "1 done, 1 reused" in r.stdout, r.stdout + r.stderr


def test_diverged_training_skips_its_runs(project):
    """Training whose loss turns NaN fails its target (its runs skipped); training that ends above
    its start, though finite (Adam at lr 1e6 on a tanh MLP, polished to a saturated plateau where
    every other check passes), flags its runs `training`."""
    plateau = {"model": "tiny", "data": "tiny", "overrides": {"training": {"lr": 1.0e6, "steps": 100}}}
    cfg = {
        **TINY,
        "targets": TINY["targets"] + [{"model": "dln", "data": "small", "overrides": {"training": {"lr": 1.0e6, "optimizer": "sgd", "steps": 50}}}, plateau],
    }
    write_config(project / "config" / "experiments.yaml", cfg)
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 1
    df = pd.read_parquet(project / "results" / "llc_runs.parquet")
    assert list(df["status"]) == ["done", "skipped", "done"]
    assert "training diverged" in df["error"][1] and df["error"][1].startswith("target dln/small/s0")
    assert "training" not in df["warnings"][0] and df["warnings"][2].split(",").count("training") == 1, df["warnings"]
    assert df["trained_loss"][2] > 1e6 * df["initial_loss"][2] and df["L_star"][2] < df["initial_loss"][2]
    assert "training: training raised the loss: L_n " in r.stdout and "may be a poor optimum: lower training.lr" in r.stdout


@pytest.mark.parametrize("sig, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_interrupt_or_sigterm_leaves_no_task_process(project, sig, code, word):
    """Ctrl-C, and SIGTERM (scancel, `timeout`) as it: tasks killed, left incomplete, exit 130 / 143."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from conftest import LH, ROOT

    cfg = {**TINY, "samplers": [{"name": "sgld", "overrides": {"batch_size": None, "draws": 10_000_000, "chains": 1}}]}
    write_config(project / "config" / "experiments.yaml", cfg)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # as from a terminal: a shell starts background jobs with SIGINT ignored, and Python keeps
    # that; this wrapper restores the default and execs the command (same PID)
    term = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"]
    proc = subprocess.Popen([*term, *LH, "workflow", "llc", "--local"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    tasks = []

    for _ in range(300):  # wait for the sampling task (the target task finishes first)
        tasks = [p for p, _ in task_processes(project / "runs" / "llc", me.children(recursive=True))]
        if tasks:
            break
        time.sleep(0.1)
    assert tasks, "sampling task never started"
    time.sleep(1.0)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"{word}: running tasks were killed; rerun to resume" in err, err
    psutil.wait_procs(tasks, timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tasks)
    assert not list(project.glob("runs/llc/*/manifest.json"))  # the killed run is not recorded as done or failed
    r = cli("status", cwd=project)
    assert "targets: 1 done" in r.stdout


def test_runs_that_disagree_on_one_target_are_flagged():
    """The cross-check behind `disagree`, on rows as the workflow builds them (numbers from the tanh
    MLP `base` on `data: base`): a clean run beyond 3 combined MCSEs and 2% of another run on the
    same target and posterior is flagged, naming it; a run flagged as biased casts no doubt, runs
    under another posterior or target are not compared, and a flagged run gets no second warning."""
    from workflows.llc import mark_disagreements

    def row(sampler, llc, sem, warnings=None, target="t1", gamma=1.0):
        details = " | ".join(f"{c}: …" for c in warnings.split(",")) if warnings else None
        return {"status": "done", "target_id": target, "sampler": sampler, "llc_mean": llc, "llc_sem": sem, "warnings": warnings,
                "warning_details": details, "sampler.posterior.beta0": 1.0, "sampler.posterior.gamma": gamma}  # fmt: skip

    table = [
        row("mclmc", 111.4, 0.096),
        row("sgld", 114.3, 0.91, "rhat,ess"),
        row("hmc", 115.5, 1.4, "rhat,ess,unmixed,ebfmi"),
        row("vi", 176.2, 0.63, "pareto_k"),
        row("mclmc#2", 111.5, 0.1),  # agrees with mclmc (0.7 SE), not with sgld (3.1 SE)
        row("hmc#3", 114.3, 0.05, target="t2"),  # another target
        row("sgld#4", 114.3, 0.05, gamma=100.0),  # another posterior
        {**row("sgld#5", None, None), "status": "failed"},
    ]
    mark_disagreements(table)
    by = {r["sampler"]: r for r in table}
    for name in ("mclmc", "mclmc#2"):
        assert by[name]["warnings"] == "disagree", by[name]
        assert by[name]["warning_details"].startswith("disagree: λ̂ 111") and "sgld's 114.3 ± 0.91" in by[name]["warning_details"]
        assert "vi's" not in by[name]["warning_details"] and "hmc's" not in by[name]["warning_details"]  # biased; 2.9 SE
        assert "SE; itself flagged rhat,ess)" in by[name]["warning_details"]  # the partner's own doubt, named
    assert by["sgld"]["warnings"] == "rhat,ess" and by["hmc"]["warning_details"].count("disagree") == 0
    assert by["hmc#3"]["warnings"] is None and by["sgld#4"]["warnings"] is None and by["sgld#5"]["warnings"] is None
    # within 2% (SGLD's and MCLMC's bias budgets) there is nothing to say, however small the MCSEs
    close = [row("a", 100.0, 0.01), row("b", 101.9, 0.01)]
    mark_disagreements(close)
    assert [r["warnings"] for r in close] == [None, None]
    far = [row("a", 100.0, 0.01), row("b", 102.1, 0.01)]
    mark_disagreements(far)
    assert [r["warnings"] for r in far] == ["disagree", "disagree"]
    # a run whose burn-in is known too short (budget) leans to its starts: it casts no doubt either
    # (a CNN on digits: SGLD 23.46 ± 0.97 flagged rhat,ess,budget; MCLMC 29.62 ± 0.12, HMC 29.06 ± 0.17)
    cnn = [row("mclmc", 29.62, 0.12), row("sgld", 23.46, 0.97, "rhat,ess,budget"), row("hmc", 29.06, 0.17, "unmixed")]
    mark_disagreements(cnn)
    assert [r["warnings"] for r in cnn] == [None, "rhat,ess,budget", "unmixed"], cnn
    # nor one whose chains have not begun to mix (R̂ > 1.1): a digits MLP's SGLD at R̂ 1.51, ESS 7
    digits = [row("hmc", 40.08, 0.13), {**row("sgld", 26.27, 3.7, "rhat,ess"), "r_hat": 1.513}, row("mclmc", 40.14, 0.13)]
    mark_disagreements(digits)
    assert [r["warnings"] for r in digits] == [None, "rhat,ess", None], digits
    slow = [row("hmc", 40.08, 0.13), {**row("sgld", 26.27, 3.7, "rhat,ess"), "r_hat": 1.05}]  # mixing, slowly: it still counts
    mark_disagreements(slow)
    assert slow[0]["warnings"] == "disagree", slow
