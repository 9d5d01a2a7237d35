"""Where the cluster runs: Local Zones, the region subnet layout, system nodes and Karpenter's per-accelerator limits."""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import Field, StrictBool, field_validator, model_validator

import versions
from edge_config.catalog import ACCELERATORS, ARM64_FAMILIES, FAMILY_ACCELERATOR, InstanceFamily
from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section, ipv4_network, unique

# Region subnet masks; the layout is simulated below so Local Zone CIDRs can be checked before synth.
REGION_PUBLIC_SUBNET_MASK = 22
REGION_PRIVATE_SUBNET_MASK = 20

_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# Graviton families carry a 'g' right after the generation digit (m7g, c8g, t4g, r7gd).
_GRAVITON_FAMILY_RE = re.compile(r"^[a-z]+\d+g[a-z]*$")


def region_subnet_cidrs(vpc_cidr: str, az_count: int) -> dict[str, list[str]]:
    """The CIDRs ec2.Vpc allocates to region subnets: groups in declaration order, each block aligned."""
    net = ipaddress.ip_network(vpc_cidr)
    next_ip = int(net.network_address)
    out: dict[str, list[str]] = {"public": [], "private": []}
    for group, mask in (("public", REGION_PUBLIC_SUBNET_MASK), ("private", REGION_PRIVATE_SUBNET_MASK)):
        size = 2 ** (32 - mask)
        for _ in range(az_count):
            start = -(-next_ip // size) * size
            block = ipaddress.ip_network(f"{ipaddress.ip_address(start)}/{mask}")
            if not block.subnet_of(net):
                raise FieldProblem(f"{vpc_cidr} is too small for {az_count} AZs of /{REGION_PUBLIC_SUBNET_MASK} "
                                   f"public and /{REGION_PRIVATE_SUBNET_MASK} private subnets", "use a /16",
                                   ("vpc_cidr",))
            out[group].append(str(block))
            next_ip = start + size
    return out


class LocalZoneConfig(Section):
    """One AWS Local Zone: its public subnet and the accelerator families it offers."""

    name: str = Field(description="Local Zone id in the config's region, e.g. `us-west-2-lax-1a`.")
    subnet_cidr: str = Field(description="IPv4 CIDR (/20-/26, inside `vpc_cidr`) of the zone's public subnet, "
                                         "where Karpenter launches inference nodes.")
    instance_families: Annotated[tuple[InstanceFamily, ...], Hint(noun="accelerator instance family")] = Field(
        min_length=1, description="Accelerator instance families the zone offers (see "
                                  "`aws ec2 describe-instance-type-offerings --location-type availability-zone`).")
    gp3_available: StrictBool = Field(False, description="The zone offers gp3 volumes; most Local Zones offer only gp2, "
                                                   "so node root volumes are gp2 unless this is true.")
    private_subnet_cidr: str | None = Field(
        None, description="Optional private subnet whose egress goes through the parent-region NAT, for components "
                          "that must not have public IPs; Karpenter never uses it (devices reach inference nodes "
                          "on their public IPs).")

    @field_validator("subnet_cidr", "private_subnet_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            ipv4_network(value)
        return value

    @field_validator("instance_families")
    @classmethod
    def _unique_families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unique(value)
        for i, family in enumerate(value):
            if family not in versions.NVIDIA_FAMILY_GPUS:
                continue
            gpu, capability = versions.NVIDIA_FAMILY_GPUS[family]
            arch = "arm64" if family in ARM64_FAMILIES else "amd64"
            if not versions.torch_cuda_drives(capability, arch):
                raise FieldProblem(
                    f"{family} ({gpu}, compute capability {capability}, {arch}) cannot run the CUDA image: the "
                    f"pinned {arch} torch build has kernels for {', '.join(versions.TORCH_CUDA_ARCHS[arch])} only",
                    "list a family the image drives (g4dn, g5, g6, g6e, gr6)", (i,))
        return value

    @property
    def accelerators(self) -> tuple[str, ...]:
        return tuple(a for a in ACCELERATORS if any(FAMILY_ACCELERATOR[f] == a for f in self.instance_families))

    def families_for(self, accelerator: str) -> tuple[str, ...]:
        return tuple(f for f in self.instance_families if FAMILY_ACCELERATOR[f] == accelerator)


class NodePoolLimits(Section):
    """Upper bound Karpenter may provision for one accelerator's pools."""

    cpu: int = Field(192, ge=4, le=100_000, description="vCPUs across all nodes of the accelerator's pools.")
    memory_gib: int = Field(768, ge=16, le=1_000_000, description="Memory in GiB across those nodes.")
    devices: int = Field(8, ge=1, le=10_000, description="Accelerator devices (GPUs or Neuron devices) in total.")


class SystemNodesConfig(Section):
    """The small Graviton managed node group that runs Karpenter and cluster add-ons."""

    instance_types: tuple[str, ...] = Field(("m7g.large",), min_length=1,
                                            description="Graviton (arm64) EC2 instance types of the node group.")
    min_size: int = Field(2, ge=1, le=20, description="Minimum node count; at least 2, since Karpenter's two "
                                                      "replicas need different nodes.")
    desired_size: int = Field(2, ge=1, le=20, description="Node count at deploy time (min <= desired <= max).")
    max_size: int = Field(3, ge=1, le=20, description="Maximum node count.")

    @field_validator("instance_types")
    @classmethod
    def _graviton(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unique(value)
        for i, item in enumerate(value):
            if not _INSTANCE_TYPE_RE.match(item):
                raise FieldProblem(f"{item!r} is not an EC2 instance type", "write it like \"m7g.large\"", (i,))
            if not _GRAVITON_FAMILY_RE.match(item.split(".")[0]):
                raise FieldProblem(f"{item!r} is not a Graviton (arm64) instance type",
                                   "the system node group is arm64-only; use e.g. m7g.large or c7g.xlarge", (i,))
        return value

    @field_validator("min_size")
    @classmethod
    def _two_for_karpenter(cls, value: int) -> int:
        if value < 2:
            # Karpenter runs two replicas that must land on different system nodes, and the deploy waits for both.
            raise FieldProblem(f"{value} system node cannot host Karpenter's two replicas (required anti-affinity), "
                               "so the deploy would time out", "use min_size >= 2")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "SystemNodesConfig":
        if not self.min_size <= self.desired_size <= self.max_size:
            raise FieldProblem(f"need min_size <= desired_size <= max_size, got {self.min_size} <= "
                               f"{self.desired_size} <= {self.max_size}", "adjust the three sizes", ("desired_size",))
        return self
