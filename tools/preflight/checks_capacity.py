"""Capacity checks: which NodePools have instance types offered in their zones, and the On-Demand vCPU quotas
against the pools' CPU limits."""
from __future__ import annotations

from botocore.exceptions import ClientError

from edge_config import EdgeConfig
from tools.preflight.plan import MIN_NODE_VCPUS, QUOTAS, Pool, quota_of
from tools.preflight.report import Row, Status, error_code, unchecked
from tools.preflight.session import Clients


def _offered(clients: Clients, pools: list[Pool]) -> set[tuple[str, str]]:
    """(zone, family) pairs with at least one instance type offered, for every zone and family the pools name."""
    zones = sorted({z for p in pools for z in p.zones})
    families = sorted({f for p in pools for f in p.families})
    paginator = clients("ec2").get_paginator("describe_instance_type_offerings")
    offered = set()
    for page in paginator.paginate(LocationType="availability-zone", Filters=[
            {"Name": "location", "Values": zones},
            {"Name": "instance-type", "Values": [f"{family}.*" for family in families]}]):
        for offering in page["InstanceTypeOfferings"]:
            offered.add((offering["Location"], offering["InstanceType"].split(".", 1)[0]))
    return offered


def _pool_fix(config: EdgeConfig, pool: Pool, offered: set[tuple[str, str]], missing: list[tuple[str, str]]) -> str:
    if pool.zone_type == "local-zone":
        zone = pool.zones[0]
        index = next(i for i, lz in enumerate(config.local_zones) if lz.name == zone)
        have = [f for f in pool.families if (zone, f) in offered]
        if have:
            return f"set edge.local_zones[{index}].instance_families to {have} (or what the zone offers)"
        return (f"list families {zone} offers in edge.local_zones[{index}].instance_families (aws ec2 "
                f"describe-instance-type-offerings --location-type availability-zone --filters "
                f"Name=location,Values={zone}), or drop the zone")
    zones_without = sorted({z for z, _ in missing})
    return f"pick edge.region_azs that offer {', '.join(pool.families)} (missing in {', '.join(zones_without)})"


def offerings(config: EdgeConfig, clients: Clients, pools: list[Pool]) -> list[Row]:
    try:
        offered = _offered(clients, pools)
    except Exception as exc:  # noqa: BLE001
        return [unchecked(f"nodepool {p.name}", exc, "ec2:DescribeInstanceTypeOfferings") for p in pools]
    rows = []
    for pool in pools:
        check = f"nodepool {pool.name}"
        wanted = [(z, f) for z in pool.zones for f in pool.families]
        missing = [pair for pair in wanted if pair not in offered]
        if len(missing) == len(wanted):
            rows.append(Row(check, Status.BLOCKER, f"nothing to launch: none of {', '.join(pool.families)} is "
                                                   f"offered in {', '.join(pool.zones)}",
                            _pool_fix(config, pool, offered, missing)))
        elif missing:
            rows.append(Row(check, Status.WARNING, "not offered: " + ", ".join(f"{f} in {z}" for z, f in missing)
                            + "; the pool launches the rest", _pool_fix(config, pool, offered, missing)))
        else:
            rows.append(Row(check, Status.OK, f"{', '.join(pool.families)} offered in {', '.join(pool.zones)}"))
    return rows


def _quota_value(clients: Clients, code: str) -> tuple[float, str]:
    """The applied quota value, or AWS's default when the account has none applied (NoSuchResourceException)."""
    sq = clients("service-quotas")
    try:
        return sq.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"], "applied"
    except ClientError as exc:
        if error_code(exc) != "NoSuchResourceException":
            raise
    return sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"], "AWS default"


def quotas(config: EdgeConfig, clients: Clients, pools: list[Pool]) -> list[Row]:
    """Each On-Demand vCPU quota the pools draw on, against the sum of those pools' CPU limits (Karpenter applies
    a NodePool's limits to that pool alone, so the Local Zone and region pools of one accelerator add up)."""
    on_demand = [p for p in pools if "on-demand" in p.capacity_types]
    rows: list[Row] = []
    demand: dict[str, list[Pool]] = {}
    for pool in on_demand:
        codes = {quota_of(f) for f in pool.families}
        if None in codes:
            unknown = [f for f in pool.families if quota_of(f) is None]
            rows.append(Row(f"quota for {pool.name}", Status.UNCHECKED,
                            f"no On-Demand quota known for {', '.join(unknown)}", "check its quota by hand"))
        for code in codes - {None}:
            demand.setdefault(code, []).append(pool)
    for code, users in sorted(demand.items()):
        name, check = QUOTAS[code][0], f"quota {code}"
        need = sum(p.cpu_limit for p in users)
        try:
            value, source = _quota_value(clients, code)
        except Exception as exc:  # noqa: BLE001
            rows.append(unchecked(check, exc, "servicequotas:GetServiceQuota and GetAWSDefaultServiceQuota"))
            continue
        have = int(value)
        limits = " + ".join(f"{p.name} {p.cpu_limit}" for p in users)
        increase = (f"aws service-quotas request-service-quota-increase --region {config.region} --service-code "
                    f"ec2 --quota-code {code} --desired-value {need}")
        if have < MIN_NODE_VCPUS:
            pool_names = ", ".join(p.name for p in users)
            rows.append(Row(check, Status.BLOCKER, f"{name}: {have} vCPUs ({source}); no node of {pool_names} can "
                                                   f"launch (the smallest needs {MIN_NODE_VCPUS})", increase))
        elif have < need:
            rows.append(Row(check, Status.WARNING, f"{name}: {have} vCPUs ({source}), but the pools may launch "
                                                   f"{need} ({limits}); launches past {have} fail", increase))
        else:
            rows.append(Row(check, Status.OK, f"{name}: {have} vCPUs ({source}) >= {need} ({limits})"))
    if pools and not on_demand:
        rows.append(Row("On-Demand quotas", Status.WARNING, "the pools launch Spot only; Spot vCPU quotas are not "
                                                            "checked", "check the Spot quotas in Service Quotas"))
    return rows
