"""One task contract: declared tasks, code versions in every ID, shell tasks, the engine's imports (issue: architecture)."""

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from conftest import ROOT, cli, write_config
from lambda_hat.engine.runner import fill_command
from lambda_hat.engine.tasks import Status, Task, version_of
from lambda_hat.engine.typed import InputError
from lambda_hat.llc.samplers import VERSIONS
from lambda_hat.llc.sampling import ESTIMATOR_VERSION

SCRIPT = ROOT / "tests" / "scripts" / "train.py"


def test_the_engine_imports_no_science():
    """Importing every engine module (and the CLI) loads no jax/torch/flax/blackjax/optax, llc or studies."""
    code = textwrap.dedent("""
        import pkgutil, importlib, sys
        import lambda_hat.engine as e, lambda_hat.cli
        for m in pkgutil.iter_modules(e.__path__):
            importlib.import_module(f"lambda_hat.engine.{m.name}")
        bad = sorted(n for n in sys.modules if n.split(".")[0] in ("jax", "torch", "flax", "blackjax", "optax") or n.startswith(("lambda_hat.llc", "lambda_hat.studies")))
        print(",".join(bad))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
    for path in (ROOT / "lambda_hat" / "engine").glob("*.py"):  # also imports inside functions
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                mod = words[1]
                assert not mod.startswith(("jax", "torch", "flax", "blackjax", "optax", "lambda_hat.llc", "lambda_hat.studies", ".llc", "..llc")), (
                    f"{path.name}: {line.strip()}"
                )


def test_ids_cover_function_version_config_and_deps():
    a = Task("t", "tests.tasks:noop", {"value": 1}, "a")
    assert a.version == "1" and a.id != a.key
    assert Task("t", "tests.tasks:noop", {"value": 1}, "a", version="2").id != a.id
    assert Task("t", "tests.tasks:noop", {"value": 1}, "a", version="2").key == a.key  # same task, other code
    assert Task("t", "tests.tasks:sleeper", {"value": 1}, "a").id != a.id
    assert Task("t", "tests.tasks:noop", {"value": 1}, "a", deps=(("t", "x"),)).id != a.id
    assert version_of("lambda_hat.llc.sampling:sample_run", {"sampler": {"kind": "sgld"}}) == f"{ESTIMATOR_VERSION}.{VERSIONS['sgld']}"
    with pytest.raises(InputError, match="not a task function; declare it with"):
        Task("t", "tests.custom_target:build", {}, "not declared")
    assert Status.DONE == "done" and json.dumps(Status.FAILED) == '"failed"' and Status.REUSED.ok and not Status.SKIPPED.ok


def test_a_changed_code_version_recomputes_and_the_dry_run_says_so(project, monkeypatch):
    """Bumping a sampler's version reruns exactly its runs; the dry run names the reason."""
    from conftest import TINY

    write_config(
        project / "config" / "experiments.yaml",
        {**TINY, "samplers": [TINY["samplers"][0], {"name": "hmc", "overrides": {"draws": 50, "warmup": 50, "chains": 2}}]},
    )
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 0 and "3 done" in r.stdout, r.stdout + r.stderr
    bump = ROOT / "tests" / "scripts" / "sitecustomize.py"  # raises VERSIONS["sgld"] in every process
    env = {"PYTHONPATH": f"{bump.parent}:{ROOT}", "LAMBDA_HAT_TEST_BUMP": "sgld"}
    r = cli("workflow", "llc", "--dry-run", cwd=project, env=env)
    assert (
        r.returncode == 0
        and f"(code changed (version {ESTIMATOR_VERSION}.{VERSIONS['sgld']} → {ESTIMATOR_VERSION}.{VERSIONS['sgld'] + 1}))" in r.stdout
        and "1 task(s) to run (1 code changed), 2 done" in r.stdout
    ), r.stdout + r.stderr
    sgld = next(line.split()[0] for line in r.stdout.splitlines() if "code changed" in line)
    for flags in (["--list-code-changes"], ["--lc"], ["--list-changes", "code"]):  # Snakemake's: labels that -R takes
        r = cli("workflow", "llc", *flags, cwd=project, env=env)
        assert r.returncode == 0 and r.stdout.split() == [sgld] and sgld.startswith("sgld@"), r.stdout + r.stderr
    r = cli("workflow", "llc", "--lp", "samplers.1.overrides.draws=60", cwd=project, env=env)  # a changed config: a new task
    assert r.returncode == 0 and r.stdout.split() == [sgld.replace("sgld", "hmc")], r.stdout + r.stderr
    r = cli("workflow", "llc", "--list-changes", "input", cwd=project)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    r = cli("workflow", "llc", "--local", cwd=project, env=env)
    assert r.returncode == 0 and "1 done, 2 reused" in r.stdout, r.stdout + r.stderr
    r = cli("status", "config/experiments.yaml", cwd=project, env=env)
    assert r.returncode == 0 and "0 task(s) to run, 3 done" in r.stdout, r.stdout + r.stderr


def test_shell_command_sweep(project):
    """command: a cached shell task per experiment; metrics from {outdir}/metrics.json, output in
    its log, a non-zero exit is a failure with the log's last line; a rerun reuses everything."""
    doc = {
        "command": f"{sys.executable} {SCRIPT} --lr {{lr}} --width {{width}} --out {{outdir}} --fail {{fail}}",
        "rank_by": [{"metric": "score"}],
        "grid": {"lr": [0.01, 0.03], "width": [2]},
        "combos": [{"name": "bad", "lr": 0.5, "width": 2, "fail": True}],
        "defaults": {"fail": False},
    }
    p = write_config(project / "config" / "sweeps" / "shell.yaml", doc)
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed: bad: diverged at lr=0.5" in r.stdout, r.stdout
    df = pd.read_parquet(project / "results/sweeps/shell/results.parquet")
    ok = df[df.status == "done"].set_index("lr")
    assert ok.loc[0.03, "score"] == 0.0 and ok.loc[0.01, "score"] == pytest.approx(-4.0) and ok.loc[0.01, "params"] == 20
    (log,) = [d / "log.txt" for d in (project / "runs/sweep").iterdir() if (d / "metrics.json").exists() and "lr=0.01" in (d / "log.txt").read_text()]
    assert "training with lr=0.01 width=2" in log.read_text()
    r = cli("workflow", "sweep", str(p), "--local", "--only", "width=2", "--only", "lr=0.01,0.03", cwd=project)
    assert r.returncode == 0 and "0 done, 2 reused" in r.stdout, r.stdout + r.stderr
    bad = write_config(project / "config" / "sweeps" / "bad.yaml", {**doc, "command": "python x.py --lr {lrr}"})
    r = cli("workflow", "sweep", str(bad), "--dry-run", cwd=project)
    assert r.returncode == 2 and "bad.yaml: command: {lrr} is not a key of experiment" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    code = write_config(project / "config" / "sweeps" / "code.yaml", {**doc, "command": "python -c \"print({'lr': {lr}})\""})
    r = cli("workflow", "sweep", str(code), "--dry-run", cwd=project)
    assert r.returncode == 2 and "command: {'lr'} is not a key of experiment 'lr=" in r.stderr and "(write a literal brace as {{ or }})" in r.stderr, r.stderr
    assert "(write a literal brace" not in cli("workflow", "sweep", str(bad), "--dry-run", cwd=project).stderr  # {lrr}: a misspelt key
    # a program may read its values (the seed of each replicate too) from {outdir}/config.json
    reads = "import json, sys; c = json.load(open(sys.argv[1] + '/config.json')); json.dump({{'score': c['seed'] + c['lr']}}, open(sys.argv[1] + '/metrics.json', 'w'))"
    own = write_config(
        project / "config" / "sweeps" / "own.yaml",
        {"command": f'{sys.executable} -c "{reads}" {{outdir}}', "rank_by": [{"metric": "score"}], "grid": {"lr": [0.5]}, "seeds": [3, 7]},
    )
    r = cli("workflow", "sweep", str(own), "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(pd.read_parquet(project / "results/sweeps/own/results.parquet")["score"]) == [3.5, 7.5]
    both = write_config(project / "config" / "sweeps" / "both.yaml", {**doc, "task": "tests.tasks:toy"})
    r = cli("workflow", "sweep", str(both), "--dry-run", cwd=project)
    assert r.returncode == 2 and "give a task (module:function) or a command" in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["a b", "it's", 'say "hi"', "$HOME `ls` \\n", "--x", ""])
def test_command_values_are_one_literal_word_wherever_they_stand(value):
    """{key} in the open, in the user's own '…' and in "…" (a template's habit) is the value itself, one word."""
    for template in ("printf '%s|' {v} {v}", "printf '%s|' '{v}' x", 'printf "%s|" "{v}" x', "printf '%s|' \"pre {v} post\" x"):
        line = fill_command(template, {"v": value})
        out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=True).stdout
        first = f"pre {value} post" if "pre" in template else value
        assert out.split("|")[0] == first and len(out.split("|")) == 3, (template, line, out)


