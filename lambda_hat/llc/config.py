"""Typed configuration of the llc workflow: presets, overrides, validation, N × M expansion."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar, Literal

from lambda_hat.engine.typed import (
    Duration,
    InputError,
    apply_overrides,
    build,
    canonical,
    check_given,
    deep_merge,
    fail,
    import_ref,
    load_yaml,
    nonneg,
    plain,
    positive,
    refuse_hydra_setting,
    seed_range,
    split_pair,
    sweep_values,
    whole,
    yaml_named,
    yaml_stems,
)

# ---------------------------------------------------------------- models, data, training


ACTIVATION = Literal["tanh", "relu", "gelu", "identity"]


@dataclass(frozen=True)
class MLP:
    # Keys added after the first targets were stored: at these values they stay out of the target
    # ID (identity()), so those targets keep theirs.
    ADDED: ClassVar[dict] = {"widths": None, "init": "lecun", "layernorm": False, "skip_connections": False, "residual_period": 2}

    kind: Literal["mlp"] = "mlp"
    in_dim: int = field(default=4, metadata=positive())
    out_dim: int = field(default=1, metadata=positive())
    depth: int = field(default=2, metadata=positive())  # hidden layers
    width: int | None = field(default=16, metadata=positive())  # None where `widths` differ
    activation: ACTIVATION = "tanh"
    bias: bool = True
    # the original Lambda-Hat's: hidden widths layer by layer (equal ones are held as depth × width)
    widths: list[int] | None = field(default=None, metadata={"min_len": 1})
    init: Literal["lecun", "he", "xavier", "orthogonal"] = "lecun"  # the hidden layers' weights; the output layer's: lecun
    layernorm: bool = False  # LayerNorm (scale and offset) before each hidden activation
    skip_connections: bool = False  # every residual_period-th hidden layer adds its input to its output
    residual_period: int = field(default=2, metadata=positive())

    @property
    def hidden(self) -> list[int]:
        return list(self.widths) if self.widths is not None else [self.width] * self.depth

    def check(self, bad):
        if self.widths is not None and min(self.widths) < 1:
            bad("widths", f"all widths must be > 0, got {list(self.widths)}")
        if self.widths is None and self.width is None:
            bad("width", "give width (or widths, target_params)")
        if self.widths is not None and len(self.widths) != self.depth:
            bad("depth", f"is {self.depth} where widths has {len(self.widths)} layers; give one of them")
        if self.skip_connections:
            ins = [self.in_dim, *self.hidden]
            for i in range(self.residual_period - 1, len(self.hidden), self.residual_period):
                if ins[i] != ins[i + 1]:
                    bad(
                        "skip_connections",
                        f"hidden layer {i + 1} adds its input ({ins[i]} wide) to its output ({ins[i + 1]} wide); give the layers it skips equal widths",
                    )

    def n_params(self) -> int:
        dims = [self.in_dim, *self.hidden, self.out_dim]
        weights = sum(a * b for a, b in zip(dims, dims[1:]))
        return weights + self.bias * sum(dims[1:]) + self.layernorm * 2 * sum(self.hidden)


@dataclass(frozen=True)
class Teacher:
    """The MLP that labels the data (target-level `teacher:` preset); null fields: the student's."""

    ADDED: ClassVar[dict] = {"widths": None, "dropout_rate": None}  # see MLP.ADDED

    depth: int | None = field(default=None, metadata=positive())
    width: int | None = field(default=None, metadata=positive())
    activation: ACTIVATION | None = None
    bias: bool | None = None
    widths: list[int] | None = field(default=None, metadata={"min_len": 1})  # as MLP's
    # the original Lambda-Hat's: each clean label is zeroed with this probability, before the noise
    dropout_rate: float | None = field(default=None, metadata={"ge": 0, "lt": 1})

    def check(self, bad):
        if self.widths is not None and min(self.widths) < 1:
            bad("widths", f"all widths must be > 0, got {list(self.widths)}")


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


@dataclass(frozen=True)
class Custom:
    """A user's own target: `fn` ("module:function") is called as build(options + {seed}) and
    returns apply, params, x, y, loss (per sample) and optionally x_test, y_test, llc_true
    (targets.custom_problem). Keys besides kind, fn and version are the options; `version` enters
    the target ID with them: bump it when build's code changes its result."""

    kind: Literal["custom"] = "custom"
    fn: str = ""
    version: int = field(default=1, metadata=nonneg())
    options: dict = field(default_factory=dict)

    def check(self, bad):
        if not re.fullmatch(r"[\w.]+:\w+", self.fn):
            bad("fn", f"expected 'module:function', e.g. mypkg.targets:build, got {self.fn!r}")


MODEL_KINDS = {"mlp": MLP, "dln": DLN, "quadratic": Quadratic, "custom": Custom}
DIGITS_TEST = 360  # held out by a fixed permutation (seed 0), whatever the target's seed
DIGITS_TRAIN = 1437  # scikit-learn's 1 797 digits, less a fixed, seeded test split of 360


@dataclass(frozen=True)
class Data:
    ALIASES: ClassVar[dict] = {"n_data": "n", "noise": "noise_model"}
    # The original Lambda-Hat's data keys (ADDED: see MLP's): each shapes one input or noise
    # distribution and its presets give all of them whatever the distribution, so a key the chosen
    # one does not use, or one at its built-in value, is dropped (None) and leaves the ID as without it.
    ADDED: ClassVar[dict] = dict.fromkeys(
        ("n_test", "cov_decay", "mixture_k", "mixture_spread", "x_dim_latent", "hetero_scale", "outlier_frac", "outlier_scale")
    )
    SHAPES: ClassVar[dict] = {
        "cov_decay": ("x_dist", "gauss_aniso", None),
        "mixture_k": ("x_dist", "mixture", 3),
        "mixture_spread": ("x_dist", "mixture", 2.0),
        "x_dim_latent": ("x_dist", "lowdim_manifold", 2),
        "hetero_scale": ("noise_model", "hetero", 0.1),
        "outlier_frac": ("noise_model", "outliers", 0.05),
        "outlier_scale": ("noise_model", "outliers", 2.0),
    }

    # teacher: regression data labelled by a random network (x_dist, noise); digits: scikit-learn's
    # handwritten digits (8×8 images, 10 classes), a softmax classifier's data, n ≤ 1 437 of them
    source: Literal["teacher", "digits"] = "teacher"
    n: int = field(default=1000, metadata={"gt": 1})
    x_dist: Literal["gauss_iso", "gauss_aniso", "mixture", "lowdim_manifold", "heavy_tail"] = "gauss_iso"
    noise_model: Literal["gauss", "hetero", "student_t", "outliers"] = "gauss"
    noise_scale: float = field(default=0.1, metadata=positive())
    student_df: float = field(default=5.0, metadata={"gt": 2})  # > 2 keeps the variance finite
    n_test: int | None = field(default=None, metadata=positive())  # held-out draws; None: n
    cov_decay: float | None = field(default=None, metadata={"gt": 0, "le": 1})  # variances cov_decay**i; None: 1 … 0.01
    mixture_k: int | None = field(default=None, metadata=positive())
    mixture_spread: float | None = field(default=None, metadata=positive())
    x_dim_latent: int | None = field(default=None, metadata=positive())
    hetero_scale: float | None = field(default=None, metadata=nonneg())
    outlier_frac: float | None = field(default=None, metadata={"ge": 0, "le": 1})
    outlier_scale: float | None = field(default=None, metadata=positive())

    def check(self, bad):
        if self.source == "digits" and self.n > DIGITS_TRAIN:
            bad("n", f"digits has {DIGITS_TRAIN} training images, got n = {self.n}")
        if self.source == "digits" and self.n_test is not None:
            bad("n_test", f"digits holds out its own {DIGITS_TEST} test images; remove n_test")

    def shaped(self) -> Data:
        """This section with the shape keys its distributions do not use, or that sit at their
        built-in values, set to None (see SHAPES)."""
        drop = {k: None for k, (on, dist, builtin) in self.SHAPES.items() if getattr(self, on) != dist or getattr(self, k) == builtin}
        return replace(self, **drop, n_test=None if self.n_test == self.n else self.n_test)

    def get(self, key: str):
        """A shape key's value, its built-in one where it is None."""
        value = getattr(self, key)
        return self.SHAPES[key][2] if value is None else value


