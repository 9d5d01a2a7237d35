"""Turn pydantic's validation errors into `ConfigError`: one line per error, naming the dotted field path and the fix."""
from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Le
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

CONTEXT_KEY = "edge"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field path and the fix."""


@dataclass(frozen=True)
class Hint:
    """Field metadata read when pydantic's own check fails: what to call a value and how to fix it."""

    fix: str | None = None
    noun: str | None = None


class FieldProblem(ValueError):
    """Raised by validators; `at` is the location below the validated field or model (list index, sub-field)."""

    def __init__(self, problem: str, fix: str, at: tuple[str | int, ...] = ()) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem = problem
        self.fix = fix
        self.at = at


def fail(path: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {problem}. Fix: {fix}")


def dotted(path: str, loc: tuple[Any, ...]) -> str:
    return path + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _inner(tp: Any) -> Any:
    """The type a list index or mapping key leads to (Optional and Annotated removed)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp


def _lookup(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that owns the last named field of `loc`, and that field's info (None when unknown)."""
    owner: type[BaseModel] | None = None
    info: FieldInfo | None = None
    tp: Any = root
    for part in loc:
        tp = _inner(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            owner, info = tp, tp.model_fields.get(part)
            if info is None:
                return owner, None
            tp = info.annotation
        else:
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            if not args:
                break
            tp = args[-1] if typing.get_origin(tp) in (dict, Mapping) else args[0]
    return owner, info


def _bounds(info: FieldInfo | None) -> tuple[Any, Any]:
    meta = info.metadata if info else []
    low = next((m.ge for m in meta if isinstance(m, Ge)), None)
    high = next((m.le for m in meta if isinstance(m, Le)), None)
    return low, high


def _choices(ctx: dict[str, Any]) -> str:
    return ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))


def _explain(root: type[BaseModel], path: str, error: Any) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if isinstance(ctx.get("error"), FieldProblem):
        problem = ctx["error"]
        return f"{dotted(path, loc + problem.at)}: {problem.problem}. Fix: {problem.fix}"
    if "[key]" in loc:
        return (f"{dotted(path, loc[:loc.index('[key]')])}: unknown field (typo?). "
                f"Fix: remove it or use one of: {_choices(ctx)}")
    owner, info = _lookup(root, loc)
    hint = next((m for m in (info.metadata if info else []) if isinstance(m, Hint)), Hint())
    low, high = _bounds(info)
    whole = f"give a whole number between {low} and {high}"
    if kind == "extra_forbidden":
        names = ", ".join(sorted(owner.model_fields)) if owner else ""
        problem, fix = "unknown field (typo?)", f"remove it or use one of: {names}"
    elif kind == "missing":
        problem, fix = "required field is missing", "add it to the config"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        problem, fix = f"expected an integer, got {value!r}", whole
    elif kind in ("greater_than_equal", "less_than_equal") and info is not None and info.annotation is int:
        problem, fix = f"{value} is out of range", whole
    elif kind in ("greater_than_equal", "less_than_equal", "float_type", "float_parsing"):
        problem = f"expected a number between {low} and {high}, got {value!r}"
        fix = hint.fix or f"give a number between {low} and {high}"
    elif kind in ("bool_type", "bool_parsing"):
        problem, fix = f"expected true or false, got {value!r}", "give a JSON boolean (true/false)"
    elif kind in ("string_type", "string_too_short"):
        problem, fix = f"expected a non-empty string, got {value!r}", hint.fix or "give a non-empty string"
    elif kind == "string_pattern_mismatch":
        problem, fix = f"{value!r} is not valid", hint.fix or f"match {ctx.get('pattern')}"
    elif kind == "string_too_long":
        problem, fix = "too long", hint.fix or f"use at most {ctx.get('max_length')} characters"
    elif kind == "literal_error":
        problem, fix = f"unknown {hint.noun or 'value'} {value!r}", hint.fix or f"use one of: {_choices(ctx)}"
    elif kind == "too_short":
        problem, fix = "must not be empty", hint.fix or "list at least one value"
    elif kind in ("list_type", "tuple_type"):
        problem, fix = f"expected a JSON list, got {value!r}", "give a list [...]"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        problem, fix = f"expected a JSON object, got {type(value).__name__} {value!r}", "give an object {...}"
    else:
        problem, fix = error["msg"], hint.fix or "see the field reference in docs/cluster.md"
    return f"{dotted(path, loc)}: {problem}. Fix: {fix}"


def config_error(root: type[BaseModel], exc: ValidationError, path: str = CONTEXT_KEY) -> ConfigError:
    """All of a validation's errors, the first one leading (so the message starts with its field path); `path` is
    where `root` sits in the config."""
    return ConfigError("\n".join(_explain(root, path, error) for error in exc.errors()))
