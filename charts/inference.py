"""The inference workloads: namespace, one Deployment per accelerator, the NodePort edge Service, the
endpoint-inventory RBAC, a NetworkPolicy, and per Deployment a PDB, a metrics Service and a KEDA ScaledObject.

Built from cdk8s-plus-35 constructs and the classes `cdk8s import` generates from the vendored CRDs (imports/);
the tests validate each rendered object against the strict Kubernetes 1.35 schema and the vendored CRDs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import cdk8s
import cdk8s_plus_35 as kplus
from constructs import Construct

from charts.autoscaling import load_scaler
from charts.contract import (  # noqa: F401 (the contract is part of this chart's interface)
    ACCELERATOR_LABEL,
    ACCELERATORS,
    COMMON_LABELS,
    COMPILE_CACHE_DIR,
    HF_HOME,
    HTTP_PORT,
    LOAD_FIELD,
    LOAD_PATH,
    METRICS_PORT,
    NODEPOOL_LABEL,
    SERVICE_NAME,
    SHUTDOWN_RESERVE_S,
    STARTUP_PERIOD_S,
    deployment_name,
    metrics_service_name,
    server_drain_timeout_s,
    startup_failure_threshold,
    termination_grace_seconds,
)
from charts.inference_deployment import InferenceDeployment
from charts.inventory_rbac import inventory_rbac
from charts.network_policy import ingress_policy
from charts.services import edge_service, metrics_service
from charts.tls import SERVING_SECRET, server_tls_env, serving_certificate
from edge_config import TLSConfig, WorkloadsConfig

_PSS = {f"pod-security.kubernetes.io/{mode}{suffix}": value
        for mode in ("enforce", "audit", "warn") for suffix, value in (("", "restricted"), ("-version", "latest"))}


class InferenceChart(cdk8s.Chart):
    """All Kubernetes objects of the inference service.

    Inputs are typed values; nothing here reads CDK context. ``images`` maps accelerator -> image URI
    (a CDK token string is fine); ``service_account_name`` is the Pod Identity-bound account that reads
    the API-key secret ``api_key_secret_arn`` in ``region``; ``autoscaler_namespace`` is where the KEDA
    operator runs, the only client allowed on the metrics port. ``compile_cache_bucket`` names the bucket of
    the nvidia pods' S3 compile cache (required when ``workloads.cuda`` uses it, a token string is fine).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        workloads: WorkloadsConfig,
        accelerators: Sequence[str],
        images: Mapping[str, str],
        service_account_name: str,
        api_key_secret_arn: str,
        region: str,
        autoscaler_namespace: str,
        tls: TLSConfig,
        compile_cache_bucket: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        if not accelerators:
            raise ValueError("accelerators must name at least one of nvidia, neuron (edge.accelerators)")
        for accelerator in accelerators:
            if accelerator not in ACCELERATORS:
                raise ValueError(
                    f"accelerator {accelerator!r} has no inference Deployment; use one of {sorted(ACCELERATORS)}"
                )
            if accelerator not in images:
                raise ValueError(f"images has no image URI for enabled accelerator {accelerator!r}")
        if "nvidia" in accelerators and workloads.cuda.s3_cache and not compile_cache_bucket:
            raise ValueError("compile_cache_bucket is required: edge.workloads.cuda.compile_cache.s3 is on for the "
                             "nvidia pods")
        namespace = workloads.namespace
        self.namespace_object = kplus.Namespace(
            self, "namespace", metadata=cdk8s.ApiObjectMetadata(name=namespace, labels={**COMMON_LABELS, **_PSS}))
        # No automatic token: only the serving container gets one, through an explicit projected volume.
        service_account = kplus.ServiceAccount(
            self, "service-account", automount_token=False,
            metadata=cdk8s.ApiObjectMetadata(name=service_account_name, namespace=namespace, labels=COMMON_LABELS))
        inventory_rbac(self, namespace=namespace, service_account=service_account)
        edge_service(self, namespace=namespace, node_port=workloads.node_port, tls_enabled=tls.enabled)
        ingress_policy(self, namespace=namespace, autoscaler_namespace=autoscaler_namespace,
                       udp_ports=workloads.webrtc_ports if "nvidia" in accelerators else None)
        env = {**_server_env(workloads, api_key_secret_arn=api_key_secret_arn, region=region), **server_tls_env(tls)}
        if tls.enabled:
            serving_certificate(self, namespace=namespace, tls=tls)
        for accelerator in accelerators:
            # Only the cuda server has the GPU fast path; the Neuron server runs its compiled static shape.
            fast_path = cuda_env(workloads, compile_cache_bucket) if accelerator == "nvidia" else {}
            # WebRTC media only where frame streams run (Neuron serves no image-to-image).
            udp_ports = workloads.webrtc_ports if accelerator == "nvidia" else None
            if udp_ports:
                fast_path = {**fast_path, "SERVING_WEBRTC_PORTS": f"{udp_ports[0]}-{udp_ports[1]}",
                             "SERVING_WEBRTC_PUBLIC_HOST": "node"}
            InferenceDeployment(
                self, f"deployment-{accelerator}", accelerator=accelerator, image=images[accelerator],
                namespace=namespace, workloads=workloads, service_account=service_account,
                env={"SERVING_DEVICE": ACCELERATORS[accelerator]["device"], **env, **fast_path},
                tls_secret=SERVING_SECRET if tls.enabled else None, udp_ports=udp_ports)
            metrics_service(self, accelerator, namespace=namespace)
            load_scaler(self, accelerator, namespace=namespace, workloads=workloads)


