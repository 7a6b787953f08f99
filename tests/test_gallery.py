"""`--promote`: plots per run and target, a static gallery checked in headless Chromium."""

import hashlib
import os
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import TINY, cli, write_config


def _ensure_chromium():
    """Debian's chromium + chromium-driver, installed here when missing and we may (root + apt)."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium/chromedriver missing and no root apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode:
            pytest.skip(f"could not install chromium: {r.stderr[-300:]}")


def _files(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_promote_gallery_in_headless_chromium(project):
    _ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,2400",
              "--disable-background-networking", "--disable-component-update", "--no-first-run"):  # fmt: skip
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    try:
        driver.get((copy / "index.html").as_uri())
        images = driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        rows = driver.execute_script("return document.querySelectorAll('table tr td:first-child').length")
        driver.save_screenshot(str(project / "gallery.png"))
    finally:
        driver.quit()
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
