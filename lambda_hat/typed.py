"""Build frozen dataclasses from plain YAML data, with one-line errors naming file and key."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class InputError(Exception):
    """Bad user input (config, card, CLI value): reported in one line, exit code 2."""


def fail(where: str, key: str, msg: str) -> typing.NoReturn:
    raise InputError(f"{where}: {key or '<top>'}: {msg}")


def load_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{path}: malformed YAML{at}: {problem}") from None


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def positive(**kw):
    """Field metadata: value must be > 0."""
    return {"gt": 0, **kw}


def nonneg(**kw):
    return {"ge": 0, **kw}


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
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}.get(
        tp, str(tp)
    )


def _convert(tp, value, where: str, key: str, meta: dict):
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
        out = [_convert(item, v, where, f"{key}[{i}]", {}) for i, v in enumerate(value)]
        if meta.get("min_len") and len(out) < meta["min_len"]:
            fail(where, key, f"needs at least {meta['min_len']} entries")
        return tuple(out)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, key)
    if tp is bool:
        if not isinstance(value, bool):
            fail(where, key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(where, key, f"expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(where, key, f"expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            fail(where, key, f"expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            fail(where, key, f"expected a string, got {value!r}")
    elif tp is dict:
        if not isinstance(value, dict):
            fail(where, key, f"expected a mapping, got {value!r}")
        return value
    if "gt" in meta and not value > meta["gt"]:
        fail(where, key, f"must be > {meta['gt']}, got {value!r}")
    if "ge" in meta and not value >= meta["ge"]:
        fail(where, key, f"must be >= {meta['ge']}, got {value!r}")
    if "le" in meta and not value <= meta["le"]:
        fail(where, key, f"must be <= {meta['le']}, got {value!r}")
    if "lt" in meta and not value < meta["lt"]:
        fail(where, key, f"must be < {meta['lt']}, got {value!r}")
    return value


def build(cls, data, where: str, key: str = ""):
    """Validate `data` against dataclass `cls`: unknown keys, missing keys, types and bounds."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(where, key, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            fail(where, _join(key, str(k)), f"unknown key; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = _join(key, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where, sub, dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            fail(where, sub, f"missing required key ({_type_name(hints[name])})")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check:
        check(lambda k, msg: fail(where, _join(key, k), msg))
    return obj


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
