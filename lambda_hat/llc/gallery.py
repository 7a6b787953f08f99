"""A static gallery of a sweep: index.html and README.md with relative paths only.

Plots are copied in from the store, so the folder works wherever it is copied or served.
The page holds no timestamps: promoting the same store twice gives identical files.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
from pathlib import Path

from lambda_hat.engine.store import read_json, tmp_path
from lambda_hat.engine.tasks import Status
from lambda_hat.engine.typed import InputError
from lambda_hat.llc import trajectory

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l{text-align:left}img{max-width:100%;border:1px solid #eee;margin:4px 0}
.failed{color:#a00}.warned{background:#fff4d6}.warned td:nth-child(2)::after{content:" ⚠"}h3{margin-top:2em}"""

COLUMNS = ["sampler", "λ̂ ± SE", "ESS bulk", "R̂", "FGE / chain", "wall time [s]", "true λ", "finite-n λ", "status", "warnings", "plots"]


def _num(v, fmt: str) -> str:
    return "–" if v is None or v != v else format(v, fmt)


def _note(row: dict) -> str:
    """Where λ̂ is not the chains' own reading: VI's refinement by HMC, SGLD's bias correction."""
    if row.get("refined") == "hmc":
        return f" (refined by hmc; q read {row['llc_vi']:.4g})"
    raw = row.get("llc_raw")
    return f" (step's bias removed; chains read {raw:.4g})" if raw is not None and raw == raw else ""


def status_text(row: dict) -> str:
    """A run's status, with why where it is not done ('missing': in the plan, never run here)."""
    if row["status"] == Status.DONE:
        return str(row["status"])
    why = row["error"] or ("not run yet (run the workflow)" if row["status"] == Status.MISSING else None)
    return f"{row['status']}: {why}" if why else str(row["status"])


def _cells(row: dict) -> list[str]:
    ok = row["status"] == Status.DONE
    return [
        row["sampler"] + _note(row),
        f"{row['llc_mean']:.4g} ± {row['llc_sem']:.2g}" if ok else "–",
        _num(row["ess_bulk"], ".0f") if ok else "–",
        _num(row["r_hat"], ".3f") if ok else "–",
        _num(row["fge"], ".4g") if ok else "–",
        _num(row["walltime_sec"], ".1f"),
        _num(row["llc_true"], "g"),
        _num(row.get("llc_finite"), ".4g"),
        status_text(row),
        row.get("warning_details") or "",
    ]


ORDER = ["target", "trace", "running_llc", "rank", "hmc", "mclmc", "elbo"]
RUN_PLOTS = ORDER[1:]
PLOT_ALIASES = {"llc_convergence_combined": "running_llc"}  # the original Lambda-Hat's name


def run_plot_names(text: str, flag: str = "--promote-plots") -> tuple[str, ...]:
    """--promote-plots (or promote's --plot-name): comma-separated run plots (trace.png, running_llc, …) → their names."""
    names = [PLOT_ALIASES.get(n, n) for n in (p.strip().removesuffix(".png") for p in text.split(",")) if n]
    bad = [n for n in names if n not in RUN_PLOTS]
    if bad or not names:
        raise InputError(f"{flag} {text!r}: unknown plot {bad[0] if bad else ''!r}; allowed: {', '.join(RUN_PLOTS)} (.png optional)")
    return tuple(dict.fromkeys(names))


