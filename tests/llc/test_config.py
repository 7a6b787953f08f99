"""Config merge, validation and expansion; task IDs."""

import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, TINY, cli, write_config
from lambda_hat.engine.typed import InputError
from lambda_hat.llc.experiments import load_plan
from lambda_hat.workflows.llc import build_tasks

BASE = {
    "targets": [{"model": "dln", "data": "small", "seed": 0}, {"model": "quadratic", "seed": 1}],
    "samplers": [{"name": "sgld"}, {"name": "hmc", "overrides": {"draws": 100}}],
}


def ids(path):
    targets, runs = build_tasks(load_plan(path), None)
    return {k: t.id for k, t in targets.items()}, {k: t.id for k, t in runs.items()}


def test_runs_longest_first_and_the_target_that_unblocks_most_first(tmp_path):
    """Priorities (not part of any ID): a run's estimated work grows with its steps, chains and
    data; a target's is the sum of its runs'."""
    cfg = {
        "targets": [{"model": "quadratic", "seed": 0}, {"model": "dln", "data": "small", "seed": 0, "samplers": [{"name": "hmc"}]}],
        # vi_flow: 2 fits × 6 000 steps × 8 draws on 1 000 points; hmc: 4 chains × (500 + draws) × 8 gradients
        "samplers": [{"name": "vi_flow"}, {"name": "hmc"}, {"name": "hmc", "overrides": {"draws": 2000}}],
    }
    targets, runs = build_tasks(load_plan(write_config(tmp_path / "e.yaml", cfg)), None)
    p = {k: t.priority for k, t in runs.items()}
    assert p["vi_flow@quadratic/s0"] > p["hmc#2@quadratic/s0"] > p["hmc#1@quadratic/s0"] == p["hmc@dln/small/s0"] > 0
    assert targets["quadratic/s0"].priority == sum(v for k, v in p.items() if k.endswith("@quadratic/s0"))
    assert targets["quadratic/s0"].priority > targets["dln/small/s0"].priority
    assert ids(write_config(tmp_path / "e.yaml", cfg)) == ids(write_config(tmp_path / "e.yaml", cfg))


def test_expansion_is_cartesian_and_deterministic(tmp_path):
    p = write_config(tmp_path / "e.yaml", BASE)
    plan = load_plan(p)
    assert [r.label for r in plan.runs] == [
        "sgld@dln/small/s0", "hmc@dln/small/s0", "sgld@quadratic/s1", "hmc@quadratic/s1",
    ]  # fmt: skip
    assert plan.runs[1].sampler.draws == 100  # override deep-merged into the preset
    assert plan.runs[1].sampler.num_integration_steps == 8  # preset value kept
    assert ids(p) == ids(p)


def test_overrides_deep_merge_nested_posterior(tmp_path):
    cfg = {**BASE, "samplers": [{"name": "sgld", "overrides": {"posterior": {"gamma": 100.0}}}]}
    run = load_plan(write_config(tmp_path / "e.yaml", cfg)).runs[0]
    assert run.sampler.posterior.gamma == 100.0 and run.sampler.posterior.beta0 == 1.0


def test_project_preset_overrides_packaged(tmp_path):
    write_config(tmp_path / "presets" / "sampler" / "sgld.yaml", {"kind": "sgld", "step_size": 0.5})
    run = load_plan(write_config(tmp_path / "e.yaml", BASE)).runs[0]
    assert run.sampler.step_size == 0.5
    # a preset of one's own as NAME.yml, listed among the presets when a name is wrong
    write_config(tmp_path / "presets" / "sampler" / "slow.yml", {"kind": "sgld", "step_size": 0.25})
    run = load_plan(write_config(tmp_path / "e.yaml", {**BASE, "samplers": [{"name": "slow"}]})).runs[0]
    assert run.sampler.step_size == 0.25
    with pytest.raises(InputError, match="unknown sampler preset 'slwo'; available: .*sgld_rmsprop, slow, vi"):
        load_plan(write_config(tmp_path / "e.yaml", {**BASE, "samplers": [{"name": "slwo"}]}))


