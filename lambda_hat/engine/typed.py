"""Build frozen dataclasses from plain YAML data, with one-line errors naming file and key."""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class InputError(Exception):
    """Bad user input (config, card, CLI value): reported in one line, exit code 2."""


class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser where installed
    """YAML 1.1 reads 1e-6 (no dot) as a string; read it as a number, as YAML 1.2 and
    OmegaConf (the original Lambda-Hat's configs) do. A key written twice in one mapping is an
    error, as in OmegaConf: YAML would keep the last silently, and the run would not be the one read."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(text: str):
    return yaml.load(text, Loader=Loader)


def short(value, limit: int = 80) -> str:
    """repr of a value for an error line: a whole file read as a string (a CSV) stays short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fail(where: str, key: str, msg: str) -> typing.NoReturn:
    raise InputError(f"{where}: {key or '<top>'}: {msg}")


def load_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a YAML file (not UTF-8 text)") from None
    try:
        return read_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        if line and "tab" not in problem and line[mark.column : mark.column + 1] == "\t":
            problem += " (a tab: YAML indents with spaces)"
        raise InputError(f"{path}: malformed YAML{at}: {problem}") from None


class Duration(float):
    """Type marker for a time span in seconds, written as 90, 90s, 30m, 1h30m, 1d, 1w, with the
    units spelled out (45min, 2 hours), or SLURM's [D-]HH:MM:SS / MM:SS (a bare number is seconds)."""


DURATION_HELP = "90, 90s, 30m, 1h30m, 2 hours, 1d or HH:MM:SS"
_UNIT = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
# units spelled out (45min, 2 hours, 10 sec: Snakemake's runtime habits): each word's first letter is its unit
_UNIT_WORDS = r"(?<=[\d\s])(weeks?|wks?|days?|hours?|hrs?|minutes?|mins?|seconds?|secs?)(?![a-z])"


YAML_SUFFIXES = (".yaml", ".yml")


def yaml_named(folder: Path, name: str) -> Path | None:
    """folder/NAME as given when it ends in .yaml or .yml, else NAME.yaml, then NAME.yml (Hydra
    reads either); None where none is a file."""
    names = [name] if name.endswith(YAML_SUFFIXES) else [name + s for s in YAML_SUFFIXES]
    return next((folder / n for n in names if (folder / n).is_file()), None)


def yaml_stems(folder: Path, recursive: bool = False) -> set[str]:
    """The names yaml_named finds in folder (paths below it without suffix when recursive)."""
    if not folder.is_dir():
        return set()
    found = (p for s in YAML_SUFFIXES for p in (folder.rglob if recursive else folder.glob)("*" + s))
    return {str(p.relative_to(folder).with_suffix("")) for p in found}


def parse_duration(value, what: str = "duration") -> float:
    """Seconds from any of the forms in Duration; InputError naming `what` otherwise."""
    total = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        total = float(value)
    elif isinstance(value, str):
        t = value.strip().lower()
        clock = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?", t)
        if re.fullmatch(r"\d+(?:\.\d+)?", t):
            total = float(t)
        elif clock and (":" in t or "-" in t):
            d, a, b, c = clock.groups()
            parts = [int(x) for x in (a, b, c) if x is not None]
            if any(x >= 60 for x in parts[1:]):
                raise InputError(f"{what}: {value!r}: minutes and seconds must be < 60")
            if d is not None:  # D-HH[:MM[:SS]]
                parts += [0] * (3 - len(parts))
                total = 86400 * int(d) + 3600 * parts[0] + 60 * parts[1] + parts[2]
            elif len(parts) == 3:  # HH:MM:SS
                total = 3600 * parts[0] + 60 * parts[1] + parts[2]
            else:  # MM:SS, as SLURM reads it
                total = 60 * parts[0] + parts[1]
        else:
            t = re.sub(_UNIT_WORDS, lambda m: m.group(1)[0], t)
            units = re.findall(r"(\d+(?:\.\d+)?)\s*([wdhms])", t)
            order = [u for _, u in units]
            if units and re.fullmatch(r"(?:\d+(?:\.\d+)?\s*[wdhms]\s*)+", t) and order == sorted(set(order), key="wdhms".index):
                total = sum(float(x) * _UNIT[u] for x, u in units)
    if total is None:
        raise InputError(f"{what}: {value!r} is not a duration; expected e.g. {DURATION_HELP}")
    if not total > 0 or total == float("inf"):
        raise InputError(f"{what}: must be a positive duration, got {value!r}")
    return float(total)