@dataclass(frozen=True)
class Training:
    ALIASES: ClassVar[dict] = {"learning_rate": "lr"}  # the original Lambda-Hat's

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = field(default=1e-2, metadata=positive())
    steps: int = field(default=2000, metadata=nonneg())  # 0: w* is the initial parameters (a custom build()'s own), polished
    batch_size: int | None = field(default=None, metadata=positive())  # None: full batch
    # Full-batch L-BFGS steps after training: an unconverged w* biases λ̂ downward (REFERENCE §1b)
    polish_steps: int = field(default=200, metadata=nonneg())


# ---------------------------------------------------------------- samplers

MIN_KEPT = 4  # kept draws per chain, after eval_every, below which R̂ and ESS are undefined


@dataclass(frozen=True)
class Posterior:
    beta0: float = field(default=1.0, metadata=positive())  # β = β0 / log n
    gamma: float = field(default=1.0, metadata=nonneg())  # localisation strength


@dataclass(frozen=True)
class FilePosterior:
    """An experiments file's top-level `posterior:` (the original Lambda-Hat's docs set γ there):
    every sampler's, above its preset and below its entry's overrides."""

    beta0: float | None = field(default=None, metadata=positive())
    gamma: float | None = field(default=None, metadata=nonneg())
    beta_mode: Literal["1_over_log_n"] = "1_over_log_n"  # the original's: β = β0 / log n, the only one here
    prior_radius: float | None = None  # the original's; none here (γ localises)
    loss: str | None = None  # the original's; not a choice here

    def check(self, bad):
        if self.prior_radius is not None:
            bad("prior_radius", f"{self.prior_radius!r}: no hard radius around w* here, gamma localises the posterior; allowed value: null")
        if self.loss is not None:
            bad(
                "loss",
                f"{self.loss!r}: L_n here is the data's mean negative log-likelihood (Gaussian at the data's noise_scale; a classifier's "
                "cross-entropy), not a choice; leave it out",
            )

    def layer(self) -> dict:
        """As a sampler's `posterior` overrides."""
        return {k: getattr(self, k) for k in ("beta0", "gamma") if getattr(self, k) is not None}


@dataclass(frozen=True)
class SamplerBase:
    ALIASES: ClassVar[dict] = {"gamma": "posterior.gamma", "beta0": "posterior.beta0"}

    chains: int = field(default=4, metadata=positive())
    draws: int = field(default=1000, metadata=positive())  # kept draws per chain, after burn-in
    burnin: int = field(default=200, metadata=nonneg())
    eval_every: int = field(default=1, metadata=positive())  # λ̂ and diagnostics from every k-th draw (VI: its ELBO's k-th step)
    seed: int = field(default=0, metadata=seed_range())
    posterior: Posterior = Posterior()

    def work(self, n: int) -> float:
        """Rough cost on n data points (gradient evaluations × points, all chains): runs are
        started longest first, so that the longest does not start last."""
        raise NotImplementedError

    @property
    def draw_every(self) -> int:
        """λ̂ and the diagnostics read every draw_every-th kept draw: eval_every's."""
        return self.eval_every

    def check(self, bad):
        if self.draws != "auto" and self.draws < MIN_KEPT:
            bad("draws", f"must be ≥ {MIN_KEPT} (R̂ and ESS need them), got {self.draws}")
        elif self.draws != "auto" and self.draws // self.draw_every < MIN_KEPT:
            bad(
                "eval_every",
                f"keeps {self.draws // self.draw_every} of draws = {self.draws} per chain; R̂ and ESS need at least {MIN_KEPT} (eval_every ≤ {self.draws // MIN_KEPT})",
            )


@dataclass(frozen=True)
class SGLD(SamplerBase):
    """Δw = (ε/2)(−nβ∇L_batch − γ(w − w*)) + N(0, ε), ε = step_size (devinterp convention)."""

    # the original Lambda-Hat's names: its RMSProp preconditioner's decay and ε are beta2 and eps
    ALIASES: ClassVar[dict] = {**SamplerBase.ALIASES, "warmup": "burnin", "beta2": "rmsprop_decay", "eps": "rmsprop_eps"}

    kind: Literal["sgld"] = "sgld"
    # auto: ε, burn-in and draws from the curvature and gradient noise measured at w*
    # (calibration.py), so that λ̂'s predicted bias is at most bias_target; a number is used as is.
    step_size: float | Literal["auto"] = field(default="auto", metadata=positive())
    burnin: int | Literal["auto"] = field(default="auto", metadata=nonneg())
    draws: int | Literal["auto"] = field(default="auto", metadata=positive())
    bias_target: float = field(default=0.01, metadata={"gt": 0, "lt": 0.5})
    max_steps: int = field(default=100_000, metadata=positive())  # budget per chain for auto burn-in + draws
    # None: full batch; auto: from the gradient noise measured at w* (calibration.auto_batch)
    batch_size: int | None | Literal["auto"] = field(default=256, metadata=positive())
    # curvature: a fixed P ≈ (nβH + γ)⁻¹ from the Hessian at w* (calibration.curvature_precond);
    # auto: curvature when step_size is auto, else none (a number keeps devinterp's meaning)
    precond: Literal["auto", "none", "rmsprop", "curvature"] = "auto"
    rmsprop_decay: float = field(default=0.99, metadata={"gt": 0, "lt": 1})
    rmsprop_eps: float = field(default=1e-5, metadata=positive())

    @property
    def preconditioner(self) -> str:
        if self.precond == "auto":
            return "curvature" if self.step_size == "auto" else "none"
        return self.precond

    def work(self, n: int) -> float:
        steps = self.max_steps if "auto" in (self.burnin, self.draws) else self.burnin + self.draws
        b = max(256, n / (8 * math.log(n))) if self.batch_size == "auto" else self.batch_size or n  # auto: κ = 1
        return self.chains * steps * min(n, b)


@dataclass(frozen=True)
class FullBatchMCMC(SamplerBase):
    """HMC's and MCLMC's draws: a number, or auto: pieces of AUTO_PIECE steps until the chains
    pass the stopping rule (ESS, R̂: samplers.mixed) or max_draws are kept."""

    AUTO_PIECE: ClassVar[int] = 1000
    draws: int | Literal["auto"] = field(default=1000, metadata=positive())
    max_draws: int = field(default=16_000, metadata=positive())

    @property
    def planned_draws(self) -> int:
        return self.AUTO_PIECE if self.draws == "auto" else self.draws  # auto: its first piece (most stop there)


@dataclass(frozen=True)
class HMC(FullBatchMCMC):
    ALIASES: ClassVar[dict] = {**SamplerBase.ALIASES, "target_acceptance": "target_accept"}

    ADDED: ClassVar[dict] = {"step_size": None, "adapt_step_size": True}  # see MLP.ADDED

    kind: Literal["hmc"] = "hmc"
    num_integration_steps: int = field(default=8, metadata=positive())
    warmup: int = field(default=300, metadata=positive())  # window-adaptation steps per chain
    target_accept: float = field(default=0.8, metadata={"gt": 0, "lt": 1})
    # the original Lambda-Hat's: the adaptation's first step (BlackJAX's 1.0 where None), or with
    # adapt_step_size false the step of every transition (no adaptation: unit mass matrix, the
    # warmup steps run at that step and are discarded)
    step_size: float | None = field(default=None, metadata=positive())
    adapt_step_size: bool = True

    def check(self, bad):
        super().check(bad)
        if not self.adapt_step_size and self.step_size is None:
            bad("adapt_step_size", "false needs a step_size to run at")

    def work(self, n: int) -> float:
        return self.chains * (self.warmup + self.burnin + self.planned_draws) * self.num_integration_steps * n


