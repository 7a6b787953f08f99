"""LLC over training: λ̂ at every checkpoint of a target, as a table and a plot per target."""

from __future__ import annotations

from pathlib import Path

from lambda_hat.engine.tasks import Status

COLUMNS = [
    "target", "target_id", "step", "sampler", "llc_mean", "llc_sem", "train_loss", "test_loss",
    "train_accuracy", "test_accuracy", "status", "warnings",
]  # fmt: skip


def rows(table: list[dict]) -> list[dict]:
    """The llc table's rows of targets with checkpoints, by target, sampler and step."""
    out = [{**{c: r.get(c) for c in COLUMNS}, "target": r["trajectory"]} for r in table if r.get("trajectory")]
    return sorted(out, key=lambda r: (r["target"], r["sampler"], r["step"]))


def write(traj: list[dict], results: Path) -> Path | None:
    import pandas as pd

    from lambda_hat.engine.store import write_frame

    if not traj:
        return None
    results.mkdir(parents=True, exist_ok=True)
    return write_frame(pd.DataFrame(traj, columns=COLUMNS), results / "llc_trajectory.parquet")


def plot(traj: list[dict], path: Path) -> None:
    """λ̂ ± 2 SE against the training step, a line per sampler (warned points hollow), and the
    train and test loss below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for i, sampler in enumerate(dict.fromkeys(r["sampler"] for r in traj)):
        pts = [r for r in traj if r["sampler"] == sampler and r["status"] == Status.DONE]
        if not pts:
            continue
        x = np.array([r["step"] for r in pts], float)
        y = np.array([r["llc_mean"] for r in pts], float)
        e = 2 * np.array([r["llc_sem"] for r in pts], float)
        ax.plot(x, y, "-", color=f"C{i}", lw=1.2, label=sampler)
        ax.fill_between(x, y - e, y + e, color=f"C{i}", alpha=0.2)
        warned = np.array([bool(r["warnings"]) for r in pts])
        ax.scatter(x[~warned], y[~warned], color=f"C{i}", s=18, zorder=3)
        ax.scatter(x[warned], y[warned], facecolors="none", edgecolors=f"C{i}", s=30, zorder=3, label=f"{sampler}: with warnings" if warned.any() else None)
    ax.set(ylabel="λ̂ (± 2 SE)", title=f"LLC over training: {traj[0]['target']}")
    ax.legend(fontsize=7)
    by_step = {r["step"]: r for r in traj if r["train_loss"] is not None}
    steps = sorted(by_step)
    ax2.plot(steps, [by_step[s]["train_loss"] for s in steps], "k-", lw=1, label="train L_n")
    if any(by_step[s]["test_loss"] is not None for s in steps):
        ax2.plot(steps, [by_step[s]["test_loss"] for s in steps], "k--", lw=1, label="test loss")
    ax2.set(xlabel="training step", ylabel="loss [nats / sample]")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