def _split_top(text: str) -> list[str]:
    """`text` split at the commas outside brackets, braces, parentheses and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def sweep_values(text: str, what: str) -> list[str] | None:
    """Hydra's sweep syntax in an override's value, as the text of each value: a,b,c (commas
    outside brackets and quotes), choice(a,b,…) or range(start,stop[,step]) (keywords allowed,
    stop excluded, floats too); None for a single value."""
    t = text.strip()
    call = re.fullmatch(r"(choice|range)\((.*)\)", t, re.S)
    args = _split_top(call.group(2) if call else t)
    if not call and len(args) < 2:
        return None
    if "" in args:
        raise InputError(f"{what}: an empty value in {text!r}")
    if not call or call.group(1) == "choice":
        return args
    named = dict.fromkeys(("start", "stop", "step"))
    for i, a in enumerate(args):
        k, eq, v = a.partition("=")
        k, v = (k.strip(), v) if eq else (list(named)[i] if i < 3 else "", a)
        num = read_yaml(v) if k in named else None
        if not isinstance(num, (int, float)) or isinstance(num, bool):
            raise InputError(f"{what}: {text!r}: expected range(start, stop[, step]) with numbers")
        named[k] = num
    if named["stop"] is None:  # range(stop), as Python's
        named["start"], named["stop"] = 0, named["start"]
    start, stop, step = named["start"], named["stop"], 1 if named["step"] is None else named["step"]
    if step == 0:
        raise InputError(f"{what}: {text!r}: the step must not be 0")
    count = max(0, int(-(-(stop - start) // step)))
    values = [start + i * step for i in range(count)]
    if not values:
        raise InputError(f"{what}: {text!r} holds no value")
    return [str(round(v, 12)) if isinstance(v, float) else str(v) for v in values]


def split_pair(pair: str) -> tuple[bool, str, str, str]:
    """An override's parts: (remove, key, "=" or "", value text); Hydra's +/++ prefixes dropped."""
    remove = pair.startswith("~")
    key, sep, text = (pair[1:] if remove else re.sub(r"^\+\+?", "", pair)).partition("=")
    return remove, key, sep, text


def whole(value):
    """An integer written as 1e5 (a float to YAML) as the int it names exactly, the same task ID as
    100000; any other value as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 else value


def refuse_hydra_setting(pair: str, key: str, where: str, flag: str = "override") -> None:
    """One of Hydra's own settings (hydra.run.dir=…, hydra/launcher=…): an error naming what stands for it here."""
    key = key.strip()
    if re.match(r"hydra(\.|/|$)", key):
        raise InputError(f"{where}: {flag} {pair!r}: Hydra's own setting; {_hydra_equivalent(key)}")


def _hydra_equivalent(key: str) -> str:
    if re.match(r"hydra[./](launcher|job\.env_set)", key):
        return "tasks run through an executor card: --parsl-card NAME (slurm/a100, slurm/cpu, …) or --backend, its fields with --set KEY=VALUE, tasks at once with -j N"
    if re.match(r"hydra[./]sweeper", key):
        return "-m runs a copy of an entry per value (a,b or range(…)); a grid of experiments is a sweep file (lambda-hat workflow sweep)"
    if re.match(r"hydra\.(run|sweep|runtime\.output_dir|job\.chdir)", key):
        return "every task has its own run directory in the store: store_root=DIR moves the store"
    return "lambda-hat has no Hydra runtime to configure (its options: --help)"


