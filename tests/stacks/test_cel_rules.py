"""The CEL gate over every custom resource the synthesized app applies (and the opt-in add-ons' variant).

Counts: `pytest tests/stacks/test_cel_rules.py -q -s` prints them.
"""
from __future__ import annotations

import copy
import json

import pytest

from tests.k8s_cel import CelReport, apply_defaults, check_objects, crd_schemas, rules_in_crds
from tests.conftest import ADDONS_VARIANT
from tools.render_manifests import extract_manifests



@pytest.fixture(scope="module")
def applied_objects(templates, cluster_template) -> list[dict]:
    unique: dict[str, dict] = {}
    for template in [*templates.values(), cluster_template(**ADDONS_VARIANT)]:
        for group in extract_manifests(template).values():
            unique.update((json.dumps(o, sort_keys=True), o) for o in group)
    return list(unique.values())


def _first(objects: list[dict], kind: str) -> dict:
    return copy.deepcopy(next(o for o in objects if o["kind"] == kind))


def test_every_cel_rule_of_every_applied_custom_resource_holds(applied_objects):
    report = check_objects(applied_objects)
    print(report.summary() + f"; the vendored CRDs hold {rules_in_crds()} rules")
    assert not report.failures, "\n".join(report.failures)
    kinds = {o["kind"] for o in applied_objects}
    assert {"NodePool", "EC2NodeClass"} <= kinds
    assert report.evaluated >= 30 and report.skipped_transition >= 1


def test_planted_violations_fail(applied_objects):
    node_class = _first(applied_objects, "EC2NodeClass")
    node_class["spec"]["instanceProfile"] = "also-a-profile"  # role XOR instanceProfile
    node_pool = _first(applied_objects, "NodePool")
    node_pool["spec"]["disruption"]["budgets"].append({"nodes": "1", "schedule": "@daily"})  # schedule needs duration
    node_pool["spec"]["template"]["spec"]["requirements"].append(
        {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["x"]})
    failures = check_objects([node_class, node_pool]).failures
    assert any("has(self.role) && !has(self.instanceProfile)" in f for f in failures), failures
    assert any("has(x.schedule) == has(x.duration)" in f for f in failures), failures
    assert any('self != "karpenter.sh/nodepool"' in f for f in failures), failures


def test_crd_defaults_are_applied_before_the_rules():
    schemas = crd_schemas()
    pool_schema = schemas[("karpenter.sh/v1", "NodePool")]
    defaulted = apply_defaults(pool_schema, {"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                                             "metadata": {"name": "p"}, "spec": {"template": {"spec": {}},
                                                                                  "disruption": {}}})
    # consolidateAfter and budgets default like on the API server (budgets: [{nodes: 10%}]).
    assert defaulted["spec"]["disruption"]["budgets"] == [{"nodes": "10%"}]
    assert "consolidationPolicy" in defaulted["spec"]["disruption"]


def test_an_unknown_function_fails_instead_of_passing():
    report = CelReport()
    from tests import k8s_cel

    k8s_cel._walk({"x-kubernetes-validations": [{"rule": "self.noSuchFunction()"}]}, "v", "", "X x", "X", report)
    assert report.evaluated == 1 and len(report.failures) == 1
