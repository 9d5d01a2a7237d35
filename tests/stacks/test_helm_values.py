"""The Helm-values gate over every Helm release of the synthesized app (and the opt-in add-ons' variant)."""
from __future__ import annotations

import pytest

import versions
from tests.conftest import ADDONS_VARIANT
from tests.helm_values import chart_keys, check_release
from tools.render_manifests import extract_helm_releases



@pytest.fixture(scope="module")
def releases(templates, cluster_template) -> dict[str, dict]:
    found = {}
    for template in [*templates.values(), cluster_template(**ADDONS_VARIANT)]:
        found.update(extract_helm_releases(template))
    return found


def test_every_key_passed_to_a_chart_exists_at_the_pinned_version(releases):
    problems = [p for release in releases.values() for p in check_release(release)]
    print(f"helm-values gate: {len(releases)} releases checked ({', '.join(sorted(releases))})")
    assert not problems, "\n".join(problems)
    pinned = {pin[1] for pin in (versions.METRICS_SERVER_CHART, versions.NVIDIA_DEVICE_PLUGIN_CHART,
                                 versions.NEURON_CHART, versions.VOLCANO_CHART, versions.KEDA_CHART,
                                 versions.SPEGEL_CHART)}
    assert pinned | {"karpenter"} <= {r["chart"] for r in releases.values()}


def test_a_planted_unknown_key_fails(releases):
    volcano = dict(releases["Volcano"])
    # The keys the Volcano values used before: no 1.15.1 template reads them.
    volcano["values"] = {"custom": {"admission_nodeSelector": {"a": "b"}, "scheduler_ns": {"a": "b"}}}
    assert check_release(volcano) == [
        "volcano 1.15.1: values key 'custom.admission_nodeSelector' exists neither in the chart's values.yaml nor "
        "in its templates"]
    karpenter = dict(releases["Karpenter"])
    karpenter["values"] = {"settings": {"preferencePolicy": "Ignore", "preferencePolicies": "Ignore"},
                           "nodeSelector": {"any/label": "x"}}
    assert [p.split("'")[1] for p in check_release(karpenter)] == ["settings.preferencePolicies"]


def test_values_schema_is_enforced_where_the_chart_ships_one():
    keys = chart_keys("cert-manager", "v1.21.1")
    assert keys.schema is not None
    release = {"chart": "cert-manager", "version": "v1.21.1", "values": {"replicaCount": "three"}}
    assert any("values.schema.json at replicaCount" in p for p in check_release(release))


def test_an_unvendored_chart_version_fails():
    with pytest.raises(AssertionError, match="no vendored values"):
        check_release({"chart": "keda", "version": "0.0.1", "values": {}})
