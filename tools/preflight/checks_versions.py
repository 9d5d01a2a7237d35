"""Version checks: the Kubernetes version, the pinned EKS add-on builds and the pinned AL2023 AMI release are
offered in the region."""
from __future__ import annotations

from botocore.exceptions import ClientError

import versions
from edge_config import EdgeConfig
from tools.preflight.plan import Pool, ami_parameter, ami_variants
from tools.preflight.report import Row, Status, error_code, unchecked
from tools.preflight.session import Clients


def kubernetes(config: EdgeConfig, clients: Clients) -> Row:
    version, check = config.kubernetes_version, f"Kubernetes {config.kubernetes_version}"
    try:
        found = clients("eks").describe_cluster_versions(clusterVersions=[version], includeAll=True)
    except Exception as exc:  # noqa: BLE001
        return unchecked(check, exc, "eks:DescribeClusterVersions")
    match = [v for v in found.get("clusterVersions", []) if v.get("clusterVersion") == version]
    if not match:
        return Row(check, Status.BLOCKER, f"EKS does not offer {version} in {config.region}",
                   "use a version EKS offers (aws eks describe-cluster-versions) and bump versions.py with it")
    status = match[0].get("versionStatus") or str(match[0].get("status", "")).upper().replace("-", "_")
    if status == "UNSUPPORTED":
        return Row(check, Status.BLOCKER, f"{version} is no longer supported by EKS",
                   "move KUBERNETES_VERSION in versions.py to a supported minor")
    if status == "EXTENDED_SUPPORT":
        return Row(check, Status.WARNING, f"{version} is in extended support (extra hourly charge per cluster)",
                   "plan the move to a minor in standard support")
    return Row(check, Status.OK, f"{version}: {status or 'offered'}")


def addons(config: EdgeConfig, clients: Clients) -> list[Row]:
    rows = []
    paginator = clients("eks").get_paginator("describe_addon_versions")
    for name, pinned in versions.ADDON_VERSIONS.items():
        check = f"add-on {name}"
        try:
            offered = [v for page in paginator.paginate(addonName=name, kubernetesVersion=config.kubernetes_version)
                       for addon in page.get("addons", []) if addon.get("addonName") == name
                       for v in addon.get("addonVersions", [])]
        except Exception as exc:  # noqa: BLE001
            rows.append(unchecked(check, exc, "eks:DescribeAddonVersions"))
            continue
        builds = [v["addonVersion"] for v in offered]
        default = next((v["addonVersion"] for v in offered
                        if any(c.get("defaultVersion") for c in v.get("compatibilities", []))), None)
        if pinned in builds:
            rows.append(Row(check, Status.OK, f"{pinned} offered for {config.kubernetes_version}"))
        elif not builds:
            rows.append(Row(check, Status.BLOCKER, f"EKS offers no {name} build for {config.kubernetes_version} in "
                                                   f"{config.region}", "drop the add-on or change the version"))
        else:
            rows.append(Row(check, Status.BLOCKER, f"{pinned} is not offered for {config.kubernetes_version} "
                                                   f"(default: {default or builds[0]})",
                            f"pin an offered build in versions.ADDON_VERSIONS[\"{name}\"], e.g. {default or builds[0]}"))
    return rows


def ami(config: EdgeConfig, clients: Clients, pools: list[Pool]) -> list[Row]:
    rows = []
    alias = versions.KARPENTER_AMI_ALIAS
    for arch, variant in ami_variants(pools):
        check = f"AMI {alias} {arch}/{variant}"
        try:
            name = ami_parameter(config.kubernetes_version, alias, arch, variant)
        except ValueError as exc:
            rows.append(Row(check, Status.UNCHECKED, str(exc), "check the EC2NodeClass AMI by hand"))
            continue
        try:
            value = clients("ssm").get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                rows.append(Row(check, Status.BLOCKER, f"{name} does not exist in {config.region}: Karpenter finds "
                                                       f"no {variant} image for this release",
                                "set KARPENTER_AMI_ALIAS in versions.py to a release published for "
                                f"{config.kubernetes_version} (aws ssm get-parameters-by-path --path "
                                f"/aws/service/eks/optimized-ami/{config.kubernetes_version}/amazon-linux-2023/"
                                f"{arch}/{variant})"))
            else:
                rows.append(unchecked(check, exc, "ssm:GetParameter"))
            continue
        except Exception as exc:  # noqa: BLE001
            rows.append(unchecked(check, exc, "ssm:GetParameter"))
            continue
        rows.append(Row(check, Status.OK, f"{name} = {value}"))
    return rows
