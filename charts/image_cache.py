"""The node side of image delivery: the nodeadm containerd settings the in-zone peer mirror needs, and the
optional restored cache volume with the boot script that makes it containerd's store.

Every Local Zone node runs the peer-to-peer mirror (edge_constructs/peer_image_mirror.py); containerd must keep
the compressed layers it unpacked (``discard_unpacked_layers = false``, the EKS AMI discards them) and read the
mirror's ``hosts.toml`` files (``config_path``; with containerd 2.1+ only the CRI's local pull path reads them,
hence ``use_local_image_pull = true``). Sources: docs/cold-start.md.

The cache volume comes from the snapshot the image pipeline records after each publish (edge_constructs/
node_image_cache.py). A shell part of the user data finds the volume by its EBS volume id (the NVMe serial on
Nitro instances; the ``/dev/xvdb`` mapping name is only a udev link where the EC2 rules are installed) and mounts
it on /var/lib/containerd before containerd starts. In a Local Zone the restored volume fills lazily from S3 in
the parent region: EBS offers no volume initialization rate and no fast snapshot restore there, so no rate is
ever set (``check_local_zone_node_class`` enforces it at synth).
"""
from __future__ import annotations

from edge_config import NodeImageCacheConfig
from imports.karpenter_aws.aws.k8s import karpenter as karpenter_aws

# The block device mapping name given to EC2; the OS names the disk nvme<N>n1 on Nitro instances.
CACHE_DEVICE = "/dev/xvdb"
CONTAINERD_ROOT = "/var/lib/containerd"
MIME_BOUNDARY = "EDGEDIFFUSION"
# Where containerd reads per-registry hosts.toml files; the mirror writes its own there.
CONTAINERD_REGISTRY_CONFIG_PATH = "/etc/containerd/certs.d"

# containerd 2.x (config version 3) names, as nodeadm merges them into its own config.toml.
CONTAINERD_PEER_CONFIG = f"""[plugins.'io.containerd.cri.v1.images']
discard_unpacked_layers = false
use_local_image_pull = true

[plugins.'io.containerd.cri.v1.images'.registry]
config_path = '{CONTAINERD_REGISTRY_CONFIG_PATH}'
"""

# Shared by the node script here and the builder script (edge_constructs/node_image_cache.py).
EBS_DEVICE_FUNCTIONS = r"""imds() {
  local token
  token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
  curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}
# The id of the EBS volume attached to <instance> under the block device mapping name <name>.
ebs_volume_id() {  # <instance-id> <region> <mapping name>
  local id
  id=$(aws ec2 describe-volumes --region "$2" --filters "Name=attachment.instance-id,Values=$1" \
    "Name=attachment.device,Values=$3" --query 'Volumes[0].VolumeId' --output text) || return 1
  case "$id" in vol-*) echo "$id" ;; *) return 1 ;; esac
}
# The disk of an EBS volume: on Nitro its NVMe serial is the volume id without the dash ("vol0123...").
ebs_device() {  # <volume-id>
  local name
  name=$(lsblk -dno NAME,SERIAL | awk -v serial="${1//-/}" '$2 == serial { print $1; exit }')
  [ -n "$name" ] || return 1
  echo "/dev/$name"
}
# Wait up to <seconds> for the volume mapped as <name> to appear as a disk; print the disk.
wait_ebs_device() {  # <instance-id> <region> <mapping name> <seconds>
  local volume="" i
  for i in $(seq 1 "$4"); do
    [ -n "$volume" ] || volume=$(ebs_volume_id "$1" "$2" "$3") || volume=""
    if [ -n "$volume" ] && ebs_device "$volume"; then return 0; fi
    sleep 1
  done
  return 1
}
"""

MOUNT_SCRIPT = f"""#!/bin/bash
# Make the node image cache containerd's store; without it the node still boots and pulls as usual.
set -euo pipefail
{EBS_DEVICE_FUNCTIONS}
instance=$(imds instance-id)
region=$(imds placement/region)
if ! device=$(wait_ebs_device "$instance" "$region" {CACHE_DEVICE} 120); then
  echo "node image cache: no disk found for the {CACHE_DEVICE} volume; containerd stays on its default store" >&2
  exit 0
fi
fstype=$(blkid -s TYPE -o value "$device" || true)
if [ -z "$fstype" ]; then
  echo "node image cache: $device holds no filesystem; containerd stays on its default store" >&2
  exit 0
fi
active=$(systemctl is-active containerd.service || true)
systemctl stop containerd.service || true
mkdir -p {CONTAINERD_ROOT}
mount -o noatime "$device" {CONTAINERD_ROOT}
echo "UUID=$(blkid -s UUID -o value "$device") {CONTAINERD_ROOT} $fstype defaults,noatime,nofail 0 2" >> /etc/fstab
if [ "$active" = active ]; then systemctl start containerd.service; fi
"""

NODE_CONFIG = "\n".join([
    "---",
    "apiVersion: node.eks.aws/v1alpha1",
    "kind: NodeConfig",
    "spec:",
    "  containerd:",
    "    config: |",
    *(f"      {line}" if line else "" for line in CONTAINERD_PEER_CONFIG.splitlines()),
]) + "\n"


def user_data(*, peer_mirror: bool, cache: bool) -> str | None:
    """MIME multi-part user data: the nodeadm NodeConfig part for the peer mirror and/or the cache's mount script;
    Karpenter merges its own NodeConfig part in (nodeadm merges every NodeConfig). None when neither applies."""
    parts = []
    if peer_mirror:
        parts.append(("application/node.eks.aws", NODE_CONFIG))
    if cache:
        parts.append(('text/x-shellscript; charset="us-ascii"', MOUNT_SCRIPT))
    if not parts:
        return None
    body = "".join(f"--{MIME_BOUNDARY}\nContent-Type: {kind}\n\n{text}\n" for kind, text in parts)
    return ("MIME-Version: 1.0\n"
            f'Content-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"\n\n'
            f"{body}--{MIME_BOUNDARY}--\n")


def data_volume(snapshot_id: str, cache: NodeImageCacheConfig, *,
                gp3: bool) -> karpenter_aws.Ec2NodeClassSpecBlockDeviceMappings:
    """The EC2NodeClass block device mapping of the restored cache volume (``snapshot_id`` may be a token).

    No ``volumeInitializationRate``: EBS does not offer one for volumes in Local Zones, the only place the cache
    is attached, and a launch that asks for it fails."""
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
            iops=3000 if gp3 else None,
            throughput=250 if gp3 else None,
        ),
    )


def check_local_zone_node_class(node_class: dict) -> None:
    """Raise ValueError naming the field when a rendered Local Zone EC2NodeClass asks EBS for something Local
    Zones do not offer (a volume initialization rate)."""
    name = node_class["metadata"]["name"]
    for index, mapping in enumerate(node_class["spec"].get("blockDeviceMappings", [])):
        if "volumeInitializationRate" in (mapping.get("ebs") or {}):
            raise ValueError(
                f"EC2NodeClass {name}: spec.blockDeviceMappings[{index}].ebs.volumeInitializationRate is set, but "
                "EBS does not offer volume initialization rates in Local Zones and the launch would fail; remove "
                "it (the restored volume fills lazily from the snapshot there)")
