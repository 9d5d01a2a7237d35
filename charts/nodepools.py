"""Karpenter EC2NodeClasses and NodePools (karpenter.k8s.aws/v1, karpenter.sh/v1) as a cdk8s chart, built from the
classes `cdk8s import` generates from the vendored Karpenter CRDs.

One EC2NodeClass per Local Zone (its own subnet, gp2 unless the zone offers gp3) plus one for the region. A class
whose pools' families carry NVMe instance store puts containerd and the kubelet on it (``instanceStorePolicy:
RAID0``); Local Zone classes also carry the containerd settings of the in-zone peer mirror (charts/image_cache.py).
Per enabled accelerator: a NodePool per Local Zone that offers it (weight 100) and a region fallback (weight 10),
so Karpenter tries the Local Zone first and falls back to the parent region when the zone has no capacity.
"""
from __future__ import annotations

from dataclasses import dataclass

import cdk8s
from constructs import Construct

import versions
from charts.image_cache import check_local_zone_node_class, data_volume, user_data
from edge_config import ARM64_FAMILIES, EdgeConfig, NodeImageCacheConfig
from imports.karpenter.sh import karpenter
from imports.karpenter_aws.aws.k8s import karpenter as karpenter_aws

ACCELERATOR_LABEL = "edge-diffusion.aws/accelerator"
ZONE_TYPE_LABEL = "edge-diffusion.aws/zone-type"
ZONE_TAG = "edge-diffusion.aws/zone"
DISCOVERY_TAG = "karpenter.sh/discovery"

