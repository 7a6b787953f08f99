"""The progressive workflow: data per bucket, then stages chained through checkpoint futures."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from lambda_hat.engine.runner import Summary
from lambda_hat.engine.store import Store, read_json, tmp_path
from lambda_hat.engine.tasks import Status, Task, reported
from lambda_hat.engine.typed import InputError, plain
from lambda_hat.engine.workflow import Options, Workflow
from lambda_hat.studies.progressive.study import EXAMPLE, Progressive, est_memory_mb, load

DATA, STAGE = "lap_data", "stage"


def stage_cards(cfg: Progressive) -> dict:
    """Executor label → card, for the stages that name their own card."""
    from lambda_hat.engine.cards import load_card

    return {_label(s.card): load_card(s.card) for s in cfg.stages if s.card}


def _label(card_path: str) -> str:
    return "card-" + re.sub(r"[^A-Za-z0-9_-]", "_", card_path)  # Parsl uses labels in paths


def build_tasks(cfg: Progressive, timeout: float | None) -> tuple[dict[int, Task], dict[str, Task]]:
    """Data tasks by bucket, stage tasks by name in order. A stage's ID hashes its own settings
    (not its name, walltime or card) and its parent's ID: changing stage k reruns k..last. A
    stage with its own card runs on that card's executor (stage_cards). Torch's threads are the
    runner's: a stage starts after every data task and its parent, alone, on every core of its worker."""
    d = plain(cfg.data)
    data = {
        b: Task(DATA, "lambda_hat.studies.progressive.study:generate", {"n": b, **d}, f"data n={b}")
        for b in cfg.buckets
    }  # fmt: skip
    stages, parent = {}, None
    for s in cfg.stages:
        semantic = {
            "stage": {"buckets": list(s.buckets), "batch": s.batch, "epochs": s.epochs, "lr": s.lr},
            "parent": parent.id if parent else None,
            "model": plain(cfg.model),
            "seed": cfg.seed,
            "eval_buckets": cfg.buckets,
            "data": [data[b].id for b in cfg.buckets],
        }
        deps = tuple((DATA, data[b].id) for b in cfg.buckets) + (((STAGE, parent.id),) if parent else ())
        label = _label(s.card) if s.card else "lh"
        t = Task(
            STAGE, "lambda_hat.studies.progressive.study:train_stage", semantic, f"stage {s.name}", deps=deps, timeout=timeout or s.walltime,
            executor=label,
        )  # fmt: skip
        stages[s.name] = parent = t
    return data, stages


def select(cfg: Progressive, names: tuple[str, ...]) -> list[str]:
    """The named stages and every stage before them (each starts from its parent's checkpoint)."""
    order = [s.name for s in cfg.stages]
    for n in names:
        if n not in order:
            raise InputError(f"--stages {n}: no such stage; stages: {', '.join(order)}")
    if not names:
        return order
    return order[: max(order.index(n) for n in names) + 1]


def _resumes(store: Store, t: Task) -> str:
    """ ", resumes after epoch N" for a stage killed after saving a checkpoint, else ""."""
    ckpt = store.resume_dir(t.kind, t.id) / "checkpoint.pt"
    if not ckpt.exists():
        return ""
    import torch

    return f", resumes after epoch {torch.load(ckpt, weights_only=False)['epoch']}"


def _state(store: Store, t: Task) -> str:
    if store.is_done(t.kind, t.id):
        return Status.DONE
    return (store.manifest(t.kind, t.id) or {}).get("status", "to run") + _resumes(store, t)


def listing(cfg: Progressive, store: Store, stages: dict[str, Task]) -> str:
    lines = [f"{'stage':<8} {'buckets':<12} {'batch':>5} {'epochs':>6} {'lr':>8} {'walltime':>9} {'est. mem':>9}  status"]
    for s in cfg.stages:
        mem = max(est_memory_mb(b, s.batch, cfg.model) for b in s.buckets)
        wall = f"{s.walltime:g}s" if s.walltime else "-"
        lines.append(
            f"{s.name:<8} {','.join(map(str, s.buckets)):<12} {s.batch:>5} {s.epochs:>6} {s.lr:>8g} {wall:>9} {mem:>7.0f}MB  {_state(store, stages[s.name])} [{stages[s.name].id}]"
        )
    return "\n".join(lines)


def rows(cfg: Progressive, store: Store, stages: dict, outcomes: dict) -> list[dict]:
    out = []
    for i, s in enumerate(cfg.stages):
        t = stages[s.name]
        o = outcomes.get(t.id)
        m = reported(store.manifest(STAGE, t.id), o)
        status = m.get("status") or (o.status if o else Status.MISSING)
        metrics = read_json(store.dir(STAGE, t.id) / "metrics.json") if status == Status.DONE else None
        base = {"stage": s.name, "stage_index": i, "stage_id": t.id, "status": status, "error": m.get("error") or (o.error if o else None)}
        if not metrics:
            out.append(base)
            continue
        for b, v in metrics["buckets"].items():
            out.append({
                **base, "bucket": int(b), "trained_on": int(b) in s.buckets, "gap": v["gap"], "max_duality_excess": v["max_excess"],
                "zero_gap": v["zero_gap"], "rowmin_gap": v["rowmin_gap"], "start_gap": v["start_gap"], "random_init_gap": v["random_init_gap"],
                "epochs": metrics["epochs"], "resumed_from_epoch": metrics["resumed_from_epoch"], "walltime_sec": m.get("walltime_sec"),
                "peak_memory_mb": metrics["peak_memory_mb"], "device": metrics["device"],
            })  # fmt: skip
    return out


