"""Executor cards: small YAML files that say where tasks run, validated like the config."""

from __future__ import annotations

import math
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
        if self.init_blocks > self.max_blocks:  # Parsl submits init_blocks jobs at start, whatever max_blocks says
            bad("init_blocks", f"must be <= max_blocks ({self.max_blocks})")


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
    """A path, else NAME, NAME.yaml or NAME.yml under ./parsl_cards/, else among the packaged cards,
    else Snakemake's profile NAME (its --profile: under $XDG_CONFIG_HOME/snakemake or /etc/xdg/snakemake);
    a Snakemake profile is its directory. `asked` names where the name came from in the error."""
    path = Path(name)
    if path.is_file():
        return path
    if path.is_dir():
        return path if snakemake_profile(path) else _no_card(name, asked, "a directory with no Snakemake profile (config.yaml) in it")
    rel = str(name).removeprefix("./").removeprefix("parsl_cards/").removeprefix("config/parsl/")
    rel = Path(ORIGINAL_NAMES.get(rel.removesuffix(".yaml"), rel))
    for root in (Path("parsl_cards"), PACKAGED):
        cand = root / rel if (root / rel).is_file() else yaml_named(root, str(rel))
        if cand is not None:
            return cand
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    found = [d / "snakemake" / name for d in (home, Path("/etc/xdg")) if snakemake_profile(d / "snakemake" / name)]
    return found[0] if found else _no_card(name, asked, "no such file, card or Snakemake profile")


def _no_card(name, asked: str, why: str):
    cards = available_cards()
    stem = Path(str(name)).name.removesuffix(".yaml").removesuffix(".yml")
    like = [c for c in cards if c.rsplit("/", 1)[-1] == stem]  # `a100` for slurm/a100
    hint = f" (did you mean {' or '.join(like)}?)" if like else ""
    raise InputError(f"{asked} {name}: {why}{hint}; available cards: {', '.join(cards)}")


# ---------------------------------------------------------------- Snakemake profiles

PROFILE_FILES = ("config.v8+.yaml", "config.yaml")  # a Snakemake profile directory's file, newest first
SBATCH = {
    "partition": ("-p", "--partition"),
    "account": ("-A", "--account"),
    "walltime": ("-t", "--time"),
    "qos": ("--qos",),
    "constraint": ("-C", "--constraint"),
}


def snakemake_profile(directory: Path) -> Path | None:
    return next((directory / f for f in PROFILE_FILES if (directory / f).is_file()), None) if directory.is_dir() else None


