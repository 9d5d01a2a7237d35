"""Every Kubernetes object the app applies is built by a typed class: cdk8s-plus-35, its `k8s` module, or the CRD
classes in imports/. Raw `cdk8s.ApiObject(...)` bodies and `cluster.add_manifest(<dict>)` are what this replaced."""
from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_ROOT

SOURCES = sorted([*(REPO_ROOT / "charts").glob("*.py"), *(REPO_ROOT / "edge_constructs").glob("*.py")])


def _untyped_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("ApiObject", "add_manifest"):
            found.append(f"line {node.lineno}: {name}(...)")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_hand_built_kubernetes_objects(path):
    assert _untyped_calls(ast.parse(path.read_text())) == [], (
        "build the object with cdk8s-plus-35, cdk8s_plus_35.k8s or an imports/ class (escape hatch: "
        "cdk8s.ApiObject.of(construct).add_json_patch for one field, with a comment saying why)")


def test_the_check_sees_a_raw_api_object():
    planted = ("import cdk8s\n"
               "cdk8s.ApiObject(chart, 'x', api_version='v1', kind='ConfigMap')\n"
               "cluster.add_manifest('M', {})\n")
    assert _untyped_calls(ast.parse(planted)) == ["line 2: ApiObject(...)", "line 3: add_manifest(...)"]
