"""The warm spare: placeholder pods, their PriorityClass and what they must never be mistaken for, checked on the
rendered objects together with the inference chart and the NodePools they land on."""
from __future__ import annotations

import json
import subprocess

import cdk8s
import pytest
import yaml

import edge_config
from charts import warm_spare
from charts.inference import InferenceChart
from charts.nodepools import nodepool_objects
from charts.warm_spare import WarmSpareChart
from tests.conftest import REPO_ROOT
from tests.k8s_schema import validate_k8s_object

IMAGES = {
    "nvidia": "111122223333.dkr.ecr.us-west-2.amazonaws.com/edge-diffusion-cuda:latest",
    "neuron": "111122223333.dkr.ecr.us-west-2.amazonaws.com/edge-diffusion-neuron:latest",
}
SPARES = 2
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


def _config(**workloads) -> edge_config.EdgeConfig:
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context["edge.workloads"] = json.dumps({**context["edge"].get("workloads", {}), **workloads})
    return edge_config.load_config(context)


def _spare_accelerators(cfg: edge_config.EdgeConfig) -> list[str]:
    return [a for a in cfg.accelerators if cfg.local_zones_offering(a)]


@pytest.fixture(scope="module")
def cfg() -> edge_config.EdgeConfig:
    return _config(warm_spare_nodes=SPARES)


@pytest.fixture(scope="module")
def spare_objects(cfg) -> list[dict]:
    return WarmSpareChart(cdk8s.App(), "warm-spare", workloads=cfg.workloads, accelerators=_spare_accelerators(cfg),
                          images=IMAGES).to_json()


@pytest.fixture(scope="module")
def inference_objects(cfg) -> list[dict]:
    return InferenceChart(cdk8s.App(), "inference", workloads=cfg.workloads, accelerators=cfg.accelerators,
                          images={a: IMAGES[a] for a in cfg.accelerators}, service_account_name="inference",
                          api_key_secret_arn="arn:aws:secretsmanager:us-west-2:111122223333:secret:k-AbCdEf",
                          region=cfg.region, autoscaler_namespace="keda", tls=cfg.tls,
                          compile_cache_bucket="compile-cache-bucket").to_json()


def _required_node_labels(pod: dict) -> dict[str, str]:
    """The node labels a pod requires (single-value `In` terms of its required node affinity)."""
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return {e["key"]: e["values"][0] for e in term["matchExpressions"] if e["operator"] == "In" and len(e["values"]) == 1}


def _of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod(deployment: dict) -> tuple[dict, dict]:
    template = deployment["spec"]["template"]
    return template["metadata"], template["spec"]


def _priority(pod_spec: dict, objects: list[dict]) -> int:
    """The priority the admission controller gives a pod: its class's value, 0 without one (no global default)."""
    classes = {o["metadata"]["name"]: o for o in _of_kind(objects, "PriorityClass")}
    assert not any(c.get("globalDefault") for c in classes.values()), "no PriorityClass may become the default"
    name = pod_spec.get("priorityClassName")
    return classes[name]["value"] if name else 0


def test_every_object_is_schema_valid(spare_objects):
    assert {o["kind"] for o in spare_objects} == {"PriorityClass", "NetworkPolicy", "Deployment"}
    for obj in spare_objects:
        validate_k8s_object(obj)


def test_one_placeholder_deployment_per_local_zone_accelerator(cfg, spare_objects):
    deployments = _of_kind(spare_objects, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
        warm_spare.deployment_name(a) for a in _spare_accelerators(cfg))
    assert all(d["spec"]["replicas"] == SPARES for d in deployments)


def test_placeholders_sit_below_every_inference_pod_and_never_preempt(spare_objects, inference_objects):
    everything = spare_objects + inference_objects
    (priority_class,) = _of_kind(spare_objects, "PriorityClass")
    assert priority_class["preemptionPolicy"] == "Never" and priority_class["globalDefault"] is False
    spare_priorities = {_priority(_pod(d)[1], everything) for d in _of_kind(spare_objects, "Deployment")}
    inference_priorities = {_priority(_pod(d)[1], everything) for d in _of_kind(inference_objects, "Deployment")}
    assert spare_priorities == {warm_spare.PRIORITY_VALUE}
    assert max(spare_priorities) < min(inference_priorities)


def test_a_placeholder_holds_exactly_the_room_of_one_inference_pod(cfg, spare_objects, inference_objects):
    for accelerator in _spare_accelerators(cfg):
        spare = next(d for d in _of_kind(spare_objects, "Deployment")
                     if d["metadata"]["name"] == warm_spare.deployment_name(accelerator))
        served = next(d for d in _of_kind(inference_objects, "Deployment")
                      if d["metadata"]["labels"].get("edge-diffusion.aws/accelerator") == accelerator)
        _, spare_pod = _pod(spare)
        _, served_pod = _pod(served)
        spare_container, served_container = spare_pod["containers"][0], served_pod["containers"][0]
        served_requests = {k: v for k, v in served_container["resources"]["requests"].items()
                           if k != "ephemeral-storage"}
        assert spare_container["resources"]["requests"] == served_requests
        # The same image, pulled the same way: the spare node has what the inference pod will run.
        assert spare_container["image"] == served_container["image"]
        assert spare_container["imagePullPolicy"] == served_container["imagePullPolicy"]
        assert spare_pod["tolerations"] == served_pod["tolerations"]
        assert _matches(_required_node_labels(served_pod), _required_node_labels(spare_pod))
        # One placeholder per node, so N placeholders hold N nodes.
        (term,) = spare_pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert _matches(term["labelSelector"]["matchLabels"], _pod(spare)[0]["labels"])


