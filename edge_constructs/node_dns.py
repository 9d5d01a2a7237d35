"""Route 53 rights of external-dns, which publishes one A record per serving node (edge.tls.mode "acme"), and the
CAA record that limits who may get a certificate for those names."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
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


class NodeCaaRecord(Construct):
    """CAA at the node subdomain: only the configured CA, by DNS-01, and (with ``account_uri``) only this cluster's
    ACME account may issue for ``<node>.<node_domain>`` (RFC 8659 tree climbing finds it for every node name;
    RFC 8657 ``accounturi`` / ``validationmethods``). A released node address that still has a name then cannot
    be turned into a certificate by whoever gets the address next."""

    def __init__(self, scope: Construct, construct_id: str, *, acme: AcmeConfig) -> None:
        super().__init__(scope, construct_id)
        zone = route53.HostedZone.from_hosted_zone_attributes(
            self, "Zone", hosted_zone_id=acme.hosted_zone_id, zone_name=acme.hosted_zone_name)
        self.record = route53.CaaRecord(
            self, "Caa", zone=zone, record_name=acme.node_domain, ttl=cdk.Duration.hours(1),
            values=[route53.CaaRecordValue(flag=0, tag=route53.CaaTag.ISSUE, value=acme.caa_value)],
            comment="edge-diffusion: only this ACME account may issue for the node names")
