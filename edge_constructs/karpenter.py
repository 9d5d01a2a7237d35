"""Karpenter: node IAM role, controller role via EKS Pod Identity, interruption queue and the OCI Helm chart.

The controller's IAM follows the scoping of Karpenter's own CloudFormation reference (getting-started
`cloudformation.yaml`, split into NodeLifecycle / IAMIntegration / EKSIntegration / Interruption /
ResourceDiscovery policies): launches only with the cluster's ownership tags, deletion only of what it tagged.
"""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

import versions
from edge_config import EdgeConfig
from edge_constructs.edge_cluster import SYSTEM_NODE_LABEL, SYSTEM_NODE_VALUE
from edge_constructs.edge_network import DISCOVERY_TAG
from edge_constructs.nag import acknowledge

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"

INTERRUPTION_EVENTS = {
    "SpotInterruption": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "Rebalance": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "InstanceStateChange": ("aws.ec2", "EC2 Instance State-change Notification"),
    "ScheduledChange": ("aws.health", "AWS Health Event"),
    "CapacityReservationInterruption": ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
}


class Karpenter(Construct):
    """Everything Karpenter needs; NodePools/EC2NodeClasses are applied separately (charts/nodepools.py)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EdgeConfig,
        cluster: eks.Cluster,
        vpc: ec2.IVpc,
        pod_identity_agent: cdk.CfnResource,
    ) -> None:
        super().__init__(scope, construct_id)
        name = config.cluster_name

        # ---- nodes: role (EC2_LINUX access entry) and the one security group they get
        self.node_role = iam.Role(
            self,
            "NodeRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"Instance role of Karpenter-launched nodes in {name}",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(p)
                for p in (
                    "AmazonEKSWorkerNodePolicy",
                    "AmazonEKS_CNI_Policy",
                    "AmazonEC2ContainerRegistryPullOnly",
                    "AmazonSSMManagedInstanceCore",
                )
            ],
        )
        self.node_access_entry = eks.AccessEntry(
            self,
            "NodeAccessEntry",
            cluster=cluster,
            principal=self.node_role.role_arn,
            access_entry_type=eks.AccessEntryType.EC2_LINUX,
            access_policies=[],
        )

        self.node_security_group = ec2.SecurityGroup(
            self,
            "NodeSecurityGroup",
            vpc=vpc,
            description=f"Karpenter nodes of {name} (inference NodePort rules are added by the workloads)",
            allow_all_outbound=True,
        )
        cdk.Tags.of(self.node_security_group).add(DISCOVERY_TAG, name)
        cluster_sg = cluster.cluster_security_group
        # Nodes talk to each other (pod-to-pod, DNS) and to the control plane / system nodes in the cluster SG.
        self.node_security_group.add_ingress_rule(self.node_security_group, ec2.Port.all_traffic(),
                                                  "Node-to-node and pod-to-pod traffic")
        self.node_security_group.add_ingress_rule(cluster_sg, ec2.Port.all_traffic(),
                                                  "Control plane and system nodes (kubelet, webhooks, DNS)")
        cluster_sg.add_ingress_rule(self.node_security_group, ec2.Port.all_traffic(),
                                    "Karpenter nodes to the API server, CoreDNS and system pods")

        # ---- interruption queue + EventBridge rules
        self.interruption_queue = sqs.Queue(
            self,
            "InterruptionQueue",
            retention_period=cdk.Duration.seconds(300),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        for rule_id, (source, detail_type) in INTERRUPTION_EVENTS.items():
            events.Rule(
                self,
                f"{rule_id}Rule",
                description=f"Karpenter interruption handling: {detail_type}",
                event_pattern=events.EventPattern(source=[source], detail_type=[detail_type]),
                targets=[targets.SqsQueue(self.interruption_queue)],
            )

        # ---- controller role via EKS Pod Identity
        self.controller_role = iam.Role(
            self,
            "ControllerRole",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
            description=f"Karpenter controller of {name} (EKS Pod Identity)",
        )
        self._policies = {
            policy_id: iam.Policy(self, policy_id, statements=statements, roles=[self.controller_role])
            for policy_id, statements in self._controller_statements(name).items()
        }
        self.pod_identity = eks.CfnPodIdentityAssociation(
            self,
            "ControllerPodIdentity",
            cluster_name=cluster.cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            role_arn=self.controller_role.role_arn,
        )

        self.chart = cluster.add_helm_chart(
            "Karpenter",
            repository=versions.KARPENTER_CHART_REPOSITORY,
            chart="karpenter",
            version=versions.KARPENTER_VERSION,
            release="karpenter",
            namespace=NAMESPACE,
            create_namespace=False,
            wait=True,
            timeout=cdk.Duration.minutes(10),
            values=self.helm_values(name, self.interruption_queue.queue_name),
        )
        # Credentials must be associable before the controller's first AWS call.
        self.chart.node.add_dependency(self.pod_identity, pod_identity_agent, self.node_access_entry)

        self._acknowledge()

    @staticmethod
    def helm_values(cluster_name: str, queue_name: str) -> dict:
        return {
            "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
            "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
            "replicas": 2,
            # Never on nodes Karpenter manages (it would evict itself); only on the managed system node group.
            "nodeSelector": {SYSTEM_NODE_LABEL: SYSTEM_NODE_VALUE, "kubernetes.io/os": "linux"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"}]}
                        ]
                    }
                },
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname",
                         "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "karpenter"}}}
                    ]
                },
            },
            "controller": {
                "resources": {
                    "requests": {"cpu": "500m", "memory": "512Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                }
            },
        }

    def _controller_statements(self, name: str) -> dict[str, list[iam.PolicyStatement]]:
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
                    resources=[self.node_role.role_arn],
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
                    resources=[self.interruption_queue.queue_arn],
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

    def _acknowledge(self) -> None:
        acknowledge(
            self.interruption_queue,
            "AwsSolutions-SQS3",
            "Interruption notices are only useful within minutes (300 s retention, per Karpenter's reference); a "
            "dead-letter queue would only collect stale events nobody acts on.",
        )
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
            acknowledge(self._policies["NodeLifecyclePolicy"], f"AwsSolutions-IAM5[Resource::{resource}]",
                        f"{why}; {reference}.")
        acknowledge(
            self._policies["IAMIntegrationPolicy"],
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:instance-profile/*]",
            "Karpenter names the instance profiles it creates per EC2NodeClass; every action is conditioned on the "
            "cluster ownership, region and ec2nodeclass tags, as in Karpenter's reference policy.",
        )
        discovery = self._policies["ResourceDiscoveryPolicy"]
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
        for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryPullOnly",
                       "AmazonSSMManagedInstanceCore"):
            acknowledge(
                self.node_role,
                f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                f"{policy} is one of the four AWS managed policies Karpenter documents for its node role; AWS keeps "
                "it current with new EKS/ECR/SSM API needs.",
            )
