"""Offline CEL gate: the ``x-kubernetes-validations`` rules of the vendored CRDs, evaluated like the API server.

For every object of a vendored CRD kind, the CRD's structural defaults are applied first (as the API server
does before validation), then every rule found on a schema node that has a value in the object is evaluated
with ``self`` bound to that value, using cel-python plus the Kubernetes CEL library functions the rules call.
Transition rules (those reading ``oldSelf``, or marked ``optionalOldSelf``) need a previous object and are
skipped and counted. A rule that does not evaluate to ``true`` (false, an error, an unknown function) fails.
Every CRD file in schemas/crds/ is picked up, so a newly vendored CRD is checked without a code change.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import re2
import yaml
from celpy import celtypes

CRD_DIR = Path(__file__).resolve().parent.parent / "schemas" / "crds"


# ---------------------------------------------------------------- Kubernetes CEL library (k8s.io/apiserver/pkg/cel/library)
# Strings, lists and regex extensions; RE2 as in the API server. An unimplemented function fails the gate
# with cel-python's "no matching overload" error, never silently passes.

def _split(text: Any, sep: Any, limit: Any = None) -> celtypes.ListType:
    parts = str(text).split(str(sep)) if limit is None else str(text).split(str(sep), max(int(limit) - 1, 0))
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _find(text: Any, pattern: Any) -> celtypes.StringType:
    match = re2.search(str(pattern), str(text))
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(text: Any, pattern: Any, limit: Any = -1) -> celtypes.ListType:
    found = [m.group(0) for m in re2.finditer(str(pattern), str(text))]
    return celtypes.ListType([celtypes.StringType(f) for f in (found if int(limit) < 0 else found[:int(limit)])])


def _index_of(value: Any, item: Any) -> celtypes.IntType:
    if isinstance(value, celtypes.ListType):
        return celtypes.IntType(list(value).index(item) if item in value else -1)
    return celtypes.IntType(str(value).find(str(item)))


K8S_FUNCTIONS = {
    "split": _split,
    "find": _find,
    "findAll": _find_all,
    "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
    "upperAscii": lambda s: celtypes.StringType(str(s).upper()),
    "trim": lambda s: celtypes.StringType(str(s).strip()),
    "replace": lambda s, old, new: celtypes.StringType(str(s).replace(str(old), str(new))),
    "join": lambda items, sep="": celtypes.StringType(str(sep).join(str(i) for i in items)),
    "charAt": lambda s, i: celtypes.StringType(str(s)[int(i)] if int(i) < len(str(s)) else ""),
    "substring": lambda s, start, end=None: celtypes.StringType(str(s)[int(start):None if end is None else int(end)]),
    "indexOf": _index_of,
    "isSorted": lambda items: celtypes.BoolType(list(items) == sorted(items)),
    "sum": lambda items: sum(items[1:], items[0]) if len(items) else celtypes.IntType(0),
    "min": lambda items: min(items),
    "max": lambda items: max(items),
}


# ---------------------------------------------------------------- defaulting


def apply_defaults(schema: dict, value: Any) -> Any:
    """Return `value` with the schema's `default`s filled in, recursively (structural defaulting)."""
    if isinstance(value, dict):
        out = dict(value)
        for name, prop in (schema.get("properties") or {}).items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = apply_defaults(prop, out[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            known = set(schema.get("properties") or {})
            out.update({k: apply_defaults(extra, v) for k, v in out.items() if k not in known})
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


# ---------------------------------------------------------------- evaluation


@dataclass
class CelReport:
    evaluated: int = 0
    skipped_transition: int = 0
    objects: int = 0
    rules: set[tuple[str, str]] = field(default_factory=set)  # (CRD kind, rule) pairs seen, evaluated or not
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"CEL gate: {self.objects} objects, {self.evaluated} rule evaluations, "
                f"{self.skipped_transition} transition-rule evaluations skipped (oldSelf), "
                f"{len(self.rules)} distinct rules reached")


def is_transition_rule(rule: dict) -> bool:
    return "oldSelf" in rule["rule"] or bool(rule.get("optionalOldSelf"))


@functools.cache
def _env() -> celpy.Environment:
    return celpy.Environment()


@functools.cache
def _program(rule: str) -> celpy.Runner:
    env = _env()
    return env.program(env.compile(rule), functions=K8S_FUNCTIONS)


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD in schemas/crds/."""
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _walk(schema: dict, value: Any, path: str, ident: str, kind: str, report: CelReport) -> None:
    for rule in schema.get("x-kubernetes-validations") or []:
        report.rules.add((kind, rule["rule"]))
        if is_transition_rule(rule):
            report.skipped_transition += 1
            continue
        report.evaluated += 1
        try:
            result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as exc:
            result = exc
        if not (isinstance(result, celtypes.BoolType) and bool(result)):
            outcome = "false" if isinstance(result, celtypes.BoolType) else f"an error ({result})"
            report.failures.append(f"{ident} at {path or '<root>'}: rule {rule['rule']!r} evaluated to {outcome}"
                                   + (f": {rule['message']}" if rule.get("message") else ""))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, sub in value.items():
            if name in props:
                _walk(props[name], sub, f"{path}.{name}" if path else name, ident, kind, report)
            elif isinstance(schema.get("additionalProperties"), dict):
                _walk(schema["additionalProperties"], sub, f"{path}[{name}]", ident, kind, report)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{i}]", ident, kind, report)


def check_objects(objects: list[dict], report: CelReport | None = None) -> CelReport:
    """Evaluate every applicable rule on every object of a vendored CRD kind; other kinds are ignored."""
    report = report or CelReport()
    schemas = crd_schemas()
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in schemas:
            continue
        report.objects += 1
        meta = obj.get("metadata") or {}
        ident = f"{obj['kind']} {meta.get('namespace', '')}/{meta.get('name', '?')}".replace(" /", " ")
        defaulted = apply_defaults(schemas[key], obj)
        _walk(schemas[key], defaulted, "", ident, obj["kind"], report)
    return report


def rules_in_crds() -> int:
    """How many rules the vendored CRDs hold in total (all served versions)."""
    count = 0

    def visit(node: Any) -> None:
        nonlocal count
        if isinstance(node, dict):
            count += len(node.get("x-kubernetes-validations") or [])
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    for schema in crd_schemas().values():
        visit(schema)
    return count
