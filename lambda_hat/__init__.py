"""lambda-hat: Parsl workflows for ML experiment sweeps and Local Learning Coefficient estimates."""

import importlib.util
import os

# XLA's CPU backend compiles at LLVM -O2 by default, and compiling is most of a small run's cost
# (an MCLMC run on a d = 10 target: 5.8 s compiling, 0.07 s sampling). -O1 halves compile times
# with no measured loss in sampling speed, up to d = 1e5 (benchmarks/llc_vs_devinterp.py). Set
# before JAX starts its backend, so for task processes too; a user's own setting wins, and where
# an accelerator plugin is installed (never measured there) nothing changes.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags and not any(importlib.util.find_spec(m) for m in ("jax_plugins", "libtpu")):
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=1".strip()
