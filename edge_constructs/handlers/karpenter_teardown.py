"""CloudFormation custom resource (Lambda): on stack delete, remove every node Karpenter launched for the cluster.

Runs after the workloads are deleted and before the NodePools and the Karpenter chart: it terminates the
cluster's Karpenter instances through EC2 directly (no drain wait: nothing is left to drain), waits until they
are terminated, then deletes VPC CNI network interfaces they left behind, so neither Karpenter's uninstall nor
the VPC deletion meets a live instance or ENI. Create and Update do nothing. Standard library + boto3 only.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any, Callable

LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
POLL_SECONDS = 15
# Seconds kept in reserve to report to CloudFormation before Lambda's own timeout.
REPORT_RESERVE_SECONDS = 60


def ec2_client() -> Any:
    import boto3

    return boto3.client("ec2")


def karpenter_instances(ec2: Any, cluster: str) -> dict[str, str]:
    """Instance id -> state of every live instance Karpenter launched for `cluster`."""
    found: dict[str, str] = {}
    filters = [
        {"Name": f"tag:kubernetes.io/cluster/{cluster}", "Values": ["owned"]},
        {"Name": "tag-key", "Values": ["karpenter.sh/nodepool"]},
        {"Name": "instance-state-name", "Values": LIVE_STATES},
    ]
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                found[instance["InstanceId"]] = instance["State"]["Name"]
    return found


def leftover_interfaces(ec2: Any, cluster: str, vpc_id: str) -> list[str]:
    """Detached ENIs the VPC CNI created for `cluster` (they would block deleting the subnets and the VPC)."""
    filters = [
        {"Name": "vpc-id", "Values": [vpc_id]},
        {"Name": "status", "Values": ["available"]},
        {"Name": "tag:cluster.k8s.amazonaws.com/name", "Values": [cluster]},
    ]
    return [eni["NetworkInterfaceId"]
            for page in ec2.get_paginator("describe_network_interfaces").paginate(Filters=filters)
            for eni in page["NetworkInterfaces"]]


def teardown(ec2: Any, cluster: str, vpc_id: str, *, deadline: float,
             sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
    """Terminate and wait; raise TimeoutError naming the instances still alive at `deadline` (clock seconds)."""
    terminated: set[str] = set()
    while True:
        live = karpenter_instances(ec2, cluster)
        if not live:
            break
        to_terminate = sorted(i for i, state in live.items() if state != "shutting-down" and i not in terminated)
        if to_terminate:
            ec2.terminate_instances(InstanceIds=to_terminate)
            terminated.update(to_terminate)
        if clock() >= deadline:
            raise TimeoutError(f"Karpenter instances of {cluster} still alive: {', '.join(sorted(live))}; "
                               "retry the stack deletion once they are terminated")
        sleep(POLL_SECONDS)
    enis = leftover_interfaces(ec2, cluster, vpc_id)
    for eni in enis:
        ec2.delete_network_interface(NetworkInterfaceId=eni)
    return (f"terminated {len(terminated)} instances of {cluster}; deleted {len(enis)} network interface(s) "
            "left by the VPC CNI")


def send_response(event: dict, status: str, reason: str, physical_id: str) -> None:
    body = json.dumps({
        "Status": status, "Reason": reason[:1000], "PhysicalResourceId": physical_id,
        "StackId": event["StackId"], "RequestId": event["RequestId"], "LogicalResourceId": event["LogicalResourceId"],
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - the pre-signed CloudFormation S3 URL
        pass


def handler(event: dict, context: Any) -> None:
    cluster = os.environ.get("CLUSTER_NAME", "")
    physical_id = event.get("PhysicalResourceId") or f"karpenter-node-teardown-{cluster}"
    status, reason = "SUCCESS", "nothing to do"
    try:
        if event["RequestType"] == "Delete":
            budget = context.get_remaining_time_in_millis() / 1000 - REPORT_RESERVE_SECONDS
            reason = teardown(ec2_client(), cluster, os.environ["VPC_ID"], deadline=time.monotonic() + budget)
    except Exception as exc:  # every failure must reach CloudFormation, or the stack waits an hour
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
    print(json.dumps({"request": event["RequestType"], "status": status, "reason": reason}))
    send_response(event, status, reason, physical_id)
