"""Cluster add-ons, every version pinned in versions.py: EKS managed add-ons and Helm charts."""
from __future__ import annotations

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

import versions
from charts.volcano import VolcanoQueueChart
from edge_config import EdgeConfig
from edge_constructs.edge_cluster import SYSTEM_NODE_LABEL, SYSTEM_NODE_VALUE
from edge_constructs.nag import acknowledge

SYSTEM_NODE_SELECTOR = {SYSTEM_NODE_LABEL: SYSTEM_NODE_VALUE}
NVIDIA_NAMESPACE = "nvidia-device-plugin"
VOLCANO_NAMESPACE = "volcano-system"
KEDA_NAMESPACE = "keda"
CLOUDWATCH_NAMESPACE = "amazon-cloudwatch"
HELM_WAIT_TIMEOUT = cdk.Duration.minutes(10)


def _gpu_affinity(manufacturer_key: str, values: list[str]) -> dict:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": manufacturer_key, "operator": "In",
                                                             "values": values}]}]
            }
        }
    }


def volcano_values() -> dict:
    """Volcano 1.15.1 reads custom.<component>_ns as each component's nodeSelector (default_ns: all of them)."""
    return {"custom": {f"{component}_ns": SYSTEM_NODE_SELECTOR
                       for component in ("default", "admission", "controller", "scheduler")}}


def cloudwatch_configuration(inference_namespace: str) -> dict:
    """amazon-cloudwatch-observability add-on values.

    Its Application Signals auto-monitor (on by default since 4.x) injects an OpenTelemetry init container and
    PYTHONPATH into Python workloads behind a Service, which the restricted, read-only inference pods must not
    get; the inference namespace is excluded by name (operator MonitorConfig.exclude.namespaces).
    """
    return {"manager": {"applicationSignals": {"autoMonitor": {"exclude": {"namespaces": [inference_namespace]}}}}}