def test_command_quoted_placeholder_end_to_end(project):
    """A sweep whose command quotes its placeholders ('{tag}') gets each value whole."""
    doc = {
        "command": f"{sys.executable} {SCRIPT} --lr {{lr}} --out '{{outdir}}' --tag \"{{tag}}\"",
        "rank_by": [{"metric": "score"}],
        "grid": {"lr": [0.01], "tag": ["a b", "it's"]},
    }
    p = write_config(project / "config" / "sweeps" / "quoted.yaml", doc)
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 0 and "2 done" in r.stdout, r.stdout + r.stderr
    logs = sorted((d / "log.txt").read_text() for d in (project / "runs/sweep").iterdir() if (d / "log.txt").exists())
    assert sorted(line for log in logs for line in log.splitlines() if line.startswith("tag:")) == ["tag: a b", "tag: it's"], logs


def test_snakemake_np_prints_each_shell_command(project):
    """Snakemake's -np: the dry run lists each shell task's command line as it would run; a run's
    log starts with it, and a command that fails silently still gets its exit code as the error."""
    doc = {
        "command": "test {lr} != 0.5 || exit 3; echo '{{\"score\": {lr}}}' > {outdir}/metrics.json",
        "rank_by": [{"metric": "score"}],
        "grid": {"lr": [0.1, 0.5]},
    }
    p = write_config(project / "config" / "sweeps" / "np.yaml", doc)
    r = cli("workflow", "sweep", str(p), "-np", cwd=project)
    commands = [line.strip() for line in r.stdout.splitlines() if line.strip().startswith("$ ")]
    assert r.returncode == 0 and len(commands) == 2 and not (project / "runs" / "sweep").exists(), r.stdout + r.stderr
    for lr, line in zip((0.1, 0.5), commands):
        assert line.startswith(f"$ test {lr} != 0.5 || exit 3; echo '{{\"score\": {lr}}}' > {project / 'runs' / 'sweep'}/"), line
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 1 and "failed: lr=0.5: command failed with exit code 3" in r.stdout, r.stdout + r.stderr
    logs = [d / "log.txt" for d in (project / "runs" / "sweep").iterdir()]
    assert sorted(log.read_text().splitlines()[0][:13] for log in logs) == ["$ test 0.1 !=", "$ test 0.5 !="], [log.read_text() for log in logs]


