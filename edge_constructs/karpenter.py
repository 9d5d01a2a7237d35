"""Karpenter: node IAM role, controller role via EKS Pod Identity, interruption queue and the OCI Helm chart.

The controller's policies live in karpenter_controller_policy.py; the teardown order in karpenter_teardown.py.
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
from edge_constructs.karpenter_controller_policy import acknowledge_controller_policies, controller_statements
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
            for policy_id, statements in controller_statements(
                name, node_role_arn=self.node_role.role_arn, queue_arn=self.interruption_queue.queue_arn).items()
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
            "settings": {
                "clusterName": cluster_name,
                "interruptionQueue": queue_name,
                # Preferred terms (the inference pods' ScheduleAnyway zone spread) must not steer provisioning:
                # with "Respect", Karpenter treats them as required while the region pool can satisfy them and
                # launches extra replicas in the parent region instead of the Local Zone.
                "preferencePolicy": "Ignore",
            },
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

    def _acknowledge(self) -> None:
        acknowledge(
            self.interruption_queue,
            "AwsSolutions-SQS3",
            "Interruption notices are only useful within minutes (300 s retention, per Karpenter's reference); a "
            "dead-letter queue would only collect stale events nobody acts on.",
        )
        acknowledge_controller_policies(self._policies)
        for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryPullOnly",
                       "AmazonSSMManagedInstanceCore"):
            acknowledge(
                self.node_role,
                f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                f"{policy} is one of the four AWS managed policies Karpenter documents for its node role; AWS keeps "
                "it current with new EKS/ECR/SSM API needs.",
            )
