"""Wires the inference service into the cluster: API key, Pod Identity, NodePort access and the chart."""
from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct, IDependable

from charts.inference import ACCELERATORS, SERVICE_NAME, InferenceChart
from charts.warm_spare import WarmSpareChart
from edge_config import EdgeConfig
from edge_constructs.cluster_addons import KEDA_NAMESPACE
from edge_constructs.compile_cache_bucket import CompileCacheBucket
from edge_constructs.inference_api_key import InferenceApiKey
from edge_constructs.inference_node_port import InferenceNodePortAccess
from edge_constructs.inference_pod_identity import InferencePodIdentity

SERVICE_ACCOUNT_NAME = "inference"


def pipeline_image_uri(scope: Construct, config: EdgeConfig, flavor: str) -> str:
    """The pipeline's image of one flavor, by repository name and the configured tag or digest."""
    # By name and config, not a cross-stack reference: the two stacks deploy independently.
    repository = ecr.Repository.from_repository_name(
        scope, f"{flavor.capitalize()}Repository", config.pipeline.repository_name(flavor)
    )
    reference = config.workloads.image_tag
    if config.workloads.image_reference_is_digest:
        return repository.repository_uri_for_digest(reference)
    return repository.repository_uri_for_tag(reference)


class InferenceWorkloads(Construct):
    """Everything the inference endpoints need beyond the cluster itself.

    ``depends_on`` are the cluster add-ons the manifests need first (the KEDA chart that installs the
    ScaledObject CRD, the device plugins); the manifest also waits for the Pod Identity association, so the
    first pods already receive credentials for the API-key secret. ``compile_cache`` is the nvidia pods' S3
    compile cache (None when edge.workloads.cuda uses none).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EdgeConfig,
        cluster: eks.Cluster,
        node_security_group: ec2.ISecurityGroup,
        depends_on: Sequence[IDependable] = (),
        compile_cache: CompileCacheBucket | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        workloads = config.workloads
        self.api_key = InferenceApiKey(self, "ApiKey", name_prefix=config.cluster_name)
        self.pod_identity = InferencePodIdentity(
            self,
            "PodIdentity",
            cluster=cluster,
            namespace=workloads.namespace,
            service_account_name=SERVICE_ACCOUNT_NAME,
            secret=self.api_key.secret,
            compile_cache=compile_cache,
        )
        self.node_port_access = InferenceNodePortAccess(
            self,
            "NodePortAccess",
            security_group=node_security_group,
            node_port=workloads.node_port,
            client_cidrs=config.allowed_client_cidrs,
            allow_public=config.allow_public_nodeport,
            # Only the nvidia pods run frame streams, so only they take WebRTC media.
            udp_ports=workloads.webrtc_ports if "nvidia" in config.accelerators else None,
        )
        self.images = {
            accelerator: pipeline_image_uri(self, config, ACCELERATORS[accelerator]["flavor"])
            for accelerator in config.accelerators
        }
        self.chart = InferenceChart(
            cdk8s.App(),
            "inference",
            workloads=workloads,
            accelerators=config.accelerators,
            images=self.images,
            service_account_name=SERVICE_ACCOUNT_NAME,
            api_key_secret_arn=self.api_key.secret.secret_arn,
            region=cdk.Stack.of(self).region,
            autoscaler_namespace=KEDA_NAMESPACE,
            tls=config.tls,
            compile_cache_bucket=compile_cache.bucket.bucket_name if compile_cache else None,
        )
        self.manifest = cluster.add_cdk8s_chart("InferenceChart", self.chart)
        self.manifest.node.add_dependency(self.pod_identity.association)
        if compile_cache is not None:
            # On delete the pods go first, then the bucket is emptied: no pod uploads into a bucket being deleted.
            self.manifest.node.add_dependency(compile_cache)
        for dependency in depends_on:
            self.manifest.node.add_dependency(dependency)
        self.warm_spare_manifest = None
        spare_accelerators = [a for a in config.accelerators if config.local_zones_offering(a)]
        if workloads.warm_spare_nodes and spare_accelerators:
            spare = WarmSpareChart(cdk8s.App(), "warm-spare", workloads=workloads, accelerators=spare_accelerators,
                                   images=self.images)
            # After the inference chart: its namespace must exist, and the device plugins before any GPU pod.
            self.warm_spare_manifest = cluster.add_cdk8s_chart("WarmSpareChart", spare)
            self.warm_spare_manifest.node.add_dependency(self.manifest)

        cdk.CfnOutput(self, "NodePort", value=str(workloads.node_port),
                      description="TCP port of the inference endpoint on every node that serves it")
        cdk.CfnOutput(self, "ApiKeySecretArn", value=self.api_key.secret.secret_arn,
                      description="aws secretsmanager get-secret-value --secret-id <this> --query SecretString")
        cdk.CfnOutput(self, "EndpointService", value=f"{workloads.namespace}/{SERVICE_NAME}",
                      description="namespace/name of the NodePort Service")
