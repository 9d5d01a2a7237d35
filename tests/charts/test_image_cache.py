"""The node side of image delivery: Local Zone EC2NodeClasses with the peer mirror's containerd settings, the
instance store, the restored cache volume and the mount script."""
from __future__ import annotations

import copy
import email
import json
import os
import subprocess
import tomllib

import pytest
import yaml

import edge_config
from charts import image_cache
from charts.nodepools import NVME_INSTANCE_STORE_FAMILIES, nodepool_objects
from tests.conftest import REPO_ROOT
from tests.k8s_schema import validate_k8s_object

SNAPSHOT = "snap-0123456789abcdef0"
CONTEXT = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
# One zone with NVMe instance store families, one (Inferentia only) without.
ZONES = [
    {"name": "us-west-2-lax-1a", "subnet_cidr": "10.40.128.0/22", "instance_families": ["g4dn", "g5"]},
    {"name": "us-west-2-lax-1b", "subnet_cidr": "10.40.132.0/22", "instance_families": ["inf2"],
     "gp3_available": True},
]


@pytest.fixture(scope="module")
def cfg() -> edge_config.EdgeConfig:
    context = copy.deepcopy(CONTEXT)
    context["edge.local_zones"] = json.dumps(ZONES)
    context["edge.accelerators"] = '["nvidia", "neuron"]'
    return edge_config.load_config(context)


def _classes(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "EC2NodeClass"}


def _parts(user_data: str) -> dict[str, str]:
    message = email.message_from_string(user_data)
    assert message.is_multipart()
    return {part.get_content_type(): part.get_payload() for part in message.get_payload()}


def test_local_zone_classes_never_ask_for_an_initialization_rate(cfg):
    """EBS offers no volume initialization rate in Local Zones: a launch asking for one fails."""
    cached = _classes(nodepool_objects(cfg, node_role="role", image_cache_snapshot_id=SNAPSHOT))
    volumes = [m["ebs"] for c in cached.values() for m in c["spec"]["blockDeviceMappings"]]
    assert any("snapshotID" in ebs for ebs in volumes)
    assert not [ebs for ebs in volumes if "volumeInitializationRate" in ebs]


def test_the_synth_rule_rejects_a_rate_in_a_local_zone_class(cfg):
    node_class = _classes(nodepool_objects(cfg, node_role="role", image_cache_snapshot_id=SNAPSHOT))[
        "lz-us-west-2-lax-1b"]
    image_cache.check_local_zone_node_class(node_class)
    node_class["spec"]["blockDeviceMappings"][1]["ebs"]["volumeInitializationRate"] = 300
    with pytest.raises(ValueError, match=r"lz-us-west-2-lax-1b: spec\.blockDeviceMappings\[1\]\.ebs\."
                                         r"volumeInitializationRate .* Local Zones"):
        image_cache.check_local_zone_node_class(node_class)


def test_the_removed_rate_field_is_refused_by_name():
    from tests.test_edge_config import error_for

    assert error_for(node_image_cache__volume_initialization_rate_mibps="300").startswith(
        "edge.node_image_cache.volume_initialization_rate_mibps: was removed: EBS offers no volume initialization "
        "rate in Local Zones")


def test_instance_store_families_run_containerd_on_raid0(cfg):
    classes = _classes(nodepool_objects(cfg, node_role="role"))
    assert classes["lz-us-west-2-lax-1a"]["spec"]["instanceStorePolicy"] == "RAID0"
    assert "instanceStorePolicy" not in classes["lz-us-west-2-lax-1b"]["spec"]  # inf2: EBS only
    assert classes["region"]["spec"]["instanceStorePolicy"] == "RAID0"
    assert {"g4dn", "g5", "g6", "g6e", "gr6"} == NVME_INSTANCE_STORE_FAMILIES
    assert not NVME_INSTANCE_STORE_FAMILIES & {"g5g", "inf2"}


def test_the_cache_volume_goes_only_where_no_instance_store_takes_containerd(cfg):
    plain = _classes(nodepool_objects(cfg, node_role="role"))
    cached = _classes(nodepool_objects(cfg, node_role="role", image_cache_snapshot_id=SNAPSHOT))
    assert plain.keys() == cached.keys()
    for name, node_class in cached.items():
        validate_k8s_object(node_class)
        before, after = plain[name]["spec"], node_class["spec"]
        assert after["blockDeviceMappings"][0] == before["blockDeviceMappings"][0]  # the root volume as before
        if name != "lz-us-west-2-lax-1b":
            assert after == before, name
            continue
        (volume,) = after["blockDeviceMappings"][1:]
        assert volume["deviceName"] == image_cache.CACHE_DEVICE
        ebs = volume["ebs"]
        assert ebs["snapshotID"] == SNAPSHOT and ebs["deleteOnTermination"] is True
        assert ebs["volumeSize"] == f"{cfg.node_image_cache.volume_size_gib}Gi" and ebs["volumeType"] == "gp3"
        # The encryption comes from the snapshot; EC2 refuses an explicit value next to a snapshot id.
        assert "encrypted" not in ebs
        assert after["userData"] == image_cache.user_data(peer_mirror=True, cache=True)
        assert {k: v for k, v in after.items() if k not in ("blockDeviceMappings", "userData")} == {
            k: v for k, v in before.items() if k not in ("blockDeviceMappings", "userData")}


