"""cert-manager (Helm chart, pinned in versions.py) and, for ACME, the Route 53 rights of its DNS-01 solver."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

import versions
from edge_config import TLSConfig
from edge_constructs.nag import acknowledge
from edge_constructs.pod_identity_role import PodIdentityRole

CERT_MANAGER_NAMESPACE = "cert-manager"
# The chart names its controller's ServiceAccount after the release.
CERT_MANAGER_SERVICE_ACCOUNT = "cert-manager"


def cert_manager_values(node_selector: dict[str, str]) -> dict:
    """Chart values: CRDs from the chart (kept on uninstall so certificates survive), everything on system nodes."""
    return {
        "crds": {"enabled": True, "keep": True},
        "nodeSelector": node_selector,
        "webhook": {"nodeSelector": node_selector},
        "cainjector": {"nodeSelector": node_selector},
        "startupapicheck": {"nodeSelector": node_selector},
        # ClusterIssuers keep their secrets (the private CA's key, the ACME account key) in this namespace.
        "clusterResourceNamespace": CERT_MANAGER_NAMESPACE,
    }


def route53_zone_arn(zone_id: str) -> str:
    return f"arn:{cdk.Aws.PARTITION}:route53:::hostedzone/{zone_id}"


def dns01_statements(zone_id: str, challenge_name: str) -> list[iam.PolicyStatement]:
    """What cert-manager's Route 53 solver calls with a given hostedZoneID: TXT changes at one name, read the zone
    and poll the change (change ids are random, so GetChange cannot name them in advance)."""
    zone = route53_zone_arn(zone_id)
    return [
        iam.PolicyStatement(
            actions=["route53:ChangeResourceRecordSets"], resources=[zone],
            conditions={"ForAllValues:StringEquals": {
                "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"],
                "route53:ChangeResourceRecordSetsNormalizedRecordNames": [challenge_name],
            }},
        ),
        iam.PolicyStatement(actions=["route53:ListResourceRecordSets"], resources=[zone]),
        iam.PolicyStatement(actions=["route53:GetChange"], resources=[f"arn:{cdk.Aws.PARTITION}:route53:::change/*"]),
    ]


class CertManager(Construct):
    """The cert-manager release; with ``tls.mode == "acme"`` its controller may answer DNS-01 in one zone only."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.Cluster, tls: TLSConfig,
                 node_selector: dict[str, str], after: list) -> None:
        super().__init__(scope, construct_id)
        repository, chart, version = versions.CERT_MANAGER_CHART
        self.values = cert_manager_values(node_selector)
        self.chart = cluster.add_helm_chart(
            "CertManager", repository=repository, chart=chart, version=version, release=chart,
            namespace=CERT_MANAGER_NAMESPACE, create_namespace=True, values=self.values,
            # The TLS chart's Certificates need the CRDs and a webhook that answers.
            wait=True, timeout=cdk.Duration.minutes(10),
        )
        for dependency in after:
            self.chart.node.add_dependency(dependency)
        self.dns01: PodIdentityRole | None = None
        if tls.mode == "acme":
            self.dns01 = PodIdentityRole(
                self, "Dns01", cluster=cluster, namespace=CERT_MANAGER_NAMESPACE,
                service_account=CERT_MANAGER_SERVICE_ACCOUNT,
                description=f"cert-manager DNS-01 answers in Route 53 zone {tls.acme.hosted_zone_id} only",
            )
            for statement in dns01_statements(tls.acme.hosted_zone_id, f"_acme-challenge.{tls.acme.node_domain}"):
                self.dns01.role.add_to_policy(statement)
            # Credentials must be in place before the controller starts and caches its AWS session.
            self.chart.node.add_dependency(self.dns01.association)
            acknowledge(
                self.dns01.role.node.find_child("DefaultPolicy"),
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:route53:::change/*]",
                "route53:GetChange polls the status of the change cert-manager just made; change ids are generated "
                "by Route 53 per request, so no ARN can name them in advance, and the call only reads a status.",
            )
