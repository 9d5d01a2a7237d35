"""Every NVIDIA GPU a NodePool may launch must be one the pinned CUDA torch builds carry kernels for."""
from __future__ import annotations

import pytest

import versions
from charts.nodepools import nodepool_objects
from edge_config import ACCELERATOR_FAMILIES, ConfigError, load_config
from tests.test_edge_config import ctx

# CPU architecture of each NVIDIA family (AWS: g5g is Graviton2, the others x86).
FAMILY_ARCH = {"g4dn": "amd64", "g5": "amd64", "g5g": "arm64", "g6": "amd64", "g6e": "amd64", "gr6": "amd64"}


def _requirement(pool: dict, key: str) -> list[str]:
    [req] = [r for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    return req["values"]


def _launchable_gpus(config) -> set[tuple[str, str]]:
    """(family, arch) pairs some NVIDIA NodePool allows."""
    pairs = set()
    for obj in nodepool_objects(config, node_role="role"):
        if obj["kind"] != "NodePool" or "nvidia.com/gpu" not in obj["spec"]["limits"]:
            continue
        arches = _requirement(obj, "kubernetes.io/arch")
        pairs |= {(f, FAMILY_ARCH[f]) for f in _requirement(obj, "karpenter.k8s.aws/instance-family")
                  if FAMILY_ARCH[f] in arches}
    return pairs


def test_the_arch_lists_cover_every_known_family():
    assert set(FAMILY_ARCH) == set(ACCELERATOR_FAMILIES["nvidia"]) == set(versions.NVIDIA_FAMILY_GPUS)
    assert set(versions.TORCH_CUDA_ARCHS) == {"amd64", "arm64"}


@pytest.mark.parametrize("families", [None, ("g4dn", "g5", "g6", "g6e", "gr6")])
def test_no_nodepool_allows_a_gpu_the_cuda_image_cannot_drive(families):
    overrides = {} if families is None else {"local_zones": [{"name": "us-west-2-lax-1a",
                                                              "subnet_cidr": "10.40.128.0/22",
                                                              "instance_families": list(families)}]}
    config = load_config(ctx(**overrides))
    for family, arch in sorted(_launchable_gpus(config)):
        gpu, capability = versions.NVIDIA_FAMILY_GPUS[family]
        assert versions.torch_cuda_drives(capability, arch), (
            f"a NodePool allows {family} ({gpu}, sm_{capability.replace('.', '')}) on {arch}, but the pinned torch "
            f"{versions.IMAGE_BUILD_VERSIONS['TORCH_VERSION']} cu130 {arch} build has kernels only for "
            f"{versions.TORCH_CUDA_ARCHS[arch]}")


def test_the_drive_check_follows_cuda_binary_compatibility():
    assert versions.torch_cuda_drives("8.9", "amd64")  # sm_86 SASS runs on 8.9 (same major, newer minor)
    assert versions.torch_cuda_drives("7.5", "amd64")
    assert not versions.torch_cuda_drives("7.5", "arm64")  # the aarch64 build drops < 8.0
    assert versions.torch_cuda_drives("12.1", "arm64")  # 12.0+PTX: JIT forward compatibility
    assert not versions.torch_cuda_drives("7.0", "amd64")


def test_a_local_zone_listing_a_gpu_the_image_cannot_drive_fails_at_synth():
    with pytest.raises(ConfigError, match=r"edge\.local_zones\[0\]\.instance_families.*g5g"):
        load_config(ctx(local_zones=[{"name": "us-west-2-lax-1a", "subnet_cidr": "10.40.128.0/22",
                                      "instance_families": ["g4dn", "g5g"]}]))
