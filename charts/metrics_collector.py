"""The metrics collector: one OpenTelemetry Collector that scrapes every serving pod and Karpenter into CloudWatch.

A Deployment of its own rather than the amazon-cloudwatch-observability add-on's agent: the add-on renders every
agent with hostNetwork: true (aws-observability/helm-charts@amazon-cloudwatch-observability-4.6.0:
charts/amazon-cloudwatch-observability/templates/linux/cloudwatch-agent-custom-resource.yaml), so its scrapes
would come from node IPs and the inference NetworkPolicy could only admit whole nodes; and the CloudWatch agent
drops Prometheus histograms. This pod has its own IP and labels, which the policy admits by name, and nothing else.
"""
from __future__ import annotations

import json

import cdk8s
import cdk8s_plus_35 as kplus
from cdk8s import Duration, JsonPatch, Size
from cdk8s_plus_35 import k8s
from constructs import Construct

import versions
from charts import observability as obs
from charts.security import restricted_container

RUN_AS_UID = 10001  # the contrib image's own non-root user
CONFIG_FILE = "config.json"  # the collector reads YAML, of which JSON is a subset
CONFIG_DIR = "/etc/otelcol"
_PSS = {f"pod-security.kubernetes.io/{mode}{suffix}": value
        for mode in ("enforce", "audit", "warn") for suffix, value in (("", "restricted"), ("-version", "latest"))}


class MetricsCollectorChart(cdk8s.Chart):
    """Namespace, RBAC for pod/node discovery, the config, the Deployment and a deny-all ingress policy."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster_name: str, region: str,
                 inference_namespace: str, scrape_interval_s: int, node_selector: dict[str, str]) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        ns, labels = obs.COLLECTOR_NAMESPACE, obs.COLLECTOR_LABELS
        self.namespace_object = kplus.Namespace(self, "namespace",
                                                metadata=cdk8s.ApiObjectMetadata(name=ns, labels={**labels, **_PSS}))
        service_account = kplus.ServiceAccount(
            self, "service-account", automount_token=True,
            metadata=cdk8s.ApiObjectMetadata(name=obs.COLLECTOR_SERVICE_ACCOUNT, namespace=ns, labels=labels))
        # Service discovery: pods (serving and Karpenter) and nodes (attach_metadata reads the zone label).
        role = kplus.ClusterRole(self, "cluster-role",
                                 metadata=cdk8s.ApiObjectMetadata(name=obs.COLLECTOR_NAME, labels=labels))
        for resource in ("pods", "nodes"):
            role.allow(["get", "list", "watch"], kplus.ApiResource.custom(api_group="", resource_type=resource))
        binding = kplus.ClusterRoleBinding(self, "cluster-role-binding", role=role,
                                           metadata=cdk8s.ApiObjectMetadata(name=obs.COLLECTOR_NAME, labels=labels))
        binding.add_subjects(service_account)

        config = obs.collector_config(cluster_name=cluster_name, region=region, namespace=inference_namespace,
                                      scrape_interval_s=scrape_interval_s)
        self.config_map = kplus.ConfigMap(
            self, "config", metadata=cdk8s.ApiObjectMetadata(name=obs.COLLECTOR_NAME, namespace=ns, labels=labels),
            data={CONFIG_FILE: json.dumps(config, indent=1, sort_keys=True)})

        deployment = kplus.Deployment(
            self, "deployment",
            metadata=cdk8s.ApiObjectMetadata(name=obs.COLLECTOR_NAME, namespace=ns, labels=labels, annotations={
                "checkov.io/skip1": "CKV_K8S_38=the collector discovers its scrape targets through the Kubernetes "
                                    "API (list/watch pods and nodes), which needs the service account token",
                "checkov.io/skip2": "CKV_K8S_43=pinned by release tag in versions.OTEL_COLLECTOR_IMAGE, reviewed "
                                    "with the other pins; imagePullPolicy Always re-resolves it on each start"}),
            pod_metadata=cdk8s.ApiObjectMetadata(labels=labels), select=False,
            # One scraper: two would publish every delta twice (CloudWatch sums them).
            replicas=1, strategy=kplus.DeploymentStrategy.recreate(),
            service_account=service_account, automount_service_account_token=True, enable_service_links=False,
            security_context=kplus.PodSecurityContextProps(ensure_non_root=True, user=RUN_AS_UID, group=RUN_AS_UID),
        )
        deployment.select(kplus.LabelSelector.of(labels=labels))
        deployment.scheduling.attract(kplus.Node.labeled(
            *(kplus.NodeLabelQuery.is_(key, value) for key, value in node_selector.items())))
        volume = kplus.Volume.from_config_map(self, "config-volume", self.config_map, name="config")
        health = kplus.Probe.from_http_get("/", port=obs.COLLECTOR_HEALTH_PORT, period_seconds=Duration.seconds(30),
                                           timeout_seconds=Duration.seconds(5), failure_threshold=3)
        memory = Size.mebibytes(256)
        container = deployment.add_container(
            name="collector", image=versions.OTEL_COLLECTOR_IMAGE,
            image_pull_policy=kplus.ImagePullPolicy.ALWAYS,
            args=[f"--config={CONFIG_DIR}/{CONFIG_FILE}"],
            # The memory_limiter processor's percentages are of this limit (GOMEMLIMIT keeps the GC under it).
            env_variables={"GOMEMLIMIT": kplus.EnvValue.from_value("200MiB")},
            ports=[kplus.ContainerPort(name="health", number=obs.COLLECTOR_HEALTH_PORT, protocol=kplus.Protocol.TCP)],
            resources=kplus.ContainerResources(
                cpu=kplus.CpuResources(request=kplus.Cpu.millis(100), limit=kplus.Cpu.millis(500)),
                memory=kplus.MemoryResources(request=memory, limit=memory)),
            liveness=health, readiness=health,
            security_context=restricted_container(),
        )
        container.mount(CONFIG_DIR, volume, read_only=True)
        cdk8s.ApiObject.of(deployment).add_json_patch(JsonPatch.add(
            "/spec/template/spec/securityContext/seccompProfile", k8s.SeccompProfile(type="RuntimeDefault")))
        self.deployment = deployment

        # Nothing needs to reach the collector (its health port serves the kubelet, which policies do not filter).
        kplus.NetworkPolicy(
            self, "network-policy",
            metadata=cdk8s.ApiObjectMetadata(name=f"{obs.COLLECTOR_NAME}-ingress", namespace=ns, labels=labels),
            selector=kplus.Pods.select(self, "collector-pods", labels=labels),
            ingress=kplus.NetworkPolicyTraffic(default=kplus.NetworkPolicyTrafficDefault.DENY),
        )