def test_local_zone_nodes_keep_layers_and_read_the_mirror_config(cfg):
    for name, node_class in _classes(nodepool_objects(cfg, node_role="role")).items():
        if name == "region":
            assert "userData" not in node_class["spec"]  # the region pulls from ECR next door; no peer mirror
            continue
        (node_config,) = _parts(node_class["spec"]["userData"]).values()
        document = yaml.safe_load(node_config)
        assert document["apiVersion"] == "node.eks.aws/v1alpha1" and document["kind"] == "NodeConfig"
        images = tomllib.loads(document["spec"]["containerd"]["config"])["plugins"]["io.containerd.cri.v1.images"]
        assert images["discard_unpacked_layers"] is False and images["use_local_image_pull"] is True
        assert images["registry"]["config_path"] == image_cache.CONTAINERD_REGISTRY_CONFIG_PATH


def test_user_data_parts_karpenter_can_merge():
    assert image_cache.user_data(peer_mirror=False, cache=False) is None
    parts = _parts(image_cache.user_data(peer_mirror=True, cache=True))
    assert list(parts) == ["application/node.eks.aws", "text/x-shellscript"]
    assert parts["text/x-shellscript"].strip() == image_cache.MOUNT_SCRIPT.strip()


def test_mount_script_is_valid_bash_and_mounts_before_containerd():
    subprocess.run(["bash", "-n"], input=image_cache.MOUNT_SCRIPT, text=True, check=True)
    script = image_cache.MOUNT_SCRIPT
    assert script.index("wait_ebs_device") < script.index("systemctl stop containerd") < script.index(
        "mount -o noatime") < script.index("systemctl start containerd")
    # A node without a usable cache volume still boots and pulls: the script never fails the boot for it.
    assert "exit 0" in script and "nofail" in script
    # The disk is found by its volume id, never by a device name only udev rules create.
    assert '[ -b "$device" ]' not in script and f"device={image_cache.CACHE_DEVICE}" not in script


FAKE_LSBLK = """#!/bin/bash
[ "$*" = "-dno NAME,SERIAL" ] || { echo "unexpected lsblk $*" >&2; exit 2; }
printf 'nvme0n1 vol0aaaaaaaaaaaaaaaa\\nnvme1n1 AWS1E2D3C4B5A697887\\nnvme2n1 vol0bbbbbbbbbbbbbbbb\\n'
"""
FAKE_AWS = """#!/bin/bash
echo "$*" >> "$CALLS"
case "$*" in *attachment.instance-id,Values=i-0cached*) echo vol-0bbbbbbbbbbbbbbbb ;; *) echo None ;; esac
"""


@pytest.fixture()
def fake_tools(tmp_path):
    for name, text in (("lsblk", FAKE_LSBLK), ("aws", FAKE_AWS), ("sleep", "#!/bin/bash\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls")}


def _run(functions: str, call: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail\n{functions}\n{call}"], text=True, capture_output=True,
                          env=env, timeout=10)


@pytest.mark.parametrize("script", ["node", "builder"])
def test_the_cache_disk_is_found_by_its_volume_serial(fake_tools, script):
    from edge_constructs.node_image_cache import BUILDER_SCRIPT

    text = image_cache.MOUNT_SCRIPT if script == "node" else BUILDER_SCRIPT
    functions = text[text.index("imds() {"):text.index("\n}\n", text.index("wait_ebs_device() {")) + 3]
    found = _run(functions, f"wait_ebs_device i-0cached us-west-2 {image_cache.CACHE_DEVICE} 5", fake_tools)
    assert (found.returncode, found.stdout) == (0, "/dev/nvme2n1\n"), found.stderr
    calls = open(fake_tools["CALLS"]).read()
    assert f"Name=attachment.device,Values={image_cache.CACHE_DEVICE}" in calls and "--region us-west-2" in calls
    # No volume attached under that name (the API answers None): no disk, after the bounded wait.
    missing = _run(functions, f"wait_ebs_device i-0other us-west-2 {image_cache.CACHE_DEVICE} 3", fake_tools)
    assert (missing.returncode, missing.stdout) == (1, "")
    # An id whose disk is not there yet is never matched to another disk.
    assert _run(functions, "ebs_device vol-0cccccccccccccccc", fake_tools).returncode == 1