@dataclass(frozen=True)
class MCLMC(FullBatchMCMC):
    ALIASES: ClassVar[dict] = {**SamplerBase.ALIASES, "num_steps": "tune_steps"}
    AUTO_PIECE: ClassVar[int] = 2000

    # the original Lambda-Hat's keys, BlackJAX's finder's (see MLP.ADDED)
    ADDED: ClassVar[dict] = {
        "integrator": "isokinetic_mclachlan",
        "desired_energy_var": 5e-4,
        "trust_in_estimate": 1.5,
        "num_effective_samples": 150.0,
        "frac_tune1": 0.1,
        "frac_tune2": 0.1,
        "frac_tune3": 0.1,
        "L": None,
        "step_size": None,
    }

    kind: Literal["mclmc"] = "mclmc"
    tune_steps: int = field(default=1000, metadata=positive())  # steps of BlackJAX's L / step-size finder
    diagonal_preconditioning: bool = False
    integrator: Literal["isokinetic_mclachlan", "isokinetic_velocity_verlet", "isokinetic_yoshida", "isokinetic_omelyan"] = "isokinetic_mclachlan"
    desired_energy_var: float = field(default=5e-4, metadata=positive())  # the finder's goal for Var[ΔE]/d
    trust_in_estimate: float = field(default=1.5, metadata=positive())
    num_effective_samples: float = field(default=150.0, metadata=positive())
    # the finder's three stages' shares of its steps (tune_steps is what they add up to)
    frac_tune1: float = field(default=0.1, metadata={"ge": 0, "le": 1})
    frac_tune2: float = field(default=0.1, metadata={"ge": 0, "le": 1})
    frac_tune3: float = field(default=0.1, metadata={"ge": 0, "le": 1})
    L: float | None = field(default=None, metadata=positive())  # the finder's first L (BlackJAX's √d where None)
    step_size: float | None = field(default=None, metadata=positive())  # its first step (0.25 √d)
    # BlackJAX tunes ε for Var[ΔE]/d = 5e-4, where unadjusted MCLMC reads λ̂ ~2% low on linear
    # models (the bias falls as ε² or faster): sampling at half that step leaves ~0.7%
    step_scale: float = field(default=0.5, metadata=positive())
    max_draws: int = field(default=40_000, metadata=positive())  # its steps are cheaper than HMC's

    def work(self, n: int) -> float:
        return self.chains * (self.tune_steps + self.burnin + self.planned_draws) * 2 * n

    def check(self, bad):
        super().check(bad)
        if self.frac_tune1 + self.frac_tune2 + self.frac_tune3 <= 0:
            bad("frac_tune1", "frac_tune1 + frac_tune2 + frac_tune3 must be > 0 (the finder's steps are tune_steps over their sum)")


@dataclass(frozen=True)
class VI(SamplerBase):
    """Variational family around w*: mean-field Gaussian, a mixture of `M` Gaussians, each
    diagonal + rank `r` (factor analysers), or a normalizing flow of `layers` affine couplings."""

    # eval_samples: the original Lambda-Hat's count of q's draws that estimate λ̂
    ALIASES: ClassVar[dict] = {**SamplerBase.ALIASES, "components": "M", "rank": "r", "eval_samples": "draws"}
    # the original Lambda-Hat's fit settings (see MLP.ADDED)
    ADDED: ClassVar[dict] = {"lr_schedule": "cosine", "lr_warmup_frac": 0.0, "clip_global_norm": 100.0}

    kind: Literal["vi"] = "vi"
    family: Literal["meanfield", "lowrank", "flow"] = "meanfield"
    M: int = field(default=1, metadata=positive())
    r: int = field(default=2, metadata=positive())
    layers: int = field(default=8, metadata=positive())
    hidden: int = field(default=64, metadata=positive())
    steps: int = field(default=2000, metadata=positive())
    lr: float = field(default=1e-2, metadata=positive())
    mc_samples: int = field(default=8, metadata=positive())
    # Adam's step over the fit: cosine or linear decay to 0, after a linear warm-up over
    # lr_warmup_frac of the steps; None (the original's default): constant, no warm-up
    lr_schedule: Literal["cosine", "linear_decay"] | None = "cosine"
    lr_warmup_frac: float = field(default=0.0, metadata={"ge": 0, "lt": 1})
    # the ELBO gradient's global norm is clipped to this (None: not clipped): one bad Monte
    # Carlo draw early on can otherwise throw a flow far off
    clip_global_norm: float | None = field(default=100.0, metadata=positive())
    # None: full batch; auto: full up to AUTO_BATCH points, else AUTO_BATCH (at n = 1e4 and 1e5
    # the same λ̂ as full batch within its MCSE, at n = 1e5 minutes sooner: the decayed Adam step
    # averages the minibatch noise of the ELBO's gradient away)
    batch_size: int | None | Literal["auto"] = field(default="auto", metadata=positive())
    AUTO_BATCH: ClassVar[int] = 4096
    # auto: where VI's own checks say q is not π (PSIS k̂, or λ̂ far from its reweighted value),
    # λ̂ comes from refine_hmc run on the target (samplers/vi.py); always: every run; none: q's λ̂
    refine: Literal["auto", "always", "none"] = "auto"

    @property
    def refine_hmc(self) -> HMC:
        """The refinement's HMC: the package's hmc preset (not a project's own, which would change
        a VI run's λ̂ without changing its ID), on this run's seed and posterior."""
        shipped = _preset_file(Path(__file__).parent / "presets" / "sampler" / "hmc.yaml")
        return replace(build(HMC, shipped, "hmc preset"), seed=self.seed, posterior=self.posterior)

    def batch(self, n: int) -> int | None:
        """The batch the fit uses on n points (None: the full data)."""
        b = self.AUTO_BATCH if self.batch_size == "auto" else self.batch_size
        return None if b is None or b >= n else b

    def work(self, n: int) -> float:
        return self.chains * self.steps * self.M * self.mc_samples * (self.batch(n) or n)

    def __post_init__(self):
        if self.lr_schedule is None:  # a constant step has no warm-up: one fit, one ID
            object.__setattr__(self, "lr_warmup_frac", 0.0)

    @property
    def draw_every(self) -> int:
        """Every draw: VI's eval_every (the original's) thins the fit's ELBO trace, and thinning
        q's independent draws would only lose some."""
        return 1

    def check(self, bad):
        super().check(bad)
        if self.family != "lowrank" and self.M != 1:
            bad("M", f"{self.family} takes M: 1; use family: lowrank for a mixture (preset vi)")


SAMPLER_KINDS = {"sgld": SGLD, "hmc": HMC, "mclmc": MCLMC, "vi": VI}

# ---------------------------------------------------------------- the experiments file


@dataclass(frozen=True)
class SamplerEntry:
    name: str
    overrides: dict = field(default_factory=dict)
    seed: int | None = field(default=None, metadata=seed_range())  # the sampler's seed (as in overrides)


@dataclass(frozen=True)
class Checkpoints:
    every: int = field(metadata=positive())


