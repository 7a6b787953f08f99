"""Executor cards: small YAML files that say where tasks run, validated like the config."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .typed import InputError, build, load_yaml, nonneg, positive


@dataclass(frozen=True)
class Provider:
    type: Literal["local", "slurm"] = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    walltime: str = "01:00:00"
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
        if self.type == "local" and (self.partition or self.account or self.qos or self.gpus_per_node):
            bad("type", "partition/account/qos/gpus_per_node need type: slurm")
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
    provider: Provider = Provider()

    @property
    def capacity(self) -> int:
        """Tasks that can run at once."""
        if self.executor == "threads":
            return self.workers
        return self.workers * self.provider.nodes_per_block * self.provider.max_blocks

    def check(self, bad):
        if self.executor == "threads" and self.provider != Provider():
            bad("provider", "only executor: htex takes a provider")


def apply_sets(raw: dict, sets: tuple[str, ...], where: str) -> dict:
    """`--set provider.partition=debug`: values are parsed as YAML (numbers, booleans, null)."""
    raw = dict(raw)
    for s in sets:
        if "=" not in s:
            raise InputError(f"--set {s!r}: expected KEY=VALUE (e.g. provider.partition=debug)")
        key, value = s.split("=", 1)
        node, parts = raw, key.split(".")
        for p in parts[:-1]:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = yaml.safe_load(value) if value else ""
    return raw


def load_card(path: Path | None, sets: tuple[str, ...] = ()) -> Card:
    """path None means the local default: ./parsl_cards/local.yaml if present, else Card()."""
    if path is None:
        default = Path("parsl_cards/local.yaml")
        raw, where = (load_yaml(default), str(default)) if default.is_file() else ({}, "<default local card>")
    else:
        raw, where = load_yaml(Path(path)), str(path)
    raw = apply_sets(raw or {}, sets, where)
    return build(Card, raw, where)


def parsl_config(card: Card, run_dir: Path, extra: dict[str, Card] | None = None):
    """A fresh Parsl Config for one load (Parsl refuses to reuse one): the card's executor,
    labelled "lh", and one more per `extra` card under its own label."""
    from parsl.config import Config

    executors = [executor(card, "lh"), *(executor(c, label) for label, c in (extra or {}).items())]
    return Config(executors=executors, run_dir=str(run_dir), strategy_period=card.strategy_period, usage_tracking=0)


def executor(card: Card, label: str):
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor

    if card.executor == "threads":
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
            max_blocks=p.max_blocks, walltime=p.walltime, scheduler_options=p.scheduler_options,
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
    )