def _server_env(w: WorkloadsConfig, *, api_key_secret_arn: str, region: str) -> dict[str, str]:
    return {
        "SERVING_PORT": str(HTTP_PORT),
        "SERVING_METRICS_PORT": str(METRICS_PORT),
        "SERVING_DRAIN_TIMEOUT": str(server_drain_timeout_s(w)),
        "SERVING_REQUEST_TIMEOUT": str(w.request_timeout_s),
        "SERVING_MAX_QUEUE": str(w.max_queue),
        "SERVING_MAX_CONCURRENCY": str(w.max_concurrency),
        "SERVING_API_KEY_SECRET_ARN": api_key_secret_arn,
        "SERVING_INVENTORY_SERVICE": SERVICE_NAME,
        "SERVING_INVENTORY_NAMESPACE": w.namespace,
        # Given, not looked up: the inventory then needs no read access to Services.
        "SERVING_INVENTORY_NODE_PORT": str(w.node_port),
        # Pods cannot reach IMDS (the node classes set hop limit 1), so the AWS SDK takes its region from here.
        "AWS_REGION": region,
        "HF_HOME": HF_HOME,
    }


def cuda_env(w: WorkloadsConfig, compile_cache_bucket: str | None) -> dict[str, str]:
    """The cuda server's fast-path flags: it serves fast exactly the warmed shapes (each warm-up size with guidance
    on and off, for 1..max_images images) and runs any other shape eagerly."""
    cuda = w.cuda
    env = {
        "SERVING_COMPILE": "true" if cuda.compile else "false",
        "SERVING_CUDA_GRAPHS": "true" if cuda.cuda_graphs else "false",
        "SERVING_WARMUP_SIZES": ",".join(cuda.warmup_sizes),
        "SERVING_MAX_IMAGES": str(cuda.max_images),
    }
    if cuda.compile:
        # Spelled out even when it is the server's default, so the manifest says what the pods compile with.
        env["SERVING_COMPILE_MODE"] = str(cuda.effective_compile_mode)
        env["SERVING_COMPILE_CACHE_DIR"] = COMPILE_CACHE_DIR
    if cuda.s3_cache:
        env["SERVING_COMPILE_CACHE_S3"] = f"s3://{compile_cache_bucket}/{cuda.compile_cache.s3_prefix}"
    return env
