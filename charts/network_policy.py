"""Ingress to the inference pods: the serving port from anywhere, the metrics port from the autoscaler and the
metrics collector only."""
from __future__ import annotations

import cdk8s
import cdk8s_plus_35 as kplus
from constructs import Construct

from charts import contract as c
from charts import observability as obs


def ingress_policy(scope: Construct, *, namespace: str, autoscaler_namespace: str,
                   udp_ports: tuple[int, int] | None = None) -> kplus.NetworkPolicy:
    # Enforced by the VPC CNI network-policy agent. Egress stays open: the server calls Secrets Manager, the Pod
    # Identity agent and the Kubernetes API.
    serving_pods = kplus.Pods.select(scope, "serving-pods", labels=c.SERVING_SELECTOR)
    autoscaler = kplus.Pods.all(scope, "autoscaler-pods",
                                namespaces=kplus.Namespaces.select(scope, "autoscaler", names=[autoscaler_namespace]))
    collector = kplus.Pods.select(scope, "metrics-collector", labels=obs.COLLECTOR_LABELS,
                                  namespaces=kplus.Namespaces.select(scope, "collector",
                                                                     names=[obs.COLLECTOR_NAMESPACE]))
    return kplus.NetworkPolicy(
        scope, "network-policy",
        metadata=cdk8s.ApiObjectMetadata(name=f"{c.COMPONENT}-ingress", namespace=namespace, labels=c.COMMON_LABELS),
        selector=serving_pods,
        ingress=kplus.NetworkPolicyTraffic(default=kplus.NetworkPolicyTrafficDefault.DENY, rules=[
            # Devices arrive through the NodePort with their own source IP (externalTrafficPolicy Local); who may
            # connect at all is decided by the node security group. The cluster is IPv4-only, so any IPv4 is anyone.
            # WebRTC media arrives on the UDP hostPorts (DNAT keeps the client's source IP), gated the same way.
            kplus.NetworkPolicyRule(peer=kplus.NetworkPolicyIpBlock.any_ipv4(scope, "anyone"),
                                    ports=[kplus.NetworkPolicyPort.tcp(c.HTTP_PORT),
                                           *([kplus.NetworkPolicyPort.udp_range(*udp_ports)] if udp_ports else [])]),
            # The load signal and Prometheus metrics: the KEDA operator reads /load, the collector /metrics
            # (charts/metrics_collector.py); nobody else.
            kplus.NetworkPolicyRule(peer=autoscaler, ports=[kplus.NetworkPolicyPort.tcp(c.METRICS_PORT)]),
            kplus.NetworkPolicyRule(peer=collector, ports=[kplus.NetworkPolicyPort.tcp(c.METRICS_PORT)]),
        ]),
    )