@pytest.mark.parametrize(
    "group, preset, target, message",
    [
        ("sampler", {"kind": "sgld", "step_sise": 1e-5}, None, "step_sise: unknown key; allowed keys: chains,"),
        ("sampler", {"kind": "sgld", "step_size": "fast"}, None, "step_size: expected a number or one of 'auto', got 'fast'"),
        ("sampler", {"kind": "hmc", "draws": -5}, None, "draws: must be > 0, got -5"),
        ("sampler", {"kind": "sgldx"}, None, "kind: 'sgldx' is not allowed; allowed values: sgld, hmc, mclmc, vi"),
        ("model", {"model": {"kind": "mlp", "activaton": "tanh"}}, {"model": "mine", "data": "small"}, "model.activaton: unknown key"),
        ("model", {"modle": {}, "training": {}}, {"model": "mine", "data": "small"}, "modle: unknown section; allowed: model, training"),
        # the original Lambda-Hat's form: the file is the model section (an mlp unless it says)
        ("model", {"modle": {}}, {"model": "mine", "data": "small"}, "modle: unknown key; allowed keys: kind, in_dim, out_dim, depth, width"),
        (
            "model",
            {"depth": 0},
            {"model": "mine", "data": "small"},
            "depth: must be > 0, got 0; for a linear model (no hidden layer) give kind: dln, widths: [in_dim, out_dim]",
        ),
        ("model", {"training": {"steps": -1}}, {"model": "mine", "data": "small"}, "training.steps: must be >= 0, got -1"),
        ("data", {"n": -3}, {"model": "small", "data": "mine"}, "n: must be > 1, got -3"),
        ("teacher", {"widht": 3}, {"model": "small", "data": "small", "teacher": "mine"}, "widht: unknown key; allowed keys: depth, width"),
    ],
)
def test_a_mistake_in_a_project_preset_is_reported_in_that_file(tmp_path, group, preset, target, message):
    path = write_config(tmp_path / "presets" / group / "mine.yaml", preset)
    cfg = {"targets": [target or BASE["targets"][0]], "samplers": [{"name": "mine" if group == "sampler" else "hmc"}]}
    with pytest.raises(InputError) as e:
        load_plan(write_config(tmp_path / "e.yaml", cfg))
    assert str(e.value).startswith(f"{path.resolve()}: {message}"), str(e.value)


def test_a_project_preset_of_a_custom_model_keeps_its_options(tmp_path):
    model = {"kind": "custom", "fn": "tests.custom_target:build", "version": 1, "dim": 3}
    write_config(tmp_path / "presets" / "model" / "mine.yaml", {"model": model, "training": {"steps": 50}})
    (target,) = load_plan(write_config(tmp_path / "e.yaml", {"targets": [{"model": "mine"}], "samplers": [{"name": "hmc"}]})).targets
    assert target.model.options == {"dim": 3} and target.training.steps == 50


def test_an_inline_model_section_without_kind_is_an_mlp(tmp_path):
    """As a model preset file holding the section alone: `model: {depth: 1, width: 8}` inline is
    the mlp with `kind: mlp` and the preset file's (same IDs), on teacher data and on digits."""
    section = {"depth": 1, "width": 8}
    write_config(tmp_path / "presets" / "model" / "mine.yaml", section)
    for data in ("small", "digits"):
        models = (section, {"kind": "mlp", **section}, "mine")
        found = [ids(write_config(tmp_path / f"{i}.yaml", {"targets": [{"model": m, "data": data}], "samplers": ["hmc"]})) for i, m in enumerate(models)]
        assert len({(*t.values(), *r.values()) for t, r in found}) == 1, (data, found)
        assert list(found[0][0]) == [f"mlp/{data}/s0"]  # labelled by its kind, as `kind: mlp` inline is
        (target,) = load_plan(tmp_path / "0.yaml").targets
        assert (target.model.kind, target.model.depth, target.model.width) == ("mlp", 1, 8)
        if data == "digits":
            assert (target.model.in_dim, target.model.out_dim) == (64, 10)


