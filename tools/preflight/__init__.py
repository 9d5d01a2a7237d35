"""`make preflight`: read-only AWS calls that tell, before a 30-minute deploy, whether the configured account and
region can take this config, with the fix for each finding.

    python -m tools.preflight                       # cdk.json's edge config
    python -m tools.preflight -c edge.account=123456789012 -c edge.region=us-east-1

Each check reports ok, BLOCKER, warning or "could not check"; a denied, unknown or unreachable call is never
read as a pass. Exit status: 0 nothing blocks, 1 a blocker (or an invalid config), 2 no blocker but some checks
could not run. The pools are the NodePools charts.nodepools renders for the stack, the versions those of
versions.py.
"""
from __future__ import annotations

from edge_config import EdgeConfig
from tools.preflight import checks_account, checks_capacity, checks_versions
from tools.preflight.plan import Pool
from tools.preflight.report import Row, Status
from tools.preflight.session import Clients


def run_checks(config: EdgeConfig, pools: list[Pool], clients: Clients) -> list[Row]:
    """Every check in order. GetCallerIdentity needs no IAM permission, so when it fails the credentials are
    unusable (missing, expired) or AWS is unreachable: the rest are reported unchecked, not attempted."""
    first, account = checks_account.credentials(config, clients)
    rows = [first]
    if account is None:
        return rows + [Row("remaining checks", Status.UNCHECKED, "skipped: the credentials did not resolve",
                           first.fix)]
    rows.append(checks_account.bootstrap(config, clients, account))
    rows += checks_account.zones(config, clients)
    rows += checks_capacity.offerings(config, clients, pools)
    rows += checks_capacity.quotas(config, clients, pools)
    rows.append(checks_versions.kubernetes(config, clients))
    rows += checks_versions.addons(config, clients)
    rows += checks_versions.ami(config, clients, pools)
    rows += checks_account.hosted_zone(config, clients)
    return rows
