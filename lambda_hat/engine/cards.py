"""Executor cards: small YAML files that say where tasks run, validated like the config."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from lambda_hat.engine.typed import Duration, InputError, apply_overrides, build, canonical, load_yaml, nonneg, positive, yaml_named, yaml_stems


@dataclass(frozen=True)
class Provider:
    type: Literal["local", "slurm"] = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    walltime: Duration = 3600.0  # per block; any duration syntax, e.g. 8h or 08:00:00
    nodes_per_block: int = field(default=1, metadata=positive())
    cores_per_node: int | None = field(default=None, metadata=positive())
    mem_per_node: int | None = field(default=None, metadata=positive())  # GB
    gpus_per_node: int = field(default=0, metadata=nonneg())
    init_blocks: int = field(default=1, metadata=nonneg())
    min_blocks: int = field(default=0, metadata=nonneg())
    max_blocks: int = field(default=1, metadata=positive())
    exclusive: bool = False  # Parsl's default (True) books a whole node for a 1-GPU block
    launcher: Literal["single", "srun"] = "single"
    scheduler_options: str = ""
    worker_init: str = ""
    cmd_timeout: int = field(default=60, metadata=positive())

    def check(self, bad):
        if self.type == "local" and (self.partition or self.account or self.qos):
            bad("type", "partition/account/qos need type: slurm")
        if self.min_blocks > self.max_blocks:
            bad("min_blocks", f"must be <= max_blocks ({self.max_blocks})")


@dataclass(frozen=True)
class Card:
    executor: Literal["threads", "htex"] = "threads"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1, metadata=positive())  # per node
    address: str | None = None  # HTEX interchange address reachable from workers
    strategy_period: float = field(default=5.0, metadata=positive())
    # HTEX: seconds between worker heartbeats, and of silence before a worker's tasks are failed
    # (a cancelled SLURM job is noticed only then).
    heartbeat_period: int = field(default=30, metadata=positive())
    heartbeat_threshold: int = field(default=120, metadata=positive())
    # Parsl retries of a task whose worker or node was lost (never of a task that failed on its
    # own); default 1 on htex, 0 on threads (a thread cannot be lost).
    retries: int | None = field(default=None, metadata=nonneg())
    provider: Provider = Provider()

    @property
    def lost_worker_retries(self) -> int:
        return self.retries if self.retries is not None else int(self.executor == "htex")

    @property
    def capacity(self) -> int:
        """Tasks that can run at once."""
        if self.executor == "threads":
            return self.workers
        gpus = self.provider.gpus_per_node  # Parsl starts no more workers than GPUs
        return (min(self.workers, gpus) if gpus else self.workers) * self.provider.nodes_per_block * self.provider.max_blocks

    def check(self, bad):
        if self.executor == "threads" and self.provider != Provider():
            bad("provider", "only executor: htex takes a provider")


# The original Lambda-Hat's cards were flat (walltime, partition, max_workers, … at the top, and
# --set walltime=04:00:00): those keys name ours.
Card.ALIASES = {"max_workers": "workers", **{f.name: f"provider.{f.name}" for f in fields(Provider) if f.name not in {g.name for g in fields(Card)}}}
ORIGINAL_NAMES = {"slurm/gpu-a100": "slurm/a100"}  # its config/parsl/ cards by our names

PACKAGED = Path(__file__).parents[1] / "parsl_cards"  # the repository's parsl_cards/, installed as package data


def available_cards() -> list[str]:
    return sorted(yaml_stems(Path("parsl_cards"), recursive=True) | yaml_stems(PACKAGED, recursive=True))


def find_card(name, asked: str = "--parsl-card") -> Path:
    """A path, else NAME, NAME.yaml or NAME.yml under ./parsl_cards/, else among the packaged cards;
    `asked` names where the name came from in the error."""
    path = Path(name)
    if path.is_file():
        return path
    rel = str(name).removeprefix("./").removeprefix("parsl_cards/").removeprefix("config/parsl/")
    rel = Path(ORIGINAL_NAMES.get(rel.removesuffix(".yaml"), rel))
    for root in (Path("parsl_cards"), PACKAGED):
        cand = root / rel if (root / rel).is_file() else yaml_named(root, str(rel))
        if cand is not None:
            return cand
    raise InputError(f"{asked} {name}: no such file or card; available cards: {', '.join(available_cards())}")


def load_card(path: Path | None, sets: tuple[str, ...] = ()) -> Card:
    """path None means the local default: ./parsl_cards/local.yaml if present, else Card()."""
    if path is None:
        default = Path("parsl_cards/local.yaml")
        raw, where = (load_yaml(default), str(default)) if default.is_file() else ({}, "<default local card>")
    else:
        path = find_card(path)
        raw, where = load_yaml(path), str(path)
    sets = tuple(_flat_set(s) for s in sets)
    raw = apply_overrides(raw or {}, sets, where, "--set")
    raw = canonical(Card, raw, where)
    if isinstance(raw, dict) and isinstance(raw.get("provider"), dict) and raw["provider"].get("type") == "slurm":
        raw.setdefault("executor", "htex")  # SLURM blocks run HTEX workers: an original flat card names no executor
    return build(Card, raw, f"{where} with --set {' '.join(sets)}" if sets else where)  # a bad key may be the --set's


def _flat_set(pair: str) -> str:
    """A --set of a key of Card.ALIASES sets what it names (--set walltime=… is
    provider.walltime=…), so that it overrides the card's value instead of clashing with it."""
    sign, rest = re.match(r"([+~]*)(.*)", pair, re.S).groups()
    head = re.split(r"[.=]", rest, maxsplit=1)[0]
    return sign + Card.ALIASES[head] + rest[len(head) :] if head in Card.ALIASES else pair


