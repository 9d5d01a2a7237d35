"""The cluster side's check of the node image cache snapshot id (handlers/snapshot_guard.py).

Without it, whoever can write the SSM String parameter decides which snapshot every Local Zone node mounts as
containerd's store, i.e. what runs in every pod there. The guard resolves the id at each deploy and passes it on
only if this account owns the snapshot and the image pipeline's builder tagged it; the EC2NodeClasses name the
guard's output, never the raw parameter.
"""
from __future__ import annotations


import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from charts.nodepools import node_classes
from edge_config import EdgeConfig
from edge_constructs.handler_function import handler_function
from edge_constructs.nag import acknowledge
from edge_constructs.node_image_cache import ROLE_TAG, SNAPSHOT_ROLE_VALUE

RESOURCE_TYPE = "Custom::NodeImageCacheSnapshot"
# What the image pipeline's CreateSnapshot step tags (node_image_cache.py).
SNAPSHOT_TAG = (ROLE_TAG, SNAPSHOT_ROLE_VALUE)


def image_cache_snapshot_id(scope: Construct, config: EdgeConfig) -> str | None:
    """The snapshot id the pipeline recorded last, verified at each stack update; None when no node uses the cache
    (off, or every Local Zone class has instance store for containerd). A deploy after a publish picks up the
    newer snapshot, and Karpenter drifts the cached Local Zone nodes onto it."""
    if not config.node_image_cache.attach_to_nodes or all(
            spec.instance_store for spec in node_classes(config) if spec.zone_type == "local-zone"):
        return None
    return NodeImageCacheSnapshotGuard(scope, "NodeImageCacheSnapshot",
                                       parameter_name=config.image_cache_parameter_name).snapshot_id


class NodeImageCacheSnapshotGuard(Construct):
    """``snapshot_id``: the recorded snapshot id, verified by a custom resource at deploy time."""

    def __init__(self, scope: Construct, construct_id: str, *, parameter_name: str) -> None:
        super().__init__(scope, construct_id)
        recorded = ssm.StringParameter.value_for_string_parameter(self, parameter_name)
        self.function = handler_function(
            self, "snapshot_guard", timeout=cdk.Duration.minutes(1), memory_size=128,
            description="Accepts the node image cache snapshot only if this account owns it and the pipeline tagged it")
        self.function.add_to_role_policy(iam.PolicyStatement(actions=["ec2:DescribeSnapshots"], resources=["*"]))
        self.resource = cdk.CustomResource(self, "Resource", service_token=self.function.function_arn,
                                           resource_type=RESOURCE_TYPE, properties={
                                               "SnapshotId": recorded, "ParameterName": parameter_name,
                                               "TagKey": SNAPSHOT_TAG[0], "TagValue": SNAPSHOT_TAG[1]})
        self.snapshot_id: str = self.resource.get_att_string("SnapshotId")
        acknowledge(self.function.role,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    "The snapshot check only writes its own CloudWatch logs, which is exactly what this AWS managed "
                    "policy grants.")
        acknowledge(self.function.role.node.find_child("DefaultPolicy"), "AwsSolutions-IAM5[Resource::*]",
                    "ec2:DescribeSnapshots has no resource-level permissions; the call only reads.")
