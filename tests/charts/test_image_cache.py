"""The node side of the image cache: Local Zone EC2NodeClasses with the restored volume and the mount script."""
from __future__ import annotations

import email
import json
import subprocess

import pytest

import edge_config
from charts import image_cache
from charts.nodepools import nodepool_objects
from tests.conftest import REPO_ROOT
from tests.k8s_schema import validate_k8s_object

SNAPSHOT = "snap-0123456789abcdef0"


@pytest.fixture(scope="module")
def cfg() -> edge_config.EdgeConfig:
    return edge_config.load_config(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


def _classes(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "EC2NodeClass"}


def test_local_zone_classes_start_from_the_snapshot(cfg):
    plain = _classes(nodepool_objects(cfg, node_role="role"))
    cached = _classes(nodepool_objects(cfg, node_role="role", image_cache_snapshot_id=SNAPSHOT))
    assert plain.keys() == cached.keys()
    for name, node_class in cached.items():
        validate_k8s_object(node_class)
        before, after = plain[name]["spec"], node_class["spec"]
        assert after["blockDeviceMappings"][0] == before["blockDeviceMappings"][0]  # the root volume as before
        if node_class["metadata"]["labels"]["edge-diffusion.aws/zone-type"] != "local-zone":
            assert after == before
            continue
        zone = next(lz for lz in cfg.local_zones if name == f"lz-{lz.name}")
        (volume,) = after["blockDeviceMappings"][1:]
        assert volume["deviceName"] == image_cache.CACHE_DEVICE
        ebs = volume["ebs"]
        assert ebs["snapshotID"] == SNAPSHOT and ebs["deleteOnTermination"] is True
        assert ebs["volumeInitializationRate"] == cfg.node_image_cache.volume_initialization_rate_mibps
        assert ebs["volumeSize"] == f"{cfg.node_image_cache.volume_size_gib}Gi"
        assert ebs["volumeType"] == ("gp3" if zone.gp3_available else "gp2")
        # The encryption comes from the snapshot; EC2 refuses an explicit value next to a snapshot id.
        assert "encrypted" not in ebs
        assert after["userData"] == image_cache.user_data()
        assert {k: v for k, v in after.items() if k not in ("blockDeviceMappings", "userData")} == {
            k: v for k, v in before.items() if k != "blockDeviceMappings"}


def test_no_snapshot_means_no_cache_volume(cfg):
    for node_class in _classes(nodepool_objects(cfg, node_role="role")).values():
        assert len(node_class["spec"]["blockDeviceMappings"]) == 1 and "userData" not in node_class["spec"]


def test_user_data_is_one_shell_part_karpenter_can_merge():
    message = email.message_from_string(image_cache.user_data())
    assert message.is_multipart()
    (part,) = message.get_payload()
    assert part.get_content_type() == "text/x-shellscript"
    assert part.get_payload().strip() == image_cache.MOUNT_SCRIPT.strip()


def test_mount_script_is_valid_bash_and_mounts_before_containerd():
    subprocess.run(["bash", "-n"], input=image_cache.MOUNT_SCRIPT, text=True, check=True)
    script = image_cache.MOUNT_SCRIPT
    assert script.index("systemctl stop containerd") < script.index("mount -o noatime") < script.index(
        "systemctl start containerd")
    # A node without a usable cache volume still boots and pulls: the script never fails the boot for it.
    assert "exit 0" in script and "nofail" in script


def test_the_rate_stays_in_the_ebs_range():
    cache = edge_config.NodeImageCacheConfig(volume_initialization_rate_mibps=100)
    assert image_cache.data_volume(SNAPSHOT, cache, gp3=False).ebs.volume_initialization_rate == 100
    with pytest.raises(ValueError):
        edge_config.NodeImageCacheConfig(volume_initialization_rate_mibps=301)
