"""lambda-hat: Parsl workflows for ML experiment sweeps and Local Learning Coefficient estimates."""

import importlib.util
import os

# XLA's CPU backend compiles at LLVM -O3 by default, and compiling is most of a small run's cost
# (an MCLMC run on a d = 10 target: 5 s compiling, 0.05 s sampling). -O2 compiles up to 5× faster
# (SGLD 2.7 → 0.5 s, flow VI 4.9 → 2.3 s) with no measured loss in sampling speed. Set before JAX
# starts its backend, so for task processes too; a user's own setting wins, and where an
# accelerator plugin is installed (never measured there) nothing changes.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags and not any(importlib.util.find_spec(m) for m in ("jax_plugins", "libtpu")):
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=2".strip()


def __getattr__(name):  # `from lambda_hat import task`: loaded on first use, so `import lambda_hat` stays free
    if name == "task":
        from lambda_hat.engine.tasks import task

        return task
    raise AttributeError(f"module 'lambda_hat' has no attribute {name!r}")
