"""Offline validation of every Kubernetes object the stacks apply.

- Core kinds: kubernetes-validate in strict mode (unknown fields rejected) for the cluster's Kubernetes version
  (or the newest schema the package ships that is not newer).
- Karpenter, KEDA and Volcano kinds: the vendored CRD ``openAPIV3Schema`` (schemas/crds/), made strict by adding
  ``additionalProperties: false`` to every object schema that declares properties and does not set
  ``x-kubernetes-preserve-unknown-fields``. The API server would silently prune a misspelt field; here it fails.
  CEL rules (``x-kubernetes-validations``) are evaluated separately, by the CEL gate in tests/k8s_cel.py.
  Their ``metadata`` is checked as a strict core ObjectMeta.
- Any other kind is a failure.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

import versions

CRD_DIR = Path(__file__).resolve().parent.parent / "schemas" / "crds"


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()
           if key not in ("x-kubernetes-validations",)}
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        out.get("type") in ("object", ["object", "null"])
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> strict validator, for every served version of every vendored CRD."""
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema = _strict(schema)
            # metadata is checked separately as a strict core ObjectMeta.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            schema.setdefault("required", [])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def _fail(obj: dict, detail: str) -> AssertionError:
    meta = obj.get("metadata") or {}
    ident = f"{obj.get('kind')} {obj.get('apiVersion')} {meta.get('namespace', '')}/{meta.get('name', '?')}"
    return AssertionError(f"{ident}: {detail}")


def _validate_core(obj: dict, report_as: dict | None = None) -> None:
    try:
        kubernetes_validate.validate(obj, versions.KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        # kubernetes-validate copies the jsonschema error's fields onto its own exception.
        where = "/".join(str(p) for p in exc.absolute_path) or "<root>"
        raise _fail(report_as or obj, f"at {where}: {exc.message}") from None


def validate_k8s_object(obj: dict) -> None:
    """Raise AssertionError naming the object and the failing path unless `obj` is valid."""
    if not isinstance(obj, dict):
        raise AssertionError(f"not a Kubernetes object: {obj!r}")
    for field in ("apiVersion", "kind", "metadata"):
        if field not in obj:
            raise _fail(obj, f"missing required field {field!r}")
    key = (obj["apiVersion"], obj["kind"])
    validators = crd_validators()
    if key in validators:
        errors = sorted(validators[key].iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            details = "; ".join(
                f"at {'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:5]
            )
            raise _fail(obj, details)
        # A ConfigMap carries nothing but metadata, so this checks it as a strict core ObjectMeta.
        _validate_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, report_as=obj)
        return
    try:
        _validate_core(obj)
    except kubernetes_validate.SchemaNotFoundError:
        known = ", ".join(sorted(f"{k} ({a})" for a, k in validators))
        raise _fail(obj, f"unknown kind: neither a core Kubernetes {versions.KUBERNETES_VERSION} kind nor a "
                         f"vendored CRD ({known})") from None
