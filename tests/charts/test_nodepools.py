"""charts/nodepools.py: every object validates against the vendored Karpenter CRDs; pool policy per the issue."""
from __future__ import annotations

import copy
import json

import cdk8s
import pytest

import versions
from charts.nodepools import (
    LOCAL_ZONE_WEIGHT,
    REGION_WEIGHT,
    NodePoolsChart,
    nodepool_objects,
)
from edge_config import load_config
from tests.conftest import REPO_ROOT
from tests.k8s_schema import validate_k8s_object

DEFAULT_CONTEXT = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
ROLE = "KarpenterNodeRole-test"


def config(**overrides):
    context = copy.deepcopy(DEFAULT_CONTEXT)
    context.update({f"edge.{k.replace('__', '.')}": v for k, v in overrides.items()})
    return load_config(context)


def objects(cfg=None) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in nodepool_objects(cfg or config(), node_role=ROLE)}


def requirement(pool: dict, key: str) -> list[str]:
    [req] = [r for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    assert req["operator"] == "In"
    return req["values"]


TWO_ZONES = json.dumps([
    {"name": "us-west-2-lax-1a", "subnet_cidr": "10.40.128.0/22", "instance_families": ["g4dn", "g5"]},
    {"name": "us-west-2-lax-1b", "subnet_cidr": "10.40.132.0/22", "instance_families": ["g6", "inf2"],
     "gp3_available": True},
])


@pytest.mark.parametrize("overrides", [{}, {"local_zones": TWO_ZONES}, {"accelerators": '["nvidia"]'}])
def test_every_object_validates_against_the_crds(overrides):
    for obj in nodepool_objects(config(**overrides), node_role=ROLE):
        validate_k8s_object(obj)


def test_synthesized_chart_matches_the_pure_objects_and_validates():
    cfg = config()
    chart = NodePoolsChart(cdk8s.App(), "nodepools", config=cfg, node_role=ROLE)
    rendered = chart.to_json()
    for obj in rendered:
        validate_k8s_object(obj)
    assert [(o["kind"], o["metadata"]["name"], o["spec"]) for o in rendered] == [
        (o["kind"], o["metadata"]["name"], o["spec"]) for o in nodepool_objects(cfg, node_role=ROLE)]


def test_api_versions_are_karpenter_v1():
    for (kind, _), obj in objects().items():
        assert obj["apiVersion"] == {"NodePool": "karpenter.sh/v1", "EC2NodeClass": "karpenter.k8s.aws/v1"}[kind]


def test_default_pools():
    assert sorted(name for kind, name in objects() if kind == "NodePool") == [
        "neuron-region", "nvidia-region", "nvidia-us-west-2-lax-1a"]


def test_nvidia_local_zone_pool():
    pool = objects()[("NodePool", "nvidia-us-west-2-lax-1a")]
    spec = pool["spec"]["template"]["spec"]
    assert spec["taints"] == [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert requirement(pool, "karpenter.k8s.aws/instance-family") == ["g4dn", "g5"]
    assert requirement(pool, "topology.kubernetes.io/zone") == ["us-west-2-lax-1a"]
    assert spec["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                    "name": "lz-us-west-2-lax-1a"}
    assert pool["spec"]["template"]["metadata"]["labels"] == {
        "edge-diffusion.aws/accelerator": "nvidia", "edge-diffusion.aws/zone-type": "local-zone"}


def test_neuron_pool_is_inf2_in_region_azs_by_default():
    pool = objects()[("NodePool", "neuron-region")]
    assert pool["spec"]["template"]["spec"]["taints"] == [{"key": "aws.amazon.com/neuron", "effect": "NoSchedule"}]
    assert requirement(pool, "karpenter.k8s.aws/instance-family") == ["inf2"]
    assert requirement(pool, "topology.kubernetes.io/zone") == ["us-west-2a", "us-west-2b"]
    assert requirement(pool, "kubernetes.io/arch") == ["amd64"]


def test_neuron_moves_to_a_local_zone_that_offers_inf2_with_higher_weight():
    pools = objects(config(local_zones=TWO_ZONES))
    lz_pool = pools[("NodePool", "neuron-us-west-2-lax-1b")]
    assert requirement(lz_pool, "topology.kubernetes.io/zone") == ["us-west-2-lax-1b"]
    assert lz_pool["spec"]["weight"] > pools[("NodePool", "neuron-region")]["spec"]["weight"]
    # No NVIDIA family the CUDA image drives is arm64 (g5g's T4G is not in the arm64 torch build).
    assert requirement(pools[("NodePool", "nvidia-us-west-2-lax-1b")], "kubernetes.io/arch") == ["amd64"]


def test_local_zone_pools_outweigh_their_region_fallbacks():
    pools = {name: o for (kind, name), o in objects(config(local_zones=TWO_ZONES)).items() if kind == "NodePool"}
    for name, pool in pools.items():
        expected = REGION_WEIGHT if name.endswith("-region") else LOCAL_ZONE_WEIGHT
        assert pool["spec"]["weight"] == expected
    assert LOCAL_ZONE_WEIGHT > REGION_WEIGHT


def test_limits_and_disruption_suited_to_inference():
    cfg = config(nodepool_limits__nvidia__devices="4")
    for (kind, name), pool in objects(cfg).items():
        if kind != "NodePool":
            continue
        spec = pool["spec"]
        device = "nvidia.com/gpu" if name.startswith("nvidia") else "aws.amazon.com/neuron"
        assert set(spec["limits"]) == {"cpu", "memory", device}
        disruption = spec["disruption"]
        assert disruption["consolidationPolicy"] == "WhenEmpty"
        assert disruption["consolidateAfter"] == "10m"
        assert {"nodes": "1"} in disruption["budgets"]
        assert spec["template"]["spec"]["expireAfter"] == "720h"
    assert objects(cfg)[("NodePool", "nvidia-region")]["spec"]["limits"]["nvidia.com/gpu"] == "4"


def test_ec2_node_class_security_settings():
    for (kind, name), node_class in objects(config(local_zones=TWO_ZONES)).items():
        if kind != "EC2NodeClass":
            continue
        spec = node_class["spec"]
        [alias] = spec["amiSelectorTerms"]
        assert alias == {"alias": versions.KARPENTER_AMI_ALIAS}
        assert "@latest" not in alias["alias"] and alias["alias"].startswith("al2023@v")
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        [device] = spec["blockDeviceMappings"]
        assert device["ebs"]["encrypted"] is True
        assert int(device["ebs"]["volumeSize"].removesuffix("Gi")) >= 100
        assert spec["role"] == ROLE
        assert spec["securityGroupSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "edge-diffusion"}}]
        for term in spec["subnetSelectorTerms"]:
            assert term["tags"]["karpenter.sh/discovery"] == "edge-diffusion"


def test_gp2_where_the_zone_lacks_gp3():
    classes = {name: o for (kind, name), o in objects(config(local_zones=TWO_ZONES)).items()
               if kind == "EC2NodeClass"}
    volume = {name: o["spec"]["blockDeviceMappings"][0]["ebs"]["volumeType"] for name, o in classes.items()}
    assert volume == {"lz-us-west-2-lax-1a": "gp2", "lz-us-west-2-lax-1b": "gp3", "region": "gp3"}


def test_each_node_class_selects_only_its_zone_subnets():
    classes = {name: o for (kind, name), o in objects().items() if kind == "EC2NodeClass"}
    zones = {name: [t["tags"]["edge-diffusion.aws/zone"] for t in o["spec"]["subnetSelectorTerms"]]
             for name, o in classes.items()}
    assert zones == {"lz-us-west-2-lax-1a": ["us-west-2-lax-1a"], "region": ["us-west-2a", "us-west-2b"]}


def test_a_misspelt_field_fails_validation():
    pool = copy.deepcopy(objects()[("NodePool", "nvidia-region")])
    pool["spec"]["disruption"]["consolidationPolicyy"] = "WhenEmpty"
    with pytest.raises(AssertionError, match="consolidationPolicyy"):
        validate_k8s_object(pool)


def test_selector_tags_match_the_tags_the_network_puts_on_subnets():
    from charts import nodepools
    from edge_constructs import edge_network

    assert nodepools.DISCOVERY_TAG == edge_network.DISCOVERY_TAG
    assert nodepools.ZONE_TAG == edge_network.ZONE_TAG