def gpu_warning(card: Card) -> str | None:
    """A local card that binds GPUs, where JAX has no CUDA plugin (jax_cuda12_plugin, …): its tasks
    would run on the CPU unannounced. (A SLURM card's nodes are not this machine: not checked.)"""
    import pkgutil

    if card.provider.type != "local" or not card.provider.gpus_per_node:
        return None
    if any(m.name.startswith("jax_cuda") and m.name.endswith("_plugin") for m in pkgutil.iter_modules()):
        return None
    return (
        f"warning: the card binds {card.provider.gpus_per_node} GPU(s), but this environment's JAX has no CUDA plugin: "
        "its tasks run on the CPU (pip install 'jax[cuda13]', or cuda12, at your jax's version)"
    )


def slurm_time(seconds: float) -> str:
    """SLURM's [D-]HH:MM:SS (whole seconds, rounded up)."""
    s = int(-(-seconds // 1))
    d, s = divmod(s, 86400)
    clock = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{d}-{clock}" if d else clock


def parsl_config(card: Card, run_dir: Path, extra: dict[str, Card] | None = None):
    """A fresh Parsl Config for one load (Parsl refuses to reuse one): the card's executor,
    labelled "lh", and one more per `extra` card under its own label."""
    from parsl.config import Config

    executors = [executor(card, "lh"), *(executor(c, label) for label, c in (extra or {}).items())]
    return Config(
        executors=executors, run_dir=str(run_dir), strategy_period=card.strategy_period, usage_tracking=0,
        retries=card.lost_worker_retries, retry_handler=retry_lost,
    )  # fmt: skip


def retry_lost(exception, task_record) -> float:
    """Parsl's retry cost of a failure: a lost worker or manager (killed, preempted, node gone)
    costs one retry; anything else ends the task at once. A task's own errors never reach Parsl:
    runner.execute records them as the task's outcome."""
    from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

    return 1.0 if isinstance(exception, (ManagerLost, WorkerLost)) else float("inf")


def node_cores(card: Card) -> int:
    """The cores of a node the card runs on: its cores_per_node, else this machine's (the ones this
    process may use) for a local card; 0 where unknown (a SLURM card that names none)."""
    if card.provider.cores_per_node or card.provider.type != "local":
        return card.provider.cores_per_node or 0
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _affinity(card: Card) -> str:
    """Each HTEX worker pinned to its block of the node's cores (its task processes inherit it)
    where that is possible: Linux, and no more workers than cores, which Parsl refuses."""
    if not hasattr(os, "sched_getaffinity"):
        return "none"
    return "block" if card.workers <= node_cores(card) else "none"


def executor(card: Card, label: str):
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor

    if card.executor == "threads":
        from lambda_hat.engine.runner import share_cores

        share_cores(card.workers)
        return ThreadPoolExecutor(label=label, max_threads=card.workers)
    # Parsl starts interchange.py and the workers through PATH: make an unactivated
    # virtual environment (.venv/bin/lambda-hat …) work too.
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    p = card.provider
    if p.type == "local":
        from parsl.providers import LocalProvider

        provider = LocalProvider(init_blocks=p.init_blocks, min_blocks=p.min_blocks, max_blocks=p.max_blocks, worker_init=p.worker_init)
    else:
        from parsl.launchers import SingleNodeLauncher, SrunLauncher
        from parsl.providers import SlurmProvider

        provider = SlurmProvider(
            partition=p.partition, account=p.account, qos=p.qos, constraint=p.constraint,
            nodes_per_block=p.nodes_per_block, cores_per_node=p.cores_per_node, mem_per_node=p.mem_per_node,
            gpus_per_node=p.gpus_per_node or None, init_blocks=p.init_blocks, min_blocks=p.min_blocks,
            max_blocks=p.max_blocks, walltime=slurm_time(p.walltime), scheduler_options=p.scheduler_options,
            worker_init=p.worker_init, cmd_timeout=p.cmd_timeout, exclusive=p.exclusive,
            launcher=SrunLauncher() if p.launcher == "srun" else SingleNodeLauncher(),
        )  # fmt: skip
    return HighThroughputExecutor(
        label=label,
        max_workers_per_node=card.workers,
        available_accelerators=p.gpus_per_node or (),  # one GPU per worker via CUDA_VISIBLE_DEVICES
        address=card.address or ("127.0.0.1" if p.type == "local" else None),
        heartbeat_period=card.heartbeat_period,
        heartbeat_threshold=card.heartbeat_threshold,
        provider=provider,
        cpu_affinity=_affinity(card),
    )