def apply_overrides(raw, pairs, where: str, flag: str = "override", route=None, several=None, example: str = "KEY=VALUE"):
    """Hydra-style KEY=VALUE on plain YAML data: dotted keys, list indices (samplers.0.draws=100),
    values parsed as YAML. Missing mapping keys are created (validation judges them later), so
    Hydra's +KEY=VALUE (add) and ++KEY=VALUE (add or override) set the key as KEY=VALUE does; the
    index one past a list's end appends an entry;
    ~KEY removes a key or list entry (~KEY=VALUE only where it holds VALUE). route(data, parts),
    if given, maps a key's parts to where the file keeps that value (a workflow's shorthands).
    several(key), if given, says where the file takes several values of that key, as a function
    of them: Hydra's a,b / range(…) sweep syntax is then an error naming it (as Hydra's own
    without --multirun); None for a key whose value is only text (CUDA_VISIBLE_DEVICES=0,1).
    example: a well-formed pair of this file, for the message on a malformed one."""
    raw = copy.deepcopy(raw) if raw is not None else {}
    for pair in pairs:
        remove, key, sep, text = split_pair(pair)
        if not key.strip() or not (sep or remove):
            raise InputError(f"{where}: {flag} {pair!r}: expected KEY=VALUE (or ~KEY to remove it), e.g. {example}")
        try:
            value = read_yaml(text) if text else ""
        except yaml.YAMLError:
            raise InputError(f"{flag} {pair!r}: the value is not valid YAML") from None
        refuse_hydra_setting(pair, key, where, flag)
        hint = several(key.strip()) if several and sep and not remove else None
        values = sweep_values(text, f"{where}: {flag} {pair!r}") if hint else None
        if values is not None:
            raise InputError(f"{where}: {flag} {pair!r}: several values; {hint(values)}; write a list as [a, b], quote a string")
        parts, node = key.strip().split("."), raw
        if route:
            parts = route(raw, parts)
            key = ".".join(parts)
        for i, p in enumerate(parts):
            here = ".".join(parts[:i]) or "<top>"
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", p):
                    raise InputError(f"{where}: {flag} {key}: {here} is a list; expected an index, got {p!r}")
                idx = int(p)
                if idx == len(node) and not remove:  # one past the end appends an entry (samplers.2={name: hmc})
                    node.append(None if last else {})
                elif not -len(node) <= idx < len(node):
                    raise InputError(
                        f"{where}: {flag} {key}: index {idx} out of range; {here} has {len(node)} entries{'' if remove else f' (index {len(node)} appends one)'}"
                    )
            elif isinstance(node, dict):
                idx = p
                if remove and p not in node:
                    raise InputError(f"{where}: {flag} {pair}: {'.'.join(parts[: i + 1])} is not in the file; nothing to remove")
                if not last and not isinstance(node.get(p), (dict, list)):
                    if node.get(p) is not None:
                        raise InputError(f"{where}: {flag} {key}: {'.'.join(parts[: i + 1])} is {node[p]!r}, not a mapping or list")
                    if re.fullmatch(r"-?\d+", parts[i + 1]):  # an index into a list the file does not have
                        raise InputError(f"{where}: {flag} {key}: {'.'.join(parts[: i + 1])} is not in the file; index {parts[i + 1]} needs a list there")
                    node[p] = {}
            else:
                raise InputError(f"{where}: {flag} {key}: {here} is {node!r}, not a mapping or list")
            if last and remove:
                if sep and node[idx] != value:
                    raise InputError(f"{where}: {flag} {pair}: {key} is {node[idx]!r}, not {value!r}; nothing removed")
                del node[idx]
            elif last:
                node[idx] = value
            else:
                node = node[idx]
    return raw


# Study modules that moved into lambda_hat/studies/: sweep files that name the old module keep working.
MOVED = {
    "lambda_hat.blobs": "lambda_hat.studies.blobs.study",
    "lambda_hat.kkt": "lambda_hat.studies.kkt.study",
    "lambda_hat.peft_study": "lambda_hat.studies.peft.study",
}


def current_ref(ref: str) -> str:
    module, sep, name = ref.partition(":")
    return MOVED.get(module, module) + sep + name


