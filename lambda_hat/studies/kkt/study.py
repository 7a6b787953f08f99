"""The KKT model-scaling study: MLP or bipartite GNN, plain or with a JEPA objective (EMA target
or SimSiam stop-gradient), on normalised (`_norm`) or unnormalised (`_unnorm`) features, trained
to minimise KKT violations of LPs (lambda_hat/studies/kkt/lp.py; sweep: config/sweeps/kkt_*.yaml)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data

from lambda_hat.engine.tasks import Task, task
from lambda_hat.engine.typed import nonneg, positive, seed_range
from lambda_hat.studies.kkt.lp import kkt_loss, kkt_terms

ARCHS, JEPA, FEATS = ("mlp", "gnn"), ("baseline", "jepa_ema", "jepa_simsiam"), ("norm", "unnorm")
VARIANTS = tuple(f"{a}_{j}_{f}" for a in ARCHS for j in JEPA for f in FEATS)


@dataclass(frozen=True)
class KKTConfig:
    seed: int = field(default=0, metadata=seed_range())
    problem: Literal["RND", "CA"] = "RND"
    size: int = field(default=10, metadata=positive())
    variant: str = "gnn_baseline_norm"
    n_train: int = field(default=1000, metadata=positive())
    n_valid: int = field(default=100, metadata=positive())
    epochs: int = field(default=30, metadata=positive())
    batch: int = field(default=64, metadata=positive())
    lr: float = field(default=1e-3, metadata=positive())
    hidden: int = field(default=64, metadata=positive())
    layers: int = field(default=3, metadata=positive())
    mask_rate: float = field(default=0.2, metadata={"ge": 0, "lt": 1})
    jepa_weight: float = field(default=0.2, metadata=nonneg())
    ema: float = field(default=0.996, metadata={"ge": 0, "le": 1})
    pretrain_epochs: int = field(default=3, metadata=nonneg())  # EMA mode: JEPA alone first

    def check(self, bad):
        if self.variant not in VARIANTS:
            bad("variant", f"{self.variant!r} is not allowed; allowed values: {', '.join(VARIANTS)}")
        if "jepa_ema" in self.variant and self.pretrain_epochs >= self.epochs:  # it had reported an untrained model
            bad("pretrain_epochs", f"must be < epochs ({self.epochs}) for a jepa_ema variant: those epochs train JEPA alone, none would train the task")


def needs(cfg: KKTConfig) -> list[Task]:
    def data(split, n, offset):
        c = {"problem": cfg.problem, "size": cfg.size, "n_instances": n, "seed": cfg.seed * 1000 + offset}
        return Task("lp_data", "lambda_hat.studies.kkt.lp:generate", c, f"{cfg.problem}-{cfg.size} {split} ({n})")

    return [data("train", cfg.n_train, 0), data("valid", cfg.n_valid, 1)]


class LPSet:
    """Instances of one size as dense tensors, plus their inputs for either architecture."""

    def __init__(self, path, normalized: bool):
        z = np.load(path)
        self.orig_rows = int(z["orig_rows"])
        t = lambda k: torch.from_numpy(z[k]).float()  # noqa: E731
        self.A, self.b, self.c, self.obj = t("A"), t("b"), t("c"), t("obj")
        one = torch.ones(len(self.A))
        sa = self.A.abs().amax((1, 2)) if normalized else one
        sb = self.b.abs().amax(1).clamp(min=1e-9) if normalized else one
        sc = self.c.abs().amax(1).clamp(min=1e-9) if normalized else one
        self.fA, self.fb, self.fc = self.A / sa[:, None, None], self.b / sb[:, None], self.c / sc[:, None]
        self._graphs = None

    def __len__(self):
        return len(self.A)

    def flat(self, idx):
        """MLP input: the problem's own rows of A (not the bound rows), b and c."""
        return torch.cat([self.fA[idx, : self.orig_rows].flatten(1), self.fb[idx], self.fc[idx]], 1)

    def graphs(self, idx):
        from torch_geometric.data import Batch

        if self._graphs is None:
            m = self.A.shape[1]
            kind = torch.zeros(m, 2)
            kind[: self.orig_rows, 0], kind[self.orig_rows :, 1] = 1, 1
            self._graphs = []
            for i in range(len(self.A)):
                cons, var = self.A[i].nonzero(as_tuple=True)
                self._graphs.append(LPGraph(
                    x_c=torch.cat([self.fb[i][:, None], kind], 1), x_v=self.fc[i][:, None],
                    edge_index=torch.stack([cons, var]), edge_attr=self.fA[i][cons, var], num_nodes=sum(self.A.shape[1:]),
                ))  # fmt: skip
        return Batch.from_data_list([self._graphs[i] for i in idx.tolist()], follow_batch=["x_c", "x_v"])