def test_a_sampler_entry_s_own_keys_are_its_overrides(tmp_path):
    """`{name: sgld, step_size: 1e-5}` is `{name: sgld, overrides: {step_size: 1e-5}}`, as
    samplers.0.step_size=1e-5 is on the command line, in the top-level list and a target's own."""
    flat, nested = {"name": "sgld", "step_size": 1e-5, "gamma": 10}, {"name": "sgld", "overrides": {"step_size": 1e-5, "posterior": {"gamma": 10}}}
    found = []
    for i, s in enumerate((flat, nested, {**flat, "overrides": None})):  # an empty `overrides:` too
        found.append(ids(write_config(tmp_path / f"a{i}.yaml", {"targets": [{"model": "quadratic"}], "samplers": [s]})))
        found.append(ids(write_config(tmp_path / f"b{i}.yaml", {"targets": [{"model": "quadratic", "samplers": [s]}]})))
    assert len({(*t.values(), *r.values()) for t, r in found}) == 1, found
    assert found[0] != ids(write_config(tmp_path / "c.yaml", {"targets": [{"model": "quadratic"}], "samplers": ["sgld"]}))
    bad = [
        ({"name": "sgld", "step_size": 1e-5, "overrides": {"step_size": 1e-4}}, "samplers[0].step_size: is given on the entry and in its overrides"),
        ({"name": "sgld", "stp_size": 1e-5}, "samplers[0].stp_size: unknown key; allowed keys: chains, draws"),
    ]
    for s, msg in bad:
        with pytest.raises(InputError, match=re.escape(msg)):
            load_plan(write_config(tmp_path / "x.yaml", {"targets": [{"model": "quadratic"}], "samplers": [s]}))


def test_inline_training_and_teacher_sections_are_their_overrides(tmp_path):
    """`training:` and `teacher:` on a target are the sections themselves, as `model:` and `data:`
    may be: the same IDs as the overrides (or the preset) that say the same, the overrides over
    them, and their mistakes named where they stand."""
    entry = {"model": "small", "data": "tiny"}
    same = [
        [{**entry, "training": {"steps": 300, "learning_rate": 0.02}}, {**entry, "overrides": {"training": {"steps": 300, "lr": 0.02}}}],
        [{**entry, "teacher": {"depth": 1, "width": 4}}, {**entry, "teacher": "small"}, {**entry, "overrides": {"teacher": {"width": 4}}}],
    ]
    for i, group in enumerate(same):
        found = [ids(write_config(tmp_path / f"{i}{j}.yaml", {"targets": [t], "samplers": ["hmc"]})) for j, t in enumerate(group)]
        assert len({(*t.values(), *r.values()) for t, r in found}) == 1, found
    both = {**entry, "teacher": {"width": 4}, "training": {"steps": 300}, "overrides": {"training": {"lr": 0.1}, "teacher": {"width": 2}}}
    (target,) = load_plan(write_config(tmp_path / "b.yaml", {"targets": [both], "samplers": ["hmc"]})).targets
    assert (target.training.steps, target.training.lr, target.teacher.width) == (300, 0.1, 2)
    bad = [
        ({**entry, "training": {"stps": 3}}, "targets[0].training.stps: unknown key; allowed keys: optimizer, lr, steps"),
        ({**entry, "teacher": {"wdth": 4}}, "targets[0].teacher.wdth: unknown key; allowed keys: depth, width"),
        ({"model": "quadratic", "training": {"steps": 3}}, "targets[0].training: not used by model kind 'quadratic'"),
    ]
    for t, msg in bad:
        with pytest.raises(InputError, match=re.escape(msg)):
            load_plan(write_config(tmp_path / "x.yaml", {"targets": [t], "samplers": ["hmc"]}))