@dataclass(frozen=True)
class TargetEntry:
    model: str | dict  # a preset name, or the model section itself ({kind: custom, fn: …})
    data: str | dict | None = None  # a preset name, or the data section itself ({n: 10000})
    teacher: str | None = None  # a teacher preset; null or _null: the student's architecture
    seed: int = field(default=0, metadata=seed_range())
    overrides: dict = field(default_factory=dict)
    samplers: list[SamplerEntry] | None = None  # replaces the top-level list for this target
    # λ̂ over training: the samplers also run at these training steps ({every: K} or a list)
    checkpoints: Checkpoints | list[int] | None = None


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
    task_timeout: Duration | None = None  # per task: 90, 30m, 1h30m, HH:MM:SS
    tracking: list[Literal["mlflow", "wandb"]] = ()  # log every finished task there (tracking.py)
    # a name for the sweep (the original Lambda-Hat's): its MLflow experiment / W&B group and a
    # column of the table; not part of any task ID, so naming a sweep recomputes nothing
    experiment: str | None = None
    retry_of: RetryOf | None = None
    posterior: FilePosterior = FilePosterior()  # every sampler's, under its entry's own


@dataclass(frozen=True)
class Target:
    label: str
    entry: TargetEntry
    model: MLP | DLN | Quadratic
    data: Data | None
    training: Training | None
    seed: int
    x64: bool
    teacher: Teacher | None = None  # None: the student's architecture
    step: int | None = None  # a checkpoint: the training step it was taken at
    trajectory: str | None = None  # the label of the target whose checkpoints it belongs to

    def semantic(self) -> dict:
        """What determines the trained target; its hash is the target ID."""
        sem = {
            "model": identity(self.model),
            "data": identity(self.data),
            "training": plain(self.training),
            "seed": self.seed,
            "x64": self.x64,
        }
        if self.teacher is not None:  # absent when it is the student's: same ID as no teacher
            sem["teacher"] = identity(self.teacher)
        return sem


def identity(section) -> dict | None:
    """A config section as its task's ID hashes it: without the keys added after the first tasks
    were stored (its class's ADDED) where they hold their defaults, so that those tasks keep their IDs."""
    added = getattr(section, "ADDED", {})
    return None if section is None else {k: v for k, v in plain(section).items() if k not in added or v != added[k]}


@dataclass(frozen=True)
class TargetTask:
    """A target's training task config (Target.semantic()); targets.typed() types its sections."""

    model: dict
    data: dict | None
    training: dict | None
    seed: int
    x64: bool
    teacher: dict | None = None


@dataclass(frozen=True)
class RunTask:
    """A sampler run's task config: the target's ID and the sampler."""

    target: str
    sampler: SGLD | HMC | MCLMC | VI


@dataclass(frozen=True)
class PlotTask:
    """A diagnose task's config: the target or run whose directory it plots."""

    target: str | None = None
    run: str | None = None


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
    return sorted(set().union(*(yaml_stems(d) for d in preset_dirs(group, config_path))))


@functools.cache
def _preset_file(path: Path) -> dict:
    """A preset file, parsed once per invocation (a large sweep names the same presets thousands of times)."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        fail(str(path), "", "a preset must be a mapping")
    return data


@functools.cache
def _find_preset(group: str, name: str, config_dir: Path, cwd: Path) -> Path | None:
    found = (yaml_named(d, name) for d in preset_dirs(group, config_dir / "x.yaml"))
    return next((p.resolve() for p in found if p is not None), None)


def load_preset(group: str, name: str, config_path: Path, where: str, key: str) -> dict:
    path = _find_preset(group, name, Path(config_path).parent, Path.cwd())
    if path is not None:
        _check_preset(group, path)
        return _preset_form(group, copy.deepcopy(_preset_file(path)))
    allowed = ", ".join(available_presets(group, config_path))
    fail(where, key, f"unknown {group} preset {name!r}; available: {allowed}")


@functools.cache
def _check_preset(group: str, path: Path) -> None:
    """A mistake in a preset file is reported there, not at the entry that names it."""
    data, where = _preset_file(path), str(path)

    def tagged(kinds: dict, data: dict, key: str = "") -> None:
        if "kind" in data:  # else the entry's overrides give it
            check_given(_kind(kinds, data, where, key), data, where, key)

    if group == "sampler":
        data = _preset_form(group, data)
        if "dtype" in data:  # the original's; checked against the file's precision where it is used
            _precision_name(data["dtype"], where, "dtype")
        if data.get("kind") == "sgld":
            data = _original_sgld(canonical(SGLD, data, where), where, "")
        if data.get("kind") == "vi":
            data = _original_vi(canonical(VI, data, where), where, "")[0]
        tagged(SAMPLER_KINDS, {k: v for k, v in data.items() if k != "dtype"})
    elif group == "data":
        check_given(Data, _preset_form(group, data), where)
    elif group == "teacher":
        check_given(Teacher, _checkable(_preset_form(group, data), where, ""), where)
    else:  # model: its model and training sections, or (the original Lambda-Hat's) the model section alone
        flat, data = _sections(data) is not data, _sections(data)
        for k, v in data.items():
            if k not in ("model", "training"):
                fail(where, k, "unknown section; allowed: model, training")
            if not isinstance(v, dict):
                fail(where, k, f"expected a mapping, got {v!r}")
        model = data.get("model", {})
        try:
            if model.get("kind") != "custom":  # a custom model's own keys are its options
                tagged(MODEL_KINDS, _checkable(model, where, "" if flat else "model") if model.get("kind") == "mlp" else model, "" if flat else "model")
        except InputError as e:
            raise InputError(f"{e}; or the sections model, training" if flat and "unknown key" in str(e) else str(e)) from None
        check_given(Training, data.get("training", {}), where, "training")


def _preset_form(group: str, preset: dict) -> dict:
    """A preset as this tool reads it: a model preset as its sections (_sections); a sampler
    preset in the original Lambda-Hat's form (`name: hmc` and its keys under `hmc:`) flat, with
    that name as its kind; a data, teacher or sampler preset that the original wrapped in its
    group's key (`sampler: {name: hmc, hmc: …}`, `data: {n_data: …}`) as the mapping inside."""
    if group == "model":
        return _sections(preset)
    if list(preset) == [group] and isinstance(preset[group], dict):
        preset = preset[group]
    name = preset.get("name")
    if group == "sampler" and "kind" not in preset and isinstance(name, str) and isinstance(preset.get(name), dict):
        return {"kind": name, **{k: v for k, v in preset.items() if k not in ("name", name)}, **preset[name]}
    return preset


def _sections(preset: dict) -> dict:
    """A model preset as its sections (model, training): the original Lambda-Hat's is the model
    section alone, an mlp unless it names another kind."""
    if preset and not any(k in ("model", "training") for k in preset):
        return {"model": {"kind": "mlp", **preset}}
    return preset


def _checkable(section: dict, where: str, key: str) -> dict:
    """An MLP or teacher section's keys as its fields hold them: the size keys resolved (_sizes),
    target_params (turned into a width once the inputs are known) left out."""
    return {k: v for k, v in _sizes(section, where, key).items() if k != "target_params"}


def _kind(kinds: dict, data: dict, where: str, key: str) -> type:
    """The config class of data's `kind`."""
    kind = data.get("kind")
    if kind not in kinds:
        fail(where, f"{key}.kind" if key else "kind", f"{kind!r} is not allowed; allowed values: {', '.join(kinds)}")
    return kinds[kind]


def _tagged(kinds: dict, data: dict, where: str, key: str):
    return build(_kind(kinds, data, where, key), data, where, key)


def _dict(value, where: str, key: str) -> dict:
    if value is None:  # a section left empty in YAML
        return {}
    if not isinstance(value, dict):
        fail(where, key, f"expected a mapping, got {value!r}")
    return value


# ---------------------------------------------------------------- resolution


def _model_section(entry: TargetEntry, path: Path, key: str) -> tuple[dict, dict, str]:
    """(model dict, preset training dict, label) from a preset name or an inline model mapping."""
    where = str(path)
    if isinstance(entry.model, dict):  # an mlp unless it gives its kind, as a preset file's section
        kind = entry.model.get("kind", "mlp")
        # a custom target is named by its whole reference: every user's function may be `build`
        name = entry.model.get("fn") if kind == "custom" else kind
        return {"kind": kind, **entry.model}, {}, str(name)
    preset = load_preset("model", entry.model, path, where, f"{key}.model")
    return _dict(preset.get("model", {}), where, f"{key}.model"), _dict(preset.get("training", {}), where, f"{key}.training"), entry.model