def plot(table: list[dict], results: Path) -> Path | None:
    """results/progressive.png: the validation gap per bucket after each stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(table)
    if "gap" in df and df["gap"].notna().any():
        fig, ax = plt.subplots(figsize=(6.5, 4))
        done = df.dropna(subset=["gap"])
        for b, g in done.groupby("bucket"):
            line = ax.plot(g["stage"], g["gap"], "o-", label=f"n={b}")[0]
            ax.axhline(g["rowmin_gap"].iloc[0], ls="--", lw=0.8, color=line.get_color())
        ax.set_ylabel("relative dual gap (OPT − D) / OPT")
        ax.set_xlabel("after stage")
        ax.set_title("validation gap per bucket (dashed: row-min baseline)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = tmp_path(results / "progressive.png")
        fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
        os.replace(tmp, results / "progressive.png")
        return results / "progressive.png"
    return None


class ProgressiveWorkflow(Workflow):
    """Train the dual-potential GNN in stages of growing assignment problems.

    Each stage starts from the previous stage's checkpoint and saves a resumable checkpoint every
    epoch: a killed or timed-out stage resumes from its last epoch on rerun. Writes
    results/progressive.parquet and results/progressive.png. KEY=VALUE arguments change the
    stages file before it is validated, e.g. stages.1.epochs=5.
    Example: lambda-hat workflow progressive --stages b64 b128 --dry-run
    """

    name = "progressive"
    file_keys = ("stages",)
    config_file = "config/progressive.yaml"
    config_help = "Stages file."
    example = EXAMPLE
    noun = "stages"
    timeout_help = "; overrides each stage's walltime"

    def cli(self) -> list:
        return [
            click.option("--list", "list_only", is_flag=True, help="Print the stages (buckets, batch sizes, estimated memory, status) and run nothing."),
            click.option(
                "--stages",
                "stages_flag",
                is_flag=True,
                help="Run only the stages named after the options (and the stages before them); names alone do the same, as Snakemake's targets.",
            ),
            click.argument("overrides", nargs=-1, metavar="[FILE.yaml] [STAGE]... [KEY=VALUE]..."),  # stage names among them
        ]

    def parse(self, kw: dict) -> tuple[tuple[str, ...], dict]:
        args = kw.pop("overrides")
        is_override = lambda a: "=" in a or a.startswith("~")  # noqa: E731  ~KEY: Hydra's removal
        names, overrides = tuple(a for a in args if not is_override(a)), tuple(a for a in args if is_override(a))
        if kw.pop("stages_flag") and not names:
            raise InputError("--stages needs at least one stage name, e.g. --stages b64 b128")
        return overrides, {**kw, "stages": names}

    def preview(self, path: Path, card, overrides: tuple[str, ...], extra: dict) -> str | None:
        if not extra.get("list_only"):
            return None
        return "\n".join(([f"overrides: {' '.join(overrides)}"] if overrides else []) + [list_stages(path, overrides)])

    def load(self, path: Path, overrides: tuple[str, ...]) -> Progressive:
        self.path = path
        return load(path, overrides)

    def cards(self, cfg: Progressive) -> dict:
        return stage_cards(cfg)

    def tasks(self, cfg: Progressive, opts: Options, card) -> list[Task]:
        data, stages = build_tasks(cfg, opts.timeout)
        self.stages, self.chosen = stages, select(cfg, tuple(opts.extra.get("stages", ())))
        return [*data.values(), *(stages[n] for n in self.chosen)]

    def header(self, cfg: Progressive, store: Store, tasks: list[Task]) -> str:
        return f"{self.path}: {len(self.chosen)} of {len(cfg.stages)} stage(s), store {store.root}/"

    def note(self, cfg: Progressive, store: Store, task: Task, state: str) -> str:
        if task.kind != STAGE or state == "done":
            return ""
        names = list(self.stages)
        i = [self.stages[n].id for n in names].index(task.id)
        start = f"starts from {names[i - 1]}'s checkpoint" if i else "starts from a random initialisation"
        return start + _resumes(store, task)

    def rows(self, cfg: Progressive, store: Store, outcomes: dict) -> list[dict]:
        return rows(cfg, store, self.stages, outcomes)

    def table_path(self, cfg: Progressive) -> Path:
        return Path(cfg.results) / "progressive.parquet"

    def finish(self, cfg: Progressive, store: Store, table: list[dict], summary: Summary, opts: Options) -> list[str]:
        png = plot(table, Path(cfg.results))
        lines = [f"plot: {png}"] if png else []
        for r in table:
            if r.get("gap") is not None and r["trained_on"]:
                lines.append(
                    f"  {r['stage']:<8} n={r['bucket']:<4} gap {r['gap']:.3f} (row-min {r['rowmin_gap']:.3f}, u=0 {r['zero_gap']:.3f}; start {r['start_gap']:.3f}, random init {r['random_init_gap']:.3f})"
                )
        return lines


def list_stages(path: Path, overrides: tuple[str, ...]) -> str:
    """`--list`: every stage with its buckets, batch, epochs, walltime, memory estimate and status."""
    cfg = load(path, overrides)
    _, stages = build_tasks(cfg, None)
    return listing(cfg, Store(Path(cfg.store_root)), stages)


WORKFLOW = ProgressiveWorkflow()
