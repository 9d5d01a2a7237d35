"""CloudFormation custom resource (Lambda): accept the node image cache snapshot only if this account owns it and
the image pipeline's builder tagged it.

The SSM parameter that names the snapshot is a plain String anyone with ssm:PutParameter on it can change, and a
node mounts the snapshot as containerd's store, whose content containerd trusts; so the id is checked at every
stack deploy before any EC2NodeClass names it: DescribeSnapshots with ``OwnerIds=["self"]``, the builder's tag and
state ``completed``. Anything else fails the deploy with the reason. Delete does nothing. Standard library + boto3.
"""
from __future__ import annotations

import json
import urllib.request
from typing import Any


def ec2_client() -> Any:
    import boto3

    return boto3.client("ec2")


def verified_snapshot(ec2: Any, snapshot_id: str, tag_key: str, tag_value: str, parameter: str) -> str:
    """`snapshot_id` when it passes; ValueError saying why not (naming the parameter to fix) otherwise."""
    if not isinstance(snapshot_id, str) or not snapshot_id.startswith("snap-"):
        raise ValueError(f"SSM parameter {parameter} holds {snapshot_id!r}, not a snapshot id; rerun the image "
                         "pipeline's NodeImageCache stage to record one")
    try:
        snapshots = ec2.describe_snapshots(
            SnapshotIds=[snapshot_id], OwnerIds=["self"],
            Filters=[{"Name": f"tag:{tag_key}", "Values": [tag_value]}, {"Name": "status", "Values": ["completed"]}],
        )["Snapshots"]
    except Exception as exc:  # InvalidSnapshot.NotFound for ids this account cannot see
        if "InvalidSnapshot" not in str(exc):
            raise
        snapshots = []
    if [s.get("SnapshotId") for s in snapshots] != [snapshot_id]:
        raise ValueError(f"snapshot {snapshot_id} named by SSM parameter {parameter} is not a completed snapshot "
                         f"owned by this account and tagged {tag_key}={tag_value} by the image pipeline; refusing "
                         "to attach it to nodes (check who wrote the parameter, then rerun the pipeline)")
    return snapshot_id


def send_response(event: dict, status: str, reason: str, physical_id: str, data: dict | None = None) -> None:
    body = json.dumps({
        "Status": status, "Reason": reason[:1000], "PhysicalResourceId": physical_id, "Data": data or {},
        "StackId": event["StackId"], "RequestId": event["RequestId"], "LogicalResourceId": event["LogicalResourceId"],
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - the pre-signed CloudFormation S3 URL
        pass


def handler(event: dict, context: Any) -> None:
    props = event.get("ResourceProperties", {})
    physical_id = event.get("PhysicalResourceId") or "node-image-cache-snapshot"
    status, reason, data = "SUCCESS", "nothing to do", {}
    try:
        if event["RequestType"] in ("Create", "Update"):
            snapshot = verified_snapshot(ec2_client(), props.get("SnapshotId"), props["TagKey"], props["TagValue"],
                                         props["ParameterName"])
            physical_id, reason, data = snapshot, f"{snapshot} verified", {"SnapshotId": snapshot}
    except Exception as exc:  # every failure must reach CloudFormation, or the stack waits an hour
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
    print(json.dumps({"request": event["RequestType"], "status": status, "reason": reason}))
    send_response(event, status, reason, physical_id, data)
