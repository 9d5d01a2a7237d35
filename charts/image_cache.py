"""The node side of the image cache: the restored data volume and the boot script that makes it containerd's store.

The volume comes from the snapshot the image pipeline records after each publish (edge_constructs/
node_image_cache.py). A cloud-init script in the EC2NodeClass user data mounts it on /var/lib/containerd before
nodeadm starts containerd and the kubelet, so every image layer on it is already unpacked and a pod's pull only
checks the manifest. Blocks the node has not read yet arrive from the snapshot at the volume initialization rate.
"""
from __future__ import annotations

from edge_config import NodeImageCacheConfig
from imports.karpenter_aws.aws.k8s import karpenter as karpenter_aws

CACHE_DEVICE = "/dev/xvdb"
CONTAINERD_ROOT = "/var/lib/containerd"
MIME_BOUNDARY = "EDGEDIFFUSION"

MOUNT_SCRIPT = f"""#!/bin/bash
# Make the node image cache containerd's store; without it the node still boots and pulls as usual.
set -euo pipefail
device={CACHE_DEVICE}
for _ in $(seq 1 60); do [ -b "$device" ] && break; sleep 1; done
fstype=$(blkid -s TYPE -o value "$device" || true)
if [ -z "$fstype" ]; then
  echo "node image cache: $device is missing or holds no filesystem; containerd stays on the root volume" >&2
  exit 0
fi
active=$(systemctl is-active containerd.service || true)
systemctl stop containerd.service || true
mkdir -p {CONTAINERD_ROOT}
mount -o noatime "$device" {CONTAINERD_ROOT}
echo "$device {CONTAINERD_ROOT} $fstype defaults,noatime,nofail 0 2" >> /etc/fstab
if [ "$active" = active ]; then systemctl start containerd.service; fi
"""


def user_data() -> str:
    """MIME multi-part user data with the mount script; Karpenter merges its own nodeadm NodeConfig part."""
    return (
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"\n\n'
        f"--{MIME_BOUNDARY}\n"
        'Content-Type: text/x-shellscript; charset="us-ascii"\n\n'
        f"{MOUNT_SCRIPT}\n"
        f"--{MIME_BOUNDARY}--\n"
    )


def data_volume(snapshot_id: str, cache: NodeImageCacheConfig, *,
                gp3: bool) -> karpenter_aws.Ec2NodeClassSpecBlockDeviceMappings:
    """The EC2NodeClass block device mapping of the restored cache volume (``snapshot_id`` may be a token)."""
    volume_type = karpenter_aws.Ec2NodeClassSpecBlockDeviceMappingsEbsVolumeType
    return karpenter_aws.Ec2NodeClassSpecBlockDeviceMappings(
        device_name=CACHE_DEVICE,
        ebs=karpenter_aws.Ec2NodeClassSpecBlockDeviceMappingsEbs(
            snapshot_id=snapshot_id,
            volume_size=f"{cache.volume_size_gib}Gi",
            volume_type=volume_type.GP3 if gp3 else volume_type.GP2,
            # No "encrypted": a volume restored from a snapshot takes the snapshot's encryption (the builder's
            # volume was encrypted, so this one is too); EC2 rejects the field together with a snapshot.
            delete_on_termination=True,
            # Local Zones have no fast snapshot restore; a provisioned rate makes the background fill predictable.
            volume_initialization_rate=cache.volume_initialization_rate_mibps,
            iops=3000 if gp3 else None,
            throughput=250 if gp3 else None,
        ),
    )
