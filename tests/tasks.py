"""Task functions for engine tests (imported by name in the task's child process)."""

import os
import time


def noop(ctx):
    return {"value": ctx.config.get("value", 0)}


def sleeper(ctx):
    (ctx.workdir / "pid").write_text(str(os.getpid()))
    time.sleep(ctx.config["sleep"])
    return {"slept": ctx.config["sleep"]}


def boom(ctx):
    raise ValueError("boom: this task always fails")


def read_dep(ctx):
    return {"dep_value": __import__("json").loads((ctx.deps[0] / "metrics.json").read_text())["value"]}
