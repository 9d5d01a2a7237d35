"""Cluster add-ons in the synthesized EdgeClusterStack: Volcano (opt-in, ordered after its webhook), Container
Insights' auto-instrumentation, and Karpenter's handling of preferred scheduling terms."""
from __future__ import annotations

import json

import versions
from edge_config import load_config
from edge_constructs.cluster_addons import SYSTEM_NODE_SELECTOR
from tests.conftest import ADDONS_VARIANT
from tests.k8s_schema import validate_k8s_object
from tests.test_edge_config import DEFAULT_CONTEXT
from tools.render_manifests import HELM_TYPE, MANIFEST_TYPE, extract_helm_releases, extract_manifests

CONFIG = load_config(DEFAULT_CONTEXT)


def _helm_resource(template: dict, release: str) -> tuple[str, dict]:
    found = [(lid, r) for lid, r in template["Resources"].items()
             if r["Type"] == HELM_TYPE and r["Properties"]["Release"] == release]
    assert len(found) == 1, f"expected one Helm release {release!r}, found {[lid for lid, _ in found]}"
    return found[0]


def _pod_specs(objects: list[dict]) -> list[dict]:
    specs = []
    for obj in objects:
        spec = obj.get("spec", {})
        if obj.get("kind") == "Pod":
            specs.append(spec)
        elif "template" in spec:
            specs.append(spec["template"].get("spec", {}))
    return specs


# ---------------------------------------------------------------- Volcano


def test_volcano_is_opt_in_and_nothing_is_scheduled_by_it(templates):
    template = templates["EdgeClusterStack"]
    assert CONFIG.volcano_enabled is False
    assert "Volcano" not in extract_helm_releases(template)
    groups = extract_manifests(template)
    assert "VolcanoInferenceQueue" not in groups
    for objects in groups.values():
        for spec in _pod_specs(objects):
            assert spec.get("schedulerName", "default-scheduler") == "default-scheduler"


def test_enabled_volcano_queue_waits_for_the_admission_webhook(cluster_template):
    template = cluster_template(**ADDONS_VARIANT)
    chart_id, chart = _helm_resource(template, "volcano")
    # helm --wait returns only once the admission Deployment is available, i.e. its webhook answers.
    assert chart["Properties"].get("Wait") is True
    assert int(chart["Properties"]["Timeout"].rstrip("s")) >= 600
    queues = [(lid, r) for lid, r in template["Resources"].items() if r["Type"] == MANIFEST_TYPE
              and '"kind":"Queue"' in json.dumps(r["Properties"]["Manifest"]).replace("\\", "").replace(" ", "")]
    assert len(queues) == 1
    queue_id, queue = queues[0]
    assert chart_id in queue["DependsOn"]
    [queue_object] = extract_manifests(template)["VolcanoInferenceQueue"]
    validate_k8s_object(queue_object)
    assert (queue_object["kind"], queue_object["metadata"]["name"]) == ("Queue", "inference")
    release = extract_helm_releases(template)["Volcano"]
    assert (release["repository"], release["chart"], release["version"]) == versions.VOLCANO_CHART


def test_volcano_values_use_keys_the_chart_reads(cluster_template):
    values = extract_helm_releases(cluster_template(**ADDONS_VARIANT))["Volcano"]["values"]
    # Volcano 1.15.1 templates read custom.<component>_ns as the nodeSelector of each component.
    assert values["custom"] == {f"{c}_ns": SYSTEM_NODE_SELECTOR
                                for c in ("default", "admission", "controller", "scheduler")}


# ---------------------------------------------------------------- Container Insights


def test_container_insights_never_instruments_the_inference_namespace(templates):
    addons = {r["Properties"]["AddonName"]: r["Properties"] for r in templates["EdgeClusterStack"]["Resources"].values()
              if r["Type"] == "AWS::EKS::Addon"}
    values = json.loads(addons["amazon-cloudwatch-observability"]["ConfigurationValues"])
    auto_monitor = values["manager"]["applicationSignals"]["autoMonitor"]
    assert CONFIG.workloads.namespace in auto_monitor["exclude"]["namespaces"]


# ---------------------------------------------------------------- Karpenter and preferred scheduling terms


def test_karpenter_ignores_preferences_so_replicas_stay_in_the_local_zone(templates):
    template = templates["EdgeClusterStack"]
    soft_zone_spreads = [
        constraint
        for objects in extract_manifests(template).values()
        for spec in _pod_specs(objects)
        for constraint in spec.get("topologySpreadConstraints", [])
        if constraint["topologyKey"] == "topology.kubernetes.io/zone"
        and constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    ]
    settings = extract_helm_releases(template)["Karpenter"]["values"]["settings"]
    if soft_zone_spreads:
        # With the default "Respect", Karpenter treats ScheduleAnyway as required while the region pool can
        # satisfy it, and launches the extra replicas in the parent region.
        assert settings.get("preferencePolicy") == "Ignore"
    assert settings.get("preferencePolicy") == "Ignore"