def data_name(data, built: Data | None = None) -> str | None:
    """A data preset's name, or an inline data section's keys and values (n=10000,x_dist=mixture);
    `built`, its validated section, shows an integer written as 1e5 (a float to YAML) as its field holds it."""
    if data is None or isinstance(data, str):
        return data

    def show(k, v):
        held = getattr(built, Data.ALIASES.get(k, k), None)
        return held if isinstance(v, float) and type(held) is int else v

    return ",".join(f"{k}={show(k, v)}" for k, v in data.items()) or "defaults"


def _custom(model_dict: dict, where: str, key: str) -> dict:
    """A custom model's own keys besides kind, fn and version are its options (JSON-able)."""
    known = {f.name for f in fields(Custom)}
    extra = {k: v for k, v in model_dict.items() if k not in known}
    try:
        json.dumps(extra)
    except (TypeError, ValueError):
        fail(where, key, f"custom model options must be plain data (numbers, strings, lists, mappings), got {extra!r}")
    out = {k: v for k, v in model_dict.items() if k in known}
    return {**out, "options": {**_dict(out.get("options", {}), where, f"{key}.options"), **extra}}


SIZES = ("widths", "target_params", "width")  # an MLP's hidden size, each way of giving it


def _sizes(layer: dict, where: str, key: str) -> dict:
    """One layer (preset, overrides) of an MLP or teacher section with the original Lambda-Hat's
    size keys resolved: a null one is not given, `hidden` is its fallback width (used only where
    the layer gives no other size), and `widths` sets the depth."""
    layer = {k: v for k, v in layer.items() if not (k in (*SIZES, "hidden") and v is None)}
    hidden = layer.pop("hidden", None)
    if hidden is not None and (isinstance(whole(hidden), bool) or not isinstance(whole(hidden), int) or whole(hidden) < 1):
        fail(where, f"{key}.hidden" if key else "hidden", f"expected a positive integer, got {hidden!r}")
    if hidden is not None and not any(k in layer for k in SIZES):
        layer["width"] = hidden
    for a, b in (("target_params", "width"), ("target_params", "widths"), ("widths", "width")):
        if a in layer and b in layer:
            fail(where, f"{key}.{a}" if key else a, f"and {b} are both given; keep one")
    if isinstance(layer.get("widths"), list) and layer["widths"]:  # (empty: the widths' own error)
        layer.setdefault("depth", len(layer["widths"]))
    return layer


def _width_for(model: dict, where: str, key: str) -> dict:
    """The original Lambda-Hat's `target_params` (an MLP's approximate parameter count) as the
    hidden width whose count is nearest it, so the resolved config (and task ID) holds the width."""
    target = model.pop("target_params")
    if model.get("kind", "mlp") != "mlp":
        fail(where, f"{key}.target_params", f"sizes an mlp model (its width), not {model.get('kind')!r}")
    for other in ("width", "widths"):
        if model.get(other) is not None:
            fail(where, f"{key}.target_params", f"and {other} are both given; keep one")
    target = whole(target)
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        fail(where, f"{key}.target_params", f"expected a positive integer, got {target!r}")
    m = build(MLP, {k: v for k, v in {**model, "width": 1}.items() if k in MLP.__dataclass_fields__ and v is not None}, where, key)
    count = lambda w: replace(m, width=w).n_params()  # noqa: E731
    lo, hi = 1, 2  # the count grows with the width: bisect for the last width at or under the target
    while count(hi) <= target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return {**model, "width": min((lo, lo + 1), key=lambda w: abs(count(w) - target))}


def _uniform(m):
    """An MLP or teacher whose `widths` are all equal as depth × width (one network, one ID); with
    differing widths, `width` is None (the widths say it)."""
    if m.widths is None:
        return m
    if len(set(m.widths)) == 1:
        return replace(m, depth=len(m.widths), width=m.widths[0], widths=None)
    return replace(m, width=None, depth=len(m.widths))


def resolve_target(entry: TargetEntry, x64: bool, path: Path, key: str) -> Target:
    where = str(path)
    over = _dict(entry.overrides, where, f"{key}.overrides")
    for k in over:
        if k not in ("model", "data", "training", "teacher"):
            fail(where, f"{key}.overrides.{k}", "unknown key; allowed keys: model, data, training, teacher")
    model_dict, train_preset, name = _model_section(entry, path, key)
    over_model = _dict(over.get("model", {}), where, f"{key}.overrides.model")
    if isinstance(entry.model, str):
        _same_kind("model", entry.model, model_dict.get("kind"), over_model.get("kind"), MODEL_KINDS, path, f"{key}.overrides.model.kind")
    if model_dict.get("kind", "mlp") == "mlp" and over_model.get("kind", "mlp") == "mlp":
        model_dict, over_model = _sizes(model_dict, where, f"{key}.model"), _sizes(over_model, where, f"{key}.model")
        if any(k in over_model for k in SIZES):  # the overrides' size wins
            model_dict = {k: v for k, v in model_dict.items() if k not in SIZES}
    model_dict = deep_merge(model_dict, over_model)
    if model_dict.get("kind") == "custom":
        model_dict = _custom(model_dict, where, f"{key}.model")
    data = None
    if entry.data is not None and model_dict.get("kind") not in ("quadratic", "custom"):
        base = entry.data if isinstance(entry.data, dict) else load_preset("data", entry.data, path, where, f"{key}.data")
        layers = [base, _dict(over.get("data", {}), where, f"{key}.overrides.data")]
        data = build(Data, deep_merge(*(canonical(Data, d, where, f"{key}.data") for d in layers)), where, f"{key}.data").shaped()
        if data.source == "digits":  # the data set fixes the network's inputs and outputs
            if model_dict.get("kind") != "mlp":
                fail(where, f"{key}.data", f"digits is a classification data set for mlp models, not {model_dict.get('kind')!r}")
            model_dict = {**model_dict, "in_dim": 64, "out_dim": 10}
    if "target_params" in model_dict:  # after digits has fixed the inputs and outputs
        model_dict = _width_for(model_dict, where, f"{key}.model")
    model = _tagged(MODEL_KINDS, model_dict, where, f"{key}.model")
    if isinstance(model, MLP):
        model = _uniform(model)
    has_teacher = entry.teacher not in (None, "_null") or "teacher" in over
    if isinstance(model, (Quadratic, Custom)):
        what = "it has no data" if isinstance(model, Quadratic) else "build() makes its data"
        unused = (["data"] if entry.data is not None else []) + (["teacher"] if has_teacher else [])
        unused += [f"overrides.{k}" for k in (("data", "training") if isinstance(model, Quadratic) else ("data",)) if k in over]
        if unused:
            fail(where, f"{key}.{unused[0]}", f"not used by model kind {model.kind!r} ({what}); remove it")
        teacher = None
        if isinstance(model, Custom):
            import_ref(model.fn, where, f"{key}.model.fn")
    else:
        if entry.data is None:
            fail(where, f"{key}.data", f"missing required key; available: {', '.join(available_presets('data', path))}")
        if data.source == "digits" and has_teacher:
            fail(where, f"{key}.teacher", "digits has its own labels; remove the teacher")
        teacher = resolve_teacher(entry, model, over, path, key) if has_teacher else None
    training = None
    if not isinstance(model, Quadratic):
        layers = [train_preset, _dict(over.get("training", {}), where, f"{key}.overrides.training")]
        train_dict = deep_merge(*(canonical(Training, t, where, f"{key}.training") for t in layers))
        if data is not None and data.source == "digits":
            # a classifier separates its training set: cross-entropy's infimum is at infinity, and
            # polishing would chase it (train loss 1e-18, test loss up 30×): no polish unless asked
            train_dict.setdefault("polish_steps", 0)
        training = build(Training, train_dict, where, f"{key}.training")
    # a teacher given only in the overrides is labelled by its keys, as an inline data section
    t_name = entry.teacher if entry.teacher not in (None, "_null") else ",".join(f"{k}={v}" for k, v in over.get("teacher", {}).items())
    label = name + (f"/{data_name(entry.data, data)}" if data else "") + (f"/t:{t_name}" if teacher else "") + f"/s{entry.seed}"
    return Target(label, entry, model, data, training, entry.seed, x64, teacher)


