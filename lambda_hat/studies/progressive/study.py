"""Progressive training: stages of the dual-potential GNN on growing assignment problems, each
initialised from the previous stage's checkpoint and resumable from its own last epoch."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lambda_hat.engine.cards import find_card
from lambda_hat.engine.tasks import task
from lambda_hat.engine.typed import Duration, apply_overrides, build, load_yaml, nonempty, positive, seed_range

Family = Literal["uniform", "euclidean", "clustered", "lowrank"]


@dataclass(frozen=True)
class DataCfg:
    # a family twice would double its instances, where n_train is per family
    families: list[Family] = field(default=("uniform", "euclidean", "clustered", "lowrank"), metadata={"min_len": 1, "unique": "list each family once"})
    n_train: int = field(default=32, metadata=positive())  # instances per family and bucket
    n_val: int = field(default=8, metadata=positive())
    seed: int = field(default=0, metadata=seed_range())


@dataclass(frozen=True)
class ModelCfg:
    hidden: int = field(default=64, metadata=positive())
    layers: int = field(default=3, metadata=positive())


@dataclass(frozen=True)
class Stage:
    name: str = field(metadata=nonempty(hint="it labels the stage's task and rows"))
    buckets: list[int] = field(metadata={"min_len": 1})
    epochs: int = field(metadata=positive())
    batch: int = field(default=32, metadata=positive())
    lr: float = field(default=3e-3, metadata=positive())
    walltime: Duration | None = None  # the stage is killed after it: 90, 30m, 1h30m, HH:MM:SS
    card: str | None = field(default=None, metadata=nonempty())  # executor card (path or name) for this stage (default: the command's card)

    def check(self, bad):
        for b in self.buckets:
            if b < 4:
                bad("buckets", f"bucket sizes must be >= 4, got {b}")


@dataclass(frozen=True)
class Progressive:
    stages: list[Stage] = field(metadata={"min_len": 1})
    data: DataCfg = DataCfg()
    model: ModelCfg = ModelCfg()
    seed: int = field(default=0, metadata=seed_range())
    store_root: str = field(default="runs", metadata=nonempty())
    results: str = field(default="results", metadata=nonempty())
    tracking: list[Literal["mlflow", "wandb"]] = ()  # log every finished stage there (tracking.py)

    def check(self, bad):
        names = [s.name for s in self.stages]
        for i, n in enumerate(names):
            if names.index(n) != i:
                bad(f"stages[{i}].name", f"{n!r} is used twice")

    @property
    def buckets(self) -> list[int]:
        return sorted({b for s in self.stages for b in s.buckets})


def _one_chain(key: str):
    """Several values of any key: a progressive run is one chain of stages."""
    return lambda values: "a progressive run trains one chain of stages: run it once per value"


EXAMPLE = "stages.1.epochs=5"  # an override, for the messages on a malformed one


def load(path: Path, overrides: tuple[str, ...] = ()) -> Progressive:
    cfg = build(Progressive, apply_overrides(load_yaml(path), overrides, str(path), several=_one_chain, example=EXAMPLE), str(path))
    for i, s in enumerate(cfg.stages):  # the card itself is validated when the tasks are built
        if s.card:
            find_card(s.card, f"{path}: stages[{i}].card:")
    return cfg


def est_memory_mb(n: int, batch: int, m: ModelCfg) -> float:
    """Rough peak of one training step: messages on 2n² edges per instance, kept for backward."""
    edges = batch * 2 * n * n
    return (edges * m.hidden * 4 * 4 * m.layers + batch * n * n * 4 * 6) / 2**20


# ---------------------------------------------------------------- the stage task


def _graphs(d: Path, split: str):
    from lambda_hat.studies.progressive.lap_gnn import graph

    z = np.load(d / "data.npz")
    return [graph(c, o) for c, o in zip(z[f"{split}_c"], z[f"{split}_opt"])]


def evaluate(model, graphs, device) -> dict:
    """Mean relative dual gap (OPT − D)/OPT and the worst weak-duality excess over instances."""
    import torch
    from torch_geometric.loader import DataLoader

    from lambda_hat.studies.progressive.lap_gnn import bounds

    model.eval()
    gaps, excess = [], []
    with torch.no_grad():
        for b in DataLoader(graphs, batch_size=16):
            d, opt = bounds(model, b.to(device))
            gaps.append(((opt - d) / opt).cpu())
            excess.append(((d - opt) / opt.abs()).cpu())
    return {"gap": float(torch.cat(gaps).mean()), "max_excess": float(torch.cat(excess).max())}


def baselines(graphs) -> dict:
    from lambda_hat.studies.progressive.assignment import dual_bound

    out = {}
    for name, u in (("zero", lambda c: np.zeros(len(c))), ("rowmin", lambda c: c.min(1))):
        gaps = [(g.opt.item() - dual_bound(g.c[0].numpy(), u(g.c[0].numpy()))) / g.opt.item() for g in graphs]
        out[f"{name}_gap"] = float(np.mean(gaps))
    return out


def _save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class StageRun:
    """A stage task's config: its own settings, its parent stage's ID, the shared settings."""

    stage: dict  # buckets, batch, epochs, lr
    parent: str | None
    model: ModelCfg
    seed: int
    eval_buckets: list[int]
    data: list[str]  # the IDs of the data tasks of eval_buckets


@dataclass(frozen=True)
class BucketData(DataCfg):
    n: int = field(default=16, metadata=positive())


@task(BucketData)
def generate(ctx, cfg: BucketData) -> dict:
    from lambda_hat.studies.progressive.assignment import generate as make

    return make(ctx.workdir, cfg.n, cfg.seed, cfg.n_train, cfg.n_val, cfg.families)


@task(StageRun, version=2, requires=("torch", "torch_geometric"))  # 2: a diverged stage fails (it was done, with gap nan)
def train_stage(ctx, cfg: StageRun) -> dict:
    """One stage. deps: the data of every bucket (config "buckets" order), then the parent stage."""
    import torch
    from torch_geometric.loader import DataLoader

    from lambda_hat.studies.progressive.lap_gnn import DualGNN, loss

    c = ctx.config
    t0 = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    all_buckets = c["eval_buckets"]
    data = dict(zip(all_buckets, ctx.deps[: len(all_buckets)]))
    parent = ctx.deps[len(all_buckets)] if c["parent"] else None
    train = {b: _graphs(data[b], "train") for b in c["stage"]["buckets"]}
    val = {b: _graphs(data[b], "val") for b in all_buckets}

    torch.manual_seed(c["seed"])
    model = DualGNN(**c["model"]).to(device)
    random_gap = {b: evaluate(model, val[b], device)["gap"] for b in c["stage"]["buckets"]}
    opt = torch.optim.Adam(model.parameters(), lr=c["stage"]["lr"])
    gen = torch.Generator().manual_seed(c["seed"])
    start_epoch, resumed_from = 0, None
    ckpt = ctx.resume_dir / "checkpoint.pt" if ctx.resume_dir else None
    if parent:
        model.load_state_dict(torch.load(parent / "model.pt", map_location=device, weights_only=True))
    start_gap = {b: evaluate(model, val[b], device)["gap"] for b in c["stage"]["buckets"]}
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = resumed_from = state["epoch"] + 1
        ctx.log(f"resuming after epoch {state['epoch']} from {ckpt}")

    for epoch in range(start_epoch, c["stage"]["epochs"]):
        model.train()
        loaders = [iter(DataLoader(g, batch_size=c["stage"]["batch"], shuffle=True, generator=gen)) for g in train.values()]
        order = torch.cat([torch.full((len(ld),), i) for i, ld in enumerate(loaders)])  # batches never mix sizes
        finite = torch.tensor(True, device=device)  # read once an epoch: no host sync per batch on a GPU
        for i in order[torch.randperm(len(order), generator=gen)].tolist():
            batch = next(loaders[i]).to(device)
            value = loss(model, batch)
            finite &= torch.isfinite(value.detach())
            opt.zero_grad()
            value.backward()
            opt.step()
        if not finite:  # a diverged stage fails (its dependants with it), before its checkpoint or model is saved
            raise FloatingPointError(f"the loss became NaN or infinite in epoch {epoch}: the stage diverged; lower its lr ({c['stage']['lr']:g})")
        if ckpt:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _save(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "generator": gen.get_state(), "torch_rng": torch.get_rng_state()},
                ckpt,
            )
        ctx.log(f"epoch {epoch}: loss {float(value.detach()):.4f}")

    torch.save(model.state_dict(), ctx.workdir / "model.pt")
    per_bucket = {}
    for b in all_buckets:
        ev = evaluate(model, val[b], device)
        per_bucket[str(b)] = {**ev, **baselines(val[b]), "start_gap": start_gap.get(b), "random_init_gap": random_gap.get(b)}
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "buckets": per_bucket,
        "epochs": c["stage"]["epochs"],
        "resumed_from_epoch": resumed_from,
        "train_sec": time.time() - t0,
        "peak_memory_mb": peak,
        "device": device.type,
        "threads": torch.get_num_threads(),
    }
