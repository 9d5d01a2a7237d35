"""EdgeClusterStack: Local Zone VPC, EKS (aws_eks_v2), Karpenter, add-ons and NodePools."""
from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from charts.nodepools import NodePoolsChart
from edge_config import EdgeConfig
from edge_constructs.cluster_addons import SYSTEM_NODE_SELECTOR, ClusterAddons
from edge_constructs.compile_cache_bucket import CompileCacheBucket
from edge_constructs.device_tls import DeviceTls
from edge_constructs.edge_cluster import EdgeCluster
from edge_constructs.edge_network import EdgeNetwork
from edge_constructs.inference_workloads import InferenceWorkloads
from edge_constructs.karpenter import Karpenter
from edge_constructs.karpenter_teardown import KarpenterNodeTeardown
from edge_constructs.metrics_collection import MetricsCollection
from edge_constructs.nag import acknowledge
from edge_constructs.node_image_cache_guard import image_cache_snapshot_id
from edge_constructs.peer_image_mirror import PeerImageMirror


class EdgeClusterStack(cdk.Stack):
    """Everything needed to run Stable Diffusion pods on GPU and Inferentia2 nodes in AWS Local Zones.

    Attributes for wiring: ``vpc``, ``cluster`` (aws_eks_v2.Cluster), ``node_security_group`` (the group every
    Karpenter node gets), ``karpenter_node_role``, ``addons``, ``metrics`` (the serving metrics' collection) and
    ``config``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config

        self.network = EdgeNetwork(self, "Network", config=config)
        self.vpc: ec2.Vpc = self.network.vpc

        self.edge_cluster = EdgeCluster(self, "Eks", config=config, network=self.network)
        self.cluster: eks.Cluster = self.edge_cluster.cluster

        self.addons = ClusterAddons(
            self, "Addons", config=config, cluster=self.cluster, system_nodegroup=self.edge_cluster.system_nodegroup
        )
        self.karpenter = Karpenter(
            self, "Karpenter", config=config, cluster=self.cluster, vpc=self.vpc,
            pod_identity_agent=self.addons.pod_identity_agent,
        )
        self.karpenter.chart.node.add_dependency(self.edge_cluster.system_nodegroup, self.addons.coredns)
        self.node_security_group: ec2.SecurityGroup = self.karpenter.node_security_group
        self.karpenter_node_role: iam.Role = self.karpenter.node_role

        self.nodepools = self.cluster.add_cdk8s_chart(
            "NodePools",
            NodePoolsChart(cdk8s.App(), "nodepools", config=config, node_role=self.karpenter_node_role.role_name,
                           image_cache_snapshot_id=image_cache_snapshot_id(self, config)),
        )
        # The CRDs come with the Karpenter chart.
        self.nodepools.node.add_dependency(self.karpenter.chart)
        # On delete: workloads, then the nodes, then the NodePools, then Karpenter (see karpenter_teardown.py).
        self.karpenter_teardown = KarpenterNodeTeardown(
            self, "KarpenterTeardown", cluster_name=config.cluster_name, vpc=self.vpc,
            after=[self.nodepools, self.karpenter.chart],
            acme=config.tls.acme if config.tls.mode == "acme" else None, dns_owner_id=config.cluster_name,
        )

        # In-zone peer pulls for the Local Zone nodes (their containerd settings come with the EC2NodeClasses).
        self.peer_image_mirror = PeerImageMirror(
            self, "PeerImageMirror", cluster=self.cluster, local_zones=[lz.name for lz in config.local_zones],
            after=[self.edge_cluster.system_nodegroup, self.addons.coredns])

        cdk.CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        cdk.CfnOutput(self, "NodeSecurityGroupId", value=self.node_security_group.security_group_id)

        self._acknowledge_stack_findings()

        # cert-manager and the issuers of the device port's certificate (none with edge.tls.mode "off").
        self.device_tls: DeviceTls | None = None
        if config.tls.enabled:
            self.device_tls = DeviceTls(
                self, "DeviceTls", config=config, cluster=self.cluster, node_selector=SYSTEM_NODE_SELECTOR,
                after=[self.edge_cluster.system_nodegroup, self.addons.coredns, self.addons.pod_identity_agent])
            if self.device_tls.node_dns is not None:
                # On delete: external-dns stops, the nodes go, then their records (karpenter_teardown.py); the CAA
                # record outlives them all.
                self.device_tls.node_dns.node.add_dependency(self.karpenter_teardown.resource)
                self.karpenter_teardown.resource.node.add_dependency(self.device_tls.caa.record)
        # The nvidia pods' shared compile cache (edge.workloads.cuda.compile_cache).
        self.compile_cache: CompileCacheBucket | None = None
        if "nvidia" in config.accelerators and config.workloads.cuda.s3_cache:
            self.compile_cache = CompileCacheBucket(self, "CompileCache", cache=config.workloads.cuda.compile_cache)
            cdk.CfnOutput(self, "CompileCacheBucket", value=self.compile_cache.bucket.bucket_name,
                          description="S3 bucket of the nvidia pods' compile cache")
        # KEDA brings the ScaledObject CRD; the Pod Identity agent and the NodePools must exist before pods start;
        # the serving Certificate needs its issuer.
        self.inference = InferenceWorkloads(
            self, "InferenceWorkloads", config=config, cluster=self.cluster,
            node_security_group=self.node_security_group, compile_cache=self.compile_cache,
            depends_on=[self.addons.keda, self.addons.pod_identity_agent, self.nodepools,
                        self.karpenter_teardown.resource,
                        *([self.device_tls.issuers] if self.device_tls else [])],
        )

        # The serving metrics into CloudWatch; the inference chart's NetworkPolicy admits this collector.
        self.metrics = MetricsCollection(
            self, "Metrics", config=config, cluster=self.cluster, node_selector=SYSTEM_NODE_SELECTOR,
            # The teardown too: on delete the collector's pod goes before the nodes (karpenter_teardown.py).
            depends_on=[self.edge_cluster.system_nodegroup, self.addons.coredns, self.addons.pod_identity_agent,
                        self.karpenter_teardown.resource])

    @property
    def availability_zones(self) -> list[str]:
        # The configured parent-region AZs, so synth never needs an AZ context lookup (no credentials needed).
        return list(self.config.region_azs)

    def _acknowledge_stack_findings(self) -> None:
        """Findings on constructs aws_eks_v2 creates for us: the cluster role, node group role, kubectl provider."""
        cluster_role = self.cluster.node.find_child("Role")
        acknowledge(
            cluster_role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEKSClusterPolicy]",
            "AmazonEKSClusterPolicy is the service-role policy EKS requires for its control plane; AWS updates it "
            "with new EKS features and it cannot be replaced by a customer policy.",
        )
        nodegroup_role = self.edge_cluster.system_nodegroup.role
        for policy, why in (
            ("AmazonEKSWorkerNodePolicy", "lets kubelet describe its instance and join the cluster"),
            ("AmazonEKS_CNI_Policy", "lets the VPC CNI attach ENIs and assign pod IPs on system nodes"),
            ("AmazonEC2ContainerRegistryReadOnly", "lets system nodes pull EKS add-on images from ECR"),
        ):
            acknowledge(
                nodegroup_role,
                f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]",
                f"{policy} is required on EKS managed node group roles: it {why}; AWS maintains it.",
            )

        provider = self.cluster.node.find_child("KubectlProvider")
        handler = provider.node.find_child("Handler")
        on_event_role = provider.node.find_child("Provider").node.find_child("framework-onEvent").node.find_child(
            "ServiceRole")
        for role in (handler.role, on_event_role):
            acknowledge(
                role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaBasicExecutionRole]",
                "CDK's kubectl custom-resource Lambdas only need to write their own CloudWatch logs, which is exactly "
                "what this AWS managed policy grants.",
            )
            acknowledge(
                role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSLambdaVPCAccessExecutionRole]",
                "The kubectl Lambdas run in the VPC to reach the private EKS endpoint; this managed policy is the "
                "minimal ENI management Lambda needs for VPC attachment.",
            )
        acknowledge(
            handler.role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly]",
            "The kubectl handler pulls the OCI Helm charts (Karpenter, Neuron) from ECR; read-only registry access "
            "is what helm pull needs.",
        )
        has_ecr_public = self.get_logical_id(handler.node.find_child("HasEcrPublic"))
        acknowledge(
            handler.role,
            "AwsSolutions-IAM4[Policy::{\"Fn::If\":[\"" + has_ecr_public + "\",{\"Fn::Join\":[\"\",[\"arn:\","
            "{\"Ref\":\"AWS::Partition\"},\":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly\"]]},"
            "{\"Ref\":\"AWS::NoValue\"}]}]",
            "Charts are pulled from public.ecr.aws (Karpenter, Neuron); CDK adds ECR Public read-only access only in "
            "partitions that have ECR Public.",
        )
        acknowledge(
            handler,
            "AwsSolutions-L1",
            "The kubectl handler's runtime is chosen by aws_eks_v2 to match the kubectl layer; it is upgraded with "
            "aws-cdk-lib, not by this app.",
        )
        handler_arn = self.get_logical_id(handler.node.default_child)
        acknowledge(
            on_event_role.node.find_child("DefaultPolicy"),
            f"AwsSolutions-IAM5[Resource::<{handler_arn}.Arn>:*]",
            "The custom-resource framework may invoke any version of its own kubectl handler function; the "
            "wildcard is limited to that one function's qualifiers.",
        )
        for subnet in [*self.vpc.public_subnets, *self.vpc.private_subnets]:
            acknowledge(
                subnet,
                "CloudFormation-Validate::W3010",
                "AZ names are explicit config (edge.region_azs) because Local Zone subnets must pair with named "
                "parent-region AZs and synth must not look AZs up.",
            )
