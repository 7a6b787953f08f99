"""A sweep's report: comparison_table.csv, plots and summary_report.md, from its result records."""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from lambda_hat.engine.store import tmp_path
from lambda_hat.engine.sweep import COLUMNS, table
from lambda_hat.engine.tasks import Status

TOP = 5
SUMMARY = "summary_report.md"
NAMED = 40  # experiments a plot names one by one: beyond, the names overlap and the image grows with them
TICKS = 15  # a factor's levels named on its axis (every k-th beyond)


def _atomic(path: Path, write) -> None:
    tmp = tmp_path(path)
    write(tmp)
    os.replace(tmp, path)


def _num(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def _cell(text: str) -> str:
    """Text in a markdown table's cell: a | escaped and a line break as <br>, which would
    otherwise end the cell or the row (a name or a text metric may hold either)."""
    return re.sub(r"\r\n?|\n", "<br>", str(text).replace("|", "\\|"))


def _md(df: pd.DataFrame) -> str:
    cols = [_cell(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(_num(v)) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def ranked(df: pd.DataFrame, rank_by) -> pd.DataFrame:
    """Done experiments best first by the first rank metric (ties by the next ones), then the rest."""
    done = df[df.status == Status.DONE]
    keys = [r.metric for r in rank_by if r.metric in done.columns]
    if keys:  # by value: a metric that is text in some experiments ranks those last
        done = done.sort_values(keys, ascending=[r.goal == "min" for r in rank_by if r.metric in keys], na_position="last", key=_numeric)
    out = pd.concat([done, df[df.status != Status.DONE]])
    out.insert(0, "rank", [*range(1, len(done) + 1), *[None] * (len(out) - len(done))])
    return out


def unranked(sweep, rows: list[dict]) -> list[str]:
    """The rank metrics no finished experiment returned (a typo in rank_by, a task that stopped
    returning one), or returned as NaN or ±inf (a run that diverged), and the line plots not drawn
    for a column no finished experiment has: said on the console and in the summary, since the
    table's empty cells (and a plot's absence) would not tell them from a metric never returned."""
    done = [r for r in rows if r["status"] == Status.DONE]
    have = {k for r in done for k, v in r.items() if v is not None}
    fixed = {*COLUMNS, "time_sec", *sweep.factors}
    metrics = ", ".join(sorted(have - fixed)) or "none"
    out = [
        f"rank_by metric {r.metric!r} is not a metric of any finished experiment (they have: {metrics})"
        for r in sweep.spec.rank_by
        if done and r.metric not in have
    ]
    for r in sweep.spec.rank_by:
        bad = [row["experiment_id"] for row in done if isinstance(row.get(r.metric), float) and not math.isfinite(row[r.metric])]
        if bad:
            some = "; ".join(bad[:3]) + (f"; … ({len(bad)} in all)" if len(bad) > 3 else "")
            out.append(
                f"rank_by metric {r.metric!r} is NaN or infinite in {len(bad)} finished experiment(s) ({some}): ranked last, left out of the statistics and plots"
            )
    for i, lp in enumerate(sweep.spec.line_plots):
        if done and (missing := [k for k in (lp.x, lp.y, lp.by, lp.facet) if k is not None and k not in have]):
            columns = ", ".join(sorted(have - set(COLUMNS)))
            out.append(
                f"line_plots[{i}] ({lp.y} against {lp.x}) is not drawn: no finished experiment has {', '.join(map(repr, missing))} (they have: {columns})"
            )
    return out


def _numeric(col: pd.Series) -> pd.Series:
    """A metric column as numbers (text that is not one, NaN and ±inf: missing, so that a diverged
    run's inf never ranks first)."""
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        col = pd.to_numeric(col.astype(object), errors="coerce")
    return col.mask(col.isin([np.inf, -np.inf]))


def pareto(done: pd.DataFrame, metric: str, goal: str, params: str = "params") -> pd.DataFrame:
    """Experiments no other beats on both parameter count and `metric` (fewest params first)."""
    d = done.dropna(subset=[params, metric]).sort_values([params, metric], ascending=[True, goal == "min"])
    keep, best = [], None
    for i, row in d.iterrows():
        v = row[metric]
        if best is None or (v > best if goal == "max" else v < best):
            keep.append(i)
            best = v
    return d.loc[keep]


def factor_levels(col: pd.Series) -> pd.Series:
    """A factor's values as levels: an experiment without one (null, or a combo that leaves it
    unset) is the level `null`, not left out of the statistics and plots."""
    return col.astype(object).where(col.notna(), "null")


def factor_stats(done: pd.DataFrame, factor: str, metric: str, goal: str) -> pd.DataFrame:
    d = done.dropna(subset=[metric])
    g = d[metric].groupby(factor_levels(d[factor]), sort=True)
    best = g.max() if goal == "max" else g.min()
    return pd.DataFrame({factor: best.index, "n": g.size().values, "mean": g.mean().values, "std": g.std(ddof=1).values, "best": best.values})


def impact(done: pd.DataFrame, factor: str, factors: list[str], metrics) -> pd.DataFrame | None:
    """For a true/false factor: the metric difference of each pair of experiments that differ
    only in it (mean, spread, how many improved), or None when there is no such pair."""
    levels = set(done[factor].dropna().unique()) if factor in done else set()
    if levels != {True, False}:
        return None
    others = [f for f in factors if f != factor and f in done]
    if "seed" in done and done["seed"].notna().all() and "seed" not in others:
        others.append("seed")
    rows = []
    for r in metrics:
        d = done.dropna(subset=[r.metric, factor]).astype({factor: bool})
        # a pair: the mean of each side over the experiments equal in every other factor
        # (without other factors, the one pair of overall means)
        key = others or (lambda _: 0)
        on, off = (d[d[factor] == v].groupby(key)[r.metric].mean() for v in (True, False))
        diff = (on - off).dropna()
        if len(diff):
            better = (diff > 0) if r.goal == "max" else (diff < 0)
            rows.append(
                {
                    "metric": r.metric,
                    "pairs": len(diff),
                    "mean change": diff.mean(),
                    "std": diff.std(ddof=1) if len(diff) > 1 else None,
                    "improved": int(better.sum()),
                }
            )
    return pd.DataFrame(rows) if rows else None


def _plots(df: pd.DataFrame, factors: list[str], rank_by, out: Path, line_plots, params: str, names: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    done = df[df.status == Status.DONE]
    metrics = [r.metric for r in rank_by if r.metric in done.columns]
    written = []
    if factors and metrics:
        fig, axes = plt.subplots(len(factors), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(factors)), squeeze=False)
        for i, f in enumerate(factors):
            for j, m in enumerate(metrics):
                ax = axes[i][j]
                d = done.dropna(subset=[m])
                d = d.assign(**{f: factor_levels(d[f])})
                values = sorted(d[f].unique(), key=lambda v: (isinstance(v, str), v))
                pos = {v: k for k, v in enumerate(values)}
                ax.scatter([pos[v] for v in d[f]], d[m], alpha=0.7)
                means = [d[d[f] == v][m].mean() for v in values]
                ax.plot(range(len(values)), means, "k-", lw=1, label="mean")
                every = max(1, math.ceil(len(values) / TICKS))  # a factor of hundreds of levels: every k-th named
                ax.set_xticks(range(0, len(values), every), [_num(v) for v in values[::every]], rotation=30, fontsize=8)
                ax.set_xlabel(f)
                ax.set_ylabel(m)
        fig.tight_layout()
        fig.savefig(out / names["metric_per_factor"], dpi=90)
        plt.close(fig)
        written.append(names["metric_per_factor"])
    if metrics and params in done and done[params].notna().any():
        fig, ax = plt.subplots(figsize=(6, 4.5))
        m = metrics[0]
        ax.scatter(done[params], done["time_sec"], c=done[m], cmap="viridis")
        for _, r in done.iterrows() if len(done) <= NAMED else ():
            ax.annotate(r["experiment_id"], (r[params], r["time_sec"]), fontsize=6)
        sc = ax.collections[0]
        fig.colorbar(sc, label=m)
        ax.set_xlabel(params)
        ax.set_ylabel("time (s)")
        ax.set_title(f"efficiency: {m} by parameters and time" + (f" ({len(done)} experiments)" if len(done) > NAMED else ""))
        fig.tight_layout()
        fig.savefig(out / names["efficiency_scatter"], dpi=90)
        plt.close(fig)
        written.append(names["efficiency_scatter"])
    line_names = line_plot_files(line_plots)
    for i, lp in enumerate(line_plots):
        used = {c for c in (lp.x, lp.y, lp.by, lp.facet) if c is not None}  # one not in the table: not drawn (unranked says so)
        d = done.dropna(subset=[lp.x, lp.y]) if used <= set(done.columns) else done.iloc[:0]
        if not len(d):
            continue
        facets = sorted(d[lp.facet].unique()) if lp.facet else [None]
        fig, axes = plt.subplots(1, len(facets), figsize=(5.5 * len(facets), 4.2), squeeze=False)
        for ax, fv in zip(axes[0], facets):
            sub = d[d[lp.facet] == fv] if lp.facet else d
            for key, g in sub.groupby(lp.by) if lp.by else [(None, sub)]:
                m = g.groupby(lp.x)[lp.y].mean()
                ax.plot(m.index, m.values, "o-", label=str(key) if key is not None else None, lw=1)
            ax.set_xlabel(lp.x)
            ax.set_ylabel(lp.y)
            if lp.log_y:
                ax.set_yscale("log")
            if lp.facet:
                ax.set_title(f"{lp.facet} = {fv}")
            if lp.by:
                ax.legend(fontsize=6)
        fig.tight_layout()
        name = line_names[i]
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        written.append(name)
    if len(done):
        d = done.sort_values("time_sec").tail(NAMED)  # a bar each, the slowest where there are more
        fig, ax = plt.subplots(figsize=(6, 0.25 * len(d) + 1.2))
        ax.barh(d["experiment_id"], d["time_sec"])
        ax.set_xlabel("time (s)")
        if len(done) > NAMED:
            ax.set_title(f"the {NAMED} slowest of {len(done)} experiments", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        fig.savefig(out / names["time"], dpi=90)
        plt.close(fig)
        written.append(names["time"])
    return written


def line_plot_files(line_plots) -> list[str]:
    """Y_vs_X.png per line plot; _by_BY, _per_FACET and _log where two plot the same y against the
    same x, -2, -3 … where they are still alike. A character other than a letter, digit or . = + -
    ('/' of a W&B metric such as val/loss, a space) is '_': the name is a file name and a link."""

    def safe(text: str) -> str:
        return re.sub(r"[^\w.=+-]", "_", text)[:100]

    base = [safe(f"{lp.y}_vs_{lp.x}") for lp in line_plots]
    names = [
        b + (f"_by_{safe(lp.by)}" if lp.by else "") + (f"_per_{safe(lp.facet)}" if lp.facet else "") + ("_log" if lp.log_y else "") if base.count(b) > 1 else b
        for b, lp in zip(base, line_plots)
    ]
    return [n + (f"-{names[:i].count(n) + 1}" if names[:i].count(n) else "") + ".png" for i, n in enumerate(names)]


def build(sweep, rows: list[dict], out: Path | None = None, plots: bool = True, note: str = "") -> Path:
    """Write the report of `sweep` (lambda_hat.engine.sweep.Sweep) from its table rows into `out`
    (default: the sweep's results directory); returns the summary path."""
    out = Path(out) if out is not None else sweep.results
    out.mkdir(parents=True, exist_ok=True)
    rank_by = sweep.spec.rank_by
    df = ranked(table(rows), rank_by).convert_dtypes()  # integers stay integers next to missing values
    _atomic(out / "comparison_table.csv", lambda p: df.to_csv(p, index=False))
    # the statistics and plots read the rank metrics as numbers (the table keeps what was returned)
    df = df.assign(**{r.metric: _numeric(df[r.metric]) for r in rank_by if r.metric in df.columns})
    done = df[df.status == Status.DONE]
    params = sweep.spec.params_column
    names = {k: sweep.spec.plot_names.get(k, f"{k}.png") for k in ("metric_per_factor", "efficiency_scatter", "time")}
    plots = _plots(df, sweep.factors, rank_by, out / "plots", sweep.spec.line_plots, params, names) if plots else []
    counts = df.status.value_counts()
    metrics = [r for r in rank_by if r.metric in done.columns]
    show = [c for c in ["experiment_id", *[r.metric for r in metrics], *dict.fromkeys(["params", params]), "time_sec"] if c in df.columns]
    lines = [
        f"# Sweep `{sweep.name}`",
        "",
        f"From `{sweep.path}` (task `{sweep.spec.task or sweep.spec.command}`): {len(df)} experiments, "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + ". Ranked by "
        + ", ".join(f"{r.metric} ({r.goal})" for r in rank_by)
        + ". Full table: `comparison_table.csv`.",
        "",
    ]
    if note:
        lines += [note, ""]
    for w in unranked(sweep, rows):
        lines += [f"**Warning:** {w}.", ""]
    if not len(done):
        lines += ["No experiment has finished yet.", ""]
    for r in metrics:
        best = done.sort_values(r.metric, ascending=r.goal == "min", na_position="last").head(TOP)
        lines += [f"## Top performers by {r.metric} ({r.goal})", "", _md(best[show]), ""]
    if len(done):
        lines += ["## Fastest", "", _md(done.sort_values("time_sec").head(TOP)[show]), ""]
    if metrics and params in done and done[params].notna().any():
        r = metrics[0]
        lines += [
            "## Most parameter-efficient",
            "",
            f"Experiments that no other beats on both {params} and {r.metric} (fewest first):",
            "",
            _md(pareto(done, r.metric, r.goal, params)[show]),
            "",
        ]
    if sweep.factors and metrics:
        effects = []
        for f in sweep.factors:
            stats = [(r, factor_stats(done, f, r.metric, r.goal)) for r in metrics]
            if any(len(st) for _, st in stats):
                lines += [f"## Statistics by {f}", ""]
            for r, st in stats:
                if len(st) < 1:
                    continue
                lines += [f"### {r.metric}", "", _md(st), ""]
                if len(st) > 1:
                    spread = st["mean"].max() - st["mean"].min()
                    best_level = st.loc[st["mean"].idxmax() if r.goal == "max" else st["mean"].idxmin(), f]
                    effects.append((r.metric, f, spread, best_level, len(st)))
        if effects:
            lines += [
                "## Effect of each factor",
                "",
                "Spread of the mean metric across a factor's levels (largest first), and its best level:",
                "",
            ]
            eff = pd.DataFrame(effects, columns=["metric", "factor", "spread of means", "best level", "levels"])
            eff = eff.sort_values(["metric", "spread of means"], ascending=[True, False])
            lines += [_md(eff), ""]
    for f in sweep.factors:
        paired = impact(done, f, sweep.factors, metrics)
        if paired is not None:
            lines += [
                f"## Impact of {f}",
                "",
                f"{f} = true minus {f} = false, between experiments equal in every other factor:",
                "",
                _md(paired),
                "",
            ]
    bad = df[df.status != Status.DONE]
    if len(bad):
        lines += ["## Not finished", "", _md(bad[["experiment_id", "status", "error"]]), ""]
    if plots:
        lines += ["## Plots", "", *[f"![{p}](plots/{quote(p)})" for p in plots], ""]
    summary = out / SUMMARY
    _atomic(summary, lambda p: Path(p).write_text("\n".join(lines)))
    _atomic(out / "index.html", lambda p: Path(p).write_text(page(sweep, df, plots, note)))
    return summary


def sweep_file_of(folder: Path) -> str | None:
    """The sweep file named on the "From `…`" line of the summary `build` wrote in `folder`."""
    found = re.search(r"^From `(.+?)`", (folder / SUMMARY).read_text(errors="replace"), re.M)
    return found.group(1) if found else None


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}td{text-align:right}img{max-width:100%;border:1px solid #eee;margin:4px 0}"""


def page(sweep, df: pd.DataFrame, plots: list[str], note: str = "") -> str:
    """index.html: the comparison table (best first) and the plots, by relative paths only."""
    counts = ", ".join(f"{v} {k}" for k, v in df.status.value_counts().items())
    ranking = ", ".join(f"{r.metric} ({r.goal})" for r in sweep.spec.rank_by)
    intro = f"{sweep.path.name} (task {sweep.spec.task or sweep.spec.command}): {len(df)} experiments, {counts}. Ranked by {ranking}. {note}"
    cols = [c for c in df.columns if c not in ("task_id", "timestamp", "code_version", "project_version")]
    table = df[cols].astype(object).map(_num).to_html(index=False, border=0, escape=True)
    imgs = "\n".join(f"<h3>{html.escape(p)}</h3><img src='plots/{html.escape(quote(p))}' alt='{html.escape(p)}'>" for p in plots)
    return (
        f"<!doctype html><meta charset='utf-8'><title>sweep {html.escape(sweep.name)}</title><style>{STYLE}</style>\n"
        f"<h1>Sweep {html.escape(sweep.name)}</h1>\n<p>{html.escape(intro)} "
        f"Summary: <a href='{SUMMARY}'>{SUMMARY}</a>.</p>\n"
        f"<h2>Comparison table</h2>\n{table}\n" + (f"<h2>Plots</h2>\n{imgs}\n" if plots else "")
    )
