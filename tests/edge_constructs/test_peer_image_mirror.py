"""The in-zone peer mirror: one Spegel release per Local Zone, pinned, its values checked against the chart, and
consistent with the containerd settings the Local Zone nodes get."""
from __future__ import annotations

import email
import json

import pytest
import tomllib
import yaml

import versions
from charts import image_cache
from edge_constructs.peer_image_mirror import FIRST_NODE_PORT, SPEGEL_NAMESPACE, release_name
from tests.helm_values import check_release
from tools.render_manifests import extract_helm_releases, extract_manifests

ZONES = ["us-west-2-lax-1a", "us-west-2-lax-1b"]
TWO_ZONES = json.dumps([
    {"name": ZONES[0], "subnet_cidr": "10.40.128.0/22", "instance_families": ["g4dn", "g5"]},
    {"name": ZONES[1], "subnet_cidr": "10.40.132.0/22", "instance_families": ["g6"], "gp3_available": True},
])


@pytest.fixture(scope="module")
def template(cluster_template) -> dict:
    return cluster_template(local_zones=TWO_ZONES)


@pytest.fixture(scope="module")
def spegel(template) -> dict[str, dict]:
    return {r["values"]["nodeSelector"]["topology.kubernetes.io/zone"]: r
            for r in extract_helm_releases(template).values() if r["chart"] == "spegel"}


def test_one_pinned_release_per_local_zone(spegel):
    assert sorted(spegel) == ZONES
    repository, chart, version = versions.SPEGEL_CHART
    for zone, release in spegel.items():
        assert (release["repository"], release["chart"], release["version"]) == (repository, chart, version)
        assert release["release"] == release_name(zone) == release["values"]["fullnameOverride"]
        assert release["namespace"] == SPEGEL_NAMESPACE and len(release["release"]) <= 53
        assert check_release(release) == []


def test_peers_are_found_only_in_the_same_zone(spegel):
    """Each release's pods run on its zone's nodes only, and its peers are the pods of its own release."""
    for zone, release in spegel.items():
        assert release["values"]["nodeSelector"]["topology.kubernetes.io/zone"] == zone
    names = {r["values"]["fullnameOverride"] for r in spegel.values()}
    assert len(names) == len(spegel)


def test_node_ports_are_unique_and_clear_of_the_devices_port(spegel, template):
    ports = [r["values"]["service"]["registry"]["nodePort"] for r in spegel.values()]
    assert sorted(ports) == [FIRST_NODE_PORT, FIRST_NODE_PORT + 1]
    services = [o for objects in extract_manifests(template).values() for o in objects if o.get("kind") == "Service"]
    device_ports = {p.get("nodePort") for s in services for p in s["spec"].get("ports", [])}
    assert not device_ports & set(ports)


def test_peers_serve_only_content_addressed_data(spegel):
    # Tags resolve at ECR; peers answer digests, which containerd verifies.
    assert all(r["values"]["spegel"]["resolveTags"] is False for r in spegel.values())


def test_the_mirror_and_the_nodes_agree_on_the_containerd_settings(spegel, template):
    [classes] = [[o for o in objects if o["kind"] == "EC2NodeClass"] for objects in extract_manifests(
        template).values() if any(o["kind"] == "EC2NodeClass" for o in objects)]
    for node_class in classes:
        if node_class["metadata"]["labels"]["edge-diffusion.aws/zone-type"] != "local-zone":
            continue
        parts = [p for p in email.message_from_string(node_class["spec"]["userData"]).get_payload()
                 if p.get_content_type() == "application/node.eks.aws"]
        config = yaml.safe_load(parts[0].get_payload())["spec"]["containerd"]["config"]
        images = tomllib.loads(config)["plugins"]["io.containerd.cri.v1.images"]
        for release in spegel.values():
            assert images["registry"]["config_path"] == release["values"]["spegel"]["containerdRegistryConfigPath"]
        assert images["discard_unpacked_layers"] is False  # Spegel exits when layers are discarded


def test_a_planted_unknown_spegel_key_fails(spegel):
    release = dict(next(iter(spegel.values())))
    release["values"] = {"spegel": {"resolveTag": False}, "service": {"registry": {"nodeport": 30021}}}
    assert sorted(p.split("'")[1] for p in check_release(release)) == ["service.registry.nodeport",
                                                                        "spegel.resolveTag"]