def checkpoints(t: Target, path: Path, key: str) -> list[Target]:
    """The target at each checkpoint step: the same training stopped there, unpolished (a
    checkpoint is where training was, not a minimum), then the target itself (converged:
    polished), which is the last checkpoint when it is not polished."""
    spec = t.entry.checkpoints
    if spec is None or spec == ():  # an empty list: none, as null
        return []
    where = str(path)
    if t.training is None:
        fail(where, f"{key}.checkpoints", f"model kind {t.model.kind!r} is not trained; it has no checkpoints")
    total = t.training.steps
    if total == 0:
        fail(where, f"{key}.checkpoints", "training.steps is 0 (no training): there are no checkpoints to take; remove them")
    steps = list(range(spec.every, total + 1, spec.every)) if isinstance(spec, Checkpoints) else sorted(set(spec))
    for s in steps:
        if not 0 < s <= total:
            fail(where, f"{key}.checkpoints", f"steps must be within 1…{total} (training.steps), got {s}")
    if not steps:
        fail(where, f"{key}.checkpoints.every", f"must be <= training.steps ({total}), got {spec.every}")
    out = [replace(t, label=f"{t.label}@{s}", training=replace(t.training, steps=s, polish_steps=0), step=s, trajectory=t.label) for s in steps]
    if t.training.polish_steps:  # converged (polished): beside the trajectory, not a point of it
        return [*out, t]
    # unpolished, the target is the same training at its last step: the trajectory's last point
    return [*(out[:-1] if steps[-1] == total else out), replace(t, step=total, trajectory=t.label)]


def resolve_teacher(entry: TargetEntry, model, over: dict, path: Path, key: str) -> Teacher | None:
    """The teacher preset with its overrides; fields equal to the student's are dropped, so a
    teacher identical to the student is no teacher (same target ID)."""
    where = str(path)
    if not isinstance(model, MLP):
        fail(where, f"{key}.teacher", f"model kind {model.kind!r} makes its own teacher (dln: `rank`); teacher presets apply to mlp models")
    base = load_preset("teacher", entry.teacher, path, where, f"{key}.teacher") if entry.teacher not in (None, "_null") else {}
    base, mine = _sizes(base, where, f"{key}.teacher"), _sizes(_dict(over.get("teacher", {}), where, f"{key}.overrides.teacher"), where, f"{key}.teacher")
    if any(k in mine for k in SIZES):  # the overrides' size wins
        base = {k: v for k, v in base.items() if k not in SIZES}
    merged = deep_merge(base, mine)
    if "target_params" in merged:  # a width for the teacher's depth on the student's inputs and outputs
        arch = {k: merged.get(k) if merged.get(k) is not None else getattr(model, k) for k in ("depth", "bias")}
        sized = _width_for({"in_dim": model.in_dim, "out_dim": model.out_dim, **merged, **arch}, where, f"{key}.teacher")
        merged = {**{k: v for k, v in merged.items() if k != "target_params"}, "width": sized["width"]}
    t = _uniform(build(Teacher, merged, where, f"{key}.teacher"))
    if t.widths is not None and list(t.widths) == model.hidden:
        t = replace(t, widths=None, depth=None, width=None)
    if t.widths is None and t.width is None and model.width is None and t.depth not in (None, model.depth):
        fail(
            where,
            f"{key}.teacher.depth",
            f"is {t.depth}, and the student's widths {model.hidden} differ layer by layer: give the teacher's width or widths too",
        )
    t = replace(t, **{f: None for f in ("depth", "width", "activation", "bias") if getattr(t, f) == getattr(model, f)})
    t = replace(t, dropout_rate=t.dropout_rate or None)
    return None if t == Teacher() else t


def _preset_kind(group: str, name: str, path: Path) -> str | None:
    """The kind a sampler or model preset names (a model preset's under its `model:` section)."""
    data = _preset_form(group, _preset_file(_find_preset(group, name, Path(path).parent, Path.cwd())))
    section = data.get("model") if group == "model" else data
    return section.get("kind") if isinstance(section, dict) else None


def _same_kind(group: str, name: str, have, asked, kinds: dict, path: Path, key: str) -> None:
    """An override of a preset's kind (a preset's keys are its kind's): an error naming the presets of the kind asked for."""
    if asked not in kinds or have is None or asked == have:
        return  # an unknown kind is the kind check's to report
    same = [n for n in available_presets(group, path) if _preset_kind(group, n, path) == asked]
    instead = f"name a {asked} preset instead ({', '.join(same)})" if same else f"give the {group} section itself ({group}: {{kind: {asked}, …}})"
    fail(str(path), key, f"the {name} preset's {'model kind' if group == 'model' else 'kind'} is {have}; {instead}")


def resolve_sampler(entry: SamplerEntry, path: Path, key: str, x64: bool = True, posterior: FilePosterior = FilePosterior()):
    where = str(path)
    preset = load_preset("sampler", entry.name, path, where, f"{key}.name")
    if posterior.layer():  # the file's posterior over the preset's (an alias there becomes posterior.* below)
        preset = deep_merge(canonical(SamplerBase, preset, where, key), {"posterior": posterior.layer()})
    over = _dict(entry.overrides, where, f"{key}.overrides")
    _same_kind("sampler", entry.name, preset.get("kind"), over.get("kind"), SAMPLER_KINDS, path, f"{key}.overrides.kind")
    cls = SAMPLER_KINDS.get(over.get("kind", preset.get("kind")))
    if "kind" not in over and "kind" not in preset:
        fail(where, f"{key}.kind", f"missing: the {entry.name} preset and the entry's overrides give none; allowed values: {', '.join(SAMPLER_KINDS)}")
    if cls:  # aliases per layer, so an override by either name replaces the preset's value
        preset, over = canonical(cls, preset, where, key), canonical(cls, over, where, f"{key}.overrides")
    preset_file = str(_find_preset("sampler", entry.name, Path(path).parent, Path.cwd()))  # where a preset's error is
    if "dtype" in preset and "dtype" in over:  # the entry's wins
        preset = {k: v for k, v in preset.items() if k != "dtype"}
    elif "dtype" in preset:
        preset = _file_precision(preset, x64, preset_file, "")
    if "dtype" in over:
        over = _file_precision(over, x64, where, f"{key}.overrides")
    if cls is SGLD:
        preset = _original_sgld(preset, preset_file, "")
        over = {k: v for k, v in over.items() if k not in ADAM_KEYS}
    if cls is SGLD and "steps" in over:
        over = _total_steps(over, deep_merge(preset, over).get("burnin", SGLD.burnin), where, f"{key}.overrides")
    algo_flow = False
    if cls is VI:
        (preset, p_flow), (over, o_flow) = _original_vi(preset, preset_file, ""), _original_vi(over, where, f"{key}.overrides")
        algo_flow = (o_flow or p_flow) and deep_merge(preset, over).get("family") == "flow"
    if entry.seed is not None:
        if "seed" in over:
            fail(where, f"{key}.seed", "given here and in overrides; keep one")
        over = {**over, "seed": entry.seed}
    merged = deep_merge(preset, over)
    if algo_flow:  # the original's flow has no components: its presets' M and r are not the flow's
        merged = {k: v for k, v in merged.items() if k not in ("M", "r")}
    return _tagged(SAMPLER_KINDS, merged, where, key)