class LPGraph(Data):
    """Constraint and variable nodes; edge_index rows are (constraint, variable) indices."""

    def __inc__(self, key, value, *args, **kwargs):
        if key == "edge_index":
            return torch.tensor([[self.x_c.size(0)], [self.x_v.size(0)]])
        return super().__inc__(key, value, *args, **kwargs)


class MLP(nn.Module):
    def __init__(self, d_in: int, m: int, n: int, hidden: int):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d_in, 4 * hidden), nn.ReLU(), nn.Linear(4 * hidden, 4 * hidden), nn.ReLU())
        self.head_x, self.head_l = nn.Linear(4 * hidden, n), nn.Linear(4 * hidden, m)
        self.rep_dim = 4 * hidden

    def forward(self, data: LPSet, idx, mask_rate: float = 0.0):
        inp = data.flat(idx)
        if mask_rate:
            inp = inp * (torch.rand_like(inp) >= mask_rate)
        h = self.enc(inp)
        return self.head_x(h), F.softplus(self.head_l(h)), h


class GNN(nn.Module):
    """Bipartite message passing: variables → constraints → variables, A_ij as edge weights.
    Mean aggregation: with sums, CA's item rows (many bids) start at KKT losses around 1e4."""

    def __init__(self, hidden: int, layers: int):
        super().__init__()
        from torch_geometric.nn import GraphConv

        self.in_c, self.in_v = nn.Linear(3, hidden), nn.Linear(1, hidden)
        self.to_c = nn.ModuleList([GraphConv((hidden, hidden), hidden, aggr="mean") for _ in range(layers)])
        self.to_v = nn.ModuleList([GraphConv((hidden, hidden), hidden, aggr="mean") for _ in range(layers)])
        self.head_x, self.head_l = nn.Linear(hidden, 1), nn.Linear(hidden, 1)
        self.rep_dim = 2 * hidden

    def forward(self, data: LPSet, idx, mask_rate: float = 0.0):
        from torch_geometric.nn import global_mean_pool

        g = data.graphs(idx)
        ei, w = g.edge_index, g.edge_attr
        if mask_rate:
            keep = torch.rand(len(w)) >= mask_rate
            ei, w = ei[:, keep], w[keep]
        hc, hv = self.in_c(g.x_c), self.in_v(g.x_v)
        for to_c, to_v in zip(self.to_c, self.to_v):
            hc = hc + F.relu(to_c((hv, hc), ei.flip(0), w))
            hv = hv + F.relu(to_v((hc, hv), ei, w))
        B = len(idx)
        rep = torch.cat([global_mean_pool(hc, g.x_c_batch, B), global_mean_pool(hv, g.x_v_batch, B)], 1)
        return self.head_x(hv).view(B, -1), F.softplus(self.head_l(hc)).view(B, -1), rep


def build_model(cfg: KKTConfig, data: LPSet) -> nn.Module:
    if cfg.variant.startswith("mlp"):
        m, n = data.A.shape[1:]
        return MLP(data.flat(torch.arange(1)).shape[1], m, n, cfg.hidden)
    return GNN(cfg.hidden, cfg.layers)


def _cos_loss(p, z):
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def evaluate(model, data: LPSet) -> dict:
    model.eval()
    idx = torch.arange(len(data))
    with torch.no_grad():
        x, lam, _ = model(data, idx)
        terms = kkt_terms(data.A, data.b, data.c, x, lam)
        obj = (data.c * x).sum(1)
        gap = ((obj - data.obj).abs() / data.obj.abs().clamp(min=1e-6)).median()
        viol = torch.relu(torch.einsum("bmn,bn->bm", data.A, x) - data.b).amax(1).median()
    return {"loss": float(kkt_loss(terms)), **{k: float(v) for k, v in terms.items()}, "gap": float(gap), "violation": float(viol)}