# Plain values, shared with the inference pods' tolerations and resources.
TAINTS = {
    "nvidia": {"key": "nvidia.com/gpu", "effect": "NoSchedule"},
    "neuron": {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"},
}
DEVICE_RESOURCES = {"nvidia": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
# Families the parent region offers for the fallback pools. No g5g: its T4G (sm_75) has no kernels in the arm64
# cu130 torch build (versions.TORCH_CUDA_ARCHS), so a CUDA pod there could start but not run.
REGION_FAMILIES = {"nvidia": ("g6", "g5", "g4dn"), "neuron": ("inf2",)}
# Families whose every size carries local NVMe SSD instance store (the "Instance store specifications" table of
# docs.aws.amazon.com/ec2/latest/instancetypes/ac.html); g5g and inf2 are EBS-only.
NVME_INSTANCE_STORE_FAMILIES = frozenset({"g4dn", "g5", "g6", "g6e", "gr6"})
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
    # Every family of the pools on this class (only the enabled accelerators').
    families: tuple[str, ...] = ()

    @property
    def instance_store(self) -> bool:
        """RAID0 over the instance store where the pools' families have one (Karpenter ignores the policy on an
        instance type without instance store, so a mixed class, e.g. g5 + inf2, still launches both)."""
        return any(f in NVME_INSTANCE_STORE_FAMILIES for f in self.families)


def node_classes(config: EdgeConfig) -> list[NodeClassSpec]:
    classes = [NodeClassSpec(f"lz-{lz.name}", "local-zone", (lz.name,), lz.gp3_available,
                             tuple(f for a in config.accelerators for f in lz.families_for(a)))
               for lz in config.local_zones]
    classes.append(NodeClassSpec("region", "region", tuple(config.region_azs), True,
                                 tuple(f for a in config.accelerators for f in REGION_FAMILIES[a])))
    return classes


_IN = karpenter.NodePoolSpecTemplateSpecRequirementsOperator.IN
_TAINT_EFFECTS = {"NoSchedule": karpenter.NodePoolSpecTemplateSpecTaintsEffect.NO_SCHEDULE}


def _node_class(scope: Construct, spec: NodeClassSpec, *, cluster_name: str, node_role: str,
                image_cache_snapshot_id: str | None, image_cache: NodeImageCacheConfig) -> None:
    gp3 = spec.gp3
    local_zone = spec.zone_type == "local-zone"
    # The snapshot cache only where no instance store takes containerd: in a Local Zone the restored volume fills
    # lazily from S3 in the parent region, slower than a peer pull onto NVMe (docs/cold-start.md). A new snapshot
    # id drifts the cached nodes onto the newer cache.
    cached = image_cache_snapshot_id is not None and local_zone and not spec.instance_store
    karpenter_aws.Ec2NodeClass(
        scope, f"EC2NodeClass-{spec.name}",
        metadata=cdk8s.ApiObjectMetadata(name=spec.name, labels={ZONE_TYPE_LABEL: spec.zone_type}),
        spec=karpenter_aws.Ec2NodeClassSpec(
            role=node_role,
            ami_selector_terms=[karpenter_aws.Ec2NodeClassSpecAmiSelectorTerms(alias=versions.KARPENTER_AMI_ALIAS)],
            subnet_selector_terms=[karpenter_aws.Ec2NodeClassSpecSubnetSelectorTerms(
                tags={DISCOVERY_TAG: cluster_name, ZONE_TAG: zone}) for zone in spec.zones],
            security_group_selector_terms=[karpenter_aws.Ec2NodeClassSpecSecurityGroupSelectorTerms(
                tags={DISCOVERY_TAG: cluster_name})],
            # Devices reach pods on the NodePort at the node's public IP (no NLB in Local Zones).
            associate_public_ip_address=True,
            metadata_options=karpenter_aws.Ec2NodeClassSpecMetadataOptions(
                http_endpoint=karpenter_aws.Ec2NodeClassSpecMetadataOptionsHttpEndpoint.ENABLED,
                http_protocol_i_pv6=karpenter_aws.Ec2NodeClassSpecMetadataOptionsHttpProtocolIPv6.DISABLED,
                # Hop limit 1 keeps containers (one hop behind the node) away from the node role's credentials;
                # every pod that needs AWS access gets it through EKS Pod Identity instead.
                http_put_response_hop_limit=1,
                http_tokens=karpenter_aws.Ec2NodeClassSpecMetadataOptionsHttpTokens.REQUIRED,
            ),
            block_device_mappings=[karpenter_aws.Ec2NodeClassSpecBlockDeviceMappings(
                device_name="/dev/xvda",
                ebs=karpenter_aws.Ec2NodeClassSpecBlockDeviceMappingsEbs(
                    volume_size=ROOT_VOLUME,
                    volume_type=karpenter_aws.Ec2NodeClassSpecBlockDeviceMappingsEbsVolumeType.GP3 if gp3
                    else karpenter_aws.Ec2NodeClassSpecBlockDeviceMappingsEbsVolumeType.GP2,
                    encrypted=True,
                    delete_on_termination=True,
                    # Image pulls are throughput-bound; 250 MiB/s halves pull time of a 20 GB image vs the gp3
                    # baseline.
                    iops=3000 if gp3 else None,
                    throughput=250 if gp3 else None,
                ),
            )] + ([data_volume(image_cache_snapshot_id, image_cache, gp3=gp3)] if cached else []),
            instance_store_policy=(karpenter_aws.Ec2NodeClassSpecInstanceStorePolicy.RAID0 if spec.instance_store
                                   else None),
            user_data=user_data(peer_mirror=local_zone, cache=cached),
            tags={"edge-diffusion.aws/cluster": cluster_name},
        ),
    )


def _requirement(key: str, values: list[str]) -> karpenter.NodePoolSpecTemplateSpecRequirements:
    return karpenter.NodePoolSpecTemplateSpecRequirements(key=key, operator=_IN, values=values)


def _node_pool(scope: Construct, *, name: str, accelerator: str, node_class: NodeClassSpec,
               families: tuple[str, ...], weight: int, config: EdgeConfig) -> None:
    limits = config.nodepool_limits[accelerator]
    arches = ["amd64"] + (["arm64"] if any(f in ARM64_FAMILIES for f in families) else [])
    taint = TAINTS[accelerator]
    karpenter.NodePool(
        scope, f"NodePool-{name}",
        metadata=cdk8s.ApiObjectMetadata(name=name),
        spec=karpenter.NodePoolSpec(
            weight=weight,
            limits={
                "cpu": karpenter.NodePoolSpecLimits.from_string(str(limits.cpu)),
                "memory": karpenter.NodePoolSpecLimits.from_string(f"{limits.memory_gib}Gi"),
                DEVICE_RESOURCES[accelerator]: karpenter.NodePoolSpecLimits.from_string(str(limits.devices)),
            },
            disruption=karpenter.NodePoolSpecDisruption(
                # Inference nodes hold a loaded model: only reclaim empty nodes, after a cool-down that absorbs
                # bursty traffic, and never more than one node at a time.
                consolidation_policy=karpenter.NodePoolSpecDisruptionConsolidationPolicy.WHEN_EMPTY,
                consolidate_after="10m",
                budgets=[
                    karpenter.NodePoolSpecDisruptionBudgets(nodes="1"),
                    # Drift (e.g. an AMI bump) rolls nodes only outside US business hours.
                    karpenter.NodePoolSpecDisruptionBudgets(
                        nodes="0", reasons=[karpenter.NodePoolSpecDisruptionBudgetsReasons.DRIFTED],
                        schedule="0 14 * * mon-fri", duration="10h"),
                ],
            ),
            template=karpenter.NodePoolSpecTemplate(
                metadata=karpenter.NodePoolSpecTemplateMetadata(
                    labels={ACCELERATOR_LABEL: accelerator, ZONE_TYPE_LABEL: node_class.zone_type}),
                spec=karpenter.NodePoolSpecTemplateSpec(
                    node_class_ref=karpenter.NodePoolSpecTemplateSpecNodeClassRef(
                        group="karpenter.k8s.aws", kind="EC2NodeClass", name=node_class.name),
                    taints=[karpenter.NodePoolSpecTemplateSpecTaints(key=taint["key"],
                                                                      effect=_TAINT_EFFECTS[taint["effect"]])],
                    expire_after="720h",
                    termination_grace_period=TERMINATION_GRACE,
                    requirements=[
                        _requirement("karpenter.k8s.aws/instance-family", list(families)),
                        _requirement("topology.kubernetes.io/zone", list(node_class.zones)),
                        _requirement("kubernetes.io/arch", arches),
                        _requirement("kubernetes.io/os", ["linux"]),
                        _requirement("karpenter.sh/capacity-type", list(config.capacity_types)),
                    ],
                ),
            ),
        ),
    )


class NodePoolsChart(cdk8s.Chart):
    """The Karpenter node configuration, applied after the Karpenter chart has installed the CRDs."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, node_role: str,
                 image_cache_snapshot_id: str | None = None) -> None:
        super().__init__(scope, construct_id)
        classes = node_classes(config)
        by_zone = {c.zones[0]: c for c in classes if c.zone_type == "local-zone"}
        region = classes[-1]
        for spec in classes:
            _node_class(self, spec, cluster_name=config.cluster_name, node_role=node_role,
                        image_cache_snapshot_id=image_cache_snapshot_id, image_cache=config.node_image_cache)
        # Synth-time rule: fail here, not at the first Local Zone launch.
        for obj in self.to_json():
            if obj["kind"] == "EC2NodeClass" and obj["metadata"]["labels"][ZONE_TYPE_LABEL] == "local-zone":
                check_local_zone_node_class(obj)
        for accelerator in config.accelerators:
            for lz in config.local_zones_offering(accelerator):
                _node_pool(self, name=f"{accelerator}-{lz.name}", accelerator=accelerator,
                           node_class=by_zone[lz.name], families=lz.families_for(accelerator),
                           weight=LOCAL_ZONE_WEIGHT, config=config)
            _node_pool(self, name=f"{accelerator}-region", accelerator=accelerator, node_class=region,
                       families=REGION_FAMILIES[accelerator], weight=REGION_WEIGHT, config=config)


def nodepool_objects(config: EdgeConfig, *, node_role: str, image_cache_snapshot_id: str | None = None) -> list[dict]:
    """Every EC2NodeClass and NodePool for this config, rendered (`node_role` and the snapshot id may be CDK
    tokens)."""
    return NodePoolsChart(cdk8s.App(), "nodepools", config=config, node_role=node_role,
                          image_cache_snapshot_id=image_cache_snapshot_id).to_json()