def _precision_name(dtype, where: str, key: str) -> None:
    if dtype not in ("float32", "float64"):
        fail(where, key, f"{dtype!r} is not allowed; allowed values: float32, float64")


def _file_precision(over: dict, x64: bool, where: str, key: str) -> dict:
    """The original Lambda-Hat's per-sampler `dtype`: here every task computes in the file's
    precision (jax_enable_x64), so it is taken where it says the same and is an error elsewhere."""
    want, key = "float64" if x64 else "float32", f"{key}.dtype" if key else "dtype"
    _precision_name(over["dtype"], where, key)
    if over["dtype"] != want:
        flag = str(not x64).lower()
        fail(
            where,
            key,
            f"{over['dtype']}: every task computes in the file's precision, {want} (jax_enable_x64: {str(x64).lower()}); set jax_enable_x64: {flag} for {over['dtype']}",
        )
    return {k: v for k, v in over.items() if k != "dtype"}


# The original Lambda-Hat's SGLD keys of its Adam preconditioner, which its presets hold whatever
# their precond: without precond adam (not one of this tool's) they change nothing, and are dropped.
ADAM_KEYS = ("beta1", "bias_correction")


def _original_sgld(layer: dict, where: str, key: str) -> dict:
    """An SGLD preset's keys as the original Lambda-Hat's presets give them: ADAM_KEYS dropped,
    `steps` (burn-in + draws) as draws."""
    layer = {k: v for k, v in layer.items() if k not in ADAM_KEYS}
    return _total_steps(layer, layer.get("burnin", SGLD.burnin), where, key) if "steps" in layer else layer


# The original Lambda-Hat's VI keys without a field here. Its geometry whitening rescales q's
# coordinates, which here are always in units of the posterior's width at w* (samplers/vi.py),
# and a diagonal rescaling maps each family onto itself: they are dropped. Its other options are
# taken at the values that leave its fit as this tool's, and are an error elsewhere.
WHITENING_KEYS = ("use_whitening", "whitening_mode", "whitening_decay")
VI_ONLY_AT = {
    "tensorboard": (False, "no TensorBoard logs here: the fit's ELBO is the elbo group of the run's trace.nc, and --track mlflow|wandb logs the runs"),
    "alpha_temperature": (1.0, "a temperature on the mixture's weights is not one of this tool's fit settings"),
    "entropy_bonus": (0.0, "a bonus λ·H(q) in the ELBO widens q past the posterior, and λ̂ under it reads high"),
    "alpha_dirichlet_prior": (None, "a prior on the mixture's weights is not one of this tool's fit settings"),
    "r_per_component": (None, "every component here has rank r"),
}
ALGOS = {"mfa": "lowrank", "flow": "flow"}  # the original's VI algorithms as families


def _original_vi(layer: dict, where: str, key: str) -> tuple[dict, bool]:
    """A VI layer in the original Lambda-Hat's keys as this tool's: `algo` as the family,
    WHITENING_KEYS dropped, VI_ONLY_AT checked and dropped; and whether it said algo: flow."""
    key = f"{key}." if key else ""
    out = {}
    for name, value in layer.items():
        if name == "algo":
            if value not in ALGOS:
                fail(where, f"{key}algo", f"{value!r} is not allowed; allowed values: mfa, flow (the original Lambda-Hat's; family: lowrank, flow)")
            if "family" in layer:
                fail(where, f"{key}algo", "is the original Lambda-Hat's name of family, which is also given; keep one")
            out["family"] = ALGOS[value]
        elif name == "whitening_mode" and value not in ("none", "rmsprop", "adam"):
            fail(where, f"{key}whitening_mode", f"{value!r} is not allowed; allowed values: none, rmsprop, adam")
        elif name in VI_ONLY_AT:
            at, why = VI_ONLY_AT[name]
            if value != at or isinstance(value, bool) != isinstance(at, bool):
                fail(where, f"{key}{name}", f"{value!r}: {why}; allowed value: {'null' if at is None else str(at).lower()}")
        elif name not in WHITENING_KEYS:
            out[name] = value
    return out, layer.get("algo") == "flow"


def _total_steps(over: dict, burnin, where: str, key: str) -> dict:
    """SGLD's `steps`, the original Lambda-Hat's burn-in + draws per chain, as the draws it leaves."""
    steps, burnin, key = whole(over["steps"]), whole(burnin), f"{key}." if key else ""
    if isinstance(steps, bool) or not isinstance(steps, int):
        fail(where, f"{key}steps", f"expected an integer, got {steps!r}")
    if "draws" in over:
        fail(where, f"{key}steps", "is burn-in + draws per chain (the original Lambda-Hat's), and draws is also given; keep one")
    if isinstance(burnin, bool) or not isinstance(burnin, int):
        fail(
            where,
            f"{key}steps",
            f"is burn-in + draws per chain (the original Lambda-Hat's): give burnin (or warmup) as a number, not {burnin!r}, or draws alone",
        )
    if steps <= burnin:
        fail(where, f"{key}steps", f"is burn-in + draws per chain: must be > burnin {burnin}, got {steps}")
    return {**{k: v for k, v in over.items() if k != "steps"}, "draws": steps - burnin}


def _at(raw, path: list[str]):
    """The node at a dotted key's parts (list indices as text), or None."""
    node = raw
    for p in path:
        if isinstance(node, list) and re.fullmatch(r"-?\d+", p) and -len(node) <= int(p) < len(node):
            node = node[int(p)]
        elif isinstance(node, dict) and p in node:
            node = node[p]
        else:
            return None
    return node


def _entry_key(head: list[str]) -> bool:
    """head names an entry of targets, of samplers or of a target's samplers (targets.I.samplers.J)."""
    return head[0] in ("targets", "samplers") if len(head) == 2 else len(head) == 4 and (head[0], head[2]) == ("targets", "samplers")


def _is_entry(raw, head: list[str]) -> bool:
    return _entry_key(head) and isinstance(_at(raw, head), dict)


def _entry_route(raw, parts: list[str]) -> list[str]:
    """Hydra's habit of setting a key of a preset chosen by name, here as the entry's overrides:
    targets.0.model.width=16 is targets.0.overrides.model.width, samplers.0.draws=100 (also under
    a target's own samplers) samplers.0.overrides.draws. An entry's own keys, and a model given in
    full (a mapping), are set where they are."""

    for n in (2, 4):  # samplers.J.KEY, targets.I.samplers.J.KEY
        head = parts[:n]
        entries = _at(raw, head[:-1]) if len(parts) > n and head[-2] == "samplers" else None
        if isinstance(entries, list) and re.fullmatch(r"-?\d+", head[-1]) and -len(entries) <= int(head[-1]) < len(entries):
            if isinstance(entries[int(head[-1])], str):  # a name from a list set by an earlier override (samplers=[sgld] samplers.0.draws=100)
                entries[int(head[-1])] = {"name": entries[int(head[-1])]}
        if len(parts) > n and head[-2] == "samplers" and _is_entry(raw, head):
            if parts[n] not in {f.name for f in fields(SamplerEntry)}:
                return [*head, "overrides", *parts[n:]]
            return parts
    if len(parts) > 3 and parts[0] == "targets" and parts[2] in ("model", "data", "teacher", "training"):
        entry = _at(raw, parts[:2])
        if isinstance(entry, dict) and not isinstance(entry.get(parts[2]), (dict, list)):
            return [*parts[:2], "overrides", *parts[2:]]
    return parts


_SWEPT = "\0multirun"  # marks an entry to copy, through apply_overrides' deep copy


