"""Read-only RBAC for the server's endpoint inventory: the edge Service's EndpointSlices and the nodes behind them."""
from __future__ import annotations

import cdk8s
import cdk8s_plus_35 as kplus
from constructs import Construct

from charts import contract as c


def inventory_rbac(scope: Construct, *, namespace: str, service_account: kplus.ServiceAccount) -> None:
    role_name = f"{c.SERVICE_NAME}-inventory"
    role = kplus.Role(scope, "inventory-role",
                      metadata=cdk8s.ApiObjectMetadata(name=role_name, namespace=namespace, labels=c.COMMON_LABELS))
    role.allow(["get", "list", "watch"],
               kplus.ApiResource.custom(api_group="discovery.k8s.io", resource_type="endpointslices"))
    binding = kplus.RoleBinding(
        scope, "inventory-role-binding", role=role,
        metadata=cdk8s.ApiObjectMetadata(name=role_name, namespace=namespace, labels=c.COMMON_LABELS))
    binding.add_subjects(service_account)
    # Nodes are cluster-scoped: the public IP, zone and accelerator of a node come only from here.
    cluster_role_name = f"{namespace}-inventory-nodes"
    cluster_role = kplus.ClusterRole(scope, "inventory-cluster-role",
                                     metadata=cdk8s.ApiObjectMetadata(name=cluster_role_name, labels=c.COMMON_LABELS))
    cluster_role.allow(["get", "list"], kplus.ApiResource.custom(api_group="", resource_type="nodes"))
    cluster_binding = kplus.ClusterRoleBinding(
        scope, "inventory-cluster-role-binding", role=cluster_role,
        metadata=cdk8s.ApiObjectMetadata(name=cluster_role_name, labels=c.COMMON_LABELS))
    cluster_binding.add_subjects(service_account)
