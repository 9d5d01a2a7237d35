"""Teardown order for `cdk destroy`: Karpenter's nodes are gone before the NodePools and Karpenter itself go.

CloudFormation deletes in reverse dependency order. The workloads depend on this resource, which depends on
the NodePools manifest, which depends on the Karpenter chart; so on delete the pods go first, then this
resource terminates the cluster's Karpenter instances and waits for them (handlers/karpenter_teardown.py),
then the NodePools/EC2NodeClasses are deleted while Karpenter still runs (it removes its instance profiles
and launch templates), and only then is Karpenter uninstalled. Terminating directly, instead of relying on a
NodePool deletion that drains for up to the NodePools' 15-minute termination grace, keeps every step inside
the 15-minute Lambda limit of the kubectl handler and of this function.

With edge.tls.mode "acme" the same deletion, once the nodes are gone, removes the Route 53 records the cluster's
external-dns owns; the external-dns manifest depends on this resource, so it is deleted (and stops publishing)
before the records go.
"""
from __future__ import annotations


import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct, IDependable

from edge_config import AcmeConfig
from edge_constructs.cert_manager import route53_zone_arn
from edge_constructs.handler_function import handler_function
from edge_constructs.nag import acknowledge

RESOURCE_TYPE = "Custom::KarpenterNodeTeardown"


class KarpenterNodeTeardown(Construct):
    """A custom resource whose deletion removes every Karpenter node of the cluster (no-op on create/update)."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster_name: str, vpc: ec2.IVpc,
                 after: list[IDependable], acme: AcmeConfig | None = None, dns_owner_id: str | None = None) -> None:
        super().__init__(scope, construct_id)
        self.function = handler_function(
            self, "karpenter_teardown", timeout=cdk.Duration.minutes(15), memory_size=256,
            description=f"Terminates the Karpenter nodes of {cluster_name} when the stack is deleted",
            environment={"CLUSTER_NAME": cluster_name, "VPC_ID": vpc.vpc_id, **({
                "HOSTED_ZONE_ID": acme.hosted_zone_id, "NODE_DOMAIN": acme.node_domain,
                "DNS_OWNER_ID": dns_owner_id or cluster_name} if acme else {})})
        owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
        self.function.add_to_role_policy(iam.PolicyStatement(
            sid="TerminateOnlyThisClustersKarpenterInstances",
            actions=["ec2:TerminateInstances"],
            resources=[f"arn:{cdk.Aws.PARTITION}:ec2:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:instance/*"],
            conditions={"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
        ))
        self.function.add_to_role_policy(iam.PolicyStatement(
            sid="DeleteOnlyThisClustersCniInterfaces",
            actions=["ec2:DeleteNetworkInterface"],
            resources=[f"arn:{cdk.Aws.PARTITION}:ec2:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:network-interface/*"],
            conditions={"StringEquals": {"aws:ResourceTag/cluster.k8s.amazonaws.com/name": cluster_name}},
        ))
        self.function.add_to_role_policy(iam.PolicyStatement(
            sid="FindInstancesAndInterfaces",
            actions=["ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces"],
            resources=["*"],
        ))
        if acme:
            zone = route53_zone_arn(acme.hosted_zone_id)
            self.function.add_to_role_policy(iam.PolicyStatement(
                sid="DeleteOnlyNodeRecordsInTheNodeSubdomain",
                actions=["route53:ChangeResourceRecordSets"], resources=[zone],
                conditions={
                    "ForAllValues:StringEquals": {"route53:ChangeResourceRecordSetsActions": ["DELETE"],
                                                  "route53:ChangeResourceRecordSetsRecordTypes": ["A", "AAAA", "TXT"]},
                    "ForAllValues:StringLike": {"route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                        f"*.{acme.node_domain}"]},
                },
            ))
            self.function.add_to_role_policy(iam.PolicyStatement(
                sid="ListTheZonesRecords", actions=["route53:ListResourceRecordSets"], resources=[zone]))
        self.resource = cdk.CustomResource(self, "Resource", service_token=self.function.function_arn,
                                           resource_type=RESOURCE_TYPE)
        for dependency in after:
            self.resource.node.add_dependency(dependency)
        self._acknowledge()

    def _acknowledge(self) -> None:
        role = self.function.role
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "The teardown function only writes its own CloudWatch logs, which is exactly what this AWS managed "
            "policy grants.",
        )
        policy = role.node.find_child("DefaultPolicy")
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*]",
            "Karpenter's instance ids are unknown at synth; termination is conditioned on the cluster ownership "
            "tag and the karpenter.sh/nodepool tag Karpenter puts on every instance it launches.",
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*]",
            "The VPC CNI's ENI ids are unknown at synth; deletion is conditioned on the cluster tag the CNI puts "
            "on every interface it creates.",
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ec2:DescribeInstances and ec2:DescribeNetworkInterfaces do not support resource-level permissions.",
        )
