"""`--promote`: plots per run and target, a static gallery checked in headless Chromium."""

import hashlib
import shutil

import pandas as pd

from conftest import IMAGES, TINY, cli, ensure_chromium, in_chromium, write_config


def _files(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_promote_gallery_in_headless_chromium(project):
    ensure_chromium()
    cfg = {
        **TINY,
        "targets": TINY["targets"] + [{"model": "dln", "data": "small", "overrides": {"training": {"steps": 300}}}],
        "samplers": TINY["samplers"] + [{"name": "hmc", "overrides": {"draws": 60, "warmup": 60, "chains": 2}}],
    }
    write_config(project / "config" / "experiments.yaml", cfg)
    r = cli("workflow", "llc", "--local", "--promote", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    gallery = project / "results" / "gallery"
    index = gallery / "index.html"
    assert index.exists() and (gallery / "README.md").exists()
    html = index.read_text()
    assert str(project) not in html and "file:" not in html  # relative paths only
    n_runs = len(pd.read_parquet(project / "results" / "llc_runs.parquet"))
    assert n_runs == 4

    # the page works from a copy elsewhere
    copy = project / "copied-gallery"
    shutil.copytree(gallery, copy)
    images, rows = in_chromium(
        copy / "index.html", IMAGES, "return document.querySelectorAll('table tr td:first-child').length", screenshot=project / "gallery.png"
    )
    # comparison + 1 target plot (the quadratic has none) + trace/running/rank per run + hmc extras
    assert len(images) == 1 + 1 + 4 * 3 + 2, images
    assert all(complete and width > 0 for _, complete, width in images), images
    assert rows == n_runs
    assert (project / "gallery.png").stat().st_size > 10_000

    before = _files(gallery)
    r = cli("promote", cwd=project)
    assert r.returncode == 0 and "gallery: results/gallery/index.html" in r.stdout, r.stdout + r.stderr
    assert _files(gallery) == before  # reproducible, and nothing recomputed
    r = cli("workflow", "llc", "--local", "--promote", cwd=project)
    assert "0 done, 12 reused" in r.stdout  # diagnose tasks are cached like the rest


def test_a_refined_vi_row_says_so():
    """A VI run whose λ̂ is its HMC refinement's names it and q's own reading in its sampler cell."""
    from lambda_hat.engine.store import Status
    from lambda_hat.llc.gallery import _cells

    row = {"sampler": "vi_flow", "status": Status.DONE, "llc_mean": 10.41, "llc_sem": 0.072, "ess_bulk": 1868.0, "r_hat": 1.003, "fge": 1.25e5}
    row.update(walltime_sec=19.1, llc_true=10.5, llc_finite=None, warning_details=None, refined="hmc", llc_vi=11.19)
    assert _cells(row)[:2] == ["vi_flow (refined by hmc; q read 11.19)", "10.41 ± 0.072"]
    assert _cells({**row, "refined": "none"})[0] == _cells({**row, "refined": None})[0] == "vi_flow"


def test_an_sgld_row_with_its_bias_removed_says_so():
    """An SGLD run whose step halving ran shows the chains' own reading beside its λ̂."""
    from lambda_hat.engine.store import Status
    from lambda_hat.llc.gallery import _cells

    row = {"sampler": "sgld", "status": Status.DONE, "llc_mean": 10.46, "llc_sem": 0.1, "ess_bulk": 700.0, "r_hat": 1.003, "fge": 9.3e4}
    row.update(walltime_sec=11.3, llc_true=10.5, llc_finite=None, warning_details=None, llc_raw=10.68)
    assert _cells(row)[:2] == ["sgld (step's bias removed; chains read 10.68)", "10.46 ± 0.1"]
    assert _cells({**row, "llc_raw": float("nan")})[0] == _cells({**row, "llc_raw": None})[0] == "sgld"


def test_a_run_not_done_says_why():
    """A run that is not done shows its error; one never run here (interrupted before it started,
    or listed by `lambda-hat promote` before the workflow ran it) says so, not 'missing: None'."""
    from lambda_hat.engine.store import Status
    from lambda_hat.llc.gallery import _cells, status_text

    row = {"sampler": "hmc", "llc_mean": None, "llc_sem": None, "ess_bulk": None, "r_hat": None, "fge": None}
    row.update(walltime_sec=None, llc_true=None, llc_finite=None, warning_details=None)
    assert _cells({**row, "status": Status.MISSING, "error": None})[8] == "missing: not run yet (run the workflow)"
    assert status_text({**row, "status": Status.TIMEOUT, "error": "timed out after 900 s (killed)"}) == "timeout: timed out after 900 s (killed)"
    assert status_text({**row, "status": Status.FAILED, "error": None}) == "failed"
    assert status_text({**row, "status": Status.DONE, "error": None}) == "done"


def test_sgld_rank_plot_reads_block_means(tmp_path, monkeypatch):
    """SGLD's minibatch statistic per draw is mostly batch noise: its ranks look uniform however
    far apart the chains are. The rank plot draws the block means the table's R̂ reads."""
    import arviz as az
    import numpy as np

    from lambda_hat.engine.runner import Context
    from lambda_hat.engine.store import write_json
    from lambda_hat.llc import diagnostics, traces
    from lambda_hat.llc.estimator import summarize

    rng = np.random.default_rng(0)
    slow = np.zeros((4, 4000))  # a slow AR(1) signal of sd 0.3, two pairs of chains 0.5 apart
    for t in range(1, 4000):
        slow[:, t] = 0.99 * slow[:, t - 1] + rng.normal(0, 0.3 * np.sqrt(1 - 0.99**2), 4)
    slow += np.array([[0.0], [0.0], [0.5], [0.5]])
    llc = 10 + slow + rng.normal(0, 5, (4, 4000))  # white batch noise 100× the signal's variance
    idata = az.from_dict(posterior={"loss": llc / 100, "llc": llc}, sample_stats={"fge": np.broadcast_to(np.arange(1.0, 4001), (4, 4000))})
    traces.annotate(idata, {"minibatch_statistic": True})
    m = summarize(idata)
    traces.add_blocks(idata, m["diag_block"])
    per_draw = az.summary(idata, var_names=["llc"], round_to="none").loc["llc", "r_hat"]
    assert m["diag_block"] > 1 and m["r_hat"] > 1.1 > per_draw, (m["r_hat"], per_draw)  # the blocks see it; the draws do not
    run = tmp_path / "run"
    run.mkdir()
    traces.write(idata, run / "trace.nc")
    write_json(run / "metrics.json", {**m, "L_star": 0.1, "sample_sec": 1.0})
    write_json(run / "config.json", {"sampler": {"kind": "sgld"}})
    write_json(run / "manifest.json", {"label": "sgld@test"})
    drawn = []
    monkeypatch.setattr(az, "plot_rank", lambda data, **kw: drawn.append(np.asarray(getattr(data, "posterior", data)["llc"])))
    (tmp_path / "plots").mkdir()
    diagnostics.diagnose_run(Context({"run": "x"}, tmp_path / "plots", [run]), diagnostics.PlotTask(run="x"))
    (ranked,) = drawn
    assert ranked.shape == (4, 4000 // m["diag_block"]) and np.allclose(ranked, idata.blocked["llc"].values)


def test_comparison_images_stay_bounded_with_many_targets(tmp_path):
    """One panel per target, PANELS an image in rows of COLS (400 targets had made one image
    180 000 px wide): 30 targets are three images (12, 12, 6 panels) 4 across; 2 targets one row."""
    from PIL import Image

    from lambda_hat.engine.store import Status
    from lambda_hat.llc.gallery import COLS, PANELS, comparison_figures

    def rows(k):
        return [
            {"target": f"t{i}", "sampler": s, "status": Status.DONE, "llc_mean": 1.0 + i, "llc_sem": 0.1, "llc_true": None, "warnings": None}
            for i in range(k)
            for s in ("sgld", "hmc")
        ]

    (tmp_path / "many").mkdir()
    names = comparison_figures(rows(30), tmp_path / "many")
    assert PANELS < 30 <= 3 * PANELS and names == ["comparison.png", "comparison-2.png", "comparison-3.png"]
    sizes = [Image.open(tmp_path / "many" / n).size for n in names]
    (tmp_path / "two").mkdir()
    assert comparison_figures(rows(2), tmp_path / "two") == ["comparison.png"]
    two = Image.open(tmp_path / "two" / "comparison.png").size
    assert all(w == two[0] * COLS // 2 for w, _ in sizes) and sizes[0][1] == 3 * two[1] and sizes[2][1] == 2 * two[1], (sizes, two)


def test_plots_read_lambda_against_the_finite_n_value_where_it_differs(tmp_path, monkeypatch):
    """A regular model's λ̂ estimates its finite-n value (19.86 for d/2 = 20 on the quadratic at
    d = 40): the plots draw it beside the true λ, so four samplers near 19.86 do not read as
    biased low; a user's target with only a finite-n value gets that line alone."""
    from lambda_hat.engine.store import Status
    from lambda_hat.llc import gallery
    from lambda_hat.llc.diagnostics import truth_lines

    assert truth_lines({"llc_true": 20.0, "llc_finite": 19.86}) == [(20.0, "true λ = 20", "--"), (19.86, "finite-n λ = 19.86", "-.")]
    assert truth_lines({"llc_true": 18.0, "llc_finite": 17.995}) == [(18.0, "true λ = 18", "--")]  # within 0.1%: one line
    assert truth_lines({"llc_true": None, "llc_finite": 3.2}) == [(3.2, "finite-n λ = 3.2", "-.")]
    assert truth_lines({"llc_true": float("nan"), "llc_finite": None}) == [] == truth_lines({})

    drawn = []  # the comparison figure's horizontal lines: a target's from the first run that has them
    monkeypatch.setattr("matplotlib.axes.Axes.axhline", lambda ax, y, **kw: drawn.append((y, kw["ls"])))
    rows = [
        {"target": "quadratic", "sampler": "sgld", "status": Status.FAILED, "llc_mean": None, "llc_sem": None, "llc_true": None, "llc_finite": None},
        {"target": "quadratic", "sampler": "hmc", "status": Status.DONE, "llc_mean": 19.8, "llc_sem": 0.1, "llc_true": 20.0, "llc_finite": 19.86},
        {"target": "mine", "sampler": "hmc", "status": Status.DONE, "llc_mean": 3.1, "llc_sem": 0.1, "llc_true": float("nan"), "llc_finite": float("nan")},
    ]
    gallery.comparison_figures(rows, tmp_path)
    assert sorted(drawn) == [(19.86, "-."), (20.0, "--")], drawn  # the quadratic's; none for "mine"