def import_ref(ref: str, where: str, key: str):
    """The object a config names as "module:function"; a one-line error naming the key if not."""
    import importlib

    module, _, name = current_ref(ref).partition(":")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        from lambda_hat.engine.tasks import install_hint

        hint = install_hint(e.name or "") if isinstance(e, ModuleNotFoundError) else ""
        fail(where, key, f"{ref!r} cannot be imported ({type(e).__name__}: {e}){hint}")
    if not callable(obj):  # found when the task runs, it had failed there
        fail(where, key, f"{ref!r} is a {type(obj).__name__}, not a function")
    return obj


def canonical(cls, data, where: str, key: str = ""):
    """Rename a dataclass's documented aliases (its ALIASES: alias -> canonical, possibly dotted
    into a sub-mapping) so one concept has one field; both given at once is an error."""
    aliases = getattr(cls, "ALIASES", {})
    if not isinstance(data, dict) or not any(a in data for a in aliases):
        return data
    out = dict(data)
    for alias, canon in aliases.items():
        if alias not in out:
            continue
        value = out.pop(alias)
        head, _, rest = canon.partition(".")
        node = out if not rest else dict(out.get(head) or {})
        leaf = rest or head
        if leaf in node:
            fail(where, _join(key, alias), f"is an alias of {canon}, which is also given; keep one")
        node[leaf] = value
        if rest:
            out[head] = node
    return out


