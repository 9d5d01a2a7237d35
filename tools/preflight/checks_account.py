"""Account-level checks: who the credentials are, the CDK bootstrap stack, zone opt-in, the ACME hosted zone."""
from __future__ import annotations

from botocore.exceptions import ClientError

from edge_config import EdgeConfig
from tools.preflight.report import Row, Status, error_code, unchecked
from tools.preflight.session import Clients

BOOTSTRAP_STACK = "CDKToolkit"
# The synthesized templates' CheckBootstrapVersion rule rejects bootstrap versions 1-5 ("CDK bootstrap stack
# version 6 required").
MIN_BOOTSTRAP_VERSION = 6
_STABLE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE"}


def credentials(config: EdgeConfig, clients: Clients) -> tuple[Row, str | None]:
    """STS GetCallerIdentity; returns the row and the caller's account (None when it did not resolve)."""
    try:
        identity = clients("sts").get_caller_identity()
    except Exception as exc:  # noqa: BLE001 - any failure means "unknown", reported with its reason
        return unchecked("credentials", exc, "sts:GetCallerIdentity"), None
    account, arn = identity["Account"], identity["Arn"]
    if config.account is None:
        return Row("credentials", Status.OK, f"{arn}; edge.account is null, so the stacks deploy to account "
                                            f"{account}"), account
    if account != config.account:
        return Row("credentials", Status.BLOCKER, f"the credentials are {arn} (account {account}), but edge.account "
                                                 f"is {config.account}",
                   f"use credentials of account {config.account} (e.g. AWS_PROFILE), or set edge.account to "
                   f"{account}"), account
    return Row("credentials", Status.OK, f"{arn} (account {account} = edge.account)"), account


def bootstrap(config: EdgeConfig, clients: Clients, account: str) -> Row:
    check, fix = "CDK bootstrap", f"cdk bootstrap aws://{account}/{config.region}"
    try:
        stacks = clients("cloudformation").describe_stacks(StackName=BOOTSTRAP_STACK)["Stacks"]
    except ClientError as exc:
        # DescribeStacks answers a missing stack with ValidationError "Stack with id CDKToolkit does not exist".
        if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            return Row(check, Status.BLOCKER, f"no {BOOTSTRAP_STACK} stack in {config.region}: cdk deploy needs its "
                                             "bucket, repository and roles", fix)
        return unchecked(check, exc, "cloudformation:DescribeStacks")
    except Exception as exc:  # noqa: BLE001
        return unchecked(check, exc, "cloudformation:DescribeStacks")
    stack = stacks[0]
    status = stack["StackStatus"]
    if status not in _STABLE:
        return Row(check, Status.BLOCKER, f"{BOOTSTRAP_STACK} is {status}", f"repair or delete the stack, then {fix}")
    outputs = {o["OutputKey"]: o.get("OutputValue") for o in stack.get("Outputs", [])}
    version = outputs.get("BootstrapVersion")
    if version is None or not version.isdigit():
        return Row(check, Status.WARNING, f"{BOOTSTRAP_STACK} is {status} but has no BootstrapVersion output",
                   f"update it: {fix}")
    if int(version) < MIN_BOOTSTRAP_VERSION:
        return Row(check, Status.BLOCKER, f"{BOOTSTRAP_STACK} is version {version}; the templates need "
                                          f">= {MIN_BOOTSTRAP_VERSION}", f"update it: {fix}")
    return Row(check, Status.OK, f"{BOOTSTRAP_STACK} {status}, bootstrap version {version}")


def zones(config: EdgeConfig, clients: Clients) -> list[Row]:
    """Each Local Zone exists in the region and is opted in; the region AZs exist."""
    try:
        listed = clients("ec2").describe_availability_zones(AllAvailabilityZones=True)["AvailabilityZones"]
    except Exception as exc:  # noqa: BLE001
        return [unchecked(f"zone {lz.name}", exc, "ec2:DescribeAvailabilityZones") for lz in config.local_zones]
    by_name = {z["ZoneName"]: z for z in listed}
    rows = []
    for i, lz in enumerate(config.local_zones):
        check, zone = f"zone {lz.name}", by_name.get(lz.name)
        if zone is None:
            local = sorted(n for n, z in by_name.items() if z.get("ZoneType") == "local-zone")
            rows.append(Row(check, Status.BLOCKER, f"{config.region} has no zone named {lz.name}",
                            f"set edge.local_zones[{i}].name to one of: {', '.join(local) or '(none listed)'}"))
        elif zone.get("OptInStatus") == "not-opted-in":
            rows.append(Row(check, Status.BLOCKER, f"not opted in (zone group {zone.get('GroupName')}): no subnet "
                                                   "or instance can be created there",
                            f"aws ec2 modify-availability-zone-group --region {config.region} --group-name "
                            f"{zone.get('GroupName')} --opt-in-status opted-in"))
        elif zone.get("State") != "available":
            rows.append(Row(check, Status.WARNING, f"{zone.get('OptInStatus')}, state {zone.get('State')}",
                            "check the AWS Health Dashboard before deploying"))
        else:
            rows.append(Row(check, Status.OK, f"{zone.get('OptInStatus')}, {zone.get('ZoneType')} of "
                                              f"{zone.get('ParentZoneName') or config.region}"))
    missing = [az for az in config.region_azs if az not in by_name]
    rows.append(Row("region AZs", Status.BLOCKER, f"{', '.join(missing)} not found in {config.region}",
                    "set edge.region_azs to Availability Zones of the region") if missing else
                Row("region AZs", Status.OK, f"{', '.join(config.region_azs)} exist"))
    return rows


def hosted_zone(config: EdgeConfig, clients: Clients) -> list[Row]:
    """ACME mode only: the Route 53 public hosted zone that external-dns and the DNS-01 solver write to."""
    if config.tls.mode != "acme":
        return []
    acme, check = config.tls.acme, "Route 53 hosted zone"
    try:
        zone = clients("route53").get_hosted_zone(Id=acme.hosted_zone_id)["HostedZone"]
    except ClientError as exc:
        if error_code(exc) == "NoSuchHostedZone":
            return [Row(check, Status.BLOCKER, f"no hosted zone {acme.hosted_zone_id}",
                        "set edge.tls.acme.hosted_zone_id to the id of your public zone (aws route53 "
                        "list-hosted-zones-by-name)")]
        return [unchecked(check, exc, "route53:GetHostedZone")]
    except Exception as exc:  # noqa: BLE001
        return [unchecked(check, exc, "route53:GetHostedZone")]
    name = zone["Name"].rstrip(".").lower()
    if name != acme.hosted_zone_name.rstrip(".").lower():
        return [Row(check, Status.BLOCKER, f"{acme.hosted_zone_id} is {name}, not {acme.hosted_zone_name}",
                    f"set edge.tls.acme.hosted_zone_name to {name}, or give the id of {acme.hosted_zone_name}")]
    if zone.get("Config", {}).get("PrivateZone"):
        return [Row(check, Status.BLOCKER, f"{name} is a private zone: public ACME DNS-01 and device lookups "
                                           "cannot see it", "use a public hosted zone")]
    return [Row(check, Status.OK, f"{acme.hosted_zone_id} is the public zone {name}")]
