"""Typed configuration of the llc workflow: presets, overrides, validation, N × M expansion."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from .typed import InputError, build, deep_merge, fail, load_yaml, nonneg, plain, positive

# ---------------------------------------------------------------- models, data, training


@dataclass(frozen=True)
class MLP:
    kind: Literal["mlp"] = "mlp"
    in_dim: int = field(default=4, metadata=positive())
    out_dim: int = field(default=1, metadata=positive())
    depth: int = field(default=2, metadata=positive())  # hidden layers
    width: int = field(default=16, metadata=positive())
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    teacher_width: int | None = field(default=None, metadata=positive())  # None: same as width


@dataclass(frozen=True)
class DLN:
    """Deep linear network f(x) = W_L…W_1 x with widths [H0, …, HL]; teacher of rank `rank`."""

    kind: Literal["dln"] = "dln"
    widths: list[int] = field(default=(4, 4), metadata={"min_len": 2, "gt": 0})
    rank: int = field(default=1, metadata=nonneg())

    def check(self, bad):
        if any(w <= 0 for w in self.widths):
            bad("widths", f"all widths must be > 0, got {list(self.widths)}")
        if self.rank > min(self.widths):
            bad("rank", f"must be <= the narrowest width {min(self.widths)}, got {self.rank}")


@dataclass(frozen=True)
class Quadratic:
    """Analytic L(w) = ½‖w‖²; `n` only sets nβ (there is no data)."""

    kind: Literal["quadratic"] = "quadratic"
    dim: int = field(default=10, metadata=positive())
    n: int = field(default=1000, metadata={"gt": 1})


MODEL_KINDS = {"mlp": MLP, "dln": DLN, "quadratic": Quadratic}


@dataclass(frozen=True)
class Data:
    n: int = field(default=1000, metadata={"gt": 1})
    x_dist: Literal["gauss_iso", "gauss_aniso", "mixture", "heavy_tail"] = "gauss_iso"
    noise: Literal["gauss", "student_t"] = "gauss"
    noise_scale: float = field(default=0.1, metadata=positive())
    student_df: float = field(default=5.0, metadata={"gt": 2})  # > 2 keeps the variance finite


@dataclass(frozen=True)
class Training:
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = field(default=1e-2, metadata=positive())
    steps: int = field(default=2000, metadata=positive())
    batch_size: int | None = field(default=None, metadata=positive())  # None: full batch
    # Full-batch L-BFGS steps after training: an unconverged w* biases λ̂ downward (REFERENCE §1b)
    polish_steps: int = field(default=200, metadata=nonneg())


# ---------------------------------------------------------------- samplers


@dataclass(frozen=True)
class Posterior:
    beta0: float = field(default=1.0, metadata=positive())  # β = β0 / log n
    gamma: float = field(default=1.0, metadata=nonneg())  # localisation strength


@dataclass(frozen=True)
class SamplerBase:
    chains: int = field(default=4, metadata=positive())
    draws: int = field(default=1000, metadata=positive())  # kept draws per chain, after burn-in
    burnin: int = field(default=200, metadata=nonneg())
    seed: int = field(default=0, metadata=nonneg())
    posterior: Posterior = Posterior()


@dataclass(frozen=True)
class SGLD(SamplerBase):
    """Δw = (ε/2)(−nβ∇L_batch − γ(w − w*)) + N(0, ε), ε = step_size (devinterp convention)."""

    kind: Literal["sgld"] = "sgld"
    # auto: ε, burn-in and draws from the curvature and gradient noise measured at w*
    # (calibration.py), so that λ̂'s predicted bias is at most bias_target; a number is used as is.
    step_size: float | Literal["auto"] = field(default="auto", metadata=positive())
    burnin: int | Literal["auto"] = field(default="auto", metadata=nonneg())
    draws: int | Literal["auto"] = field(default="auto", metadata=positive())
    bias_target: float = field(default=0.01, metadata={"gt": 0, "lt": 0.5})
    max_steps: int = field(default=100_000, metadata=positive())  # budget per chain for auto burn-in + draws
    batch_size: int | None = field(default=256, metadata=positive())  # None: full batch
    precond: Literal["none", "rmsprop"] = "none"
    rmsprop_decay: float = field(default=0.99, metadata={"gt": 0, "lt": 1})
    rmsprop_eps: float = field(default=1e-5, metadata=positive())


@dataclass(frozen=True)
class HMC(SamplerBase):
    kind: Literal["hmc"] = "hmc"
    num_integration_steps: int = field(default=8, metadata=positive())
    warmup: int = field(default=300, metadata=positive())  # window-adaptation steps per chain
    target_accept: float = field(default=0.8, metadata={"gt": 0, "lt": 1})


@dataclass(frozen=True)
class MCLMC(SamplerBase):
    kind: Literal["mclmc"] = "mclmc"
    tune_steps: int = field(default=1000, metadata=positive())  # steps of BlackJAX's L / step-size finder
    diagonal_preconditioning: bool = False


@dataclass(frozen=True)
class VI(SamplerBase):
    """Variational family around w*: mean-field Gaussian, a mixture of `components` Gaussians of
    rank `rank`, or a normalizing flow of `layers` affine couplings (samplers/vi.py)."""

    kind: Literal["vi"] = "vi"
    family: Literal["meanfield", "lowrank", "flow"] = "meanfield"
    components: int = field(default=1, metadata=positive())
    rank: int = field(default=2, metadata=positive())
    layers: int = field(default=8, metadata=positive())
    hidden: int = field(default=64, metadata=positive())
    steps: int = field(default=2000, metadata=positive())
    lr: float = field(default=1e-2, metadata=positive())
    mc_samples: int = field(default=8, metadata=positive())
    batch_size: int | None = field(default=None, metadata=positive())

    def check(self, bad):
        if self.family != "lowrank" and self.components != 1:
            bad("components", f"{self.family} takes components: 1; use family: lowrank for a mixture")


SAMPLER_KINDS = {"sgld": SGLD, "hmc": HMC, "mclmc": MCLMC, "vi": VI}

# ---------------------------------------------------------------- the experiments file


@dataclass(frozen=True)
class SamplerEntry:
    name: str
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TargetEntry:
    model: str
    data: str | None = None
    seed: int = field(default=0, metadata=nonneg())
    overrides: dict = field(default_factory=dict)
    samplers: list[SamplerEntry] | None = None  # replaces the top-level list for this target


@dataclass(frozen=True)
class RetryOf:
    """Written into results/retry.yaml: where the failed runs came from, and their IDs."""

    config: str
    runs: list[str]


@dataclass(frozen=True)
class Experiments:
    targets: list[TargetEntry] = field(metadata={"min_len": 1})
    samplers: list[SamplerEntry] = ()
    jax_enable_x64: bool = True
    store_root: str = "runs"
    task_timeout: float | None = field(default=None, metadata=positive())  # seconds per task
    retry_of: RetryOf | None = None


@dataclass(frozen=True)
class Target:
    label: str
    entry: TargetEntry
    model: MLP | DLN | Quadratic
    data: Data | None
    training: Training | None
    seed: int
    x64: bool

    def semantic(self) -> dict:
        """What determines the trained target; its hash is the target ID."""
        return {
            "model": plain(self.model),
            "data": plain(self.data),
            "training": plain(self.training),
            "seed": self.seed,
            "x64": self.x64,
        }


@dataclass(frozen=True)
class Run:
    label: str
    name: str  # the sampler entry's name
    entry: SamplerEntry
    sampler: SGLD | HMC | MCLMC | VI
    target: Target


@dataclass(frozen=True)
class Plan:
    path: Path
    config: Experiments
    targets: list[Target]
    runs: list[Run]


# ---------------------------------------------------------------- presets


def preset_dirs(group: str, config_path: Path) -> list[Path]:
    """Project presets (next to the config file, then ./config/presets) win over packaged ones."""
    dirs = [config_path.parent / "presets" / group, Path.cwd() / "config" / "presets" / group]
    dirs.append(Path(__file__).parent / "presets" / group)
    return [d for d in dict.fromkeys(dirs)]


def available_presets(group: str, config_path: Path) -> list[str]:
    names = set()
    for d in preset_dirs(group, config_path):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_preset(group: str, name: str, config_path: Path, where: str, key: str) -> dict:
    for d in preset_dirs(group, config_path):
        path = d / f"{name}.yaml"
        if path.is_file():
            data = load_yaml(path)
            if not isinstance(data, dict):
                fail(str(path), "", "a preset must be a mapping")
            return data
    allowed = ", ".join(available_presets(group, config_path))
    fail(where, key, f"unknown {group} preset {name!r}; available: {allowed}")


def _tagged(kinds: dict, data: dict, where: str, key: str):
    kind = data.get("kind")
    if kind not in kinds:
        fail(where, f"{key}.kind", f"{kind!r} is not allowed; allowed values: {', '.join(kinds)}")
    return build(kinds[kind], data, where, key)


def _dict(value, where: str, key: str) -> dict:
    if not isinstance(value, dict):
        fail(where, key, f"expected a mapping, got {value!r}")
    return value


# ---------------------------------------------------------------- resolution


def resolve_target(entry: TargetEntry, x64: bool, path: Path, key: str) -> Target:
    where = str(path)
    over = _dict(entry.overrides, where, f"{key}.overrides")
    for k in over:
        if k not in ("model", "data", "training"):
            fail(where, f"{key}.overrides.{k}", "unknown key; allowed keys: model, data, training")
    preset = load_preset("model", entry.model, path, where, f"{key}.model")
    for k in preset:
        if k not in ("model", "training"):
            fail(where, f"{key}.model", f"preset {entry.model!r} has unknown section {k!r}; allowed: model, training")
    model_dict = deep_merge(_dict(preset.get("model", {}), where, f"{key}.model"), _dict(over.get("model", {}), where, f"{key}.overrides.model"))
    model = _tagged(MODEL_KINDS, model_dict, where, f"{key}.model")
    if isinstance(model, Quadratic):
        unused = (["data"] if entry.data is not None else []) + [f"overrides.{k}" for k in ("data", "training") if k in over]
        if unused:
            fail(where, f"{key}.{unused[0]}", "not used by model kind 'quadratic' (it has no data); remove it")
        data = training = None
    else:
        if entry.data is None:
            fail(where, f"{key}.data", f"missing required key; available: {', '.join(available_presets('data', path))}")
        data_dict = deep_merge(load_preset("data", entry.data, path, where, f"{key}.data"), _dict(over.get("data", {}), where, f"{key}.overrides.data"))
        data = build(Data, data_dict, where, f"{key}.data")
        train_dict = deep_merge(_dict(preset.get("training", {}), where, f"{key}.training"), _dict(over.get("training", {}), where, f"{key}.overrides.training"))
        training = build(Training, train_dict, where, f"{key}.training")
    label = f"{entry.model}" + (f"/{entry.data}" if data else "") + f"/s{entry.seed}"
    return Target(label, entry, model, data, training, entry.seed, x64)


def resolve_sampler(entry: SamplerEntry, path: Path, key: str):
    where = str(path)
    preset = load_preset("sampler", entry.name, path, where, f"{key}.name")
    merged = deep_merge(preset, _dict(entry.overrides, where, f"{key}.overrides"))
    return _tagged(SAMPLER_KINDS, merged, where, key)


def load_plan(path: Path) -> Plan:
    """Read, merge, validate and expand an experiments file. Raises InputError on any problem."""
    path = Path(path)
    raw = load_yaml(path)
    if raw is None:
        fail(str(path), "", "file is empty; expected keys targets, samplers")
    cfg: Experiments = build(Experiments, raw, str(path))
    targets, seen_targets = [], {}
    for i, te in enumerate(cfg.targets):
        t = resolve_target(te, cfg.jax_enable_x64, path, f"targets[{i}]")
        key = repr(t.semantic())
        if key in seen_targets:
            fail(str(path), f"targets[{i}]", f"duplicates targets[{seen_targets[key]}] (same resolved config)")
        seen_targets[key] = i
        targets.append(t)
    labels = [t.label for t in targets]  # same presets, different overrides: number them
    targets = [replace(t, label=f"{t.label}#{i}") if labels.count(t.label) > 1 else t for i, t in enumerate(targets)]
    runs = []
    for i, (te, t) in enumerate(zip(cfg.targets, targets)):
        entries, skey = (te.samplers, f"targets[{i}].samplers") if te.samplers is not None else (cfg.samplers, "samplers")
        if not entries:
            fail(str(path), skey, "no samplers for this target; list at least one (hmc, mclmc, sgld, vi, …)")
        seen: dict[str, int] = {}
        names = [se.name for se in entries]
        for j, se in enumerate(entries):
            s = resolve_sampler(se, path, f"{skey}[{j}]")
            skey_ = repr(plain(s))
            if skey_ in seen:
                fail(str(path), f"{skey}[{j}]", f"duplicates {skey}[{seen[skey_]}] (same resolved config)")
            seen[skey_] = j
            name = se.name if names.count(se.name) == 1 else f"{se.name}#{j}"
            runs.append(Run(f"{name}@{t.label}", name, se, s, t))
    return Plan(path, cfg, targets, runs)


__all__ = ["InputError", "load_plan", "Plan", "Target", "Run"]