def _copy_plots(src_dir: Path, dest: Path, out: Path, only: tuple[str, ...] | None = None) -> list[str]:
    plots = (read_json(src_dir / "metrics.json") or {}).get("plots") or {}
    plots = {k: v for k, v in plots.items() if only is None or k in only}
    rels = []
    for name in (plots[k] for k in sorted(plots, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_dir / name, dest / name)
        rels.append((dest / name).relative_to(out).as_posix())
    return rels


COLS, PANELS = 4, 12  # a comparison image's panels per row and in all: one row of 400 targets was 180 000 px wide


def comparison_figures(rows: list[dict], out: Path) -> list[str]:
    """λ̂ per sampler with ± 2 SE bars, one panel per target, the true and finite-n λ where known: PANELS
    targets an image (comparison.png, comparison-2.png, …). Returns the images' names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lambda_hat.llc.diagnostics import truth_lines

    targets = list(dict.fromkeys(r["target"] for r in rows))
    names = []
    for first in range(0, len(targets), PANELS):
        part = targets[first : first + PANELS]
        cols = min(COLS, len(part))
        nrows = math.ceil(len(part) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.8 * nrows), squeeze=False)
        for ax in axes.flat[len(part) :]:
            ax.set_visible(False)
        for ax, t in zip(axes.flat, part):
            sub = [r for r in rows if r["target"] == t]
            xs = range(len(sub))
            ok = [r["status"] == Status.DONE for r in sub]
            ys = [r["llc_mean"] if k else float("nan") for r, k in zip(sub, ok)]
            es = [2 * r["llc_sem"] if k else 0 for r, k in zip(sub, ok)]
            ax.errorbar(xs, ys, yerr=es, fmt="o", capsize=4, label="λ̂ ± 2 SE")
            # a target's truths, from any of its runs (a failed one has none)
            for value, name, style in next((lines for lines in map(truth_lines, sub) if lines), []):
                ax.axhline(value, color="k", ls=style, lw=1, label=name)
            tags = [" (failed)" if not k else " (warning)" if r.get("warnings") else "" for r, k in zip(sub, ok)]
            ax.set_xticks(list(xs), [r["sampler"] + t for r, t in zip(sub, tags)], rotation=30, ha="right")
            ax.set(title=t, ylabel="λ̂", xlabel="sampler")
            ax.legend(fontsize=8)
        more = f" (targets {first + 1}–{first + len(part)} of {len(targets)})" if len(targets) > PANELS else ""
        fig.suptitle("LLC estimates by sampler" + more)
        fig.tight_layout()
        names.append("comparison.png" if first == 0 else f"comparison-{first // PANELS + 1}.png")
        fig.savefig(out / names[-1], metadata={"Software": None})
        plt.close(fig)
    return names


def replaceable(out: Path) -> bool:
    """A folder `build` may replace whole: new, empty, or a gallery it built."""
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    index = out / "index.html"
    return not any(out.iterdir()) or (index.is_file() and "<title>lambda-hat gallery</title>" in index.read_text(errors="replace")[:2000])


def snippet(out: Path, path: Path) -> None:
    """The gallery's README.md at `path` (the original Lambda-Hat's --snippet-out), its links
    rebased so that they still reach the gallery's plots from there."""
    rel = Path(os.path.relpath(out.resolve(), path.resolve().parent)).as_posix()
    text = (out / "README.md").read_text()
    if rel != ".":
        text = re.sub(r"\]\(([^)]+)\)", lambda m: f"]({rel}/{m.group(1)})", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build(rows: list[dict], run_diag: dict, target_diag: dict, out: Path, only: tuple[str, ...] | None = None) -> Path:
    """rows: the llc table; run_diag / target_diag: run or target ID → diagnose task directory;
    only: the run plots to show (all by default)."""
    tmp = tmp_path(out)
    tmp.mkdir(parents=True)
    figures = comparison_figures(rows, tmp)
    page = [f"<!doctype html><meta charset='utf-8'><title>lambda-hat gallery</title><style>{STYLE}</style>", "<h1>LLC estimates</h1>"]
    page += [f"<img src='{f}' alt='comparison of samplers'>" for f in figures]
    md = ["# LLC estimates", "", *(f"![comparison of samplers]({f})" for f in figures), ""]
    traj = trajectory.rows(rows)
    for i, name in enumerate(dict.fromkeys(r["target"] for r in traj)):  # λ̂ over training, per target
        if i == 0:
            page.append("<h2>LLC over training</h2>")
            md += ["## LLC over training", ""]
        trajectory.plot([r for r in traj if r["target"] == name], tmp / f"trajectory-{i}.png")
        page.append(f"<img src='trajectory-{i}.png' alt='LLC over training: {html.escape(name)}'>")
        md += [f"![LLC over training: {name}](trajectory-{i}.png)", ""]
    for target in dict.fromkeys(r["target"] for r in rows):
        sub = [r for r in rows if r["target"] == target]
        tid = sub[0]["target_id"]
        page.append(f"<h2 id='t-{tid}'>Target {html.escape(target)} <small>[{tid}], d = {sub[0]['d']}, n = {sub[0]['n']}</small></h2>")
        md += [f"## Target {target} [{tid}]", ""]
        for rel in _copy_plots(target_diag[tid], tmp / "targets" / tid, tmp) if tid in target_diag else []:
            page.append(f"<img src='{rel}' alt='target fit'>")
            md.append(f"![target fit]({rel})")
        page.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr>")
        md += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        sections = []
        for r in sub:
            rels = _copy_plots(run_diag[r["run_id"]], tmp / "runs" / r["run_id"], tmp, only) if r["run_id"] in run_diag else []
            cells = _cells(r)
            link = f"<a href='#r-{r['run_id']}'>{len(rels)} plots</a>" if rels else "–"
            cls = " class='failed'" if r["status"] != Status.DONE else (" class='warned'" if r.get("warnings") else "")
            page.append(
                f"<tr{cls}>"
                + "".join(f"<td class='l'>{html.escape(c)}</td>" if i in (0, 8, 9) else f"<td>{html.escape(c)}</td>" for i, c in enumerate(cells))
                + f"<td>{link}</td></tr>"
            )
            md.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " | " + " ".join(f"[{Path(p).stem}]({p})" for p in rels) + " |")
            if rels:
                sections.append(f"<h3 id='r-{r['run_id']}'>{html.escape(r['sampler'])} on {html.escape(target)} [{r['run_id']}]</h3>")
                sections += [f"<img src='{p}' alt='{Path(p).stem}'>" for p in rels]
        page.append("</table>")
        page += sections
        md.append("")
    (tmp / "index.html").write_text("\n".join(page) + "\n")
    (tmp / "README.md").write_text("\n".join(md) + "\n")
    if out.exists():  # swap in whole: a reader never sees half a gallery
        old = tmp_path(out)
        os.rename(out, old)
        shutil.rmtree(old)
    os.rename(tmp, out)
    return out / "index.html"