def test_id_stable_across_processes(tmp_path):
    p = write_config(tmp_path / "e.yaml", BASE)
    code = (
        "from lambda_hat.llc.experiments import load_plan; from lambda_hat.workflows.llc import build_tasks\n"
        f"t, r = build_tasks(load_plan({str(p)!r}), None)\n"
        "print(({k: v.id for k, v in t.items()}, {k: v.id for k, v in r.items()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == str(ids(p))


def test_sampler_order_does_not_change_ids(tmp_path):
    a = ids(write_config(tmp_path / "a.yaml", BASE))
    b = ids(write_config(tmp_path / "b.yaml", {**BASE, "samplers": BASE["samplers"][::-1]}))
    assert a == b


def test_an_empty_overrides_section_is_no_overrides(tmp_path):
    """`overrides:` left empty in YAML (its lines commented out) is null: the same tasks as none,
    at the entry and for a section inside it (both were 'expected a mapping, got None')."""
    empty = "targets:\n  - model: dln\n    data: small\n    overrides:\n      training:\nsamplers:\n  - name: hmc\n    overrides:\n"
    (tmp_path / "empty.yaml").write_text(empty)
    plain = write_config(tmp_path / "plain.yaml", {"targets": [{"model": "dln", "data": "small"}], "samplers": [{"name": "hmc"}]})
    assert ids(tmp_path / "empty.yaml") == ids(plain)


def test_semantic_changes_change_ids_irrelevant_do_not(tmp_path):
    t0, r0 = ids(write_config(tmp_path / "0.yaml", BASE))
    # seed of a target: new target ID and new IDs for its runs, other target untouched
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["targets"][0]["seed"] = 5
    t1, r1 = ids(write_config(tmp_path / "1.yaml", cfg))
    assert t1["dln/small/s5"] != t0["dln/small/s0"] and t1["quadratic/s1"] == t0["quadratic/s1"]
    assert r1["sgld@dln/small/s5"] != r0["sgld@dln/small/s0"]
    # a sampler setting changes that sampler's runs only
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["samplers"][0]["overrides"] = {"step_size": 2e-4}
    t2, r2 = ids(write_config(tmp_path / "2.yaml", cfg))
    assert t2 == t0 and r2["sgld@dln/small/s0"] != r0["sgld@dln/small/s0"] and r2["hmc@dln/small/s0"] == r0["hmc@dln/small/s0"]
    # an override equal to the preset's value, and store_root, change nothing
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["samplers"][1]["overrides"]["num_integration_steps"] = 8
    cfg["store_root"] = "elsewhere"
    assert ids(write_config(tmp_path / "3.yaml", cfg)) == (t0, r0)
    # precision is semantic
    t4, _ = ids(write_config(tmp_path / "4.yaml", {**BASE, "jax_enable_x64": False}))
    assert t4["dln/small/s0"] != t0["dln/small/s0"]


def _bad(mutate):
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    mutate(cfg)
    return cfg


BAD = [  # (name, config or raw text, fragments the one-line error must contain)
    ("malformed_yaml", "targets: [\n  - model: dln\n", ["malformed YAML", "line"]),
    ("tab_indent", "targets:\n\t- model: dln\n", ["malformed YAML at line 2, column 1", "(a tab: YAML indents with spaces)"]),
    (
        "duplicate_key",
        "targets:\n  - model: dln\n    data: small\n    data: tiny\nsamplers: [{name: sgld}]\n",
        ["line 4", "duplicate key 'data' (first at line 3)"],
    ),
    ("empty_file", "", ["file is empty"]),
    ("binary_file", b"PAR1\x15\x04\xa2\xff\x00", ["not a YAML file (not UTF-8 text)"]),  # e.g. --config results/llc_runs.parquet
    ("not_a_mapping", "- 1\n- 2\n", ["expected a mapping"]),
    ("unknown_top_key", _bad(lambda c: c.update(sampler=[])), ["sampler", "unknown key", "allowed keys: targets, samplers"]),
    ("empty_targets", _bad(lambda c: c.update(targets=[])), ["targets", "at least 1"]),
    ("missing_targets", {"samplers": TINY["samplers"]}, ["targets", "missing required key"]),
    ("unknown_model_preset", _bad(lambda c: c["targets"][0].update(model="huge")), ["targets[0].model", "unknown model preset 'huge'", "dln"]),
    (
        "unknown_data_preset",
        _bad(lambda c: c["targets"].append({"model": "dln", "data": "tinyy"})),
        ["targets[1].data", "unknown data preset 'tinyy'", "small"],
    ),
    ("missing_data", _bad(lambda c: c["targets"].append({"model": "dln"})), ["targets[1].data", "missing required key"]),
    ("data_on_quadratic", _bad(lambda c: c["targets"][0].update(data="small")), ["targets[0].data", "not used by model kind 'quadratic'"]),
    ("unknown_sampler_preset", _bad(lambda c: c["samplers"][0].update(name="nuts")), ["samplers[0].name", "unknown sampler preset 'nuts'", "hmc"]),
    ("unknown_sampler_key", _bad(lambda c: c["samplers"][0]["overrides"].update(stepsize=1e-3)), ["samplers[0].stepsize", "unknown key", "step_size"]),
    (
        "typo_in_posterior",
        _bad(lambda c: c["samplers"][0]["overrides"].update(posterior={"gama": 1.0})),
        ["samplers[0].posterior.gama", "unknown key", "gamma"],
    ),
    ("negative_step", _bad(lambda c: c["samplers"][0]["overrides"].update(step_size=-1e-3)), ["samplers[0].step_size", "must be > 0"]),
    ("zero_step", _bad(lambda c: c["samplers"][0]["overrides"].update(step_size=0)), ["samplers[0].step_size", "must be > 0"]),
    ("zero_chains", _bad(lambda c: c["samplers"][0]["overrides"].update(chains=0)), ["samplers[0].chains", "must be > 0"]),
    ("string_draws", _bad(lambda c: c["samplers"][0]["overrides"].update(draws="many")), ["samplers[0].draws", "expected an integer"]),
    ("float_chains", _bad(lambda c: c["samplers"][0]["overrides"].update(chains=2.5)), ["samplers[0].chains", "expected an integer"]),
    # beyond 64 bits no array or parquet column holds it (pyarrow's overflow ended the workflow after its tasks)
    ("huge_draws", _bad(lambda c: c["samplers"][0]["overrides"].update(draws=10**20)), ["samplers[0].draws", "must be a 64-bit integer"]),
    ("bool_as_number", _bad(lambda c: c["samplers"][0]["overrides"].update(step_size=True)), ["samplers[0].step_size", "expected a number"]),
    (
        "bad_precond",
        _bad(lambda c: c["samplers"][0]["overrides"].update(precond="adam")),
        ["samplers[0].precond", "allowed values: auto, none, rmsprop, curvature"],
    ),
    ("bad_kind", _bad(lambda c: c["samplers"][0]["overrides"].update(kind="nuts")), ["samplers[0].kind", "allowed values: sgld, hmc, mclmc, vi"]),
    ("negative_gamma", _bad(lambda c: c["samplers"][0]["overrides"].update(posterior={"gamma": -1})), ["posterior.gamma", "must be >= 0"]),
    ("bad_x64", _bad(lambda c: c.update(jax_enable_x64="yes")), ["jax_enable_x64", "expected true/false"]),
    (
        "bad_activation",
        _bad(lambda c: c["targets"].append({"model": "small", "data": "small", "overrides": {"model": {"activation": "swish"}}})),
        ["targets[1].model.activation", "allowed values: tanh, relu, gelu"],
    ),
    (
        "dln_rank_too_big",
        _bad(lambda c: c["targets"].append({"model": "dln", "data": "small", "overrides": {"model": {"rank": 9}}})),
        ["targets[1].model.rank", "narrowest width 3"],
    ),
    (
        "bad_override_section",
        _bad(lambda c: c["targets"][0].update(overrides={"sampler": {}})),
        ["targets[0].overrides.sampler", "allowed keys: model, data, training"],
    ),
    ("duplicate_target", _bad(lambda c: c["targets"].append(dict(c["targets"][0]))), ["targets[1]", "duplicates targets[0]"]),
    ("duplicate_sampler", _bad(lambda c: c["samplers"].append(dict(c["samplers"][0]))), ["samplers[1]", "duplicates samplers[0]"]),
    ("no_samplers", _bad(lambda c: c.update(samplers=[])), ["samplers", "no samplers for this target"]),
    ("zero_timeout", _bad(lambda c: c.update(task_timeout=0)), ["task_timeout", "must be a positive duration"]),
    # "" had made the working directory the store: the project's folders filled with task directories
    ("empty_store_root", _bad(lambda c: c.update(store_root="")), ["store_root", "must not be empty"]),
    ("blank_experiment", _bad(lambda c: c.update(experiment="  ")), ["experiment", "must not be empty"]),
    (
        "data_n_one",
        _bad(lambda c: c["targets"].append({"model": "dln", "data": "small", "overrides": {"data": {"n": 1}}})),
        ["targets[1].data.n", "must be > 1"],
    ),
    ("seed_past_int32", _bad(lambda c: c["targets"][0].update(seed=2**31)), ["targets[0].seed", "must be < 2147483648"]),
    ("sampler_seed_past_int32", _bad(lambda c: c["samplers"][0].update(seed=2**33)), ["samplers[0].seed", "must be < 2147483648"]),
    ("meanfield_mixture", _bad(lambda c: c["samplers"].append({"name": "vi_meanfield", "overrides": {"M": 3}})), ["samplers[1].M", "family: lowrank"]),
]


def _experiments(project, cfg):
    """The project's experiments file holding cfg: a mapping, or the file's text (bytes: not UTF-8)."""
    path = project / "config" / "experiments.yaml"
    if isinstance(cfg, (str, bytes)):
        path.write_bytes(cfg if isinstance(cfg, bytes) else cfg.encode())
    else:
        write_config(path, cfg)
    return path


@pytest.mark.parametrize("name,cfg,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_rejected(project, name, cfg, fragments):
    path = _experiments(project, cfg)
    with pytest.raises(InputError) as err:
        build_tasks(load_plan(path), None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for f in fragments:
        assert f in msg, (f, msg)


@pytest.mark.parametrize("name,cfg,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_input_through_cli_exit_2_and_write_nothing(project, name, cfg, fragments):
    path = _experiments(project, cfg)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    r = cli("workflow", "llc", "--local", cwd=project)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path.relative_to(project)}: ") and fragments[0] in lines[0], r.stderr
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # no runs/, no results/


@pytest.mark.parametrize(
    "args,fragment",
    [
        (
            ["--parsl-card", "parsl_cards/missing.yaml"],
            "no such file, card or Snakemake profile; available cards: local, local-gpu, local-processes, slurm/a100, slurm/cpu",
        ),
        (["--parsl-card", "slurm/h100"], "--parsl-card slurm/h100: no such file, card or Snakemake profile"),
        (["--set", "provider.walltime=soon"], "provider.walltime: 'soon' is not a duration"),
        (["--set", "executor=dask"], "allowed values: threads, htex"),
        (["--set", "provider.type=pbs"], "allowed values: local, slurm"),
        (["--set", "workers=0"], "workers (alias max_workers): must be > 0"),
        (["--parsl-card", "slurm/cpu", "--set", "provider.acount=lab"], "slurm/cpu.yaml with --set provider.acount=lab: provider.acount: unknown key"),
        (["--set", "nonsense"], "expected KEY=VALUE"),
        (["--parsl-card", "parsl_cards/local.yaml", "--set", "provider.partition=debug"], "need type: slurm"),
    ],
)
def test_bad_card_is_rejected(project, args, fragment):
    write_config(project / "config" / "experiments.yaml", TINY)
    r = cli("workflow", "llc", *args, cwd=project)
    assert r.returncode == 2 and fragment in r.stderr, r.stderr
    assert not (project / "runs").exists() and not (project / "results").exists()


def test_changing_a_presets_kind_is_an_error(tmp_path):
    """A preset's keys are its kind's: an override of kind names the presets of the kind asked for."""
    doc = {**BASE, "samplers": [{"name": "hmc", "overrides": {"kind": "sgld"}}]}
    with pytest.raises(InputError, match=r"samplers\[0\]\.overrides\.kind: the hmc preset's kind is hmc; name a sgld preset instead \(sgld, sgld_rmsprop\)$"):
        load_plan(write_config(tmp_path / "e.yaml", doc))
    doc["samplers"][0]["overrides"]["kind"] = "hmc"  # the preset's own kind: nothing changes
    assert load_plan(write_config(tmp_path / "e.yaml", doc)).runs[0].sampler.kind == "hmc"
    # likewise a model preset's kind
    doc = {**BASE, "targets": [{"model": "small", "data": "small", "overrides": {"model": {"kind": "dln"}}}]}
    with pytest.raises(InputError, match=r"targets\[0\]\.overrides\.model\.kind: the small preset's model kind is mlp; name a dln preset instead \(dln\)$"):
        load_plan(write_config(tmp_path / "e.yaml", doc))
