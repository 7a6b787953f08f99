"""The sweep workflow: expansion, --only, --budget, resume after kill, live table, report (issue: sweep)."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import IMAGES, LH, ROOT, cli, ensure_chromium, in_chromium, write_config
from lambda_hat.engine.sweep import load_sweep
from lambda_hat.engine.typed import InputError, parse_duration

TOY = {
    "task": "tests.tasks:toy",
    "rank_by": [{"metric": "score"}, {"metric": "loss", "goal": "min"}],
    "defaults": {"sleep": 0.0},
    "grid": {"lr": [0.01, 0.02, 0.03, 0.04], "width": [2, 8]},
    "combos": [{"name": "broken", "fail": True}],
    "replicates": 2,
}


def sweep_file(project, doc, name="toy"):
    return write_config(project / "config" / "sweeps" / f"{name}.yaml", doc)


def names(path):
    return [e.name for e in load_sweep(path).experiments]


def test_expansion_order_dedup_and_full_config(project):
    doc = {
        **TOY,
        "replicates": None,
        "defaults": {"lr": 0.02},
        "grid": [{"lr": [0.01, 0.02]}, {"width": [2, 4]}],
        "combos": [{"name": "c", "lr": 0.05, "width": 8}],
    }
    del doc["replicates"]
    p = sweep_file(project, doc)
    sw = load_sweep(p)
    # union of one-factor grids; lr=0.02 and width=4 are both the defaults: run once, first name kept
    assert [e.name for e in sw.experiments] == ["lr=0.01", "lr=0.02", "width=2", "c"]
    assert sw.experiments[0].config == {"seed": 0, "lr": 0.01, "width": 4, "sleep": 0.0, "fail": False, "curve": 0}
    assert sw.factors == ["lr", "width"]
    # combos before grid when the file says so; seeds name the replicates
    doc2 = {"combos": doc["combos"], **{k: v for k, v in doc.items() if k != "combos"}, "seeds": [3, 5]}
    assert names(sweep_file(project, doc2))[:2] == ["c,seed=3", "c,seed=5"]
    # a point listed again, in one list or in two of the grid's mappings, runs once (it had been
    # an error blaming `combos`)
    doc3 = {**doc, "grid": [{"lr": [0.01, 0.02, 0.01]}, {"lr": [0.02]}], "combos": [{"name": "c", "lr": 0.05}] * 2}
    assert names(sweep_file(project, doc3)) == ["lr=0.01", "lr=0.02", "c"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"grid": {"lrr": [0.1]}}, "grid.lrr: unknown key for tests.tasks:toy; allowed keys: seed, lr, width, sleep, fail"),
        ({"grid": {"lr": ["fast"]}}, "experiment 'lr=fast,seed=0'.lr: expected a number, got 'fast'"),
        ({"grid": {"lr": 0.1}}, "grid.lr: expected a non-empty list of values, got 0.1"),
        ({"rank_by": []}, "rank_by: needs at least 1 entry"),
        ({"rank_by": [{"metric": "score", "goal": "up"}]}, "rank_by[0].goal: 'up' is not allowed; allowed values: max, min, maximize, minimize"),
        ({"rank_by": [{"metric": "score"}, {"name": "loss"}]}, "rank_by[1].goal: missing: W&B's {name: …} form minimizes by default and rank_by maximizes"),
        ({"task": "tests.tasks:nope"}, "task: 'tests.tasks:nope' cannot be imported"),
        ({"task": "tests.tasks:os"}, "task: 'tests.tasks:os' is a module, not a function"),
        ({"task": "toy"}, "task: 'toy': expected 'module:function'"),
        ({"task": None, "command": ""}, "command: must not be empty"),  # had been a traceback (ValueError: Empty module name)
        ({"task": None, "command": " "}, "command: must not be empty"),
        # it runs where the workflow was started: every experiment had failed after it ran
        ({"task": None, "command": "python train.py --lr {lr}"}, "command: no {outdir}: the command writes {outdir}/metrics.json"),
        ({"combos": [{"lr": 0.1}]}, "combos[0]: each combo needs a `name`"),
        ({"combos": [{"name": " ", "lr": 0.1}]}, "combos[0]: each combo needs a `name` (a non-empty string)"),
        ({"combos": [{"name": "a\nb", "lr": 0.1}]}, "combos[0].name: 'a\\nb': a name is shown one per line; give it no line break"),
        ({"combos": [{"name": "a"}, {"name": "a", "lr": 0.2}]}, "combos[1]: names an experiment 'a' that combos[0] names too, with other values"),
        (
            {"grid": {"lr": [0.01]}, "combos": [{"name": "lr=0.01", "lr": 0.5}]},
            "combos[0]: names an experiment 'lr=0.01' that grid names too, with other values",
        ),
        ({"seeds": [1]}, "replicates: give replicates or seeds, not both"),
        # no seeds at all read "--only : no experiment … matches"; seeds JAX or numpy refuse mid-run
        ({"replicates": None, "seeds": []}, "seeds: needs at least 1 entry"),
        ({"replicates": None, "seeds": [0, -1]}, "seeds[1]: must be >= 0, got -1"),
        ({"replicates": None, "seeds": [2**31]}, "seeds[0]: must be < 2147483648, got 2147483648"),
        ({"replicats": 2}, "replicats: unknown key; allowed keys: rank_by, task, command, version"),
        # had failed every task when it started (ValueError: illegal environment variable name)
        ({"env": {"A=B": 1}}, "env: 'A=B' is not an environment variable name"),
        ({"env": {"": 1}}, "env: '' is not an environment variable name"),
        ({"env": {"A": "a\0b"}}, "env: values must be strings, numbers or true/false (no NUL), got 'a\\x00b'"),  # every task had failed at its start
        ({"env": {"A": None}}, "env: values must be strings, numbers or true/false (no NUL), got None"),
        ({"replicates": None, "seeds": [3, 7, 3]}, "seeds: 3 is listed twice; each seed is one replicate"),  # had run one replicate fewer
        # "" had been taken for no name (the file's stem), ".." wrote the tables into results_root's parent
        ({"name": ""}, "name: '': use letters, digits"),
        ({"name": ".."}, "name: '..': use letters, digits"),
        ({"results_root": ""}, "results_root: must not be empty"),
    ],
)
def test_bad_sweep_file_exit_2_nothing_written(project, change, message):
    p = sweep_file(project, {**TOY, **change})
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "toy.yaml: " in err, err
    assert message in err, err
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_env_reaches_the_tasks_as_yaml_writes_it(project):
    """true/false as YAML spells them (they had reached the tasks as Python's True/False)."""
    from lambda_hat.workflows.sweep import tasks

    sweep = load_sweep(sweep_file(project, {**TOY, "env": {"FLAG": True, "OFF": False, "N": 3, "LR": 1e-3, "S": "a b"}}))
    want = {"FLAG": "true", "OFF": "false", "N": "3", "LR": "0.001", "S": "a b"}
    assert sweep.spec.environment == want and all(t.env == want for t in tasks(sweep, sweep.experiments, None).values())


def test_a_seed_in_the_grid_combos_or_defaults_is_the_experiments_own(project):
    """A grid over `seed` (a common way to replicate) was overwritten by the replicates' seed 0:
    three experiments collapsed into one, run with seed 0, labelled seed=1. A seed given in the
    grid, a combo or the defaults is kept; replicates/seeds vary the defaults' seed; a point that
    sets its seed beside replicates/seeds is a one-line error."""
    base = {k: v for k, v in TOY.items() if k not in ("replicates", "combos")}
    seeds = lambda doc: [(e.name, e.config["seed"]) for e in load_sweep(sweep_file(project, doc)).experiments]  # noqa: E731
    assert seeds({**base, "grid": {"lr": [0.01], "seed": [1, 2, 3]}}) == [("lr=0.01,seed=1", 1), ("lr=0.01,seed=2", 2), ("lr=0.01,seed=3", 3)]
    assert seeds({**base, "grid": {"lr": [0.01]}, "combos": [{"name": "c", "seed": 4}]}) == [("lr=0.01", 0), ("c", 4)]
    assert seeds({**base, "defaults": {"seed": 7}, "grid": {"lr": [0.01]}}) == [("lr=0.01", 7)]
    assert seeds({**base, "defaults": {"seed": 7}, "grid": {"lr": [0.01]}, "seeds": [3, 5]}) == [("lr=0.01,seed=3", 3), ("lr=0.01,seed=5", 5)]
    sweep_file(project, {**base, "grid": {"lr": [0.01], "seed": [1, 2]}, "replicates": 2})
    r = cli("workflow", "sweep", "config/sweeps/toy.yaml", "--local", cwd=project)
    msg = "config/sweeps/toy.yaml: replicates: experiment 'lr=0.01,seed=1' sets its seed in grid as well; vary seeds in one place (grid, or replicates)"
    assert r.returncode == 2 and r.stderr.strip() == f"error: {msg}" and not (project / "runs").exists(), r.stderr
    # the studies' seeds are checked like any value (numpy's generators refuse a negative one mid-run)
    for sweep, key in (("kkt_ci", "seed"), ("peft", "data_seed")):
        r = cli("workflow", "sweep", str(ROOT / "config" / "sweeps" / f"{sweep}.yaml"), "--dry-run", f"defaults.{key}=-1", cwd=project)
        assert r.returncode == 2 and f".{key}: must be >= 0, got -1" in r.stderr, r.stderr


def test_rank_by_in_wandb_words(project):
    """W&B sweeps' metric: {name, goal: minimize|maximize} reads as rank_by's {metric, goal: min|max}."""
    wandb = sweep_file(project, {**TOY, "rank_by": [{"name": "score", "goal": "maximize"}, {"name": "loss", "goal": "minimize"}]}, "wandb")
    assert load_sweep(wandb).spec.rank_by == load_sweep(sweep_file(project, TOY)).spec.rank_by
    assert [(r.metric, r.goal) for r in load_sweep(wandb).spec.rank_by] == [("score", "max"), ("loss", "min")]


def test_a_wandb_grid_sweep_file_runs_as_ours(project):
    """A W&B sweep file's grid search (method grid, metric, parameters with values or value) is the
    same sweep as ours, experiment for experiment and ID for ID; W&B's metric minimizes unless told.
    What lambda-hat does not run (random or bayes search, distributions, W&B's program) is a
    one-line error naming the key."""
    ours = sweep_file(project, {"task": "tests.tasks:toy", "rank_by": [{"metric": "loss", "goal": "min"}], "grid": {"lr": [0.01, 0.02], "width": [2, 8]}, "defaults": {"sleep": 0.0}})  # fmt: skip
    wb = {"name": "toy", "task": "tests.tasks:toy", "method": "grid", "metric": {"name": "loss"}, "parameters": {"lr": {"values": [0.01, 0.02]}, "width": {"values": [2, 8]}, "sleep": {"value": 0.0}}}  # fmt: skip
    a, b = load_sweep(ours), load_sweep(sweep_file(project, wb, "wb"))
    assert [(e.name, e.config) for e in a.experiments] == [(e.name, e.config) for e in b.experiments] and a.spec.rank_by == b.spec.rank_by
    r = cli("workflow", "sweep", "config/sweeps/wb.yaml", "-n", cwd=project)
    assert r.returncode == 0 and r.stdout.split("\n", 1)[1] == cli("workflow", "sweep", str(ours), "-n", cwd=project).stdout.split("\n", 1)[1], (
        r.stdout + r.stderr
    )
    for change, msg in [
        ({"method": "random"}, "method: 'random' is a W&B search lambda-hat does not run; it runs grids"),
        ({"parameters": {"lr": {"distribution": "uniform", "min": 0.0, "max": 1.0}}}, "parameters.lr: lambda-hat runs grids: give values: [...] or value: x"),
        ({"program": "train.py"}, "program: W&B's program: here a command: line runs it and writes {outdir}/metrics.json"),
        ({"rank_by": [{"metric": "loss"}]}, "metric: W&B's metric and rank_by name the same thing; give one"),
        ({"grid": {"lr": [0.1]}}, "parameters.lr: set again in grid or defaults; give it once"),
        ({"parameters": {"lr": {"values": []}}}, "parameters.lr.values: expected a non-empty list"),
        ({"grid": [{"lr": [0.1]}]}, "parameters: give the grid as parameters (W&B's) or as grid, not both"),
        ({"defaults": 5}, "defaults: expected a mapping, got 5"),
    ]:
        r = cli("workflow", "sweep", str(sweep_file(project, {**wb, **change}, "bad")), "-n", cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.splitlines()) == 1, (change, r.stderr)


def test_only_names_the_keys_it_knows(project):
    """--only with a key no experiment has lists the keys, each once (a factor called `name`
    had been listed twice)."""
    from lambda_hat.engine.sweep import select

    doc = {"command": "true {lr} {name} {outdir}", "rank_by": [{"metric": "score"}], "grid": {"lr": [0.1], "name": ["a"]}}
    with pytest.raises(InputError) as e:
        select(load_sweep(sweep_file(project, doc)), ("foo=1",))
    assert str(e.value).endswith("toy.yaml has this key; keys: name, lr, seed"), str(e.value)


def test_a_task_config_without_a_seed_field(project):
    """A task whose config has no `seed` is swept without one (it had been 'seed: unknown key',
    a key the user never wrote); asking for replicates of it is a one-line error."""
    doc = {"task": "tests.tasks:noop", "rank_by": [{"metric": "value"}], "grid": {"value": [1, 2]}}
    assert [e.config for e in load_sweep(sweep_file(project, doc)).experiments] == [
        {"value": 1, "gc": 0, "of": "", "sleep": 0.0},
        {"value": 2, "gc": 0, "of": "", "sleep": 0.0},
    ]
    r = cli("workflow", "sweep", "config/sweeps/toy.yaml", "--local", cwd=project)
    assert r.returncode == 0 and "2 done" in r.stdout, r.stdout + r.stderr
    for key, value in (("replicates", 2), ("seeds", [3, 7])):
        sweep_file(project, {**doc, key: value}, "seeded")
        r = cli("workflow", "sweep", "config/sweeps/seeded.yaml", "--local", cwd=project)
        msg = f"config/sweeps/seeded.yaml: {key}: tests.tasks:noop's config (Plain) has no `seed` field to vary; add one (seed: int = 0)"
        assert r.returncode == 2 and r.stderr.strip() == f"error: {msg}", r.stderr
    assert [e.config["seed"] for e in load_sweep(sweep_file(project, {**TOY, "replicates": 2})).experiments[:2]] == [0, 1]


def test_a_sweep_file_that_is_no_mapping(project):
    """A list, a word or a table's CSV as the sweep file: a one-line error (it had been an
    AttributeError's traceback), the value shown short (a CSV's whole text had made a 7 kB line)."""
    (project / "list.yaml").write_text("- a\n- b\n")
    (project / "t.csv").write_text(",".join(f"column_{i}" for i in range(400)) + "\n1,2\n")
    for args, msg in (
        (("workflow", "sweep", "list.yaml", "--local"), "list.yaml: <top>: expected a mapping, got ['a', 'b']"),
        (("report", "list.yaml"), "list.yaml: <top>: expected a mapping, got ['a', 'b']"),
        (("workflow", "sweep", "t.csv", "--local"), "t.csv: <top>: expected a mapping, got 'column_0,column_1,"),
        (("report", "t.csv"), "t.csv: a table, not a sweep file"),
    ):
        r = cli(*args, cwd=project)
        err = r.stderr.strip()
        assert r.returncode == 2 and err.startswith(f"error: {msg}") and len(err.splitlines()) == 1 and len(err) < 200, err
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_bad_flags_exit_2():
    for bad in ("3x", "", "0m"):
        with pytest.raises(InputError):
            parse_duration(bad)
    assert parse_duration("1h30m") == 5400 and parse_duration("90") == 90 and parse_duration("2.5m") == 150


def test_only_filters_and_errors(project):
    p = sweep_file(project, TOY)
    r = cli("workflow", "sweep", str(p), "--local", "--only", "lr=0.02,0.04", "--only", "width=8", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 done, 0 reused" in r.stdout
    done = {json.loads(f.read_text())["experiment_id"] for f in (project / "results/sweeps/toy/experiments").glob("*.json")}
    assert done == {f"lr={lr},width=8,seed={s}" for lr in (0.02, 0.04) for s in (0, 1)}
    r = cli("workflow", "sweep", str(p), "--only", "name=broken,seed=0", "--dry-run", cwd=project)
    assert r.returncode == 0 and "1 of 18 experiment(s)" in r.stdout, r.stdout + r.stderr
    bad_only = (("lr=0.05", "--only lr=0.05: no experiment of"), ("depth=2", "--only depth: no experiment"), ("lr", "expected KEY=VALUE"))
    for bad, msg in (*bad_only, ("lr=[1", "--only lr=[1: no experiment of")):  # not YAML: compared as written, no traceback
        r = cli("workflow", "sweep", str(p), "--only", bad, cwd=project)
        assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_record_says_what_this_run_did(project):
    """A forced experiment that could not run (its executor or a task it needs failed) is reported
    as this run's outcome, not as the result stored before; a stored failure keeps its details."""
    from lambda_hat.engine.sweep import record
    from lambda_hat.engine.tasks import Outcome, Status

    sweep = load_sweep(sweep_file(project, TOY))
    exp = sweep.experiments[0]
    done = {"status": "done", "walltime_sec": 2.0, "finished": 1.7e9, "host": "h"}
    skipped = Outcome("t1", exp.name, "sweep", Status.SKIPPED, "data: RuntimeError: down")
    rec = record(sweep, exp, "t1", done, {"score": 1.0}, skipped)
    assert (rec["status"], rec["error"], rec["metrics"], rec["efficiency"]["time_sec"]) == ("skipped", "data: RuntimeError: down", {}, None)
    rec = record(sweep, exp, "t1", done, {"score": 1.0}, Outcome("t1", exp.name, "sweep", Status.REUSED))
    assert rec["status"] == "done" and rec["metrics"] == {"score": 1.0}
    failed = {"status": "failed", "error": "ValueError: toy failure", "walltime_sec": 0.5, "host": "h"}
    rec = record(sweep, exp, "t1", failed, None, Outcome("t1", exp.name, "sweep", Status.FAILED, "ValueError: toy failure"))
    assert rec["status"] == "failed" and rec["host"] == "h" and rec["efficiency"]["time_sec"] == 0.5


def test_a_sweep_run_in_a_git_checkout_records_its_commit(project):
    """The user's own code is versioned in the checkout the workflow runs in: its commit (and
    -dirty where a tracked file was edited) goes beside lambda-hat's own, in records and table."""

    def git(*a):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=project, check=True, capture_output=True, text=True).stdout.strip()

    p = sweep_file(project, {**TOY, "grid": {"lr": [0.01]}, "combos": [], "replicates": 1})
    git("init", "-q")
    git("add", "config")
    git("commit", "-qm", "sweep")
    p.write_text(p.read_text() + "# edited after the commit\n")
    r = cli("workflow", "sweep", str(p), "--local", "-q", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    want = git("describe", "--always", "--dirty")
    assert want.endswith("-dirty") and want.startswith(git("rev-parse", "--short", "HEAD"))
    (rec,) = [json.loads(f.read_text()) for f in (project / "results/sweeps/toy/experiments").glob("*.json")]
    assert rec["project_version"] == want and rec["code_version"] != want
    assert list(pd.read_csv(project / "results/sweeps/toy/comparison_table.csv")["project_version"]) == [want]


def test_run_report_numbers_match_json_and_failure_isolated(project):
    p = sweep_file(project, TOY)
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 1, r.stdout + r.stderr  # the broken combo failed; the rest ran
    assert "16 done, 0 reused, 2 failed" in r.stdout and "failed: broken,seed=0: ValueError: toy failure" in r.stdout
    out = project / "results/sweeps/toy"
    recs = {json.loads(f.read_text())["experiment_id"]: json.loads(f.read_text()) for f in (out / "experiments").glob("*.json")}
    assert len(recs) == 18
    rec = recs["lr=0.03,width=8,seed=1"]
    assert rec["status"] == "done" and rec["efficiency"]["params"] == 80 and rec["efficiency"]["time_sec"] > 0
    assert set(rec) >= {"config", "metrics", "efficiency", "status", "error", "timestamp", "code_version"}
    assert rec["project_version"] is None  # the project is no git checkout
    assert recs["broken,seed=1"]["status"] == "failed" and "toy failure" in recs["broken,seed=1"]["error"]

    table = pd.read_csv(out / "comparison_table.csv")
    for row in table.itertuples():
        j = recs[row.experiment_id]
        assert row.status == j["status"]
        if j["status"] == "done":
            assert row.score == j["metrics"]["score"] and row.loss == j["metrics"]["loss"] and row.params == j["efficiency"]["params"]
    assert table.experiment_id[0] == "lr=0.03,width=8,seed=1"  # best score, then lowest loss
    assert table["rank"].tolist()[:16] == list(range(1, 17)) and table.status.tolist()[16:] == ["failed", "failed"]

    md = (out / "summary_report.md").read_text()
    for section in (
        "Top performers by score",
        "Fastest",
        "Most parameter-efficient",
        "Statistics by lr",
        "Statistics by width",
        "Effect of each factor",
        "Not finished",
    ):
        assert f"## {section}" in md
    # per-factor statistics: lr = 0.03 has mean score 0.005 (seeds add 0 and 0.01) and is the best level
    lr_block = md.split("## Statistics by lr")[1].split("### score")[1].split("###")[0]
    assert "| 0.03 | 4 | 0.005 |" in lr_block
    assert "| score | lr | 4 | 0.03 | 4 |" in md
    for plot in ("metric_per_factor.png", "efficiency_scatter.png", "time.png"):
        assert (out / "plots" / plot).stat().st_size > 1000

    # the report as a page: relative paths only, working from a copy, in headless Chromium
    page = (out / "index.html").read_text()
    assert str(project) not in page and "file:" not in page
    ensure_chromium()
    shutil.copytree(out, project / "copied-report")
    images, rows, first = in_chromium(
        project / "copied-report" / "index.html", IMAGES, "return document.querySelectorAll('table tbody tr').length",
        "return document.querySelector('table tbody tr td:nth-child(2)').textContent",
    )  # fmt: skip
    assert len(images) == 3 and all(complete and width > 0 for _, complete, width in images), images
    assert rows == 18 and first == "lr=0.03,width=8,seed=1"

    # the report again from the store: same table, nothing computed
    before = (out / "comparison_table.csv").read_text()
    r = cli("report", str(p), cwd=project)
    assert r.returncode == 0, r.stderr
    assert (out / "comparison_table.csv").read_text() == before

    # a filtered report elsewhere, without plots; the sweep's own report is left alone
    r = cli("report", str(p), "--filter", "lr=0.03,0.04", "--filter", "width=8", "--no-plots", "--output-dir", "sub", cwd=project)
    assert r.returncode == 0, r.stderr
    sub = pd.read_csv(project / "sub" / "comparison_table.csv")
    assert sorted(sub.experiment_id) == sorted(f"lr={lr},width=8,seed={s}" for lr in (0.03, 0.04) for s in (0, 1))
    assert not (project / "sub" / "plots").exists() and "## Plots" not in (project / "sub" / "summary_report.md").read_text()
    assert "Filtered: lr=0.03,0.04 width=8 (4 of 18 experiments)" in (project / "sub" / "summary_report.md").read_text()
    assert (out / "comparison_table.csv").read_text() == before
    for bad, msg in (("lr=9", "--filter lr=9: no experiment of"), ("depth=2", "--filter depth: no experiment"), ("lr", "--filter 'lr': expected KEY=VALUE")):
        r = cli("report", str(p), "--filter", bad, "--output-dir", "bad", cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (project / "bad").exists()
    (project / "a_file").write_text("")
    for where, msg in (("a_file", "--output-dir a_file: not a directory"), ("a_file/sub", "--output-dir a_file/sub: cannot write there (")):
        r = cli("report", str(p), "--output-dir", where, cwd=project)
        assert r.returncode == 2 and r.stderr.startswith(f"error: {msg}") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # the sweep's outputs in the file's place: the file that wrote them, from the report's first line
    for given in (out, out / "results.parquet", out / "comparison_table.csv"):
        r = cli("report", str(given), cwd=project)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert (
            r.stderr.startswith(f"error: {given}: a sweep's output")
            and f"report takes the sweep file that wrote it ({p}, relative to where it ran)" in r.stderr
        )
    r = cli("report", "parsl_cards", cwd=project)
    assert r.returncode == 2 and r.stderr == "error: parsl_cards: a folder; report takes the sweep file (e.g. config/sweeps/blobs.yaml)\n", r.stderr
    # a table elsewhere (the llc workflow's named as such), where it once read "not a YAML file (not UTF-8 text)"
    (project / "llc_runs.parquet").write_bytes(b"PAR1\x00")
    (project / "t.csv").write_text("a,b\n")
    for f, msg in (("llc_runs.parquet", "llc_runs.parquet: the llc workflow's table, not a sweep file: `lambda-hat workflow llc` rebuilds it"),
                   ("t.csv", "t.csv: a table, not a sweep file; report takes the sweep file that wrote it"), ("gone.parquet", "gone.parquet: file not found")):  # fmt: skip
        r = cli("report", f, cwd=project)
        assert r.returncode == 2 and r.stderr.startswith(f"error: {msg}") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    (project / "same.json").write_text(json.dumps(yaml.safe_load(p.read_text())))  # a sweep file in JSON (YAML reads it) is one
    r = cli("report", "same.json", "--no-plots", "--output-dir", "js", cwd=project)
    assert r.returncode == 0 and (project / "js" / "comparison_table.csv").read_text() == before, r.stdout + r.stderr
    assert (out / "comparison_table.csv").read_text() == before
    # another workflow's file: where its outputs come back from
    write_config(project / "e.yaml", {"targets": [{"model": "quadratic"}], "samplers": [{"name": "hmc"}]})
    for f, msg in (("e.yaml", "e.yaml is an experiments file, not a sweep file: `lambda-hat workflow llc --config e.yaml` rebuilds its table"),
                   (str(ROOT / "config" / "progressive.yaml"), "is a stages file, not a sweep file: `lambda-hat workflow progressive --config")):  # fmt: skip
        r = cli("report", f, cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # a workflow (or promote) given another's file says whose it is and how to run it
    for args, msg in (
        (("workflow", "sweep", "e.yaml"), "e.yaml is an experiments file, not a sweep file: run it with `lambda-hat workflow llc --config e.yaml`"),
        (("workflow", "llc", "--config", str(p)), f"{p} is a sweep file, not an experiments file: run it with `lambda-hat workflow sweep {p}`"),
        (("workflow", "progressive", "--config", "e.yaml"), "e.yaml is an experiments file, not a stages file"),
        (("promote", "--config", str(p)), f"{p} is a sweep file, not an experiments file"),
    ):
        r = cli(*args, "--dry-run" if args[0] == "workflow" else "--promote-plots=trace", cwd=project)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_every_experiment_and_plot_gets_its_own_file(project):
    """Experiment names that are no file name of their own ('/', past 255 bytes, alike but for
    case as macOS sees them) each get their own record; a W&B metric name with '/' is a line
    plot's y; two line plots of the same y and x are two files. Each had lost a file: the name
    too long and the metric's '/' ended the sweep in a traceback, a/b overwrote a_b's record, the
    second plot the first."""
    import sys

    metrics = "json.dump({{'val/loss': len(sys.argv[1]), 'score': 1}}, open(sys.argv[2] + '/metrics.json', 'w'))"
    values = ["a/b", "a_b", "A_B", "x" * 300]
    doc = {
        "command": f'{sys.executable} -c "import json, sys; {metrics}" {{tag}} {{outdir}}',
        "rank_by": [{"metric": "val/loss", "goal": "min"}],
        "grid": {"tag": values, "w": [1, 2]},
        "line_plots": [
            {"x": "w", "y": "val/loss", "by": "tag"},
            {"x": "w", "y": "val/loss", "log_y": True},
            {"x": "w", "y": "score"},
            {"x": "w", "y": "score", "by": "tga"},  # a typo: not drawn, said so (it had ended the report in a KeyError)
        ],
    }
    p = sweep_file(project, doc)
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 0 and "8 done" in r.stdout, r.stdout + r.stderr
    assert "warning: line_plots[3] (score against w) is not drawn: no finished experiment has 'tga' (they have: score, tag, time_sec, val/loss, w)" in r.stdout
    out = project / "results/sweeps/toy"

    def records():
        recs = {json.loads(f.read_text())["experiment_id"]: json.loads(f.read_text()) for f in (out / "experiments").glob("*.json")}
        assert len(recs) == len(list((out / "experiments").iterdir()))
        return recs

    recs = records()
    assert set(recs) == {f"tag={v},w={w}" for v in values for w in (1, 2)}
    assert all(rec["metrics"]["val/loss"] == len(rec["config"]["tag"]) for rec in recs.values())
    assert (out / "experiments/tag=x,w=1.json").exists() is False and len({f.name.casefold() for f in (out / "experiments").iterdir()}) == 8
    plots = sorted(f.name for f in (out / "plots").iterdir())
    assert plots == sorted(["metric_per_factor.png", "time.png", "val_loss_vs_w_by_tag.png", "val_loss_vs_w_log.png", "score_vs_w.png"])
    page = (out / "index.html").read_text()
    assert all(f"src='plots/{name}'" in page for name in plots)
    # the records follow the file: one left out of the grid, its record goes; a_b is a name of its own again
    doc["grid"]["tag"] = ["a/b", "a_b"]
    sweep_file(project, doc)
    r = cli("report", str(p), cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(records()) == {f"tag={v},w={w}" for v in ("a/b", "a_b") for w in (1, 2)}
    assert (out / "experiments/tag=a_b,w=1.json").exists()


def test_names_with_pipes_backslashes_and_line_breaks_stay_one_cell_one_line_one_node(project):
    """A grid value with |, \\ or a line break: the report's markdown row had split at the |
    or the line break, --dag's label had run past a closing \\ (dot rejected the file), and the
    progress line had broken in two. The name shows a line break as \\n; a combo's name may not
    hold one (above)."""
    import sys

    values = ["C:\\d\\", "two\nlines", "p|q", 'say"hi"']
    doc = {"command": f"{sys.executable} -c \"import sys; open(sys.argv[1] + '/metrics.json', 'w').write('{{{{\\\"score\\\": 1}}}}')\" {{outdir}} {{tag}}"}
    doc.update(rank_by=[{"metric": "score"}], grid={"tag": values})
    p = sweep_file(project, doc)
    shown = ["tag=C:\\d\\", "tag=two\\nlines", "tag=p|q", 'tag=say"hi"']
    assert names(p) == shown
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 0 and "4 done" in r.stdout, r.stdout + r.stderr
    assert all(any(line.endswith(f"done toy/{n}") or f"done toy/{n} (" in line for line in r.stderr.splitlines()) for n in shown), r.stderr
    report = (project / "results/sweeps/toy/summary_report.md").read_text()
    table = report.split("## Top performers")[1].split("\n\n")[1].splitlines()
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in table]
    assert len(table) == 6 and {len(c) for c in cells} == {len(cells[0])}, table
    assert sorted(c[0] for c in cells[2:]) == sorted(n.replace("|", "\\|") for n in shown)
    r = cli("workflow", "sweep", str(p), "--dag", cwd=project)
    labels = re.findall(r'^  \d+ \[label="((?:[^"\\\n]|\\.)*)", color="[^"]*", style="[^"]*"\];$', r.stdout, re.M)
    assert r.returncode == 0 and len(labels) == 4, r.stdout
    assert sorted(re.sub(r"\\(.)", r"\1", s) for s in labels) == sorted(f"toy/{n}" for n in shown)


def test_nested_metrics_are_columns_by_dotted_name(project):
    """A task returning {'acc': {'train': …, 'val': …}} (as many write their metrics): the table,
    rank_by and line plots name acc.val, as MLflow and W&B log it. It had been one text column
    `acc`, and rank_by acc.val a warning that no experiment returned it."""
    import sys

    write = "json.dump({{'acc': {{'train': int(sys.argv[2]), 'val': -int(sys.argv[2])}}, 'tags': ['a']}}, open(sys.argv[1] + '/metrics.json', 'w'))"
    doc = {
        "command": f'{sys.executable} -c "import json, sys; {write}" {{outdir}} {{x}}',
        "rank_by": [{"metric": "acc.val", "goal": "max"}],
        "grid": {"x": [2, 1, 3]},
        "line_plots": [{"x": "x", "y": "acc.train"}],
    }
    r = cli("workflow", "sweep", str(sweep_file(project, doc)), "--local", cwd=project)
    assert r.returncode == 0 and "3 done" in r.stdout and "warning" not in r.stdout, r.stdout + r.stderr
    out = project / "results/sweeps/toy"
    df = pd.read_csv(out / "comparison_table.csv")
    assert list(df.experiment_id) == ["x=1", "x=2", "x=3"] and list(df["acc.val"]) == [-1, -2, -3] and list(df["acc.train"]) == [1, 2, 3]
    assert "acc" not in df.columns and list(df.tags) == ["[a]"] * 3
    assert (out / "plots" / "acc.train_vs_x.png").exists()
    rec = json.loads(next((out / "experiments").glob("x=1*.json")).read_text())
    assert rec["metrics"]["acc"] == {"train": 1, "val": -1}  # the record keeps what the task returned


def test_bad_plot_names_are_one_line_errors(project):
    p = sweep_file(project, {**TOY, "plot_names": {"time": "metric_per_factor.png"}})
    with pytest.raises(InputError, match=r"plot_names\.time: 'metric_per_factor.png' is also the file of plot metric_per_factor; give each its own$"):
        load_sweep(p)
    p = sweep_file(project, {**TOY, "plot_names": {"time": "a.png", "efficiency_scatter": "A.png"}})
    with pytest.raises(InputError, match="is also the file of plot"):
        load_sweep(p)
    assert load_sweep(sweep_file(project, {**TOY, "plot_names": {"time": "a.png", "efficiency_scatter": "b.png"}})).spec.plot_names["time"] == "a.png"


def test_an_experiment_without_a_factors_value_is_its_level_null():
    """grid: {scheduler: [null, cosine]}: the null experiments had been left out of the factor's
    statistics and its plot, a comparison missing its baseline without a word."""
    from lambda_hat.engine import report

    done = pd.DataFrame({"scheduler": [None, "cosine", None, "cosine"], "lr": [1, 1, 2, 2], "score": [1.0, 3.0, 2.0, 5.0]})
    st = report.factor_stats(done, "scheduler", "score", "max")
    assert st.to_dict("list") == {
        "scheduler": ["cosine", "null"],
        "n": [2, 2],
        "mean": [4.0, 1.5],
        "std": pytest.approx([1.41421356, 0.70710678]),
        "best": [5.0, 2.0],
    }


def test_plots_of_a_large_sweep_stay_readable(tmp_path):
    """Thousands of experiments: the time plot bars the slowest NAMED (it had a bar each: 3 000
    made a 540 × 67 608 image, 1e5 would need gigabytes), the scatter names none, a factor's axis
    names every k-th of its levels (one, null, of a factor that no finished experiment sets)."""
    from types import SimpleNamespace

    from PIL import Image

    from lambda_hat.engine import report

    def plot(k: int) -> dict:
        df = pd.DataFrame(
            {
                "experiment_id": [f"b={i}" for i in range(k)],
                "status": "done",
                "b": range(k),
                "x": [i % 7 for i in range(k)],
                "params": range(k),
                "time_sec": [0.01 * i for i in range(k)],
                "c": None,
            }
        )
        names = {n: f"{n}.png" for n in ("metric_per_factor", "efficiency_scatter", "time")}
        written = report._plots(df, ["b", "c"], [SimpleNamespace(metric="x")], tmp_path / str(k), [], "params", names)
        assert written == list(names.values())
        return {n: Image.open(tmp_path / str(k) / f"{n}.png").size for n in names}

    few, many = plot(10), plot(3000)
    assert few["time"][1] < many["time"][1] == plot(report.NAMED)["time"][1] < 1200
    assert many["efficiency_scatter"] == few["efficiency_scatter"] and many["metric_per_factor"] == few["metric_per_factor"]


def test_budget_stops_submission(project):
    doc = {**TOY, "defaults": {"sleep": 1.0}, "grid": {"lr": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]}, "combos": [], "replicates": 1}
    p = sweep_file(project, doc)
    r = cli("workflow", "sweep", str(p), "--local", "--budget", "3s", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    # (what shows the budget at work is what it left unstarted: a bound on the wall time, 8 s,
    # failed at 8.35 s on a loaded machine, where the command's own start-up took seconds)
    # two at a time (local card: 2 workers), in file order; the 1 s-long experiments stop fitting
    left = r.stdout.split("not started: ")[1].split(";")[0].split(", ")
    assert 2 <= len(left) <= 6, r.stdout
    assert left == [f"lr={lr}" for lr in (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08)][-len(left) :]
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)  # no budget: the rest runs
    assert f"{len(left)} done, {8 - len(left)} reused" in r.stdout, r.stdout


def test_timeout_kills_one_experiment_others_go_on(project):
    doc = {**TOY, "grid": {"sleep": [0.0, 30.0]}, "combos": [], "replicates": 1}
    p = sweep_file(project, doc)
    t0 = time.time()
    r = cli("workflow", "sweep", str(p), "--local", "--timeout", "3", cwd=project)
    assert r.returncode == 1 and time.time() - t0 < 20, r.stdout + r.stderr
    recs = {json.loads(f.read_text())["experiment_id"]: json.loads(f.read_text()) for f in (project / "results/sweeps/toy/experiments").glob("*.json")}
    assert recs["sleep=0.0"]["status"] == "done"
    assert recs["sleep=30.0"]["status"] == "timeout" and "timed out after 3 s" in recs["sleep=30.0"]["error"]


def test_kill_mid_sweep_then_resume_runs_only_unfinished_and_table_is_live(project):
    doc = {**TOY, "defaults": {"sleep": 1.5}, "grid": {"lr": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]}, "combos": [], "replicates": 1}
    p = sweep_file(project, doc)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [*LH, "workflow", "sweep", str(p), "--local"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    table = project / "results/sweeps/toy/results.csv"
    deadline = time.time() + 60
    while time.time() < deadline:  # the table shows finished experiments while the sweep runs
        if table.exists() and (pd.read_csv(table).status == "done").sum() >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {d.name: json.loads((d / "manifest.json").read_text())["started"] for d in (project / "runs/sweep").iterdir() if not d.name.startswith(".")}
    assert 3 <= len(finished) < 8
    r = cli("workflow", "sweep", str(p), "--local", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{8 - len(finished)} done, {len(finished)} reused" in r.stdout
    for tid, started in finished.items():  # not recomputed
        assert json.loads((project / "runs/sweep" / tid / "manifest.json").read_text())["started"] == started
    assert (pd.read_csv(table).status == "done").all()


WAIT_SCRIPT = """
import json, pathlib, sys, time
if sys.argv[1] == "1":  # held until the test says go
    pathlib.Path("started").touch()
    while not pathlib.Path("go").exists():
        time.sleep(0.05)
json.dump({"score": float(sys.argv[1])}, open(sys.argv[2] + "/metrics.json", "w"))
"""


def test_report_while_the_sweep_runs_says_what_is_running(project):
    """`lambda-hat report` during a sweep: an experiment in flight is `running` in the table and
    the report, not "not run yet" (it had read as never run, as one the sweep had not reached)."""
    (project / "wait.py").write_text(WAIT_SCRIPT)
    doc = {"command": f"{sys.executable} wait.py {{t}} {{outdir}}", "rank_by": [{"metric": "score"}], "grid": {"t": [0, 1, 2]}}
    p = write_config(project / "config" / "sweeps" / "wait.yaml", doc)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*LH, "workflow", "sweep", str(p), "--local", "-j", "1"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (project / "started").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert (project / "started").exists(), proc.communicate()
        r = cli("report", str(p), "--no-plots", cwd=project)
        assert r.returncode == 0 and r.stdout.endswith("(1 running, 1 not run yet)\n"), r.stdout + r.stderr
        table = pd.read_csv(project / "results/sweeps/wait/comparison_table.csv").set_index("t")
        assert table.status.to_dict() == {0: "done", 1: "running", 2: "missing"}, table
        assert "1 running" in (project / "results/sweeps/wait/summary_report.md").read_text()
    finally:
        (project / "go").touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "3 done" in out.decode(), out.decode() + err.decode()
    assert (pd.read_csv(project / "results/sweeps/wait/comparison_table.csv").status == "done").all()


def test_blob_settings_that_would_mean_nothing_are_errors():
    """d = 1 had run: its "two distinct active coordinates" were one (randint over an empty
    range), a study of nothing it claims; a cluster fraction over 1 counts every cluster as noise."""
    blobs = ROOT / "config/sweeps/blobs.yaml"
    for pair, msg in (
        ("defaults.d=1", "defaults.d: must be >= 2, got 1"),
        ("defaults.min_cluster_fraction=1.5", "defaults.min_cluster_fraction: must be <= 1"),
    ):
        with pytest.raises(InputError, match=re.escape(msg)):
            load_sweep(blobs, (pair,))
    assert {e.config["d"] for e in load_sweep(blobs, ("defaults.d=2",)).experiments} >= {2}


@pytest.mark.study
def test_blob_study_reference_has_three_blobs_small_d_does_not(project):
    """The study's own settings, two points only (≈ 100 s on 2 cores): shorter training (300
    steps) has not formed the blobs yet, so no faster setting tests the claim. Over seeds 0-2 the
    reference gave silhouettes 0.82-0.83; d = 512 gives 2 clusters (its 4 blobs touch)."""
    study = yaml.safe_load((ROOT / "config/sweeps/blobs.yaml").read_text())
    doc = {**study, "grid": [], "combos": [{"name": "reference"}, {"name": "small_d", "d": 512}]}
    p = sweep_file(project, doc, "blobs")
    assert len(load_sweep(ROOT / "config/sweeps/blobs.yaml").experiments) == 22
    r = cli("workflow", "sweep", str(p), "--local", cwd=project, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = {f.stem: json.loads(f.read_text()) for f in (project / "results/sweeps/blobs/experiments").glob("*.json")}
    ref, small = recs["reference"]["metrics"], recs["small_d"]["metrics"]
    assert ref["n_clusters"] == 3 and ref["silhouette"] > 0.8, ref
    assert not (small["n_clusters"] == 3 and small["silhouette"] > 0.8), small
    assert ref["enc_dec_corr"] > 0.8 and math.isfinite(ref["test_loss"])