def test_placeholders_land_only_on_local_zone_pools_that_keep_them(cfg, spare_objects):
    pools = _of_kind(nodepool_objects(cfg, node_role="role"), "NodePool")
    for deployment in _of_kind(spare_objects, "Deployment"):
        metadata, pod = _pod(deployment)
        landing = [p for p in pools if _matches(_required_node_labels(pod), {**p["spec"]["template"]["metadata"]["labels"],
                                                                      "kubernetes.io/os": "linux"})]
        assert landing, f"{deployment['metadata']['name']} fits no NodePool"
        for pool in landing:
            assert pool["spec"]["weight"] == max(p["spec"]["weight"] for p in pools), "a Local Zone pool"
            zones = next(r for r in pool["spec"]["template"]["spec"]["requirements"]
                         if r["key"] == "topology.kubernetes.io/zone")["values"]
            assert set(zones) <= {lz.name for lz in cfg.local_zones}
            # A placeholder makes its node non-empty (WhenEmpty leaves it) and do-not-disrupt keeps consolidation
            # off it under any policy; with a terminationGracePeriod Karpenter v1 still rolls it on drift.
            assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"
            assert pool["spec"]["template"]["spec"]["terminationGracePeriod"]
        assert metadata["annotations"] == {warm_spare.DO_NOT_DISRUPT: "true"}


def test_nothing_routes_to_or_protects_a_placeholder(spare_objects, inference_objects):
    for deployment in _of_kind(spare_objects, "Deployment"):
        labels = _pod(deployment)[0]["labels"]
        for service in _of_kind(inference_objects, "Service"):
            assert not _matches(service["spec"]["selector"], labels), service["metadata"]["name"]
        # No PDB covers a placeholder: preemption and drains take it at once, and the inference PDBs keep
        # counting only inference pods.
        for pdb in _of_kind(inference_objects + spare_objects, "PodDisruptionBudget"):
            assert not _matches(pdb["spec"]["selector"]["matchLabels"], labels), pdb["metadata"]["name"]
        for scaled in _of_kind(inference_objects, "ScaledObject"):
            assert scaled["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]
    for pdb in _of_kind(inference_objects, "PodDisruptionBudget"):
        assert any(_matches(pdb["spec"]["selector"]["matchLabels"], _pod(d)[0]["labels"])
                   for d in _of_kind(inference_objects, "Deployment"))


def test_placeholders_are_isolated_and_restricted(spare_objects):
    (policy,) = _of_kind(spare_objects, "NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]
    for deployment in _of_kind(spare_objects, "Deployment"):
        metadata, pod = _pod(deployment)
        assert _matches(policy["spec"]["podSelector"]["matchLabels"], metadata["labels"])
        assert pod["automountServiceAccountToken"] is False
        assert pod["terminationGracePeriodSeconds"] <= 1
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["command"][0] == "python" and "SIGTERM" in container["command"][-1]


def test_the_placeholder_command_exits_on_sigterm(tmp_path):
    # The real command, as the container runs it: a preempted placeholder must go at once, not after its grace.
    import signal
    import sys
    import time

    proc = subprocess.Popen([sys.executable, *warm_spare.PLACEHOLDER_COMMAND[1:]])
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_checkov_passes_on_the_placeholders(spare_objects, tmp_path):
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}; run `make setup`")
    (tmp_path / "warm-spare.yaml").write_text(yaml.safe_dump_all(spare_objects, sort_keys=False))
    result = subprocess.run([str(CHECKOV), "--directory", str(tmp_path), "--framework", "kubernetes", "--output",
                             "json", "--skip-download"], capture_output=True, text=True, timeout=240, check=False)
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert report["summary"]["passed"] > 20


def test_off_by_default_and_bounded():
    assert _config().workloads.warm_spare_nodes == 0
    with pytest.raises(ValueError, match="warm_spare_nodes >= 1"):
        WarmSpareChart(cdk8s.App(), "w", workloads=_config().workloads, accelerators=["nvidia"], images=IMAGES)
    with pytest.raises(edge_config.ConfigError, match=r"workloads\.warm_spare_nodes"):
        _config(warm_spare_nodes=-1)
    with pytest.raises(edge_config.ConfigError, match=r"workloads\.warm_spare_nodes.*device limit"):
        _config(warm_spare_nodes=20)
