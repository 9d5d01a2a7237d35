"""The EKS control plane (aws_eks_v2) and its small Graviton system node group."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk.lambda_layer_kubectl_v35 import KubectlV35Layer
from constructs import Construct

import versions
from edge_config import EdgeConfig
from edge_constructs.edge_network import EdgeNetwork
from edge_constructs.nag import acknowledge

# The Kubernetes version lives in versions.py; this map only translates it to the CDK enum and fails on drift.
_K8S_VERSIONS = {"1.35": eks.KubernetesVersion.V1_35}

SYSTEM_NODE_LABEL = "edge-diffusion.aws/node-role"
SYSTEM_NODE_VALUE = "system"


def kubernetes_version() -> eks.KubernetesVersion:
    try:
        return _K8S_VERSIONS[versions.KUBERNETES_VERSION]
    except KeyError:
        raise ValueError(
            f"versions.KUBERNETES_VERSION={versions.KUBERNETES_VERSION} has no kubectl layer import here; bump "
            "lambda_layer_kubectl, cdk8s-plus and this map together"
        ) from None


def no_admin_warning(config: EdgeConfig) -> str:
    return (
        "edge.admin_principal_arn is null, so no human can reach the cluster's Kubernetes API (only the CDK "
        "kubectl handler has an access entry). Before deploying, set one: cdk deploy -c "
        "edge.admin_principal_arn=arn:aws:iam::ACCOUNT:role/Admin (or in cdk.json). On a running cluster: "
        f"aws eks create-access-entry --cluster-name {config.cluster_name} --principal-arn ARN && "
        f"aws eks associate-access-policy --cluster-name {config.cluster_name} --principal-arn ARN "
        "--access-scope type=cluster --policy-arn "
        "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    )


class EdgeCluster(Construct):
    """EKS with access entries, all control-plane logs, KMS-encrypted secrets and a CIDR-restricted endpoint."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, network: EdgeNetwork) -> None:
        super().__init__(scope, construct_id)

        self.secrets_key = kms.Key(
            self,
            "SecretsKey",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {config.cluster_name}",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=config.cluster_name,
            version=kubernetes_version(),
            vpc=network.vpc,
            # The control plane's ENIs go only to parent-region subnets (Local Zones can't host them).
            vpc_subnets=[ec2.SubnetSelection(subnets=network.control_plane_subnets)],
            endpoint_access=eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*config.cluster_endpoint_cidrs),
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
            secrets_encryption_key=self.secrets_key,
            # Managed node group + Karpenter instead of EKS Auto Mode, so Local Zone subnets and inf2 are ours to pick.
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            # vpc-cni, kube-proxy and coredns come as pinned managed add-ons (see ClusterAddons), not unmanaged.
            bootstrap_self_managed_addons=False,
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=KubectlV35Layer(self, "KubectlLayer"),
                # The handler runs in the VPC and uses the private endpoint, so the public one stays CIDR-restricted.
                private_subnets=network.control_plane_subnets,
            ),
        )
        if config.admin_principal_arn:
            self.cluster.grant_cluster_admin("AdminAccess", config.admin_principal_arn)
        else:
            cdk.Annotations.of(self).add_warning_v2("edge-diffusion:no-cluster-admin", no_admin_warning(config))

        self.system_launch_template = ec2.LaunchTemplate(
            self,
            "SystemNodeTemplate",
            require_imdsv2=True,
            # hop limit 1: system pods get AWS credentials through Pod Identity, never the node's IMDS role.
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(50, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3),
                )
            ],
        )
        self.system_nodegroup = self.cluster.add_nodegroup_capacity(
            "SystemNodes",
            instance_types=[ec2.InstanceType(t) for t in config.system_nodes.instance_types],
            ami_type=eks.NodegroupAmiType.AL2023_ARM_64_STANDARD,
            min_size=config.system_nodes.min_size,
            desired_size=config.system_nodes.desired_size,
            max_size=config.system_nodes.max_size,
            subnets=ec2.SubnetSelection(subnets=network.control_plane_subnets),
            labels={SYSTEM_NODE_LABEL: SYSTEM_NODE_VALUE},
            launch_template_spec=eks.LaunchTemplateSpec(
                id=self.system_launch_template.launch_template_id,
                version=self.system_launch_template.latest_version_number,
            ),
        )
        acknowledge(
            self.cluster,
            "AwsSolutions-EKS1",
            "The public API endpoint is restricted to edge.cluster_endpoint_cidrs (validated non-0.0.0.0/0); "
            "the kubectl handler uses the private endpoint from inside the VPC.",
        )
