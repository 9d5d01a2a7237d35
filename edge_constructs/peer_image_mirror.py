"""Spegel (pinned in versions.py): a peer-to-peer OCI mirror, one release per Local Zone, so a scale-out pulls the
serving image's layers from nodes already in its zone instead of across the zone-to-region link.

Each release's DaemonSet runs only on its zone's nodes and bootstraps its own peer set (a headless Service of the
release), so a peer found is always in the same zone; a layer no peer holds comes from ECR as before (containerd
tries the mirror, then the registry). ``resolveTags: false`` keeps the tag-to-digest lookup at ECR: peers serve
only content addressed by digest, which containerd verifies, so a node cannot hand another a different image.
The nodes' containerd keeps compressed layers and reads the mirror's hosts.toml through the nodeadm settings in
charts/image_cache.py. Sources and the cold-start model: docs/cold-start.md.
"""
from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

import versions
from charts.image_cache import CONTAINERD_REGISTRY_CONFIG_PATH

SPEGEL_NAMESPACE = "spegel"
# The chart's NodePort Service defaults to 30021; every release needs its own (NodePorts are cluster-wide). Far
# below the devices' NodePort (edge.workloads.node_port, 30000-32767, default 30080) for up to 50 zones.
FIRST_NODE_PORT = 30021
ZONE_LABEL = "topology.kubernetes.io/zone"


def release_name(zone: str) -> str:
    # Helm release names are at most 53 characters; Local Zone ids are ~20.
    return f"spegel-{zone}"


def spegel_values(zone: str, index: int) -> dict:
    """Values of the release for one Local Zone (checked against the chart by tests/helm_values.py)."""
    return {
        "fullnameOverride": release_name(zone),
        "nodeSelector": {"kubernetes.io/os": "linux", ZONE_LABEL: zone},
        "service": {"registry": {"nodePort": FIRST_NODE_PORT + index}},
        "spegel": {
            "containerdRegistryConfigPath": CONTAINERD_REGISTRY_CONFIG_PATH,
            "resolveTags": False,
            "debugWebEnabled": False,
        },
    }


class PeerImageMirror(Construct):
    """``releases``: zone -> the Spegel Helm release of that Local Zone."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.Cluster, local_zones: Sequence[str],
                 after: list) -> None:
        super().__init__(scope, construct_id)
        repository, chart, version = versions.SPEGEL_CHART
        self.releases: dict[str, eks.HelmChart] = {}
        for index, zone in enumerate(local_zones):
            release = cluster.add_helm_chart(
                f"Spegel-{zone}", repository=repository, chart=chart, version=version, release=release_name(zone),
                namespace=SPEGEL_NAMESPACE, create_namespace=True, values=spegel_values(zone, index))
            for dependency in after:
                release.node.add_dependency(dependency)
            self.releases[zone] = release