def _overrides(raw, overrides: tuple[str, ...], where: str, multirun: bool):
    """apply_overrides, plus Hydra's multirun (-m): a key inside an entry of targets or samplers
    given several values (a,b / choice(…) / range(…)) makes one copy of that entry per value
    (per combination, last key fastest), in its place; the other overrides apply to every copy.
    Without -m several values are an error, as in Hydra. As Hydra picks a config group's option
    before it sets keys inside it, an override that sets a whole entry (samplers.0=sgld) applies
    first, whatever its place: samplers.0.step_size=1e-5 then reaches the entry it names."""

    def sets_entry(pair: str) -> bool:
        remove, key, sep, text = split_pair(pair)
        return bool(sep) and not remove and _entry_key(key.strip().split(".")) and sweep_values(text, f"{where}: override {pair!r}") is None

    first = [p for p in overrides if sets_entry(p)]
    raw, overrides = _sampler_names(apply_overrides(raw, first, where, route=_entry_route)), [p for p in overrides if p not in first]
    plain_pairs, marked = [], {}
    for pair in overrides:
        remove, key, _, text = split_pair(pair)
        refuse_hydra_setting(pair, key, where)
        values = None if remove else sweep_values(text, f"{where}: override {pair!r}")
        if values is None:
            plain_pairs.append(pair)
            continue
        if not multirun:
            raise InputError(f"{where}: override {pair!r}: several values; sweep them with -m/--multirun, write a list as [a, b], quote a string")
        parts = _entry_route(raw, key.strip().split("."))
        n = next((n for n in (4, 2) if len(parts) > n and _is_entry(raw, parts[:n])), None)  # targets.I.samplers.J first
        entry = _at(raw, parts[:n]) if n else None
        if entry is None:
            for m in (4, 2):  # an index past the end of targets, samplers or a target's samplers
                head, parent = parts[:m], _at(raw, parts[: m - 1])
                if len(parts) > m and _entry_key(head) and isinstance(parent, list) and _at(raw, head) is None:
                    raise InputError(
                        f"{where}: -m {key.strip()}: {'.'.join(head)} is not an entry of the file ({'.'.join(parts[: m - 1])} has {len(parent)}): only an existing entry is copied per value"
                    )
            raise InputError(
                f"{where}: -m {key.strip()}: only a key inside an entry takes several values (targets.N.…, samplers.N.…, targets.N.samplers.M.…): each value is a copy of it"
            )
        tag = entry.setdefault(_SWEPT, len(marked))
        marked.setdefault(tag, []).append((".".join(parts[n:]), values))
    raw = apply_overrides(raw, plain_pairs, where, route=_entry_route)
    found, copies = set(), {}  # copies: "samplers[1]" → what it is a copy of, for errors (_copy_error)

    def expand(entries, at: str):
        if not isinstance(entries, list):
            return entries
        out = []
        for i, e in enumerate(entries):
            tag = e.pop(_SWEPT, None) if isinstance(e, dict) else None
            if tag is None:
                out.append(e)
                continue
            found.add(tag)
            keys = marked[tag]
            for combo in itertools.product(*(v for _, v in keys)):
                pairs = [f"{k}={v}" for (k, _), v in zip(keys, combo)]
                copies[f"{at}[{len(out)}]"] = f"the -m copy of {at}[{i}] with {', '.join(pairs)}"
                out.append(apply_overrides(e, pairs, where, "-m"))
        return out

    if marked and isinstance(raw, dict):
        for k in ("samplers", "targets"):
            if k in raw:
                raw[k] = expand(raw[k], k)
        for i, t in enumerate(raw.get("targets") if isinstance(raw.get("targets"), list) else []):
            if isinstance(t, dict) and "samplers" in t:
                t["samplers"] = expand(t["samplers"], f"targets[{i}].samplers")
    if len(found) < len(marked):
        raise InputError(f"{where}: -m: another override replaced or removed an entry that a multirun key is in")
    return raw, copies


def _copy_error(e: InputError, where: str, copies: dict) -> InputError:
    """An error about an entry that -m copied names the entry of the file and the values it
    was copied with: `samplers[1]` alone would point at another entry of the file."""
    msg = str(e)
    loc = msg[len(where) + 2 :].split(":", 1)[0] if msg.startswith(f"{where}: ") else ""
    # the longest copied entry the location is in (targets[0].samplers[2] before targets[0])
    hit = max((c for c in copies if loc == c or loc.startswith((f"{c}.", f"{c}["))), key=len, default=None)
    return InputError(f"{msg} ({hit} is {copies[hit]})") if hit else e


def _sampler_names(raw):
    """A sampler entry given by its preset's name alone (`samplers: [sgld, hmc]`) is {name: ...},
    before overrides (samplers.0.draws=100 reaches it as it would the mapping) and after them
    (samplers.0=hmc)."""
    lists = [raw.get("samplers")] if isinstance(raw, dict) else []
    lists += (
        [t.get("samplers") for t in raw.get("targets") or () if isinstance(t, dict)] if isinstance(raw, dict) and isinstance(raw.get("targets"), list) else []
    )
    for entries in lists:
        for i, e in enumerate(entries if isinstance(entries, list) else ()):
            if isinstance(e, str):
                entries[i] = {"name": e}
    return raw


def load_plan(path: Path, overrides: tuple[str, ...] = (), multirun: bool = False) -> Plan:
    """Read, override (KEY=VALUE; several values with multirun), merge, validate and expand an
    experiments file. Raises InputError on any problem."""
    path = Path(path)
    raw = load_yaml(path)
    if raw is None:
        fail(str(path), "", "file is empty; expected keys targets, samplers")
    raw, copies = _overrides(_sampler_names(raw), overrides, str(path), multirun)
    try:
        return _plan(path, _sampler_names(raw))
    except InputError as e:
        raise _copy_error(e, str(path), copies) from None


def _plan(path: Path, raw) -> Plan:
    """The plan of an experiments file's data, overrides applied."""
    for section in ("targets", "samplers"):  # Hydra's habit: several values where one goes
        entries = raw.get(section) if isinstance(raw, dict) else None
        for i, e in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(e, dict) and isinstance(e.get("seed"), list) and e["seed"]:
                values = ",".join(map(str, e["seed"]))
                fail(str(path), f"{section}[{i}].seed", f"one seed per entry, got {e['seed']}; for one entry per seed run with -m {section}.{i}.seed={values}")
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
    points = [checkpoints(t, path, f"targets[{i}]") or [t] for i, t in enumerate(targets)]
    runs, shared = [], None
    for i, (te, t) in enumerate(zip(cfg.targets, targets)):
        if te.samplers is not None:
            resolved = resolve_samplers(te.samplers, path, f"targets[{i}].samplers", cfg.jax_enable_x64, cfg.posterior)
        else:  # the top-level list: resolved once for all targets
            resolved = shared = shared or resolve_samplers(cfg.samplers, path, "samplers", cfg.jax_enable_x64, cfg.posterior)
        for name, se, s in resolved:
            runs += [Run(f"{name}@{p.label}", name, se, s, p) for p in points[i]]
    return Plan(path, cfg, [p for ps in points for p in ps], runs)


def resolve_samplers(
    entries, path: Path, skey: str, x64: bool = True, posterior: FilePosterior = FilePosterior()
) -> list[tuple[str, SamplerEntry, SGLD | HMC | MCLMC | VI]]:
    """(run name, entry, sampler) per entry of a samplers list; two entries resolving to the same sampler are an error."""
    if not entries:
        fail(str(path), skey, "no samplers for this target; list at least one (hmc, mclmc, sgld, vi, …)")
    seen: dict[str, int] = {}
    names = [se.name for se in entries]
    out = []
    for j, se in enumerate(entries):
        s = resolve_sampler(se, path, f"{skey}[{j}]", x64, posterior)
        key = repr(plain(s))
        if key in seen:
            fail(str(path), f"{skey}[{j}]", f"duplicates {skey}[{seen[key]}] (same resolved config)")
        seen[key] = j
        out.append((se.name if names.count(se.name) == 1 else f"{se.name}#{j}", se, s))
    return out


__all__ = ["InputError", "load_plan", "Plan", "Target", "Run"]