class ClusterAddons(Construct):
    """Managed add-ons split around the system node group: networking before nodes, CoreDNS after."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EdgeConfig,
        cluster: eks.Cluster,
        system_nodegroup: eks.Nodegroup,
    ) -> None:
        super().__init__(scope, construct_id)
        self._cluster = cluster

        # Nodes only turn Ready once vpc-cni runs, so networking and the Pod Identity agent precede the node group.
        # The network policy agent enforces the inference chart's NetworkPolicy (metrics port reachable from KEDA
        # only); without it the policy would be accepted and silently ignored.
        self.vpc_cni = self._managed("vpc-cni", configuration={"enableNetworkPolicy": "true"})
        self.kube_proxy = self._managed("kube-proxy")
        self.pod_identity_agent = self._managed("eks-pod-identity-agent")
        for addon in (self.vpc_cni, self.kube_proxy, self.pod_identity_agent):
            system_nodegroup.node.add_dependency(addon)
        # CoreDNS pods need nodes to become ACTIVE.
        self.coredns = self._managed(
            "coredns", configuration={"nodeSelector": SYSTEM_NODE_SELECTOR, "replicaCount": 2}
        )
        self.coredns.node.add_dependency(system_nodegroup)

        self.cloudwatch_role = iam.Role(
            self,
            "CloudWatchAgentRole",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
            description="Container Insights agent (amazon-cloudwatch-observability) via EKS Pod Identity",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("CloudWatchAgentServerPolicy")],
        )
        acknowledge(
            self.cloudwatch_role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/CloudWatchAgentServerPolicy]",
            "CloudWatchAgentServerPolicy is the policy AWS documents for the Container Insights agent; it only "
            "writes metrics/logs and reads agent config, and AWS maintains it with the add-on.",
        )
        self.cloudwatch = self._managed(
            "amazon-cloudwatch-observability",
            configuration=cloudwatch_configuration(config.workloads.namespace),
            pod_identity=[eks.CfnAddon.PodIdentityAssociationProperty(
                role_arn=self.cloudwatch_role.role_arn, service_account="cloudwatch-agent")],
        )
        self.cloudwatch.node.add_dependency(self.pod_identity_agent, system_nodegroup)

        after_nodes = [system_nodegroup, self.coredns]
        self.metrics_server = self._helm(
            "MetricsServer", versions.METRICS_SERVER_CHART, "kube-system",
            {"nodeSelector": SYSTEM_NODE_SELECTOR, "replicas": 2}, after_nodes,
        )
        # Device plugins only for the accelerators this config enables (no idle DaemonSets, no unused charts).
        self.nvidia_device_plugin: eks.HelmChart | None = None
        self.neuron: eks.HelmChart | None = None
        if "nvidia" in config.accelerators:
            self.nvidia_device_plugin = self._helm(
                "NvidiaDevicePlugin", versions.NVIDIA_DEVICE_PLUGIN_CHART, NVIDIA_NAMESPACE,
                {
                    # Karpenter labels GPU nodes with the manufacturer; no Node Feature Discovery needed.
                    "affinity": _gpu_affinity("karpenter.k8s.aws/instance-gpu-manufacturer", ["nvidia"]),
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
                after_nodes,
            )
        if "neuron" in config.accelerators:
            self.neuron = self._helm(
                "NeuronDevicePlugin", versions.NEURON_CHART, "kube-system",
                # One NeuronDevice per pod needs no contiguous-core placement, so the scheduler extension stays off.
                {"scheduler": {"enabled": False}, "npd": {"enabled": False}},
                after_nodes,
            )
        self.volcano: eks.HelmChart | None = None
        self.inference_queue: eks.KubernetesManifest | None = None
        if config.volcano_enabled:
            # The chart registers Queue webhooks with failurePolicy Fail, and a Queue is cluster-scoped (no
            # namespace selector exempts it): the Queue may only be applied once the admission Deployment is
            # available, which helm --wait guarantees (image pull on a fresh node takes minutes).
            self.volcano = self._helm(
                "Volcano", versions.VOLCANO_CHART, VOLCANO_NAMESPACE, volcano_values(), after_nodes,
                wait=True,
            )
            self.inference_queue = cluster.add_cdk8s_chart("VolcanoInferenceQueue",
                                                           VolcanoQueueChart(cdk8s.App(), "volcano-queue"))
            self.inference_queue.node.add_dependency(self.volcano)
        self.keda = self._helm(
            "Keda", versions.KEDA_CHART, KEDA_NAMESPACE, {"nodeSelector": SYSTEM_NODE_SELECTOR}, after_nodes,
        )

    def _managed(self, name: str, *, configuration: dict | None = None,
                 pod_identity: list | None = None) -> eks.CfnAddon:
        addon = eks.CfnAddon(
            self,
            "".join(part.capitalize() for part in name.split("-")),
            cluster_name=self._cluster.cluster_name,
            addon_name=name,
            addon_version=versions.ADDON_VERSIONS[name],
            # The cluster starts without self-managed add-ons, so nothing is overwritten that we did not create.
            resolve_conflicts="OVERWRITE",
            configuration_values=cdk.Stack.of(self).to_json_string(configuration) if configuration else None,
            pod_identity_associations=pod_identity,
        )
        return addon

    def _helm(self, construct_id: str, pin: tuple[str, str, str], namespace: str, values: dict,
              after: list, *, wait: bool = False) -> eks.HelmChart:
        repository, chart_name, version = pin
        chart = self._cluster.add_helm_chart(
            construct_id,
            # For OCI references the handler pulls `repository` and installs the untarred `chart` directory.
            repository=repository,
            chart=chart_name,
            version=version,
            release=chart_name,
            namespace=namespace,
            create_namespace=True,
            values=values,
            wait=wait,
            timeout=HELM_WAIT_TIMEOUT if wait else None,
        )
        for dependency in after:
            chart.node.add_dependency(dependency)
        return chart
