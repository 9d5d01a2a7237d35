"""TLS for the device NodePort (edge.tls): cert-manager, the issuers, and for ACME the per-node DNS names."""
from __future__ import annotations

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from charts.node_dns import NodeDnsChart
from charts.tls import TlsIssuersChart
from edge_config import EdgeConfig
from edge_constructs.cert_manager import CERT_MANAGER_NAMESPACE, CertManager
from edge_constructs.node_dns import NodeCaaRecord, NodeDnsIdentity


class DeviceTls(Construct):
    """Everything the serving Certificate needs before the inference chart applies it.

    ``issuers`` is the manifest the inference workloads must follow; ``after`` are what cert-manager's pods need
    (system nodes, CoreDNS).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, cluster: eks.Cluster,
                 node_selector: dict[str, str], after: list) -> None:
        super().__init__(scope, construct_id)
        tls = config.tls
        region = cdk.Stack.of(self).region
        self.cert_manager = CertManager(self, "CertManager", cluster=cluster, tls=tls, node_selector=node_selector,
                                        after=after)
        self.issuers = cluster.add_cdk8s_chart("TlsIssuers", TlsIssuersChart(
            cdk8s.App(), "tls-issuers", tls=tls, cert_manager_namespace=CERT_MANAGER_NAMESPACE, region=region))
        # The chart installs the CRDs and waits for the webhook that admits these objects.
        self.issuers.node.add_dependency(self.cert_manager.chart)
        self.node_dns: eks.KubernetesManifest | None = None
        self.caa: NodeCaaRecord | None = None
        if tls.mode == "acme":
            self.caa = NodeCaaRecord(self, "NodeCaa", acme=tls.acme)
            identity = NodeDnsIdentity(self, "NodeDnsIdentity", cluster=cluster, acme=tls.acme)
            self.node_dns = cluster.add_cdk8s_chart("NodeDns", NodeDnsChart(
                cdk8s.App(), "node-dns", acme=tls.acme, local_zones=[zone.name for zone in config.local_zones],
                owner_id=config.cluster_name, region=region, node_selector=node_selector))
            # Credentials first: external-dns reads them once at start.
            self.node_dns.node.add_dependency(identity.identity.association, *after)
