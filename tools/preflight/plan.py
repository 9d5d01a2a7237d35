"""What the deploy would ask AWS for, read from the objects the stack itself renders: the Karpenter NodePools
(charts.nodepools, the same code `make synth` runs) and the pinned versions."""
from __future__ import annotations

import re
from dataclasses import dataclass

from edge_config import ARM64_FAMILIES, EdgeConfig

FAMILY_KEY = "karpenter.k8s.aws/instance-family"
ZONE_KEY = "topology.kubernetes.io/zone"
CAPACITY_KEY = "karpenter.sh/capacity-type"

# EC2 On-Demand vCPU quotas (Service Quotas, service code "ec2") by the instance-family letters they cover.
QUOTAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "L-DB2E81BA": ("Running On-Demand G and VT instances", ("g", "vt")),
    "L-1945791B": ("Running On-Demand Inf instances", ("inf",)),
}
# The smallest size of every accelerated family the config can name (g4dn, g5, g5g, g6, g6e, inf2 .xlarge; gr6
# starts at 4xlarge) has 4 vCPUs: a quota below that launches nothing.
MIN_NODE_VCPUS = 4


@dataclass(frozen=True)
class Pool:
    """One rendered NodePool: what Karpenter may launch for it and where."""

    name: str
    accelerator: str
    zone_type: str
    families: tuple[str, ...]
    zones: tuple[str, ...]
    cpu_limit: int
    capacity_types: tuple[str, ...]


def _requirement(pool: dict, key: str) -> tuple[str, ...]:
    for req in pool["spec"]["template"]["spec"]["requirements"]:
        if req["key"] == key and req["operator"] == "In":
            return tuple(req["values"])
    raise ValueError(f"NodePool {pool['metadata']['name']} has no '{key} In' requirement")


def _cpu(quantity: str) -> int:
    """A Kubernetes CPU quantity in whole vCPUs ("192", "192000m")."""
    match = re.fullmatch(r"(\d+)(m?)", str(quantity))
    if not match:
        raise ValueError(f"unsupported CPU limit {quantity!r}")
    return int(match[1]) // 1000 if match[2] else int(match[1])


def pools_from_objects(objects: list[dict]) -> list[Pool]:
    from charts.nodepools import ACCELERATOR_LABEL, ZONE_TYPE_LABEL

    pools = []
    for obj in objects:
        if obj.get("kind") != "NodePool":
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        pools.append(Pool(name=obj["metadata"]["name"], accelerator=labels[ACCELERATOR_LABEL],
                          zone_type=labels[ZONE_TYPE_LABEL], families=_requirement(obj, FAMILY_KEY),
                          zones=_requirement(obj, ZONE_KEY), cpu_limit=_cpu(obj["spec"]["limits"]["cpu"]),
                          capacity_types=_requirement(obj, CAPACITY_KEY)))
    return pools


def render_pools(config: EdgeConfig) -> list[Pool]:
    """The NodePools exactly as the stack renders them (the node role and snapshot id do not change them)."""
    from charts.nodepools import nodepool_objects

    return pools_from_objects(nodepool_objects(config, node_role="preflight"))


def quota_of(family: str) -> str | None:
    """The On-Demand vCPU quota an instance family draws on ("g4dn", "gr6" -> G and VT; "inf2" -> Inf)."""
    for code, (_, prefixes) in QUOTAS.items():
        if family.startswith(prefixes):
            return code
    return None


# AMI variants of the EKS AL2023 image (Karpenter's al2023 alias picks one per instance type).
def ami_variants(pools: list[Pool]) -> list[tuple[str, str]]:
    """(architecture, variant) pairs the pools' families boot, in a stable order."""
    needed: set[tuple[str, str]] = set()
    for pool in pools:
        for family in pool.families:
            arch = "arm64" if family in ARM64_FAMILIES else "x86_64"
            needed.add((arch, "neuron" if pool.accelerator == "neuron" else "nvidia"))
    return sorted(needed)


def ami_parameter(kubernetes_version: str, alias: str, arch: str, variant: str) -> str:
    """The public SSM parameter Karpenter reads for an `al2023@<version>` alias (aws/karpenter-provider-aws
    pkg/providers/amifamily/al2023.go, resolvePath): "recommended" for @latest, else the pinned release's name."""
    family, _, release = alias.partition("@")
    if family != "al2023" or not release:
        raise ValueError(f"unsupported AMI alias {alias!r} (expected al2023@<version>)")
    name = ("recommended" if release == "latest"
            else f"amazon-eks-node-al2023-{arch}-{variant}-{kubernetes_version}-{release}")
    return f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/{arch}/{variant}/{name}/image_id"
