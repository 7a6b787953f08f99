"""Typed configuration of the llc workflow: every section's fields, aliases and bounds, the
experiments file's entries, and the task configs whose hashes are the task IDs. Reading an
experiments file into them (presets, overrides, resolution): experiments.py."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

from lambda_hat.engine.typed import (
    Duration,
    build,
    load_yaml,
    nonempty,
    nonneg,
    plain,
    positive,
    seed_range,
)

# ---------------------------------------------------------------- models, data, training


# an MLP without hidden layers is the linear model, a DLN of one layer
LINEAR = "for a linear model (no hidden layer) give kind: dln, widths: [in_dim, out_dim]"
ACTIVATION = Literal["tanh", "relu", "gelu", "identity"]


@dataclass(frozen=True)
class MLP:
    # Keys added after the first targets were stored: at these values they stay out of the target
    # ID (identity()), so those targets keep theirs.
    ADDED: ClassVar[dict] = {"widths": None, "init": "lecun", "layernorm": False, "skip_connections": False, "residual_period": 2}

    kind: Literal["mlp"] = "mlp"
    in_dim: int = field(default=4, metadata=positive())
    out_dim: int = field(default=1, metadata=positive())
    depth: int = field(default=2, metadata=positive(hint=LINEAR))  # hidden layers
    width: int | None = field(default=16, metadata=positive())  # None where `widths` differ
    activation: ACTIVATION = "tanh"
    bias: bool = True
    # the original Lambda-Hat's: hidden widths layer by layer (equal ones are held as depth × width)
    widths: list[int] | None = field(default=None, metadata={"min_len": 1, "hint": LINEAR})
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
        shipped = load_yaml(Path(__file__).parent / "presets" / "sampler" / "hmc.yaml")
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
    teacher: str | dict | None = None  # a teacher preset or section; null or _null: the student's architecture
    training: dict | None = None  # the training section itself (under the overrides' training)
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
    store_root: str = field(default="runs", metadata=nonempty())
    task_timeout: Duration | None = None  # per task: 90, 30m, 1h30m, HH:MM:SS
    tracking: list[Literal["mlflow", "wandb"]] = ()  # log every finished task there (tracking.py)
    # a name for the sweep (the original Lambda-Hat's): its MLflow experiment / W&B group and a
    # column of the table; not part of any task ID, so naming a sweep recomputes nothing
    experiment: str | None = field(default=None, metadata=nonempty())
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
