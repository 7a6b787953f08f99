"""An experiments file as a Plan: presets, KEY=VALUE overrides, the original Lambda-Hat's keys,
validation, N targets × M samplers. The sections it builds are config.py's."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from dataclasses import fields, replace
from pathlib import Path

from lambda_hat.engine.typed import (
    InputError,
    apply_overrides,
    build,
    canonical,
    check_given,
    deep_merge,
    fail,
    import_ref,
    load_yaml,
    plain,
    refuse_hydra_setting,
    split_pair,
    sweep_values,
    whole,
    yaml_named,
    yaml_stems,
)
from lambda_hat.llc.config import (
    HMC,
    MCLMC,
    MLP,
    MODEL_KINDS,
    SAMPLER_KINDS,
    SGLD,
    VI,
    Checkpoints,
    Custom,
    Data,
    Experiments,
    FilePosterior,
    Plan,
    Quadratic,
    Run,
    SamplerBase,
    SamplerEntry,
    Target,
    TargetEntry,
    Teacher,
    Training,
)

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
        unused += ["training"] if isinstance(model, Quadratic) and entry.training is not None else []
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
        layers = [train_preset, entry.training or {}, _dict(over.get("training", {}), where, f"{key}.overrides.training")]
        train_dict = functools.reduce(deep_merge, (canonical(Training, t, where, f"{key}.training") for t in layers))
        if data is not None and data.source == "digits":
            # a classifier separates its training set: cross-entropy's infimum is at infinity, and
            # polishing would chase it (train loss 1e-18, test loss up 30×): no polish unless asked
            train_dict.setdefault("polish_steps", 0)
        training = build(Training, train_dict, where, f"{key}.training")
    # a teacher section (inline, or given only in the overrides) is labelled by its keys, as an inline data section
    t_name = entry.teacher if entry.teacher not in (None, "_null") else over.get("teacher", {})
    t_name = t_name if isinstance(t_name, str) else ",".join(f"{k}={v}" for k, v in t_name.items())
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
    if isinstance(entry.teacher, dict):  # the section itself, as an inline model or data section
        base = dict(entry.teacher)
    else:
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


EXAMPLE = "samplers.0.overrides.draws=100"  # an override, for the messages on a malformed one
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
    raw, overrides = _sampler_entries(apply_overrides(raw, first, where, route=_entry_route, example=EXAMPLE), where), [p for p in overrides if p not in first]
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
        for m in (4, 2):  # an index past the end of targets, samplers or a target's samplers
            head, parent = parts[:m], _at(raw, parts[: m - 1])
            if len(parts) >= m and _entry_key(head) and isinstance(parent, list) and _at(raw, head) is None:
                raise InputError(
                    f"{where}: -m {key.strip()}: {'.'.join(head)} is not an entry of the file ({'.'.join(parts[: m - 1])} has {len(parent)}): only an existing entry is copied per value"
                )
        if len(parts) > 3 and parts[0] == "targets" and parts[2] == "samplers" and _at(raw, parts[:3]) is None:
            rest = ".".join(parts[4:]) or "name"
            raise InputError(
                f"{where}: -m {key.strip()}: {'.'.join(parts[:2])} has no samplers of its own (it runs the file's): sweep samplers.{parts[3]}.{rest}"
            )
        if _entry_key(parts):  # Hydra's sweep of a config group's option
            inside = (
                f"sweep its preset with -m {key.strip()}.name={text.strip()}"
                if parts[-2] == "samplers"
                else f"sweep a key inside it (-m {key.strip()}.model=…)"
            )
            raise InputError(f"{where}: -m {key.strip()}: a whole entry takes one value; {inside}, each value a copy of the entry")
        n = next((n for n in (4, 2) if len(parts) > n and _is_entry(raw, parts[:n])), None)  # targets.I.samplers.J first
        entry = _at(raw, parts[:n]) if n else None
        if entry is None:
            raise InputError(
                f"{where}: -m {key.strip()}: only a key inside an entry takes several values (targets.N.…, samplers.N.…, targets.N.samplers.M.…): each value is a copy of it"
            )
        tag = entry.setdefault(_SWEPT, len(marked))
        marked.setdefault(tag, []).append((".".join(parts[n:]), values))
    raw = apply_overrides(raw, plain_pairs, where, route=_entry_route, example=EXAMPLE)
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


def _sampler_entries(raw, where: str):
    """A sampler entry given by its preset's name alone (`samplers: [sgld, hmc]`) is {name: ...},
    and a sampler's own keys written on the entry (`{name: sgld, step_size: 1e-5}`) are its
    overrides, as samplers.0.step_size=1e-5 on the command line is: before the command line's
    overrides (samplers.0.draws=100 reaches it as it would the mapping) and after them (samplers.0=hmc)."""
    lists = [("samplers", raw.get("samplers"))] if isinstance(raw, dict) else []
    if isinstance(raw, dict) and isinstance(raw.get("targets"), list):
        lists += [(f"targets[{j}].samplers", t.get("samplers")) for j, t in enumerate(raw["targets"]) if isinstance(t, dict)]
    entry_keys = {f.name for f in fields(SamplerEntry)}
    for at, entries in lists:
        for i, e in enumerate(entries if isinstance(entries, list) else ()):
            if isinstance(e, str):
                entries[i] = e = {"name": e}
            over = (e.get("overrides") if isinstance(e, dict) else None) or {}  # an empty `overrides:` is null
            flat = [k for k in e if k not in entry_keys] if isinstance(e, dict) and isinstance(over, dict) else []
            for k in flat:
                if k in over:
                    fail(where, f"{at}[{i}].{k}", "is given on the entry and in its overrides; keep one")
            if flat:
                e["overrides"] = {**over, **{k: e.pop(k) for k in flat}}
    return raw


def load_plan(path: Path, overrides: tuple[str, ...] = (), multirun: bool = False) -> Plan:
    """Read, override (KEY=VALUE; several values with multirun), merge, validate and expand an
    experiments file. Raises InputError on any problem."""
    path = Path(path)
    raw = load_yaml(path)
    if raw is None:
        fail(str(path), "", "file is empty; expected keys targets, samplers")
    raw, copies = _overrides(_sampler_entries(raw, str(path)), overrides, str(path), multirun)
    try:
        return _plan(path, _sampler_entries(raw, str(path)))
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
