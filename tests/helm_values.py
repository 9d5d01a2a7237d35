"""Offline Helm-values gate: every key the app passes to a chart exists in that chart at the pinned version.

Helm silently ignores a values key no template reads, so a misspelt or renamed key deploys "fine" and does
nothing. A passed key is known when the chart's default ``values.yaml`` has it or its templates read it
(``templates-keys.txt``, vendored in schemas/helm-values/<chart>-<version>/). Below a free-form map (a
Kubernetes object such as nodeSelector or resources, a default that is an empty map, or a key the templates
read whole, with no deeper key read or defaulted) any sub-key is allowed. Where the chart ships
``values.schema.json``, the values are validated against it too, as ``helm install`` would.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

VALUES_DIR = Path(__file__).resolve().parent.parent / "schemas" / "helm-values"

# Keys whose value is a Kubernetes object or a user map in every chart: their sub-keys are not chart keys.
FREE_FORM = frozenset({
    "nodeSelector", "tolerations", "affinity", "annotations", "labels", "podAnnotations", "podLabels",
    "resources", "securityContext", "podSecurityContext", "containerSecurityContext", "topologySpreadConstraints",
    "env", "extraEnv", "extraArgs", "extraVolumes", "extraVolumeMounts", "extraObjects", "priorityClassName",
})


@dataclass(frozen=True)
class ChartKeys:
    name: str
    defaults: Any
    template_keys: frozenset[str]
    schema: dict | None

    def known(self, path: str) -> bool:
        if path in self.template_keys or any(k.startswith(path + ".") for k in self.template_keys):
            return True
        return _lookup(self.defaults, path) is not _MISSING

    def free_form(self, path: str) -> bool:
        if path.rsplit(".", 1)[-1] in FREE_FORM:
            return True
        default = _lookup(self.defaults, path)
        if default == {}:
            return True
        read_whole = path in self.template_keys and not any(k.startswith(path + ".") for k in self.template_keys)
        return read_whole and not (isinstance(default, dict) and default)


_MISSING = object()


def _lookup(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


@cache
def chart_keys(chart: str, version: str) -> ChartKeys:
    folder = VALUES_DIR / f"{chart}-{version}"
    if not folder.is_dir():
        raise AssertionError(
            f"chart {chart} {version} has no vendored values in {folder.relative_to(VALUES_DIR.parent.parent)}: "
            "copy its values.yaml and templates-keys.txt (and values.schema.json, if shipped) at that version")
    defaults = yaml.safe_load((folder / "values.yaml").read_text()) or {}
    keys = frozenset(line.strip() for line in (folder / "templates-keys.txt").read_text().splitlines() if line.strip())
    schema_file = folder / "values.schema.json"
    schema = json.loads(schema_file.read_text()) if schema_file.exists() else None
    return ChartKeys(f"{chart}-{version}", defaults, keys, schema)


def unknown_keys(keys: ChartKeys, values: dict, prefix: str = "") -> list[str]:
    """Dotted paths in `values` the chart neither defaults nor reads."""
    problems: list[str] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if not keys.known(path):
            problems.append(path)
            continue
        if isinstance(value, dict) and not keys.free_form(path):
            problems.extend(unknown_keys(keys, value, path + "."))
    return problems


def check_release(release: dict) -> list[str]:
    """Every problem with the values one Helm release passes (empty when they all exist in the chart)."""
    chart = release["chart"]
    keys = chart_keys(chart, release["version"])
    problems = [f"{chart} {release['version']}: values key {path!r} exists neither in the chart's values.yaml "
                "nor in its templates" for path in unknown_keys(keys, release["values"])]
    if keys.schema is not None:
        for error in jsonschema.Draft7Validator(keys.schema).iter_errors(release["values"]):
            where = ".".join(str(p) for p in error.absolute_path) or "<root>"
            problems.append(f"{chart} {release['version']}: values.schema.json at {where}: {error.message}")
    return problems
