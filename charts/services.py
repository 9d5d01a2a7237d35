"""The edge NodePort Service devices call, and per Deployment a ClusterIP Service for its metrics port."""
from __future__ import annotations

import cdk8s
import cdk8s_plus_35 as kplus
from cdk8s import JsonPatch
from constructs import Construct

from charts import contract as c


def edge_service(scope: Construct, *, namespace: str, node_port: int, tls_enabled: bool) -> kplus.Service:
    service = kplus.Service(
        scope, "edge-service",
        metadata=cdk8s.ApiObjectMetadata(name=c.SERVICE_NAME, namespace=namespace,
                                         labels={**c.COMMON_LABELS, "app.kubernetes.io/component": c.COMPONENT}),
        type=kplus.ServiceType.NODE_PORT,
        # The public port only; the metrics port stays on the ClusterIP metrics Services.
        ports=[kplus.ServicePort(name=c.serving_port_name(tls_enabled), port=c.HTTP_PORT, target_port=c.HTTP_PORT,
                                 node_port=node_port, protocol=kplus.Protocol.TCP)],
    )
    for key, value in c.SERVING_SELECTOR.items():
        service.select_label(key, value)
    # ServiceProps has no externalTrafficPolicy. Local: only nodes with a local ready pod answer, so there is no
    # second hop and the client IP is kept.
    cdk8s.ApiObject.of(service).add_json_patch(JsonPatch.add("/spec/externalTrafficPolicy", "Local"))
    return service


def metrics_service(scope: Construct, accelerator: str, *, namespace: str) -> kplus.Service:
    """Cluster-internal, per Deployment: KEDA samples the load of that Deployment's ready pods only."""
    service = kplus.Service(
        scope, f"metrics-service-{accelerator}",
        metadata=cdk8s.ApiObjectMetadata(
            name=c.metrics_service_name(accelerator), namespace=namespace,
            labels={**c.COMMON_LABELS, "app.kubernetes.io/component": f"{c.COMPONENT}-metrics",
                    c.ACCELERATOR_LABEL: accelerator}),
        type=kplus.ServiceType.CLUSTER_IP,
        ports=[kplus.ServicePort(name=c.METRICS_PORT_NAME, port=c.METRICS_PORT, target_port=c.METRICS_PORT,
                                 protocol=kplus.Protocol.TCP)],
    )
    for key, value in c.selector(accelerator).items():
        service.select_label(key, value)
    return service
