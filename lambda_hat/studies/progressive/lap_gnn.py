"""A bipartite GNN (torch-geometric) that predicts row duals of assignment problems.

Each instance is a graph of n row and n column nodes joined by all n² edges in both directions;
costs are divided by their mean, so one model serves every size. The output is a correction to
the row-minimum duals: û = scale · (rowmin + f(graph)), trained to maximise D(û) (no labels).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lambda_hat.studies.progressive.assignment import dual_bound

_EDGES: dict[int, torch.Tensor] = {}


def _edges(n: int) -> torch.Tensor:
    """Complete bipartite edges, rows 0..n-1 → columns n..2n-1 and back; entry order i·n + j."""
    if n not in _EDGES:
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        fwd = np.stack([i.ravel(), j.ravel() + n])
        _EDGES[n] = torch.from_numpy(np.concatenate([fwd, fwd[::-1]], axis=1)).long()
    return _EDGES[n]


def graph(c: np.ndarray, opt: float | None = None):
    """One instance as a torch_geometric Data object (cost matrix kept for the loss)."""
    from torch_geometric.data import Data

    n = len(c)
    scale = float(c.mean())
    cn = c / scale
    rmin = cn.min(1)
    red = cn - rmin[:, None]
    vmin = red.min(0)
    slack = red - vmin[None]  # reduced costs after row then column reduction: 0 = tight edge
    owns = np.bincount(red.argmin(0), minlength=n) / 1.0  # columns each row is the argmin of
    sort_r, sort_c = np.sort(cn, 1), np.sort(cn, 0)
    rows = np.stack([np.ones(n), np.zeros(n), rmin, cn.mean(1), sort_r[:, 1] - sort_r[:, 0], owns, np.zeros(n)], 1)
    cols = np.stack([np.zeros(n), np.ones(n), sort_c[0], cn.mean(0), sort_c[1] - sort_c[0], np.zeros(n), vmin], 1)
    e = np.stack([cn.ravel(), slack.ravel()], 1)
    return Data(
        x=torch.from_numpy(np.concatenate([rows, cols]).astype(np.float32)),
        edge_index=_edges(n),
        edge_attr=torch.from_numpy(np.concatenate([e, e]).astype(np.float32)),
        c=torch.from_numpy(c.astype(np.float32)).unsqueeze(0),
        rmin=torch.from_numpy(rmin.astype(np.float32)),
        scale=torch.tensor([scale], dtype=torch.float32),
        opt=torch.tensor([opt if opt is not None else float("nan")], dtype=torch.float32),
        n_rows=n,
    )


class DualGNN(nn.Module):
    def __init__(self, hidden: int = 64, layers: int = 3):
        super().__init__()
        from torch_geometric.nn import GENConv

        self.enc = nn.Linear(7, hidden)
        self.convs = nn.ModuleList([GENConv(hidden, hidden, aggr="softmax", learn_t=True, edge_dim=2) for _ in range(layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden) for _ in range(layers)])
        self.head = nn.Linear(hidden, 1)

    def forward(self, batch) -> torch.Tensor:
        """Row duals û for every instance of a batch of same-size instances: (B, n)."""
        h = self.enc(batch.x)
        for conv, norm in zip(self.convs, self.norms):
            h = h + conv(torch.relu(norm(h)), batch.edge_index, batch.edge_attr)
        out = self.head(h).squeeze(-1)
        n = int(batch.n_rows[0])
        rows = out.view(-1, 2 * n)[:, :n]  # each graph: n rows then n columns
        return batch.scale[:, None] * (batch.rmin.view(-1, n) + rows)


def bounds(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(û), OPT) per instance of the batch."""
    return dual_bound(batch.c, model(batch)), batch.opt


def loss(model, batch) -> torch.Tensor:
    d, _ = bounds(model, batch)
    n = batch.c.shape[-1]
    return -(d / (n * batch.scale)).mean()