@task(KKTConfig, needs=needs, version=2, requires=("torch", "torch_geometric"))  # 2: mean aggregation in the GNN
def train(ctx, cfg: KKTConfig) -> dict:
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    arch, jepa, feats = cfg.variant.split("_", 1)[0], "_".join(cfg.variant.split("_")[1:-1]), cfg.variant.rsplit("_", 1)[1]
    tr, va = (LPSet(d / "lp.npz", feats == "norm") for d in ctx.deps)
    model = build_model(cfg, tr)
    proj = nn.Linear(model.rep_dim, model.rep_dim)
    pred = nn.Sequential(nn.Linear(model.rep_dim, model.rep_dim), nn.ReLU(), nn.Linear(model.rep_dim, model.rep_dim))
    params = [*model.parameters(), *(proj.parameters() if jepa != "baseline" else []), *(pred.parameters() if jepa != "baseline" else [])]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    target = (copy.deepcopy(model), copy.deepcopy(proj)) if jepa == "jepa_ema" else None
    if target:
        for p in (*target[0].parameters(), *target[1].parameters()):
            p.requires_grad_(False)
    history = [{"epoch": 0, **{f"valid_{k}": v for k, v in evaluate(model, va).items()}}]
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        perm = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(tr), cfg.batch):
            idx = perm[i : i + cfg.batch]
            jepa_only = jepa == "jepa_ema" and epoch <= cfg.pretrain_epochs
            loss = torch.zeros(())
            if not jepa_only:
                x, lam, _ = model(tr, idx)
                terms = kkt_terms(tr.A[idx], tr.b[idx], tr.c[idx], x, lam)
                loss = kkt_loss(terms)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
                sums["kkt"] = sums.get("kkt", 0.0) + float(loss.detach()) * len(idx)
            if jepa != "baseline":
                _, _, h1 = model(tr, idx, cfg.mask_rate)
                with torch.no_grad() if target else torch.enable_grad():
                    enc, pj = target if target else (model, proj)
                    z2 = pj(enc(tr, idx, cfg.mask_rate)[2])  # SimSiam: the same network, gradient stopped below
                j = _cos_loss(pred(proj(h1)), z2)
                loss = j if jepa_only else loss + cfg.jepa_weight * j
                sums["jepa"] = sums.get("jepa", 0.0) + float(j.detach()) * len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if target:
                with torch.no_grad():
                    for net, t in ((model, target[0]), (proj, target[1])):
                        for p, q in zip(net.parameters(), t.parameters()):
                            q.mul_(cfg.ema).add_(p.detach(), alpha=1 - cfg.ema)
        row = {"epoch": epoch, **{f"train_{k}": v / len(tr) for k, v in sums.items()}}
        row.update({f"valid_{k}": v for k, v in evaluate(model, va).items()})
        history.append(row)
        ctx.log(f"epoch {epoch}: valid loss {row['valid_loss']:.3e}" + (f", jepa {row.get('train_jepa', float('nan')):.4f}" if jepa != "baseline" else ""))
    import pandas as pd

    pd.DataFrame(history).to_csv(ctx.workdir / "history.csv", index=False)
    last, valid = history[-1], [h["valid_loss"] for h in history[1:]]
    jl = [h["train_jepa"] for h in history if "train_jepa" in h]
    return {
        "problem_type": cfg.problem, "problem_size": cfg.size, "model_variant": cfg.variant, "architecture": arch,
        "normalized": feats == "norm", "use_jepa": jepa != "baseline", "jepa_mode": {"jepa_ema": "ema", "jepa_simsiam": "simsiam"}.get(jepa),
        "final_valid_loss": last["valid_loss"], "best_valid_loss": min(valid), "initial_valid_loss": history[0]["valid_loss"],
        **{f"final_valid_{k}": last[f"valid_{k}"] for k in ("primal", "dual", "stationarity", "complementary")},
        "final_train_loss": last.get("train_kkt"), "median_gap": last["valid_gap"], "median_max_violation": last["valid_violation"],
        "zero_gap": float((va.obj.abs() / va.obj.abs().clamp(min=1e-6)).median()),  # predicting x = 0
        "jepa_loss_first": jl[0] if jl else None, "jepa_loss_last": jl[-1] if jl else None,
        "runtime_seconds": time.time() - t0, "params": sum(p.numel() for p in model.parameters()), "epochs": cfg.epochs,
    }  # fmt: skip