def from_snakemake(profile, where: str, executor: str | None = None, resources: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """A Snakemake profile as a card, and its keys that have no counterpart here. Locally (no
    executor, or `local`) the local card, `cores` or `jobs` its tasks at once. On SLURM
    (`executor: slurm` or `cluster-generic`, v7's `slurm: true` or an sbatch `cluster` command)
    the packaged SLURM card, slurm/a100 where a GPU is asked for, with each Snakemake job a block
    running one task at a time: `jobs` is its max_blocks, default-resources' cpus_per_task, mem_mb
    and gpu (or an sbatch command's or slurm_extra's gres) what a block books, slurm_partition,
    slurm_account, slurm_qos, constraint and runtime (minutes) its provider's, slurm_extra an
    #SBATCH line. `restart-times` is the retries (here of lost workers only). `executor` and
    `resources` (KEY=VALUE strings): the command line's, over the profile's."""
    if not isinstance(profile, dict):
        raise InputError(f"{where}: a Snakemake profile must be a mapping")
    prof = {str(k).replace("_", "-"): v for k, v in profile.items()}  # Snakemake reads either spelling
    prof.update({"executor": executor} if executor else {})
    res = {**_resources(prof.pop("default-resources", None), where), **_resources(list(resources), "--default-resources")}
    submit = str(prof.pop("cluster", None) or prof.pop("cluster-generic-submit-cmd", None) or "")
    executor, v7 = prof.pop("executor", None), prof.pop("slurm", None)
    if executor not in (None, "local", "dryrun", "slurm", "cluster-generic"):
        raise InputError(f"{where}: executor: {executor!r} has no card here; allowed values: slurm, cluster-generic (an sbatch command), local")
    slurm = executor in ("slurm", "cluster-generic") or v7 is True or bool(submit)
    for key, all_of_them in (("jobs", "unlimited"), ("cores", "all")):
        if str(prof.get(key)) == all_of_them:  # the card's own
            prof.pop(key)
    for key in ("keep-going", "rerun-incomplete"):  # what the engine always does
        if prof.get(key) is True:
            prof.pop(key)
    if not slurm:
        card = load_yaml(PACKAGED / "local.yaml")
        for key in ("jobs", "cores"):  # both are tasks at once here
            if key in prof:
                card["workers"] = _number(prof.pop(key), where, key, whole=True, least=1)  # the profile's key named, not workers
    else:
        card, unread = _slurm_card(res, submit, where)
        prof.update({f"cluster {flag}": None for flag in unread})
        if "jobs" in prof:
            card["provider"]["max_blocks"] = _number(prof.pop("jobs"), where, "jobs", whole=True, least=1)
    if "restart-times" in prof:
        card["retries"] = _number(prof.pop("restart-times"), where, "restart-times", whole=True)
    return card, [*prof, *(f"default-resources.{k}" for k in res)]


def _slurm_card(res: dict, submit: str, where: str) -> tuple[dict, list[str]]:
    """The SLURM card for a profile's sbatch command and default-resources, each key taken out of
    `res` (what is left there has no counterpart here), and the sbatch command's flags it did not read."""
    take = lambda k: str(res.pop(k)).strip("'\"")  # noqa: E731  Snakemake profiles often quote strings twice
    extra = take("slurm_extra") if "slurm_extra" in res else ""
    # GPUs asked for: a gpu resource, a gres resource (gpu[:type][:N]), or sbatch's --gres=gpu… / --gpus… (not a partition named gpu)
    flags = re.search(r"--gres[=\s]+\S*?gpu(?::[A-Za-z]\w*)?(?::(\d+))?|--gpus(?:-per-\w+)?[=\s]+(?:\w+:)?(\d+)", f"{submit} {extra}")
    gres_value = take("gres") if "gres" in res else ""
    gres = re.fullmatch(r"gpu(?::[A-Za-z]\w*)?(?::(\d+))?", gres_value)
    gpus = max([_number(res.pop(k), where, f"default-resources.{k}", whole=True) for k in ("gpu", "gpus", "nvidia_gpu") if k in res] or [0])
    gpus = gpus or next((int(m.group(1) or m.group(m.lastindex or 1) or 1) for m in (gres, flags) if m), 0)
    card = load_yaml(PACKAGED / ("slurm/a100.yaml" if gpus else "slurm/cpu.yaml"))
    p = card["provider"]
    card["workers"], p["cores_per_node"], p["gpus_per_node"] = 1, 1, gpus  # a Snakemake job: one task, one core unless told
    p.pop("mem_per_node", None)
    # the card's own gres line gives way to what the profile asks for (its gres, or sbatch's own flags)
    options = [line for line in p.get("scheduler_options", "").splitlines() if "--gres" not in line]
    asked = ["#SBATCH " + "=".join(m.groups()) for m in re.finditer(r"(--(?:gres|gpus(?:-per-\w+)?))[=\s]+(\S+)", submit)]
    asked += [f"#SBATCH --gres={gres_value}"] * bool(gres_value)
    options += [f"#SBATCH --gres=gpu:{gpus}"] if gpus and not (asked or "--gres" in extra or "--gpus" in extra) else []
    p["scheduler_options"] = "\n".join(options + asked + [f"#SBATCH {extra}"] * bool(extra))
    read, flag_mem = [], None  # the sbatch command's flags, then the resources
    for key, flags in {**SBATCH, "cores_per_node": ("-c", "--cpus-per-task"), "mem": ("--mem",)}.items():
        m = re.search(r"(?:^|\s)(%s)(?:=|\s+)(\S+)" % "|".join(map(re.escape, flags)), submit)
        if m and not m.group(2).startswith("{"):  # a Snakemake template ({resources.mem_mb}) is the resources' below
            read.append(m.group(1))
            if key == "mem":
                flag_mem = m.group(2).strip("'\"")
            else:
                p[key] = int(m.group(2)) if key == "cores_per_node" else m.group(2).strip("'\"")
        elif m:
            read.append(m.group(1))
    read += ["--gres", "--gpus", "--gpus-per-node", "--gpus-per-task", "--job-name", "-J", "--output", "-o", "--error", "-e"]
    unread = [f for f in re.findall(r"(?:^|\s)(--?[A-Za-z][\w-]*)", submit) if f not in read]
    for k, key in (("slurm_partition", "partition"), ("slurm_account", "account"), ("slurm_qos", "qos"), ("constraint", "constraint"), ("runtime", "walltime")):
        if k in res:
            p[key] = take(k)
    if re.fullmatch(r"\d+(\.\d+)?", str(p["walltime"])):  # Snakemake's runtime and sbatch's --time count minutes
        p["walltime"] = f"{p['walltime']}m"
    if "cpus_per_task" in res:
        p["cores_per_node"] = _number(res.pop("cpus_per_task"), where, "default-resources.cpus_per_task", whole=True, least=1)
    # a block's memory as Snakemake's SLURM executor asks for it: mem_mb_per_cpu × its cpus, else
    # mem_mb, else mem (a size with its unit); a 0 there asks for none (the partition's default).
    # The resources' win over the sbatch command's --mem, whose 0 is SLURM's: all of the node's.
    per_cpu = _number(res.pop("mem_mb_per_cpu"), where, "default-resources.mem_mb_per_cpu") if "mem_mb_per_cpu" in res else 0
    mem_mb = _number(res.pop("mem_mb"), where, "default-resources.mem_mb") if "mem_mb" in res else 0
    mem = _size_mb(take("mem"), f"{where}: default-resources.mem") if "mem" in res else 0
    mb = per_cpu * p["cores_per_node"] or mem_mb or mem
    if not mb and flag_mem is not None:
        mb = _size_mb(flag_mem if flag_mem[-1:].isalpha() else f"{flag_mem}M", f"{where}: the sbatch command's --mem")  # sbatch's default unit
        if mb == 0:
            p["scheduler_options"] = "\n".join(filter(None, [p["scheduler_options"], "#SBATCH --mem=0"]))
    if mb:
        p["mem_per_node"] = max(1, math.ceil(mb / 1024))  # GB
    return card, unread


def _size_mb(size: str, where: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT])i?B?", size.strip(), re.I)
    if not m:
        raise InputError(f"{where}: expected a size with its unit, such as 4000MB or 4G, got {size!r}")
    return float(m.group(1)) * 1024.0 ** ("KMGT".index(m.group(2).upper()) - 1)


