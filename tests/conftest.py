import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_script = Path(sys.executable).parent / "lambda-hat"
LH = [str(_script)] if _script.exists() else [sys.executable, "-m", "lambda_hat.cli"]

# One JAX compilation cache for the whole suite (the runner's default is one per store): task
# processes of later tests load the programs that earlier tests compiled. Made only where unset:
# pytest-xdist's workers inherit the controller's.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lambda-hat-tests-jax-")
# as the runner sets for task processes: in-process tests share their many small programs too
# (the calibration of one target is the same program for every sampler run on it)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# XLA's older CPU emitters: they compiled programs 2–3.5× faster (benchmarks/README.md), and
# compiling is most of what the suite's small targets cost (the whole suite, back to back: 9 min
# 11 s against 10 min 59 s with XLA's defaults; the estimates are checked against their truths
# either way). The default run and the benchmarks keep XLA's defaults, which run larger targets
# faster; XLA_FLAGS=--xla_cpu_use_fusion_emitters=true pytest runs the suite with them. Task
# processes inherit it. Only where this jaxlib knows the flag: XLA aborts on one it does not, and
# a later jaxlib may drop it (a 0.6 s check, in the process that sets it; workers inherit that).
OLD_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    flags = f"{os.environ.get('XLA_FLAGS', '')} {OLD_EMITTERS}".strip()
    probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    if subprocess.run([sys.executable, "-c", probe], env={**os.environ, "XLA_FLAGS": flags}, capture_output=True).returncode == 0:
        os.environ["XLA_FLAGS"] = flags

# Three pytest-xdist workers on two cores (addopts): torch's OpenMP threads, one per core in each
# worker, spin while they wait, taking another worker's core: PEFT fine-tuning ran 4–5× slower in the
# suite than alone. One thread per worker (tasks of the workflows tests start inherit it).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# A tiny, fast llc config: a data-free quadratic target and a short SGLD chain.
TINY = {
    "jax_enable_x64": True,
    "targets": [{"model": "quadratic", "seed": 0, "overrides": {"model": {"dim": 4}}}],
    "samplers": [{"name": "sgld", "overrides": {"step_size": 1e-3, "batch_size": None, "draws": 200, "burnin": 50, "chains": 2}}],
}


def needs(*modules: str):
    """Skip a test module where an optional dependency is missing, without importing it: each
    pytest-xdist worker collects every module, and torch, PyG, PEFT, MLflow and W&B together
    took ~10 s to import in each, where one worker runs the tests that use them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed")


def task_processes(under: Path, procs=None) -> list:
    """(process, task directory) of every task process running a task under `under`: a fresh
    interpreter (python -m lambda_hat.engine.runner) or one forked from the runner's fork server,
    each with its task's log.txt open as stdout."""
    import psutil

    found = []
    for p in psutil.process_iter() if procs is None else procs:
        try:
            cmd = " ".join(p.cmdline())
            if "lambda_hat.engine.runner" in cmd or "multiprocessing.forkserver" in cmd:
                logs = [Path(f.path) for f in p.open_files() if f.path.endswith("/log.txt") and f.path.startswith(str(under))]
                if logs:
                    found.append((p, logs[0].parent))
        except psutil.Error:  # finished meanwhile
            pass
    return found


def fork_servers(cwd: Path) -> list:
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if "multiprocessing.forkserver" in " ".join(p.cmdline()) and p.cwd() == str(cwd) and not p.open_files():
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temporary project directory with the repo's cards, used as the working directory."""
    shutil.copytree(ROOT / "parsl_cards", tmp_path / "parsl_cards")
    (tmp_path / "config").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli(*args, cwd=None, timeout=600, env=None):
    """Run the real command line in a child process."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*LH, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


def ensure_chromium():
    """Debian's chromium + chromium-driver, installed here when missing and we may (root + apt).
    One install at a time: two test files need it, and pytest-xdist may run them at once (apt-get
    fails at once on the lock another holds, and its test would be skipped)."""
    import fcntl

    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium/chromedriver missing and no root apt-get to install them")
    with open(Path(tempfile.gettempdir()) / "lambda-hat-tests-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if shutil.which("chromium") and shutil.which("chromedriver"):  # installed while we waited
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        wait = ["-o", "DPkg::Lock::Timeout=600"]  # and for any other apt run on the machine
        for cmd in (["apt-get", *wait, "update", "-qq"], ["apt-get", *wait, "install", "-y", "-qq", "chromium", "chromium-driver"]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if r.returncode:
                pytest.skip(f"could not install chromium: {r.stderr[-300:]}")


IMAGES = "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"


def in_chromium(page: Path, *scripts: str, screenshot: Path | None = None) -> list:
    """Open a local page in headless Chromium and return what each script returns."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,2400",
              "--disable-background-networking", "--disable-component-update", "--no-first-run"):  # fmt: skip
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(page.as_uri())
        out = [driver.execute_script(s) for s in scripts]
        if screenshot:
            driver.save_screenshot(str(screenshot))
        return out
    finally:
        driver.quit()