def test_a_missing_optional_extra_stops_the_run_before_anything_runs(project):
    """A task that requires a module of an optional extra (torch for the studies) which is not
    installed: one line naming it, exit 2, nothing run or written, a dry run too (each experiment
    failed on its import). A task module that cannot import an extra's module says which extra."""
    doc = {"task": "tests.tasks:needs_absent", "rank_by": [{"metric": "value"}], "grid": {"value": [1, 2]}}
    p = write_config(project / "config" / "sweeps" / "absent.yaml", doc)
    for flags in (["--local"], ["-n"]):
        r = cli("workflow", "sweep", str(p), *flags, cwd=project)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stdout + r.stderr
        assert "tests.tasks:needs_absent (absent/value=1, to run) needs lambda_hat_absent_module, not installed for " in r.stderr, r.stderr
    assert not (project / "runs").exists() and not (project / "results").exists()
    (project / "torch_study.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    p = write_config(project / "config" / "sweeps" / "torch.yaml", {**doc, "task": "torch_study:train"})
    r = cli("workflow", "sweep", str(p), "-n", cwd=project)
    assert r.returncode == 2 and r.stderr.strip().endswith("No module named 'torch'); pip install -e '.[torch]' (or 'lambda-hat[torch]')"), r.stderr


def test_a_metric_beyond_64_bits_does_not_end_the_workflow(project):
    """A task's integer metric too wide for parquet (1e23 written as an integer) is a float in
    results.parquet; pyarrow's overflow had ended the workflow with a traceback after its tasks."""
    doc = {"command": "echo '{{\"score\": {v}, \"params\": 100000000000000000000000}}' > {outdir}/metrics.json", "rank_by": [{"metric": "score"}], "grid": {"v": [1, 2]}}  # fmt: skip
    r = cli("workflow", "sweep", str(write_config(project / "config" / "sweeps" / "wide.yaml", doc)), "--local", cwd=project)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    df = pd.read_parquet(project / "results/sweeps/wide/results.parquet")
    assert list(df.params) == [1e23, 1e23] and sorted(df.score) == [1, 2], df


def test_numpy_and_jax_metrics_are_stored_as_numbers(project):
    """A task returning np.float32, np.int64, np.bool_, an array or a JAX scalar: metrics.json and
    the table hold the numbers and lists (they were their text: "0.5", "[0.  0.5 1. ]")."""
    doc = {"task": "tests.tasks:array_metrics", "rank_by": [{"metric": "score"}], "grid": {"value": [1, 2]}}
    p = write_config(project / "config" / "sweeps" / "arrays.yaml", doc)
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = [json.loads(f.read_text()) for f in (project / "runs/sweep").glob("*/metrics.json") if '"n": 2' in f.read_text()]
    assert m == {"score": 2.5, "n": 2, "ok": True, "curve": [0.0, 0.5, 1.0], "jax": 0.25}, m
    df = pd.read_parquet(project / "results/sweeps/arrays/results.parquet").set_index("value")
    assert df.loc[2, "score"] == 2.5 and pd.api.types.is_float_dtype(df.score) and pd.api.types.is_integer_dtype(df.n), df.dtypes


def test_a_metric_nan_or_infinite_ranks_last_and_is_named(project):
    """A diverged run's NaN or inf rank metric (Python's json writes both) is neither ranked best
    (inf under goal max) nor left as a blank that reads like a metric never returned: it ranks
    last, stays out of the statistics, and a warning on the console and in the summary names it."""
    doc = {
        "command": "echo '{{\"score\": {v}}}' > {outdir}/metrics.json",
        "rank_by": [{"metric": "score", "goal": "max"}],
        "grid": {"v": ["0.5", "Infinity", "NaN", "0.7"]},
    }
    p = write_config(project / "config" / "sweeps" / "nan.yaml", doc)
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    warning = "rank_by metric 'score' is NaN or infinite in 2 finished experiment(s) (v=Infinity; v=NaN): ranked last, left out of the statistics and plots"
    assert r.returncode == 0 and f"warning: {warning}" in r.stdout, r.stdout + r.stderr
    table = pd.read_csv(project / "results/sweeps/nan/comparison_table.csv")
    assert list(table.experiment_id) == ["v=0.7", "v=0.5", "v=Infinity", "v=NaN"], table
    summary = (project / "results/sweeps/nan/summary_report.md").read_text()
    assert f"**Warning:** {warning}." in summary
    stats = summary.split("## Statistics by v")[1].split("\n## ")[0]  # levels with a finite metric only
    assert "| 0.5 | 1 |" in stats and "| 0.7 | 1 |" in stats and "Infinity" not in stats and "NaN" not in stats, stats
    r = cli("report", str(p), "--no-plots", cwd=project)
    assert r.returncode == 0 and f"warning: {warning}" in r.stdout, r.stdout + r.stderr


METRICS_SCRIPT = """
import json, sys
lr, width, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if lr == 0.5:  # not a JSON object
    open(out + "/metrics.json", "w").write("[1, 2]")
    sys.exit(0)
m = {"score": "diverged" if lr == 0.04 else lr * 100, "status": "converged", "width": 2 * width if lr == 0.02 else width, "curve": [lr, lr / 2]}
json.dump(m, open(out + "/metrics.json", "w"))
"""


def test_command_sweep_metrics_of_any_shape(project):
    """What a program returns never breaks the table: a metric named like a factor or a column
    (status) is kept beside it, text among numbers and lists are written as text, the ranking reads
    numbers; a metrics.json that is not a JSON object fails that experiment, saying so."""
    (project / "metrics_of_any_shape.py").write_text(METRICS_SCRIPT)
    doc = {
        "command": f"{sys.executable} metrics_of_any_shape.py {{lr}} {{width}} {{outdir}}",
        "rank_by": [{"metric": "score"}],
        "grid": {"lr": [0.01, 0.02, 0.03, 0.04, 0.5], "width": [3]},
    }
    p = write_config(project / "config" / "sweeps" / "shapes.yaml", doc)
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 1 and "4 done, 0 reused, 1 failed" in r.stdout, r.stdout + r.stderr
    assert "failed: lr=0.5,width=3: the command exited 0 but wrote a metrics.json that is not a JSON object" in r.stdout, r.stdout
    out = project / "results/sweeps/shapes"
    for df in (pd.read_parquet(out / "results.parquet"), pd.read_csv(out / "comparison_table.csv")):
        df = df.set_index("lr")
        assert df.loc[0.5, "status"] == "failed" and (df.drop(index=0.5).status == "done").all()
        assert (df.width == 3).all() and (df.drop(index=0.5).metric_status == "converged").all()
        assert df.loc[0.02, "metric_width"] == 6 and df.drop(index=[0.02, 0.5]).metric_width.isna().all()  # equal: not repeated
        assert df.loc[0.04, "score"] == "diverged" and str(df.loc[0.03, "score"]) == "3.0" and df.loc[0.01, "curve"] == "[0.01, 0.005]"
    ranked = pd.read_csv(out / "comparison_table.csv")
    assert ranked.lr.tolist() == [0.03, 0.02, 0.01, 0.04, 0.5] and ranked["rank"].tolist()[:4] == [1, 2, 3, 4]
    assert "| lr=0.03,width=3 | 3 |" in (out / "summary_report.md").read_text()
    r = cli("report", str(p), cwd=project)
    assert r.returncode == 0 and "report:" in r.stdout and "warning" not in r.stdout, r.stdout + r.stderr
    # a rank metric no experiment returned (a typo) is said, on the console and in the summary
    write_config(p, {**doc, "rank_by": [{"metric": "scor"}]})
    r = cli("report", str(p), cwd=project)
    said = "rank_by metric 'scor' is not a metric of any finished experiment (they have: curve, metric_status, metric_width, score)"
    assert r.returncode == 0 and f"warning: {said}\n" in r.stdout, r.stdout + r.stderr
    assert f"**Warning:** {said}." in (out / "summary_report.md").read_text()


def test_workflow_commands_come_from_the_workflow_modules(project):
    """Every module of workflows/ is a command with the common options; status FILE knows its workflow."""
    r = cli("workflow", "--help", cwd=project)
    assert r.returncode == 0 and all(f"  {name} " in r.stdout for name in ("llc", "progressive", "sweep")), r.stdout
    for name in ("llc", "progressive", "sweep"):
        r = cli("workflow", name, "--help", cwd=project)
        assert r.returncode == 0 and all(
            o in r.stdout for o in ("--local", "--parsl-card", "--set", "--dry-run", "--force", "--jobs", "--timeout", "--track")
        ), r.stdout
    bad = write_config(project / "config" / "other.yaml", {"something": 1})
    r = cli("status", str(bad), cwd=project)
    assert r.returncode == 2 and "not a workflow file" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_old_study_module_names_resolve_to_the_same_tasks(project):
    """Sweep files written before the move (task: lambda_hat.blobs:train) plan the same task IDs."""
    from lambda_hat.engine.sweep import load_sweep
    from lambda_hat.workflows.sweep import tasks

    doc = {"rank_by": [{"metric": "silhouette"}], "grid": {"lr": [0.01, 0.02]}}
    ids = []
    for ref in ("lambda_hat.blobs:train", "lambda_hat.studies.blobs.study:train"):
        sweep = load_sweep(write_config(project / "config" / "sweeps" / "blobs.yaml", {**doc, "task": ref}))
        ids.append([t.id for t in tasks(sweep, sweep.experiments, None).values()])
    assert ids[0] == ids[1] and len(set(ids[0])) == 2
