"""Karpenter EC2NodeClasses and NodePools (karpenter.k8s.aws/v1, karpenter.sh/v1) as a cdk8s chart.

One EC2NodeClass per Local Zone (its own subnet, gp2 unless the zone offers gp3) plus one for the region.
Per enabled accelerator: a NodePool per Local Zone that offers it (weight 100) and a region fallback (weight 10),
so Karpenter tries the Local Zone first and falls back to the parent region when the zone has no capacity.
"""
from __future__ import annotations

from dataclasses import dataclass

import cdk8s
from constructs import Construct

import versions
from edge_config import ARM64_FAMILIES, EdgeConfig

ACCELERATOR_LABEL = "edge-diffusion.aws/accelerator"
ZONE_TYPE_LABEL = "edge-diffusion.aws/zone-type"
ZONE_TAG = "edge-diffusion.aws/zone"
DISCOVERY_TAG = "karpenter.sh/discovery"

TAINTS = {
    "nvidia": {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
    "neuron": {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"},
}
DEVICE_RESOURCES = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
# Families the parent region offers for the fallback pools (g5g adds Graviton GPU capacity for arm64 images).
REGION_FAMILIES = {"nvidia": ("g6", "g5", "g4dn", "g5g"), "neuron": ("inf2",)}
LOCAL_ZONE_WEIGHT = 100
REGION_WEIGHT = 10
# Root volume: the serving images are ~20 GB compressed (weights + Neuron artifacts) and unpack to more.
ROOT_VOLUME = "150Gi"
# Never disrupt a node before its model pods finished draining (server drain + model unload).
TERMINATION_GRACE = "15m"


@dataclass(frozen=True)
class NodeClassSpec:
    name: str
    zone_type: str
    zones: tuple[str, ...]
    gp3: bool


def node_classes(config: EdgeConfig) -> list[NodeClassSpec]:
    classes = [NodeClassSpec(f"lz-{lz.name}", "local-zone", (lz.name,), lz.gp3_available) for lz in config.local_zones]
    classes.append(NodeClassSpec("region", "region", tuple(config.region_azs), True))
    return classes


def ec2_node_class(spec: NodeClassSpec, *, cluster_name: str, node_role: str) -> dict:
    ebs: dict = {
        "volumeSize": ROOT_VOLUME,
        "volumeType": "gp3" if spec.gp3 else "gp2",
        "encrypted": True,
        "deleteOnTermination": True,
    }
    if spec.gp3:
        # Image pulls are throughput-bound; 250 MiB/s halves pull time of a 20 GB image vs the gp3 baseline.
        ebs.update({"iops": 3000, "throughput": 250})
    return {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": spec.name, "labels": {ZONE_TYPE_LABEL: spec.zone_type}},
        "spec": {
            "role": node_role,
            "amiSelectorTerms": [{"alias": versions.KARPENTER_AMI_ALIAS}],
            "subnetSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name, ZONE_TAG: zone}} for zone in spec.zones],
            "securityGroupSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name}}],
            # Devices reach pods on the NodePort at the node's public IP (no NLB in Local Zones).
            "associatePublicIPAddress": True,
            "metadataOptions": {
                "httpEndpoint": "enabled",
                "httpProtocolIPv6": "disabled",
                # Hop limit 1 keeps containers (one hop behind the node) away from the node role's credentials;
                # every pod that needs AWS access gets it through EKS Pod Identity instead.
                "httpPutResponseHopLimit": 1,
                "httpTokens": "required",
            },
            "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": ebs}],
            "tags": {"edge-diffusion.aws/cluster": cluster_name},
        },
    }


def node_pool(
    *,
    name: str,
    accelerator: str,
    node_class: NodeClassSpec,
    families: tuple[str, ...],
    weight: int,
    config: EdgeConfig,
) -> dict:
    limits = config.nodepool_limits[accelerator]
    arches = ["amd64"] + (["arm64"] if any(f in ARM64_FAMILIES for f in families) else [])
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "weight": weight,
            "limits": {
                "cpu": str(limits.cpu),
                "memory": f"{limits.memory_gib}Gi",
                DEVICE_RESOURCES[accelerator]: str(limits.devices),
            },
            "disruption": {
                # Inference nodes hold a loaded model: only reclaim empty nodes, after a cool-down that absorbs
                # bursty traffic, and never more than one node at a time.
                "consolidationPolicy": "WhenEmpty",
                "consolidateAfter": "10m",
                "budgets": [
                    {"nodes": "1"},
                    # Drift (e.g. an AMI bump) rolls nodes only outside US business hours.
                    {"nodes": "0", "reasons": ["Drifted"], "schedule": "0 14 * * mon-fri", "duration": "10h"},
                ],
            },
            "template": {
                "metadata": {"labels": {ACCELERATOR_LABEL: accelerator, ZONE_TYPE_LABEL: node_class.zone_type}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class.name},
                    "taints": [TAINTS[accelerator]],
                    "expireAfter": "720h",
                    "terminationGracePeriod": TERMINATION_GRACE,
                    "requirements": [
                        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": list(families)},
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": list(node_class.zones)},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": arches},
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In",
                         "values": list(config.capacity_types)},
                    ],
                },
            },
        },
    }


def nodepool_objects(config: EdgeConfig, *, node_role: str) -> list[dict]:
    """Every EC2NodeClass and NodePool for this config (pure function; `node_role` may be a CDK token)."""
    classes = node_classes(config)
    by_zone = {c.zones[0]: c for c in classes if c.zone_type == "local-zone"}
    region = classes[-1]
    objects = [ec2_node_class(c, cluster_name=config.cluster_name, node_role=node_role) for c in classes]
    for accelerator in config.accelerators:
        for lz in config.local_zones_offering(accelerator):
            objects.append(node_pool(
                name=f"{accelerator}-{lz.name}", accelerator=accelerator, node_class=by_zone[lz.name],
                families=lz.families_for(accelerator), weight=LOCAL_ZONE_WEIGHT, config=config,
            ))
        objects.append(node_pool(
            name=f"{accelerator}-region", accelerator=accelerator, node_class=region,
            families=REGION_FAMILIES[accelerator], weight=REGION_WEIGHT, config=config,
        ))
    return objects


class NodePoolsChart(cdk8s.Chart):
    """The Karpenter node configuration, applied after the Karpenter chart has installed the CRDs."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, node_role: str) -> None:
        super().__init__(scope, construct_id)
        for obj in nodepool_objects(config, node_role=node_role):
            cdk8s.ApiObject(
                self,
                f"{obj['kind']}-{obj['metadata']['name']}",
                api_version=obj["apiVersion"],
                kind=obj["kind"],
                metadata=cdk8s.ApiObjectMetadata(name=obj["metadata"]["name"],
                                                 labels=obj["metadata"].get("labels")),
            ).add_json_patch(cdk8s.JsonPatch.add("/spec", obj["spec"]))
