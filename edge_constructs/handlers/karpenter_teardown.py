"""CloudFormation custom resource (Lambda): on stack delete, remove every node Karpenter launched for the cluster.

Runs after the workloads are deleted and before the NodePools and the Karpenter chart: it terminates the
cluster's Karpenter instances through EC2 directly (no drain wait: nothing is left to drain), waits until they
are terminated, then deletes VPC CNI network interfaces they left behind, so neither Karpenter's uninstall nor
the VPC deletion meets a live instance or ENI. With edge.tls.mode "acme" it then deletes every Route 53 record
the cluster's external-dns owns under the node subdomain (the A/AAAA records and their TXT ownership records):
external-dns is deleted before this resource and only removes records while its sync loop runs, and a public A
record left pointing at a released EC2 address lets its next holder get a trusted certificate for the name.
Create and Update do nothing. Standard library + boto3 only.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from typing import Any, Callable

LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
POLL_SECONDS = 15
# Seconds kept in reserve for the DNS cleanup and the report to CloudFormation before Lambda's own timeout.
REPORT_RESERVE_SECONDS = 90
NODE_RECORD_TYPES = ("A", "AAAA")
# Route 53 accepts up to 1,000 changes per batch; smaller batches keep one stale record from failing many.
DNS_BATCH = 100


def ec2_client() -> Any:
    import boto3

    return boto3.client("ec2")


def route53_client() -> Any:
    import boto3

    return boto3.client("route53")


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


def _owned_by(record: dict, owner: str) -> bool:
    """A TXT ownership record of external-dns for `owner` (its value, quoted: "heritage=external-dns,
    external-dns/owner=<owner>[,external-dns/resource=...]")."""
    pattern = re.compile(r'^"heritage=external-dns,external-dns/owner=' + re.escape(owner) + r'(,[^"]*)?"$')
    return any(pattern.match(value["Value"]) for value in record.get("ResourceRecords", []))


def managed_names(txt_name: str) -> set[str]:
    """The record names a TXT ownership record can stand for, in every format external-dns writes or reads:
    the same name (legacy), `<type>-<name>` (new format) and `<type>._metadata.<name>` (metadata format)."""
    names = {txt_name}
    first, _, rest = txt_name.partition(".")
    for kind in NODE_RECORD_TYPES:
        prefix = f"{kind.lower()}-"
        if first.startswith(prefix) and first != prefix:
            names.add(f"{first[len(prefix):]}.{rest}")
        if txt_name.startswith(f"{kind.lower()}._metadata."):
            names.add(txt_name[len(f"{kind.lower()}._metadata."):])
    return names


def remove_owned_records(route53: Any, zone_id: str, node_domain: str, owner: str) -> int:
    """Delete every TXT record `owner` holds under `node_domain` and the A/AAAA records it stands for; return
    how many record sets were deleted. Records of other owners, and anything outside the subdomain, stay."""
    suffix = "." + node_domain.rstrip(".").lower() + "."
    records = [r for page in route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
               for r in page["ResourceRecordSets"] if r["Name"].lower().endswith(suffix)]
    owned_txt = [r for r in records if r["Type"] == "TXT" and _owned_by(r, owner)]
    names = set().union(*(managed_names(r["Name"].lower()) for r in owned_txt)) if owned_txt else set()
    doomed = owned_txt + [r for r in records if r["Type"] in NODE_RECORD_TYPES and r["Name"].lower() in names]
    for start in range(0, len(doomed), DNS_BATCH):
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
            "Comment": f"cdk destroy: records of external-dns owner {owner}",
            "Changes": [{"Action": "DELETE", "ResourceRecordSet": r} for r in doomed[start:start + DNS_BATCH]]})
    return len(doomed)


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
            # Only once the nodes are gone: nothing can publish a node record any more.
            if os.environ.get("HOSTED_ZONE_ID"):
                removed = remove_owned_records(route53_client(), os.environ["HOSTED_ZONE_ID"],
                                               os.environ["NODE_DOMAIN"], os.environ["DNS_OWNER_ID"])
                reason += f"; deleted {removed} DNS record set(s) of external-dns owner {os.environ['DNS_OWNER_ID']}"
    except Exception as exc:  # every failure must reach CloudFormation, or the stack waits an hour
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
    print(json.dumps({"request": event["RequestType"], "status": status, "reason": reason}))
    send_response(event, status, reason, physical_id)
