"""Route 53 rights of external-dns, which publishes one A record per serving node (edge.tls.mode "acme")."""
from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from edge_config import AcmeConfig
from edge_constructs.cert_manager import route53_zone_arn
from edge_constructs.nag import acknowledge
from edge_constructs.pod_identity_role import PodIdentityRole

EXTERNAL_DNS_NAMESPACE = "external-dns"
EXTERNAL_DNS_SERVICE_ACCOUNT = "external-dns"


def node_dns_statements(acme: AcmeConfig) -> list[iam.PolicyStatement]:
    """Records under ``<node_subdomain>.<zone>`` only (A/AAAA for nodes, TXT for external-dns' ownership registry),
    in the one zone; ListHostedZones is the one call Route 53 cannot scope to a zone."""
    zone = route53_zone_arn(acme.hosted_zone_id)
    return [
        iam.PolicyStatement(
            actions=["route53:ChangeResourceRecordSets"], resources=[zone],
            conditions={
                "ForAllValues:StringEquals": {"route53:ChangeResourceRecordSetsRecordTypes": ["A", "AAAA", "TXT"]},
                "ForAllValues:StringLike": {"route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                    f"*.{acme.node_domain}"]},
            },
        ),
        iam.PolicyStatement(actions=["route53:ListResourceRecordSets", "route53:ListTagsForResources"],
                            resources=[zone]),
        iam.PolicyStatement(actions=["route53:ListHostedZones"], resources=["*"]),
    ]


class NodeDnsIdentity(Construct):
    """Pod Identity for the external-dns Deployment of the TLS chart."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.ICluster, acme: AcmeConfig) -> None:
        super().__init__(scope, construct_id)
        self.identity = PodIdentityRole(
            self, "ExternalDns", cluster=cluster, namespace=EXTERNAL_DNS_NAMESPACE,
            service_account=EXTERNAL_DNS_SERVICE_ACCOUNT,
            description=f"external-dns: node records under {acme.node_domain} in zone {acme.hosted_zone_id} only",
        )
        for statement in node_dns_statements(acme):
            self.identity.role.add_to_policy(statement)
        acknowledge(
            self.identity.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "route53:ListHostedZones has no resource-level permissions (AWS only accepts \"*\" for it); it lists "
            "zone names and ids, and every write is limited to the one zone and the node subdomain.",
        )