def _leaves(d: dict, path: tuple = ()):
    """(key path, value) of each value that is not a non-empty mapping."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, (*path, k))
        else:
            yield (*path, k), v


def dotted(d: dict) -> dict:
    """Nested mappings as dotted keys, {'acc': {'val': 1}} → {'acc.val': 1}, as MLflow and W&B
    name them; other values (an empty mapping too) as they are."""
    return {".".join(map(str, p)): v for p, v in _leaves(d)}


def given_twice(d: dict) -> str | None:
    """What is wrong where two values of d take one dotted name ({'acc.val': 1, 'acc': {'val': 2}}):
    dotted() would keep one of them silently. The same value twice (NaN too) is one value."""

    def same(a, b) -> bool:
        try:
            return bool(a == b) or bool(a != a and b != b)
        except Exception:  # arrays (numpy, torch, JAX) have no one truth value: said, whatever they hold
            return False

    seen = {}
    for p, v in _leaves(d):
        name = ".".join(map(str, p))
        if name in seen and not same(seen[name][1], v):
            show = lambda path: " → ".join(repr(k) if "." in str(k) else str(k) for k in path)  # noqa: E731
            return f"metric {name!r} is given twice: {seen[name][1]!r} as {show(seen[name][0])}, {v!r} as {show(p)}"
        seen.setdefault(name, (p, v))
    return None


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def positive(**kw):
    """Field metadata: value must be > 0."""
    return {"gt": 0, **kw}


def nonempty(**kw):
    """Field metadata: a string with more than blanks (a name, a directory: "" is the working one)."""
    return {"nonempty": True, **kw}


def nonneg(**kw):
    return {"ge": 0, **kw}


def seed_range(**kw):
    """Field metadata for a random seed: JAX takes it as an int32 without x64 (larger ones
    overflow, or once aliased silently to another seed's key)."""
    return {"ge": 0, "lt": 2**31, **kw}


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list (each {_type_name(typing.get_args(tp)[0])})"
    if tp is Duration:
        return f"a duration ({DURATION_HELP})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}.get(tp, str(tp))


def _convert(tp, value, where: str, key: str, meta: dict):
    hint = f"; {meta['hint']}" if "hint" in meta else ""  # a bound's error: what a user giving that value may have meant
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where, key, meta)
            except InputError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        # a mapping given where a mapping is allowed (or a list where a list is): that form's own
        # error (an unknown key, a bad entry) says more than the list of every form allowed
        for a, e in zip([a for a in args if a is not type(None)], errors):
            if isinstance(value, dict) and (dataclasses.is_dataclass(a) or a is dict):
                raise e
            if isinstance(value, list) and typing.get_origin(a) is list:
                raise e
        # a value of the right type but out of bounds: say which bound, not every type allowed
        for e in errors:
            if ": must be " in str(e):
                raise e
        fail(where, key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            fail(where, key, f"{value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            fail(where, key, f"expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        out = [_convert(item, v, where, f"{key}[{i}]", meta.get("each", {})) for i, v in enumerate(value)]  # each: the items' bounds
        if meta.get("min_len") and len(out) < meta["min_len"]:
            fail(where, key, f"needs at least {meta['min_len']} {'entry' if meta['min_len'] == 1 else 'entries'}{hint}")
        if meta.get("unique") and (again := [v for i, v in enumerate(out) if v in out[:i]]):  # unique: what a repeat would do wrong
            fail(where, key, f"{again[0]!r} is listed twice; {meta['unique']}")
        return tuple(out)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, key)
    if tp is Duration:
        value = parse_duration(value, f"{where}: {key}")
    elif tp is bool:
        if not isinstance(value, bool):
            fail(where, key, f"expected true/false, got {value!r}")
        return value
    elif tp is int:
        value = whole(value)
        if isinstance(value, bool) or not isinstance(value, int):
            fail(where, key, f"expected an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:  # what numpy, JAX and parquet hold
            fail(where, key, f"must be a 64-bit integer (|value| < 2^63), got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(where, key, f"expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            fail(where, key, f"expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            fail(where, key, f"expected a string, got {value!r}")
        if meta.get("nonempty") and not value.strip():
            fail(where, key, f"must not be empty{hint}")
    elif tp is dict:
        if not isinstance(value, dict):
            fail(where, key, f"expected a mapping, got {short(value)}")
        return value
    if "gt" in meta and not value > meta["gt"]:
        fail(where, key, f"must be > {meta['gt']}, got {value!r}{hint}")
    if "ge" in meta and not value >= meta["ge"]:
        fail(where, key, f"must be >= {meta['ge']}, got {value!r}{hint}")
    if "le" in meta and not value <= meta["le"]:
        fail(where, key, f"must be <= {meta['le']}, got {value!r}{hint}")
    if "lt" in meta and not value < meta["lt"]:
        fail(where, key, f"must be < {meta['lt']}, got {value!r}{hint}")
    return value


@functools.cache
def _fields(cls) -> tuple[dict, dict]:
    """A dataclass's resolved type hints and init fields (resolving hints is slow: once per class)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def build(cls, data, where: str, key: str = ""):
    """Validate `data` against dataclass `cls`: unknown keys, missing keys, types and bounds."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(where, key, f"expected a mapping, got {short(data)}")
    data = canonical(cls, data, where, key)
    hints, fields = _known(cls, data, where, key)
    # a field's error names its aliases too: the user may have written one (renamed above)
    aliases: dict[str, list[str]] = {}
    for alias, canon in getattr(cls, "ALIASES", {}).items():
        aliases.setdefault(canon, []).append(alias)
    kwargs = {}
    for name, f in fields.items():
        sub = _join(key, name) + (f" (alias {', '.join(aliases[name])})" if name in aliases else "")
        if name in data:
            # a mapping key left empty in YAML (`overrides:` with its lines commented out) is
            # null: an empty mapping, as an empty section is
            value = {} if data[name] is None and hints[name] is dict else data[name]
            kwargs[name] = _convert(hints[name], value, where, sub, dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fail(where, sub, f"missing required key ({_type_name(hints[name])})")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check:
        check(lambda k, msg: fail(where, _join(key, k) + (f" (alias {', '.join(aliases[k])})" if k in aliases else ""), msg))
    return obj


def check_given(cls, data: dict, where: str, key: str = "") -> None:
    """Validate the keys `data` gives (unknown keys, types, bounds), as build does, where the
    rest comes from elsewhere (a preset file before its entry's overrides are merged in)."""
    data = canonical(cls, data, where, key)
    hints, fields = _known(cls, data, where, key)
    for k, v in data.items():
        _convert(hints[k], v, where, _join(key, k), dict(fields[k].metadata))


def _known(cls, data: dict, where: str, key: str):
    """cls's (type hints, fields), after failing on the first key of `data` that is not a field."""
    hints, fields = _fields(cls)
    for k in data:
        if k not in fields:
            fail(where, _join(key, str(k)), f"unknown key; allowed keys: {', '.join(fields)}")
    return hints, fields


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


def plain(obj) -> Any:
    """Dataclass → JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj
