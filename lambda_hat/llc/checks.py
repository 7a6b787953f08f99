"""Health checks that can fail: each returns (code, one line) for a run that needs a second look.

A run with any warning is never shown as a clean row (table, gallery, llc_runs.parquet), and
`--strict` turns warnings into failures. Thresholds are the usual ones (Vehtari et al. 2021 for
R̂ and ESS, 2024 for PSIS k̂; Betancourt 2016 for E-BFMI) or, for SGLD, the 1% bias the auto step
aims at with room for the estimate's own error.
"""

from __future__ import annotations

import math

import numpy as np

from lambda_hat.llc.estimator import MIN_BLOCKS, NOISE_SHARE

ESS_GOAL = 400  # bulk ESS below which a run is flagged (SGLD's auto draws aim above it)
ESS_MIXED = 4 * ESS_GOAL  # auto draws stop here (samplers.mixed): clear of the warning by chance
RHAT_MAX = 1.01
BIAS_MAX = 0.02  # predicted relative bias of λ̂ from SGLD's step and minibatch noise
MALA_MIN = 0.9  # acceptance of the SGLD proposal under full-batch Metropolis–Hastings
WSTAR_MAX = 0.01  # |predicted λ̂ shift from ∇L_n(w*)| relative to λ̂
HMC_ACCEPT_TOL = 0.15
EBFMI_MIN = 0.3
# per dimension. At BlackJAX's tuned step (5e-4) λ̂ read 2% low on linear models; at the half
# step we sample with, ~5e-6 and 0.7% (the variance falls as ε⁶ there, the bias as ε²)
MCLMC_ENERGY_VAR_MAX = 1e-4
SADDLE_REL = 0.05  # negative curvature, relative to the largest, that marks a saddle
TRAIN_RISE = 0.1  # the loss after training above its start by this share of it: training diverged
FIT_NATS = 1.0  # nβ·L_n(w*) below this: the data are fit perfectly (no noise left to fit)
VI_IS_GAP = 0.03  # relative gap between VI's λ̂ and its PSIS-reweighted value
TRUTH_TOL = {"llc_finite": 0.05, "llc_true": 0.10}
# Two runs on one target and posterior whose λ̂ differ beyond both MCSEs: one is off, whatever its
# own checks said (tanh MLP, d = 433, n = 1e4: MCLMC 111.4 ± 0.1 clean in three variants, SGLD
# 114.3 ± 0.9 and HMC 115.5 ± 1.4 flagged for mixing; 500 000 SGLD steps read 116–117).
AGREE_SE, AGREE_REL = 3.0, 0.02
# a run its own checks call biased (not only uncertain) casts no doubt on another: VI's upper
# estimates, a step too large, a burn-in known shorter than the slowest relaxation (budget: its λ̂
# still leans to its starts; a CNN on digits, SGLD 23.5 beside MCLMC 29.6 and HMC 29.1)
BIASED = {"pareto_k", "vi_fit", "off_truth", "step_bias", "energy_var", "negative", "saturated", "budget"}
# nor does one whose chains have not begun to mix (R̂ above the classic 1.1): its mean and MCSE are
# no yardstick (a digits MLP: SGLD 26.3 ± 3.7 at R̂ 1.51, ESS 7, beside HMC 40.08 and MCLMC 40.14)
PARTNER_RHAT_MAX = 1.1
NOISE_MAX = 2 * NOISE_SHARE  # batch noise left in the blocks of SGLD's diagnostics (estimator.py)


def pareto_k_max(draws: int) -> float:
    """PSIS k̂ above which the importance ratios' tail is too heavy for this many draws."""
    return min(1 - 1 / math.log10(draws), 0.7) if draws > 10 else 0.0


def vi_miss(k_hat: float, draws: int, llc: float, llc_is: float, sem: float) -> tuple[str, str] | None:
    """Why a VI fit's λ̂ is not π's, as (code, line), or None: PSIS k̂ too high for its draws (q
    narrower than π), or, with tame weights, λ̂ under q far from its reweighted value (q too wide)."""
    if draws <= 10:  # no k̂ threshold holds for so few draws
        return "pareto_k", f"{draws} draws per fit are too few for PSIS k̂ to check q against π (more than 10 needed); read λ̂ as unchecked"
    if k_hat > pareto_k_max(draws):
        return (
            "pareto_k",
            f"PSIS k̂ {k_hat:.2f} > {pareto_k_max(draws):.2f}: q misses part of π (read λ̂ as an upper estimate; use refine: auto, or check it with hmc)",
        )
    if not abs(llc - llc_is) <= max(VI_IS_GAP * abs(llc_is), 3 * sem):
        return "vi_fit", f"λ̂ under q is {llc:.4g}, reweighted to π {llc_is:.4g}: q is not π (fit longer, another family, or refine: auto)"
    return None


def ebfmi(energy: np.ndarray) -> float:
    """Lowest per-chain E-BFMI: Σ(ΔE)² / Σ(E − Ē)² of the kept states' energies."""
    e = energy - energy.mean(axis=1, keepdims=True)
    return float(np.min(np.sum(np.diff(energy, axis=1) ** 2, axis=1) / np.sum(e**2, axis=1)))


def _count(ess: float) -> str:
    """An ESS below a goal, rounded down: 399.6 read '400 < 400'."""
    return f"{math.floor(ess)}" if math.isfinite(ess) else "nan"


def _rhat(r: float) -> str:
    """R̂ to 3 decimals where that reads (1.012); chains far apart can give 5e15."""
    return f"{r:.3f}" if r < 100 else f"{r:.3g}"


def _pct(bias: float) -> str:
    return f"{100 * bias:.1f}%" if math.isfinite(bias) else "unstable"


def run_warnings(m: dict, cfg, data_free: bool = False) -> list[dict]:
    """m: the run's metrics (λ̂, diagnostics, truths); cfg: its typed sampler config; data_free:
    the target is a loss of its own (quadratic), not a model trained on data."""
    out = []
    refined = cfg.kind == "vi" and m.get("refined") == "hmc"
    if refined:  # λ̂ is HMC's (q's checks failed): checked as the HMC run it is
        cfg = cfg.refine_hmc

    def warn(code, msg):
        out.append({"code": code, "message": msg})

    llc = m["llc_mean"]
    if m["r_hat"] == m["r_hat"] and m["r_hat"] > RHAT_MAX:
        warn("rhat", f"R̂ {_rhat(m['r_hat'])} > {RHAT_MAX}: chains disagree (not mixed, or stuck in different modes)")
    if cfg.chains == 1:  # R̂ needs chains started apart: one chain's stuck mode reads as mixed
        unseen = (
            "fit: R̂, which compares independent fits, is not computed, so a fit that landed elsewhere"
            if cfg.kind == "vi"
            else "chain: R̂ is not computed, so a mode it never left"
        )
        warn("one_chain", f"one {unseen} goes unseen; run 2 or more")
    if not m["ess_bulk"] >= ESS_GOAL:  # NaN too (a constant trace): no effective draw to count on
        # ESS grows with the draws once the chains have mixed: how many would reach the goal
        draws = int(m["draws"])
        need = math.ceil(draws * ESS_GOAL / (m["ess_bulk"] if m["ess_bulk"] > 1 else 1.0))
        if cfg.kind == "sgld":
            if cfg.draws == "auto":  # stopped at max_steps
                hint = f"; about {need} draws per chain would reach it (max_steps ≥ {m['burnin'] + need})"
            else:
                hint = f"; about {need} draws per chain (not {draws}) would reach it"
            if cfg.step_size == "auto" and m.get("batch_size", 0) < m.get("n", 0):  # minibatches (not a data-free target)
                hint += ", or raise batch_size (less minibatch noise lets the auto step grow)"
        elif cfg.draws == "auto":  # HMC, MCLMC: stopped at their budget
            hint = f"; about {need} draws per chain would reach it (max_draws ≥ {need})"
        else:
            hint = f"; about {need} draws per chain (not {draws}) would reach it"
        warn("ess", f"bulk ESS {_count(m['ess_bulk'])} < {ESS_GOAL}: too few effective draws for a reliable mean and SE{hint}")
    # auto draws that ran out of budget before the stopping rule passed: ESS and R̂ may clear the
    # warnings above while a slow mode is unseen (3-layer DLN, HMC at max_draws with ESS 809–983:
    # the spread over six seeds was ~2× the MCSE each run reported)
    if cfg.kind in ("hmc", "mclmc") and cfg.draws == "auto" and m["draws"] >= cfg.max_draws and (m["ess_bulk"] < ESS_MIXED or m["r_hat"] > RHAT_MAX):
        warn(
            "unmixed",
            f"draws: auto kept max_draws = {cfg.max_draws} before bulk ESS reached {ESS_MIXED} with R̂ ≤ {RHAT_MAX} (ESS {_count(m['ess_bulk'])}, R̂ {_rhat(m['r_hat'])}): the chains mix slowly and the MCSE may understate the error; raise max_draws or chains",
        )
    # a non-finite gradient (a kink or pole at w* in a user's own model) makes the shift NaN,
    # which no comparison would flag
    if not math.isfinite(m["grad_norm"]) or abs(m["wstar_shift"]) > WSTAR_MAX * max(abs(llc), 1.0):
        warn("w_star", f"w* is not a converged minimum: |∇L_n(w*)| = {m['grad_norm']:.2g} shifts λ̂ by about {m['wstar_shift']:.3g}; train longer or polish")
    # Training that ends above its start diverged (Adam at lr 1e6 on a tanh MLP: L_n 1.3e10 after
    # 100 steps); polishing can still reach a stationary point, a saturated plateau (L_n 0.523
    # against 0.437 trained properly, λ̂ 1.43 against 2.51), where every other check passes.
    start, end = m.get("initial_loss"), m.get("trained_loss")
    if start is not None and end is not None and not end <= start + TRAIN_RISE * abs(start):
        warn(
            "training",
            f"training raised the loss: L_n {end:.4g} after training, {start:.4g} at initialisation (it diverged); "
            f"w* (L_n {m['L_star']:.4g}) may be a poor optimum: lower training.lr",
        )
    # measured on a subsample, whose Hessian at the full data's minimum is slightly indefinite:
    # only a clearly negative curvature counts
    if m["n_beta"] * m["min_curvature"] + m["gamma"] < 0 and m["min_curvature"] < -SADDLE_REL * m["max_curvature"]:
        warn("not_minimum", f"the Hessian at w* has curvature {m['min_curvature']:.3g} < −γ/nβ: w* is a saddle and the localised posterior is improper")
    # A classifier that separates its training set has cross-entropy's infimum at infinity: pushed
    # toward it (long training, polishing), the loss and its curvature vanish and λ̂ falls with them
    # (a 35-parameter MLP read 5.4, 1.4, 0.30, 0.11 after 0, 30, 60, 100 L-BFGS steps, the last three
    # otherwise clean). Once no direction is stiffer than the localiser, λ̂ measures γ, not the
    # model. Noisy data keep nβ·L_n(w*) large, so a degenerate singular point (zero Hessian) is not
    # mistaken for this.
    if not data_free and abs(m["n_beta"] * m["L_star"]) < FIT_NATS and m["n_beta"] * m["max_curvature"] < m["gamma"]:
        warn(
            "saturated",
            f"the loss is flat at w*: nβ·L_n(w*) = {m['n_beta'] * m['L_star']:.2g} and the largest curvature nβh = {m['n_beta'] * m['max_curvature']:.2g} < γ = {m['gamma']:g}: "
            "the data are fit perfectly and the loss saturated (a classifier that separates its training set, driven toward infinity by training or polishing), "
            "so λ̂ measures the localiser, not the model; use training.polish_steps: 0, fewer steps or a checkpoint",
        )
    # λ ≥ 0 at a local minimum: chains that settle below L_n(w*) found lower loss nearby (a w*
    # stopped in a valley its gradient barely shows, or a user's loss that is not w*'s minimum)
    if llc + 3 * m["llc_sem"] < 0:
        warn(
            "negative", f"λ̂ {llc:.4g} ± {m['llc_sem']:.2g} < 0: the chains found lower loss than L_n(w*), so w* is not a local minimum; train longer or polish"
        )
    # the finite-n value where it is known (the asymptotic one can be 15% away at small n)
    col = next((c for c in TRUTH_TOL if m.get(c)), None)
    if col:
        t, tol = m[col], TRUTH_TOL[col]
        if abs(llc - t) > tol * abs(t) and abs(llc - t) > 3 * m["llc_sem"]:
            # the n → ∞ value: on a DLN at n = 1e3 under γ = 100 every sampler read 5.37 for 7.5
            why = (
                ""
                if col == "llc_finite"
                else f" (the n → ∞ value; a small n or a strong localiser, γ/nβ = {m['gamma'] / m['n_beta']:.2g}, moves the local one: if other samplers agree, suspect the truth)"
            )
            warn("off_truth", f"λ̂ {llc:.4g} is {100 * (llc - t) / t:+.1f}% from {col} = {t:.4g}{why}")
    if m.get("diag_noise", 0.0) > NOISE_MAX:  # nan (an exact statistic) compares False
        r, block = m["diag_noise"], m["diag_block"]
        within = f"in blocks of {block} draws (at most draws/{MIN_BLOCKS}): ESS, R̂ and MCSE read optimistic"
        if math.isfinite(r):
            more = f"about {MIN_BLOCKS * math.ceil(r * block / NOISE_SHARE)} draws per chain would let blocks average it out"
            warn("batch_noise", f"the minibatch statistic's batch noise is still {r:.2g}× its signal's variance {within}; {more}")
        else:  # no positive lag-1 autocovariance: the slow part is lost in the noise
            warn(
                "batch_noise",
                f"the minibatch statistic's batch noise hides its signal (no slowly varying part shows beneath it) {within}; more draws per chain or a larger batch_size",
            )
    if cfg.kind == "sgld":
        pred = _pct(m["predicted_bias"])
        if not math.isfinite(m["predicted_bias"]):
            warn(
                "step_bias",
                f"step {m['step_size']:.3g} is past the stability limit of the stiffest direction at w* (ε·(nβh + γ) ≥ 4); use step_size: auto or a smaller step",
            )
        elif m["predicted_bias"] > BIAS_MAX:
            # an auto step aims at bias_target: above the limit, it was asked for
            fix = f"the auto step aims at bias_target {cfg.bias_target:g}: lower it" if cfg.step_size == "auto" else "use step_size: auto or a smaller step"
            warn("step_bias", f"predicted bias of λ̂ from step {m['step_size']:.3g} and minibatch noise is {pred} (> {100 * BIAS_MAX:g}%); {fix}")
        if m.get("bias_at_chains", 0) > BIAS_MAX:  # nan (no check ran) compares False
            warn(
                "step_bias",
                f"predicted bias of λ̂ from the curvature where the chains went is {_pct(m['bias_at_chains'])} (> {100 * BIAS_MAX:g}%; "
                f"at w*: {pred}); lower bias_target (step_size auto) or the step",
            )
        # measured, not predicted: the bias model can miss (a classifier's, a heavy-tailed loss'),
        # and a step that reads λ̂ low is as wrong as one that reads it high
        if abs(m.get("measured_bias", 0.0)) - 2 * m.get("measured_bias_se", 0.0) > BIAS_MAX:
            warn(
                "step_bias",
                f"step halving measures the step's bias of λ̂ at {100 * m['measured_bias']:.1f}% ± {100 * m['measured_bias_se']:.1f}% (> {100 * BIAS_MAX:g}%; "
                f"predicted at w*: {pred}); λ̂ is corrected for it to first order in the step only: lower bias_target (step_size auto) or the step",
            )
        if m["mala_acceptance"] < MALA_MIN:
            warn("step_bias", f"full-batch MALA acceptance of the SGLD step is {m['mala_acceptance']:.2f} < {MALA_MIN}: the step is too large for this target")
        if m["budget_capped"]:
            need = math.ceil(3 * m["relax_steps"])
            warn(
                "budget",
                f"the slowest mode that carries λ̂ relaxes over {m['relax_steps']:.0f} steps: burn-in needs {need}, half of max_steps allows {m['burnin']}; "
                f"raise max_steps to at least {2 * need}",
            )
    if cfg.kind == "hmc":
        if m["divergences"]:
            fix = (
                "raise target_accept or warmup"
                if cfg.adapt_step_size
                else f"lower step_size ({cfg.step_size:g}, fixed: adapt_step_size false), or let it adapt"
            )
            warn("divergences", f"{m['divergences']} divergent transitions: {fix}")
        # at a fixed step (adapt_step_size: false) the acceptance is what the step gives: Metropolis
        # keeps the chains exact, and too small or large a step shows in their ESS and R̂
        if cfg.adapt_step_size and abs(m["acceptance_rate"] - cfg.target_accept) > HMC_ACCEPT_TOL:
            warn("hmc_accept", f"acceptance {m['acceptance_rate']:.2f}, target {cfg.target_accept}: step-size adaptation did not settle (raise warmup)")
        if m["ebfmi"] < EBFMI_MIN:
            warn("ebfmi", f"E-BFMI {m['ebfmi']:.2f} < {EBFMI_MIN}: momentum resampling explores the energy levels poorly")
    if cfg.kind == "mclmc" and m["energy_var"] > MCLMC_ENERGY_VAR_MAX:
        warn(
            "energy_var",
            f"Var[ΔE]/d = {m['energy_var']:.2g} > {MCLMC_ENERGY_VAR_MAX:g}: the unadjusted step is too large (bias): lower step_scale or raise tune_steps",
        )
    if cfg.kind == "vi":
        miss = vi_miss(m["pareto_k"], cfg.draws, llc, m["llc_is"], m["llc_sem"])
        if miss:
            warn(*miss)
    if refined:  # its sampling settings are not the VI run's to change (the target's warnings stand as they are)
        for w in out:
            if w["code"] in ("rhat", "ess", "unmixed", "divergences", "hmc_accept", "ebfmi"):
                w["message"] += " (this VI run's λ̂ is its refinement's, HMC with the hmc preset's settings: to change them, run the hmc sampler)"
    return out


def disagreements(runs: list[dict]) -> list[dict | None]:
    """runs: one target's runs under one posterior, each {name, llc_mean, llc_sem, codes (its own
    warnings), r_hat (optional)}. Per run, a `disagree` warning where it is otherwise clean and its λ̂ differs from
    another run's (one not flagged as biased, R̂ ≤ PARTNER_RHAT_MAX) by more than AGREE_SE combined MCSEs and AGREE_REL:
    its diagnostics passed, but two estimates of one λ cannot both be right."""
    finite = lambda r: math.isfinite(r["llc_mean"]) and math.isfinite(r["llc_sem"])  # noqa: E731
    out = []
    for r in runs:
        far = []
        for o in runs if not r["codes"] and finite(r) else ():
            if o is r or BIASED & set(o["codes"]) or not finite(o) or (o.get("r_hat") or 0.0) > PARTNER_RHAT_MAX:
                continue
            diff, se = abs(r["llc_mean"] - o["llc_mean"]), math.hypot(r["llc_sem"], o["llc_sem"])
            if diff > AGREE_SE * se and diff > AGREE_REL * max(abs(r["llc_mean"]), abs(o["llc_mean"])):
                # a partner's own warnings, named: a flagged one is the likelier to be off, not certainly
                flagged = f"; itself flagged {','.join(o['codes'])}" if o["codes"] else ""
                far.append(f"{o['name']}'s {o['llc_mean']:.4g} ± {o['llc_sem']:.2g} ({diff / se:.1f} SE{flagged})")
        msg = f"λ̂ {r['llc_mean']:.4g} ± {r['llc_sem']:.2g} disagrees with {', '.join(far)} on this target: its own checks passed, but they cannot all be right; compare longer runs or another sampler"
        out.append({"code": "disagree", "message": msg} if far else None)
    return out
