"""The Karpenter controller's IAM policies and their cdk-nag acknowledgements.

The scoping follows Karpenter's own CloudFormation reference (getting-started `cloudformation.yaml`, split into
NodeLifecycle / IAMIntegration / EKSIntegration / Interruption / ResourceDiscovery policies): launches only with
the cluster's ownership tags, deletion only of what it tagged.
"""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam

from edge_constructs.nag import acknowledge


def controller_statements(name: str, *, node_role_arn: str, queue_arn: str) -> dict[str, list[iam.PolicyStatement]]:
    """Policy name -> statements, scoped like Karpenter's reference CloudFormation policy."""
    partition, region, account = cdk.Aws.PARTITION, cdk.Aws.REGION, cdk.Aws.ACCOUNT_ID

    def ec2_arn(resource: str, with_account: bool = True) -> str:
        return f"arn:{partition}:ec2:{region}:{'*' if with_account else ''}:{resource}"

    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{name}": "owned"}
    request_owned = {f"aws:RequestTag/kubernetes.io/cluster/{name}": "owned",
                     "aws:RequestTag/eks:eks-cluster-name": name}
    tagged_resources = [ec2_arn(r) for r in ("fleet/*", "instance/*", "volume/*", "network-interface/*",
                                              "launch-template/*", "spot-instances-request/*")]
    instance_profile = f"arn:{partition}:iam::{account}:instance-profile/*"
    return {
        "NodeLifecyclePolicy": [
            iam.PolicyStatement(
                sid="AllowScopedEC2InstanceAccessActions",
                actions=["ec2:RunInstances", "ec2:CreateFleet"],
                resources=[ec2_arn("image/*", False), ec2_arn("snapshot/*", False), ec2_arn("security-group/*"),
                           ec2_arn("subnet/*"), ec2_arn("capacity-reservation/*"),
                           ec2_arn("placement-group/*")],
            ),
            iam.PolicyStatement(
                sid="AllowScopedEC2LaunchTemplateAccessActions",
                actions=["ec2:RunInstances", "ec2:CreateFleet"],
                resources=[ec2_arn("launch-template/*")],
                conditions={"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            ),
            iam.PolicyStatement(
                sid="AllowScopedEC2InstanceActionsWithTags",
                actions=["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                resources=tagged_resources,
                conditions={"StringEquals": request_owned,
                            "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}},
            ),
            iam.PolicyStatement(
                sid="AllowScopedResourceCreationTagging",
                actions=["ec2:CreateTags"],
                resources=tagged_resources,
                conditions={
                    "StringEquals": {**request_owned,
                                     "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedResourceTagging",
                actions=["ec2:CreateTags"],
                resources=[ec2_arn("instance/*")],
                conditions={
                    "StringEquals": owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": name},
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedDeletion",
                actions=["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                resources=[ec2_arn("instance/*"), ec2_arn("launch-template/*")],
                conditions={"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            ),
        ],
        "IAMIntegrationPolicy": [
            iam.PolicyStatement(
                sid="AllowPassingInstanceRole",
                actions=["iam:PassRole"],
                resources=[node_role_arn],
                conditions={"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
            ),
            iam.PolicyStatement(
                sid="AllowScopedInstanceProfileCreationActions",
                actions=["iam:CreateInstanceProfile"],
                resources=[instance_profile],
                conditions={
                    "StringEquals": {**request_owned, "aws:RequestTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedInstanceProfileTagActions",
                actions=["iam:TagInstanceProfile"],
                resources=[instance_profile],
                conditions={
                    "StringEquals": {**owned, "aws:ResourceTag/topology.kubernetes.io/region": region,
                                     **request_owned, "aws:RequestTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                                   "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedInstanceProfileActions",
                actions=["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
                         "iam:DeleteInstanceProfile"],
                resources=[instance_profile],
                conditions={
                    "StringEquals": {**owned, "aws:ResourceTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            ),
        ],
        "EKSIntegrationPolicy": [
            iam.PolicyStatement(
                sid="AllowAPIServerEndpointDiscovery",
                actions=["eks:DescribeCluster"],
                resources=[f"arn:{partition}:eks:{region}:{account}:cluster/{name}"],
            ),
        ],
        "InterruptionPolicy": [
            iam.PolicyStatement(
                sid="AllowInterruptionQueueActions",
                actions=["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                resources=[queue_arn],
            ),
        ],
        "ResourceDiscoveryPolicy": [
            iam.PolicyStatement(
                sid="AllowRegionalReadActions",
                actions=["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                         "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypeOfferings",
                         "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates",
                         "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups",
                         "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
                resources=["*"],
                conditions={"StringEquals": {"aws:RequestedRegion": region}},
            ),
            iam.PolicyStatement(
                sid="AllowSSMReadActions",
                actions=["ssm:GetParameter"],
                resources=[f"arn:{partition}:ssm:{region}::parameter/aws/service/*"],
            ),
            iam.PolicyStatement(sid="AllowPricingReadActions", actions=["pricing:GetProducts"], resources=["*"]),
            iam.PolicyStatement(sid="AllowUnscopedInstanceProfileListAction",
                                actions=["iam:ListInstanceProfiles"], resources=["*"]),
            iam.PolicyStatement(sid="AllowInstanceProfileReadActions", actions=["iam:GetInstanceProfile"],
                                resources=[instance_profile]),
        ],
    }


def acknowledge_controller_policies(policies: dict[str, iam.Policy]) -> None:
    """Each wildcard of the reference policy, with the reason it cannot be narrowed."""
    reference = ("mirrors Karpenter's reference controller policy: ARNs of this kind cannot be known before "
                 "Karpenter creates or selects them")
    for resource, why in (
        ("arn:<AWS::Partition>:ec2:<AWS::Region>::image/*", "any AMI of the pinned alias release"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>::snapshot/*", "the snapshots behind those AMIs"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:security-group/*", "groups chosen by the discovery tag"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:subnet/*", "subnets chosen by the discovery tag"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:capacity-reservation/*", "optional capacity reservations"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:placement-group/*", "optional placement groups"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:launch-template/*",
         "launch templates Karpenter creates, gated on the cluster ownership tag"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:fleet/*", "fleets created only with the cluster's tags"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:instance/*",
         "instances created, tagged and terminated only with the cluster's ownership tags"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:network-interface/*", "ENIs created with the cluster's tags"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:spot-instances-request/*", "spot requests with the tags"),
        ("arn:<AWS::Partition>:ec2:<AWS::Region>:*:volume/*", "root volumes created with the cluster's tags"),
    ):
        acknowledge(policies["NodeLifecyclePolicy"], f"AwsSolutions-IAM5[Resource::{resource}]",
                    f"{why}; {reference}.")
    acknowledge(
        policies["IAMIntegrationPolicy"],
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:instance-profile/*]",
        "Karpenter names the instance profiles it creates per EC2NodeClass; every action is conditioned on the "
        "cluster ownership, region and ec2nodeclass tags, as in Karpenter's reference policy.",
    )
    discovery = policies["ResourceDiscoveryPolicy"]
    acknowledge(
        discovery,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:instance-profile/*]",
        "iam:GetInstanceProfile on the profiles Karpenter generated (names unknown before creation); read-only.",
    )
    acknowledge(
        discovery,
        "AwsSolutions-IAM5[Resource::*]",
        "EC2 Describe*, pricing:GetProducts and iam:ListInstanceProfiles do not support resource-level "
        "permissions; the EC2 reads are further limited to this region by aws:RequestedRegion.",
    )
    acknowledge(
        discovery,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ssm:<AWS::Region>::parameter/aws/service/*]",
        "Read-only access to AWS-published public SSM parameters, which is how Karpenter resolves the EKS AMI "
        "alias to an AMI id.",
    )
