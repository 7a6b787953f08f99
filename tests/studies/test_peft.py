"""The PEFT study: strategies learn, parameter counts, frozen base, AdaLoRA pruning, sweep (issue: PEFT)."""

import json
from types import SimpleNamespace

import pytest

from conftest import cli, needs, write_config
from lambda_hat.engine.tasks import call
from lambda_hat.engine.typed import build
from lambda_hat.studies.peft import rudiments
from lambda_hat.studies.peft import study as ps

pytestmark = needs("peft")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Tiny data (40 clips per class) and an AST-like model pretrained on the tempo proxy."""
    d = tmp_path_factory.mktemp("peft")
    (d / "data").mkdir()
    (d / "pre").mkdir()
    call(rudiments.generate, SimpleNamespace(config={"size": "tiny", "seed": 0}, workdir=d / "data"))
    m = call(
        ps.pretrain,
        SimpleNamespace(config={"model": "ast", "data": "tiny/s0", "epochs": 6, "seed": 0}, workdir=d / "pre", deps=[d / "data"], log=lambda s: None),
    )
    assert m["proxy_accuracy"] > 0.5  # 5 tempo buckets: the proxy objective was learned
    return d


def finetune(pretrained, **over):
    import torch

    cfg = build(ps.PeftConfig, over, "<test>")
    torch.manual_seed(cfg.seed)
    model = ps.load_pretrained(pretrained / "pre", "ast")
    return (*ps.finetune_model(model, ps.load_data(pretrained / "data"), cfg, log=lambda s: None), cfg)


@pytest.mark.parametrize("strategy", ["lora", "adalora", "ia3"])
def test_strategy_learns_keeps_base_frozen(pretrained, strategy):
    model, m, _ = finetune(pretrained, strategy=strategy, epochs=12)
    # chance is 0.10 (10 balanced classes); seen at these settings: LoRA 0.51, AdaLoRA 0.40, IA3 0.47
    assert m["test_accuracy"] >= 0.3 and m["test_macro_f1"] >= 0.25, m
    assert m["base_unchanged"]
    # independently of the hash: unload the adapters and compare with the pretrained file
    import torch

    saved = torch.load(pretrained / "pre" / "model.pt", weights_only=True)
    base = model.unload().state_dict() if strategy != "adalora" else None
    if base is not None:
        for k, v in saved.items():
            if not k.startswith("classifier"):
                assert torch.equal(base[k], v), k
    if strategy == "adalora":  # the rank budget really shrank: 12 per layer at first, 4 in the end
        assert m["adalora_rank_final"] < m["adalora_rank_initial"], m
        assert m["adalora_rank_final"] <= 4 * 6 < m["adalora_rank_initial"] == 12 * 6


def test_trainable_parameter_counts(pretrained):
    counts = {}
    for s in ("lora", "ia3"):
        _, m, cfg = finetune(pretrained, strategy=s, epochs=1)
        counts[s] = m["efficiency"]["trainable_params"]
    # LoRA: r·(in + out) for each adapted Linear (qkv 96→288, proj 96→96, 3 blocks) + the new head
    r, dim, blocks, head = cfg.rank, 96, 3, 96 * 10 + 10
    assert counts["lora"] == blocks * (r * (dim + 3 * dim) + r * (dim + dim)) + head
    # IA3: one scale per output of qkv (288) and per input of the feed-forward fc2 (192) + head
    assert counts["ia3"] == blocks * (3 * dim + 2 * dim) + head
    assert counts["ia3"] < counts["lora"]


def test_sweep_failure_and_timeout_isolated(project):
    doc = {
        "name": "peft",
        "task": "lambda_hat.studies.peft.study:finetune",
        "rank_by": [{"metric": "test_accuracy"}],
        "defaults": {"model": "ast", "pretrain_epochs": 2, "epochs": 3},
        "grid": {"strategy": ["lora"]},
        "combos": [{"name": "broken", "target_modules": ["no_such_layer"]}, {"name": "long", "epochs": 500}],
        "env": {"OMP_NUM_THREADS": 1},
    }
    p = write_config(project / "peft.yaml", doc)
    # The timeout covers a task's start: importing torch and PEFT took 10 s alone and 25 s in a
    # loaded suite, where 30 s timed out the done task (killed after its second epoch).
    r = cli("workflow", "sweep", str(p), "--local", "--timeout", "60", cwd=project, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    out = project / "results/sweeps/peft"
    recs = {f.stem: json.loads(f.read_text()) for f in (out / "experiments").glob("*.json")}
    ok = recs["strategy=lora"]
    assert ok["status"] == "done" and ok["metrics"]["test_accuracy"] > 0.1
    assert set(ok["efficiency"]) >= {"total_params", "trainable_params", "param_efficiency", "training_time", "avg_epoch_time"}
    assert {"val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "best_epoch", "final_train_loss", "final_val_loss"} <= set(ok["metrics"])
    assert recs["broken"]["status"] == "failed" and "No modules were targeted" in recs["broken"]["error"]
    assert recs["long"]["status"] == "timeout" and "timed out after 60 s" in recs["long"]["error"]
    assert (out / "comparison_table.csv").exists() and (out / "summary_report.md").exists()


def test_report_keeps_the_original_names_and_sections(tmp_path):
    """The shipped peft.yaml's report, from records made up so every number is known: the
    original's plot names, its sections, and augmentation's effect (+0.05 in each of 12 pairs)."""
    from pathlib import Path

    from lambda_hat.engine import report
    from lambda_hat.engine.sweep import load_sweep

    sweep = load_sweep(Path(__file__).parents[2] / "config/sweeps/peft.yaml")
    assert sweep.factors == ["model", "strategy", "augment"]
    models, strategies = {"ast": 0.5, "htsat": 0.6, "beats": 0.4, "efficientat": 0.3}, {"lora": 0.1, "adalora": 0.0, "ia3": -0.1}
    rows = [
        {"experiment_id": f"{m},{s},{a}", "status": "done", "seed": 0, "model": m, "strategy": s, "augment": a,
         "test_accuracy": bm + bs + 0.05 * a, "test_macro_f1": bm + bs, "trainable_params": 1000 * (1 + len(s)), "time_sec": 10.0 + bm, "error": None}
        for m, bm in models.items() for s, bs in strategies.items() for a in (False, True)
    ]  # fmt: skip
    md = report.build(sweep, rows, out=tmp_path).read_text()
    for plot in ("accuracy_comparison.png", "efficiency_scatter.png", "training_time.png"):
        assert (tmp_path / "plots" / plot).stat().st_size > 1000 and f"(plots/{plot})" in md
    for section in (
        "Top performers by test_accuracy (max)",
        "Most parameter-efficient",
        "Fastest",
        "Statistics by model",
        "Statistics by strategy",
        "Impact of augment",
    ):
        assert f"## {section}" in md, section
    top = md.split("## Top performers by test_accuracy")[1].split("##")[0]
    assert top.count("| htsat,lora,") == 2 and len([ln for ln in top.splitlines() if ln.startswith("| ") and "experiment_id" not in ln]) == 5
    by_model = md.split("## Statistics by model")[1].split("### test_macro_f1")[0]
    assert "| htsat | 6 | 0.625 |" in by_model  # mean of 0.6 + {0.1, 0, -0.1} + {0, 0.05}
    aug = md.split("## Impact of augment")[1].split("##")[0]
    assert "| test_accuracy | 12 | 0.05 |" in aug and "| test_macro_f1 | 12 | 0 |" in aug
