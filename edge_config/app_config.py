"""The whole app config (`cdk.json` context key ``edge``) and the rules that tie its sections together."""
from __future__ import annotations

import ipaddress
import re
from types import MappingProxyType
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, StrictBool, ValidationInfo, field_serializer, field_validator, model_validator

import versions
from edge_config.catalog import ACCELERATORS, ARM64_FAMILIES, FAMILY_ACCELERATOR, Accelerator
from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section, cidr_list, ipv4_network, unique
from edge_config.image_cache import NodeImageCacheConfig
from edge_config.observability import ObservabilityConfig
from edge_config.network import LocalZoneConfig, NodePoolLimits, SystemNodesConfig, region_subnet_cidrs
from edge_config.pipeline import PipelineConfig
from edge_config.tls import TLSConfig
from edge_config.workloads import WorkloadsConfig

_DEFAULT_ZONE = LocalZoneConfig(name="us-west-2-lax-1a", subnet_cidr="10.40.128.0/22", instance_families=("g4dn", "g5"))


class EdgeConfig(Section):
    """The whole app config (`cdk.json` context key ``edge``)."""

    account: Annotated[str | None, Hint("give the 12-digit AWS account id, or null to use the CLI's credentials")] = (
        Field(None, pattern=r"^\d{12}$", description="AWS account id; null synthesizes an environment-agnostic "
                                                      "template for the CLI's account."))
    region: Annotated[str, Hint("give a region code like \"us-west-2\"")] = Field(
        "us-west-2", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$", description="Parent region of the Local Zones.")
    region_azs: tuple[str, ...] = Field(("us-west-2a", "us-west-2b"), description="Two or more Availability Zones "
                                        "of the region for the control plane, system nodes and fallback pools.")
    vpc_cidr: str = Field("10.40.0.0/16", description="RFC 1918 /16-/18 of the VPC; region subnets take its first "
                                                      "blocks (/22 public, /20 private per AZ).")
    local_zones: tuple[LocalZoneConfig, ...] = Field((_DEFAULT_ZONE,), description="Local Zones the inference "
                                                     "nodes run in, each with its own public subnet.")
    allowed_client_cidrs: tuple[str, ...] = Field(("203.0.113.0/24",), description="Networks allowed to call the "
                                                  "inference NodePort (0.0.0.0/0 only with allow_public_nodeport).")
    allow_public_nodeport: StrictBool = Field(False, description="Accept 0.0.0.0/0 in allowed_client_cidrs: a public "
                                                           "endpoint, still API-key protected.")
    cluster_endpoint_cidrs: tuple[str, ...] = Field(("203.0.113.0/24",), description="Networks allowed to reach "
                                                    "the public Kubernetes API endpoint (never 0.0.0.0/0).")
    cluster_name: Annotated[str, Hint("start with a letter; letters, digits and '-' only (max 100)")] = Field(
        "edge-diffusion", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,99}$", description="EKS cluster name.")
    kubernetes_version: str = Field(versions.KUBERNETES_VERSION, description="Kubernetes minor; must equal "
                                    "versions.KUBERNETES_VERSION, which the kubectl layer and cdk8s-plus follow.")
    accelerators: Annotated[tuple[Accelerator, ...], Hint(noun="accelerator")] = Field(
        ACCELERATORS, min_length=1, description="Accelerators that get NodePools.")
    nodepool_limits: Mapping[Accelerator, NodePoolLimits] = Field(
        {}, validate_default=True, description="Per-accelerator Karpenter limits; an enabled accelerator left out "
                                               "gets the defaults.")
    capacity_types: Annotated[tuple[Literal["on-demand", "spot"], ...], Hint(noun="capacity type")] = Field(
        ("on-demand",), min_length=1, description="EC2 capacity types the NodePools may launch.")
    system_nodes: SystemNodesConfig = Field(default_factory=SystemNodesConfig,
                                            description="Managed node group for Karpenter and add-ons.")
    admin_principal_arn: Annotated[str | None, Hint("give an IAM role or user ARN like "
                                                    "arn:aws:iam::123456789012:role/Admin, or null")] = Field(
        None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$",
        description="IAM principal granted cluster admin through an access entry; null grants nobody.")
    node_image_cache: NodeImageCacheConfig = Field(default_factory=NodeImageCacheConfig, description="The EBS "
                                                   "snapshot of pulled serving images that Local Zone nodes start "
                                                   "from (docs/cold-start.md).")
    volcano_enabled: StrictBool = Field(False, description="Install the Volcano batch scheduler and its `inference` "
                                  "Queue for batch jobs that opt in with schedulerName volcano. Inference pods "
                                  "never use it: Karpenter provisions only for pods the default scheduler "
                                  "marks Unschedulable.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="ImagePipelineStack settings.")
    workloads: WorkloadsConfig = Field(default_factory=WorkloadsConfig, description="Inference workload settings.")
    tls: TLSConfig = Field(default_factory=TLSConfig, description="TLS on the device NodePort (cert-manager).")
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig, description="Serving metrics "
                                               "in CloudWatch, the cluster's dashboard and alarms "
                                               "(docs/operations.md).")

    @field_validator("region_azs")
    @classmethod
    def _two_azs(cls, azs: tuple[str, ...]) -> tuple[str, ...]:
        unique(azs)
        if len(azs) < 2:
            raise FieldProblem(f"EKS needs subnets in at least 2 AZs, got {len(azs)}", "list two or more AZs")
        return azs

    @field_validator("vpc_cidr")
    @classmethod
    def _private_vpc(cls, cidr: str) -> str:
        net = ipv4_network(cidr)
        if not net.is_private:
            raise FieldProblem(f"{cidr} is not an RFC 1918 private range", "use e.g. 10.40.0.0/16")
        if not 16 <= net.prefixlen <= 18:
            raise FieldProblem(f"/{net.prefixlen} is outside /16-/18", "use a /16 to /18 block (region subnets "
                                                                        "take /20 each)")
        return cidr

    @field_validator("local_zones")
    @classmethod
    def _zones(cls, zones: tuple[LocalZoneConfig, ...]) -> tuple[LocalZoneConfig, ...]:
        if not zones:
            raise FieldProblem("must list at least one Local Zone", "add e.g. {\"name\": \"us-west-2-lax-1a\", "
                               "\"subnet_cidr\": \"10.40.128.0/22\", \"instance_families\": [\"g4dn\", \"g5\"]}")
        for i, zone in enumerate(zones):
            if any(other.name == zone.name for other in zones[:i]):
                raise FieldProblem(f"duplicate Local Zone {zone.name!r}", "list each zone once", (i, "name"))
        return zones

    @field_validator("allowed_client_cidrs")
    @classmethod
    def _client_cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        if not cidrs:
            raise FieldProblem("is empty, so no device could reach the endpoint", "list the client networks allowed "
                               "to call the inference NodePort, e.g. [\"203.0.113.0/24\"]")
        return cidr_list(cidrs)

    @field_validator("cluster_endpoint_cidrs")
    @classmethod
    def _endpoint_cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        if not cidrs:
            raise FieldProblem("must not be empty", "list the networks your administrators use")
        for i, cidr in enumerate(cidr_list(cidrs)):
            if ipaddress.ip_network(cidr).prefixlen == 0:
                raise FieldProblem("the Kubernetes API must not be open to 0.0.0.0/0",
                                   "list the networks your administrators use", (i,))
        return cidrs

    @field_validator("kubernetes_version")
    @classmethod
    def _pinned_version(cls, version: str) -> str:
        if version != versions.KUBERNETES_VERSION:
            raise FieldProblem(f"{version!r} is not supported by this app",
                               f"use \"{versions.KUBERNETES_VERSION}\": the kubectl layer, cdk8s-plus and Karpenter "
                               "pins in versions.py are built for it; bump them together")
        return version

    @field_validator("accelerators", "capacity_types")
    @classmethod
    def _unique(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        unique(values)
        return values

    @field_validator("nodepool_limits")
    @classmethod
    def _limits_per_enabled_accelerator(cls, limits: Mapping[str, NodePoolLimits],
                                        info: ValidationInfo) -> Mapping[str, NodePoolLimits]:
        enabled = info.data.get("accelerators", ())
        return MappingProxyType({acc: limits.get(acc, NodePoolLimits()) for acc in enabled})

    @field_serializer("nodepool_limits")
    def _limits_as_dict(self, limits: Mapping[str, NodePoolLimits]) -> dict[str, Any]:
        return {acc: value.model_dump() for acc, value in limits.items()}

    @model_validator(mode="after")
    def _fits_the_region(self) -> "EdgeConfig":
        region = self.region
        az_re = re.compile(rf"^{re.escape(region)}[a-z]$")
        for i, az in enumerate(self.region_azs):
            if not az_re.match(az):
                raise FieldProblem(f"{az!r} is not an Availability Zone of region {region}", f"use parent-region AZ "
                                   f"names like \"{region}a\" (Local Zones go in edge.local_zones)", ("region_azs", i))
        zone_re = re.compile(rf"^{re.escape(region)}-[a-z]+-\d+[a-z]$")
        for i, zone in enumerate(self.local_zones):
            if not zone_re.match(zone.name):
                raise FieldProblem(
                    f"{zone.name!r} is not a Local Zone of region {region}",
                    f"use a Local Zone id of {region} like \"{region}-lax-1a\" (see `aws ec2 "
                    f"describe-availability-zones --region {region} --all-availability-zones --filters "
                    "Name=zone-type,Values=local-zone`), or change edge.region", ("local_zones", i, "name"))
        self._check_subnets()
        for i, cidr in enumerate(self.allowed_client_cidrs):
            if ipaddress.ip_network(cidr).prefixlen == 0 and not self.allow_public_nodeport:
                raise FieldProblem(f"{cidr} opens the inference NodePort to the whole internet",
                                   "list your client networks instead, or set edge.allow_public_nodeport to true to "
                                   "accept a public endpoint (it is still API-key protected)",
                                   ("allowed_client_cidrs", i))
        for i, zone in enumerate(self.local_zones):
            if not any(acc in self.accelerators for acc in zone.accelerators):
                raise FieldProblem(f"{zone.name} offers none of the enabled accelerators {list(self.accelerators)}",
                                   "list an instance family the zone offers for an enabled accelerator, or enable it",
                                   ("local_zones", i, "instance_families"))
        zones = [lz.name for lz in self.local_zones]
        for zone in self.observability.zone_p99_latency_slo_s:
            if zone not in zones:
                raise FieldProblem(f"{zone!r} is not one of edge.local_zones {zones}", "key the override by a "
                                   "configured Local Zone name", ("observability", "zone_p99_latency_slo_s", zone))
        self._check_targets_have_nodes()
        spares = self.workloads.warm_spare_nodes
        for accelerator in self.accelerators:
            devices = self.nodepool_limits[accelerator].devices
            if spares and self.local_zones_offering(accelerator) and spares + self.workloads.min_replicas > devices:
                raise FieldProblem(
                    f"{spares} spare node(s) plus min_replicas {self.workloads.min_replicas} exceed the {devices} "
                    f"{accelerator} device(s) of edge.nodepool_limits.{accelerator}.devices, so the spares could "
                    "never all be booted", "lower warm_spare_nodes or raise the pool's device limit",
                    ("workloads", "warm_spare_nodes"))
        return self

    def _check_targets_have_nodes(self) -> None:
        """A cuda image is built only for an architecture some NVIDIA NodePool launches (the region pools are x86)."""
        nvidia_arches = {"amd64"} | {"arm64" for zone in self.local_zones for family in zone.instance_families
                                     if family in ARM64_FAMILIES and FAMILY_ACCELERATOR[family] == "nvidia"}
        for i, target in enumerate(self.pipeline.targets):
            if target.accelerator == "cuda" and target.arch not in nvidia_arches:
                raise FieldProblem(f"no NodePool launches an NVIDIA {target.arch} node, so nothing could run this "
                                   "cuda image", f"remove the cuda {target.arch} target (the NVIDIA pools are "
                                   f"{', '.join(sorted(nvidia_arches))})", ("pipeline", "targets", i, "arch"))

    def _check_subnets(self) -> None:
        """Every subnet of the VPC is disjoint: region subnets (as ec2.Vpc allocates them) and each Local Zone
        subnet, which must also sit inside the VPC CIDR."""
        vpc = ipaddress.ip_network(self.vpc_cidr)
        taken = [(f"region {group} subnet in {az}", ipaddress.ip_network(block))
                 for group, blocks in self.region_subnets.items() for az, block in zip(self.region_azs, blocks)]
        last_region = max(net for _, net in taken)
        for i, zone in enumerate(self.local_zones):
            for key in ("subnet_cidr", "private_subnet_cidr"):
                cidr = getattr(zone, key)
                if cidr is None:
                    continue
                at = ("local_zones", i, key)
                net = ipaddress.ip_network(cidr)
                if not net.subnet_of(vpc):
                    raise FieldProblem(f"{net} is outside the VPC CIDR {vpc}", f"pick a block inside {vpc}", at)
                if not 20 <= net.prefixlen <= 26:
                    raise FieldProblem(f"/{net.prefixlen} is outside /20-/26", "use e.g. a /22", at)
                for other_name, other in taken:
                    if net.overlaps(other):
                        raise FieldProblem(f"{net} overlaps {other} ({other_name})", "choose a block that overlaps "
                                           f"nothing else, above {last_region.broadcast_address}", at)
                taken.append((f"edge.local_zones[{i}].{key}", net))

    @property
    def region_subnets(self) -> dict[str, list[str]]:
        return region_subnet_cidrs(self.vpc_cidr, len(self.region_azs))

    @property
    def image_cache_parameter_name(self) -> str:
        """SSM parameter the pipeline writes the node image cache's snapshot id to, and the cluster reads."""
        return f"/{self.cluster_name}/node-image-cache/snapshot-id"

    def local_zones_offering(self, accelerator: str) -> tuple[LocalZoneConfig, ...]:
        return tuple(lz for lz in self.local_zones if accelerator in lz.accelerators)

    def image_repository_name(self, flavor: str) -> str:
        return self.pipeline.repository_name(flavor)
