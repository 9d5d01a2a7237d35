"""The metrics collector chart and its configuration (charts/metrics_collector.py, charts/observability.py)."""
from __future__ import annotations

import json

import cdk8s
import pytest

import versions
from charts import contract as c
from charts import observability as obs
from charts.metrics_collector import CONFIG_FILE, MetricsCollectorChart
from tests.k8s_schema import validate_k8s_object

NODE_SELECTOR = {"edge-diffusion.aws/node-role": "system"}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    chart = MetricsCollectorChart(cdk8s.App(), "metrics-collector", cluster_name="edge", region="us-west-2",
                                  inference_namespace="inference", scrape_interval_s=60, node_selector=NODE_SELECTOR)
    return chart.to_json()


def one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def config(objects) -> dict:
    return json.loads(one(objects, "ConfigMap")["data"][CONFIG_FILE])


def test_objects_are_valid_kubernetes(objects):
    for obj in objects:
        validate_k8s_object(obj)
    assert sorted(o["kind"] for o in objects) == sorted([
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment",
        "NetworkPolicy"])


def test_one_restricted_collector_on_system_nodes_with_the_pinned_image(objects):
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert obs.COLLECTOR_LABELS.items() <= spec["template"]["metadata"]["labels"].items()
    assert not pod.get("hostNetwork")  # its own pod IP, so the inference NetworkPolicy can name it
    (container,) = pod["containers"]
    assert container["image"] == versions.OTEL_COLLECTOR_IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"] == [{"key": k, "operator": "In", "values": [v]}
                                            for k, v in NODE_SELECTOR.items()]
    namespace = one(objects, "Namespace")["metadata"]
    assert namespace["name"] == obs.COLLECTOR_NAMESPACE
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_discovery_rbac_is_read_only(objects):
    (rule, *more) = one(objects, "ClusterRole")["rules"]
    rules = [rule, *more]
    assert {r for x in rules for r in x["resources"]} == {"pods", "nodes"}
    assert {v for x in rules for v in x["verbs"]} == {"get", "list", "watch"}


def test_scrape_jobs_keep_the_serving_metrics_port_and_karpenter(config):
    jobs = {j["job_name"]: j for j in config["receivers"]["prometheus"]["config"]["scrape_configs"]}
    serving = jobs[obs.SCRAPE_JOB]
    (sd,) = serving["kubernetes_sd_configs"]
    assert sd["namespaces"]["names"] == ["inference"] and sd["attach_metadata"] == {"node": True}
    keep_port = next(r for r in serving["relabel_configs"]
                     if r["source_labels"] == ["__meta_kubernetes_pod_container_port_name"])
    assert keep_port["regex"] == c.METRICS_PORT_NAME
    assert {r["target_label"] for r in serving["relabel_configs"] if "target_label" in r} == set(
        obs.TARGET_DIMENSIONS)
    assert jobs[obs.KARPENTER_JOB]["kubernetes_sd_configs"][0]["namespaces"]["names"] == [obs.KARPENTER_NAMESPACE]
    # The collector expands ${...} in its config: no relabel text may contain a dollar sign.
    assert "$" not in json.dumps(config)


def test_every_published_metric_has_a_declaration_and_counters_become_sums(config):
    emf = config["exporters"]["awsemf"]
    assert emf["namespace"] == obs.NAMESPACE and emf["dimension_rollup_option"] == "NoDimensionRollup"
    assert emf["log_group_name"] == obs.log_group_name("edge")
    declared = {(d["metric_name_selectors"][0].removeprefix("^").removesuffix("\\z"), frozenset(dims))
                for d in emf["metric_declarations"] for dims in d["dimensions"]}
    assert declared == obs.dimension_sets()
    (statement,) = config["processors"]["transform/counters"]["metric_statements"][0]["statements"]
    for m in obs.METRICS:
        assert (f'metric.name == "{m.name}"' in statement) is m.counter, m.name
    assert config["service"]["pipelines"]["metrics"] == {
        "receivers": ["prometheus"], "processors": ["memory_limiter", "transform/counters", "batch"],
        "exporters": ["awsemf"]}


def test_every_dimension_is_a_target_label_or_a_label_of_its_series():
    for m in obs.METRICS:
        available = {obs.CLUSTER, *m.labels} | (set(obs.TARGET_DIMENSIONS) if m.source == "serving" else set())
        for dims in m.dimension_sets:
            assert set(dims) <= available, (m.name, dims)


def test_the_collector_accepts_no_ingress(objects):
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"] and not policy.get("ingress")