def _resources(value, where: str) -> dict:
    """default-resources as a mapping (v8) or a list of KEY=VALUE strings (v7)."""
    if value is None:
        return {}
    if isinstance(value, list):
        pairs = [str(v).split("=", 1) for v in value]
        if any(len(p) != 2 for p in pairs):
            raise InputError(f"{where}: default-resources: expected KEY=VALUE entries, got {value!r}")
        return {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise InputError(f"{where}: default-resources: expected a mapping or a list of KEY=VALUE, got {value!r}")
    return dict(value)


def _number(value, where: str, key: str, whole: bool = False, least: int = 0) -> float:
    try:
        out = float(str(value).strip("'\""))
    except ValueError:
        out = float("nan")
    if not out >= least or (whole and out != int(out)):
        raise InputError(f"{where}: {key}: expected a {'whole ' if whole else ''}number >= {least}, got {value!r}")
    return int(out) if whole else out


_NOTED: set[str] = set()


def load_card(path: Path | None, sets: tuple[str, ...] = (), snakemake: dict | None = None, asked: str = "--parsl-card") -> Card:
    """path None means the local default: ./parsl_cards/local.yaml if present, else Card().
    `snakemake`: Snakemake's --executor and --default-resources (KEY=VALUE strings) from the command
    line, over the profile at `path`, or alone. `asked`: the flag that named it, for the error."""
    found = find_card(path, asked) if path is not None else None
    profile = snakemake_profile(found) if found is not None else None
    if snakemake and found is not None and profile is None:
        raise InputError(f"--executor/--default-resources: {path} is a card, not a Snakemake profile; set its fields with --set (provider.partition=…)")
    if profile or snakemake:
        raw, where = (load_yaml(profile), str(profile)) if profile else ({}, "--executor/--default-resources")
        raw, ignored = from_snakemake(raw, where, **(snakemake or {}))
        if ignored and where not in _NOTED:  # once, however often the card is read
            _NOTED.add(where)
            print(f"note: {where}: a Snakemake profile, read as a card; not used here: {', '.join(ignored)}", file=sys.stderr)
    elif found is not None:
        raw, where = load_yaml(found), str(found)
    else:
        default = Path("parsl_cards/local.yaml")
        raw, where = (load_yaml(default), str(default)) if default.is_file() else ({}, "<default local card>")
    sets = tuple(_flat_set(s) for s in sets)
    raw = apply_overrides({} if raw is None else raw, sets, where, "--set", example="provider.partition=debug")  # [] stays: "expected a mapping"
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
