"""Each preflight check's failing answers (and the passes they are told apart from), one check at a time."""
from __future__ import annotations

import pytest

from tests.tools.test_preflight import (ACCOUNT, ADDONS, ALIAS, LZ, OFFERED_EVERYWHERE, REGION, FakeAws, addon,
                                        ami_param, load, ok_amis, ok_kubernetes, ok_offerings, ok_zones, quota,
                                        zone)
from tests.tools.test_preflight import config, offline, pools  # noqa: F401 - fixtures
from tools.preflight import checks_account, checks_capacity, checks_versions
from tools.preflight.plan import Pool
from tools.preflight.report import Status


def test_the_offline_guard_is_active_here():
    from botocore.httpsession import URLLib3Session

    assert URLLib3Session.send.__name__ == "no_network"


def by_check(rows):
    return {row.check: row for row in rows}


# ---------------------------------------------------------------- zones
def test_a_local_zone_not_opted_in_blocks_with_the_opt_in_command(config):
    aws = FakeAws()
    ok_zones(aws, lz_opt_in="not-opted-in")
    rows = by_check(checks_account.zones(config, aws))
    aws.done()
    row = rows[f"zone {LZ}"]
    assert row.status is Status.BLOCKER
    assert row.fix == (f"aws ec2 modify-availability-zone-group --region {REGION} --group-name us-west-2-lax-1 "
                       "--opt-in-status opted-in")
    assert rows["region AZs"].status is Status.OK


def test_an_unknown_zone_blocks_and_lists_the_local_zones_there_are(config):
    aws = FakeAws()
    aws.stub("ec2").add_response("describe_availability_zones", {"AvailabilityZones": [
        zone("us-west-2a"), zone("us-west-2-den-1a", "opted-in", "local-zone", "us-west-2-den-1")]},
        {"AllAvailabilityZones": True})
    rows = by_check(checks_account.zones(config, aws))
    aws.done()
    assert rows[f"zone {LZ}"].status is Status.BLOCKER
    assert "us-west-2-den-1a" in rows[f"zone {LZ}"].fix and "edge.local_zones[0].name" in rows[f"zone {LZ}"].fix
    assert rows["region AZs"].status is Status.BLOCKER and "us-west-2b" in rows["region AZs"].detail


def test_an_impaired_zone_is_a_warning(config):
    aws = FakeAws()
    ok_zones(aws, lz_state="impaired")
    rows = by_check(checks_account.zones(config, aws))
    aws.done()
    assert rows[f"zone {LZ}"].status is Status.WARNING


# ---------------------------------------------------------------- instance offerings per NodePool
def test_pools_with_nothing_to_launch_block_and_partial_offers_warn(config, pools):
    aws = FakeAws()
    ok_offerings(aws, offered={LZ: ("g4dn",), "us-west-2a": ("g6",), "us-west-2b": ("g6", "g5")})
    rows = by_check(checks_capacity.offerings(config, aws, pools))
    aws.done()
    lz = rows[f"nodepool nvidia-{LZ}"]
    assert lz.status is Status.WARNING and lz.detail.startswith(f"not offered: g5 in {LZ}")
    assert lz.fix.startswith("set edge.local_zones[0].instance_families to ['g4dn']")
    assert rows["nodepool nvidia-region"].status is Status.WARNING
    neuron = rows["nodepool neuron-region"]
    assert neuron.status is Status.BLOCKER and neuron.detail.startswith("nothing to launch: none of inf2")
    assert "edge.region_azs" in neuron.fix


def test_a_local_zone_pool_with_none_of_its_families_blocks(config, pools):
    aws = FakeAws()
    ok_offerings(aws, offered={**OFFERED_EVERYWHERE, LZ: ("g6",)})
    rows = by_check(checks_capacity.offerings(config, aws, pools))
    aws.done()
    row = rows[f"nodepool nvidia-{LZ}"]
    assert row.status is Status.BLOCKER
    assert f"Name=location,Values={LZ}" in row.fix and "edge.local_zones[0].instance_families" in row.fix
    assert rows["nodepool nvidia-region"].status is Status.OK


# ---------------------------------------------------------------- vCPU quotas
def test_a_zero_quota_blocks_and_a_short_one_warns(config, pools):
    aws = FakeAws()
    quota(aws, "L-1945791B", 0.0)
    quota(aws, "L-DB2E81BA", 64.0)
    rows = by_check(checks_capacity.quotas(config, aws, pools))
    aws.done()
    inf, g = rows["quota L-1945791B"], rows["quota L-DB2E81BA"]
    assert inf.status is Status.BLOCKER and "no node of neuron-region can launch" in inf.detail
    assert inf.fix.endswith("--quota-code L-1945791B --desired-value 192")
    assert g.status is Status.WARNING and "may launch 384" in g.detail
    assert g.fix.endswith("--quota-code L-DB2E81BA --desired-value 384")


def test_an_unapplied_quota_falls_back_to_the_aws_default(config, pools):
    aws = FakeAws()
    sq = aws.stub("service-quotas")
    sq.add_client_error("get_service_quota", "NoSuchResourceException", http_status_code=400,
                        expected_params={"ServiceCode": "ec2", "QuotaCode": "L-1945791B"})
    sq.add_response("get_aws_default_service_quota", {"Quota": {"QuotaCode": "L-1945791B", "Value": 0.0}},
                    {"ServiceCode": "ec2", "QuotaCode": "L-1945791B"})
    quota(aws, "L-DB2E81BA", 400.0)
    rows = by_check(checks_capacity.quotas(config, aws, pools))
    aws.done()
    assert rows["quota L-1945791B"].status is Status.BLOCKER and "(AWS default)" in rows["quota L-1945791B"].detail
    assert rows["quota L-DB2E81BA"].status is Status.OK


def test_spot_only_pools_say_their_quotas_are_not_checked():
    spot = [Pool("nvidia-region", "nvidia", "region", ("g5",), ("us-west-2a",), 64, ("spot",))]
    aws = FakeAws()
    rows = checks_capacity.quotas(load(capacity_types='["spot"]'), aws, spot)
    aws.done()
    assert [(r.check, r.status) for r in rows] == [("On-Demand quotas", Status.WARNING)]
    assert not aws.clients  # nothing was asked


# ---------------------------------------------------------------- versions
@pytest.mark.parametrize(("answer", "status"), [
    ({"listed": False}, Status.BLOCKER), ({"status": "UNSUPPORTED"}, Status.BLOCKER),
    ({"status": "EXTENDED_SUPPORT"}, Status.WARNING), ({"status": "STANDARD_SUPPORT"}, Status.OK)])
def test_kubernetes_version(config, answer, status):
    aws = FakeAws()
    ok_kubernetes(aws, **answer)
    row = checks_versions.kubernetes(config, aws)
    aws.done()
    assert row.status is status


def test_an_addon_build_not_offered_blocks_and_names_the_default(config):
    aws = FakeAws()
    for name, pinned in ADDONS.items():
        if name == "coredns":
            addon(aws, name, ["v1.13.2-eksbuild.22", "v1.13.1-eksbuild.3"], default="v1.13.2-eksbuild.22")
        elif name == "kube-proxy":
            addon(aws, name, [])
        else:
            addon(aws, name, [pinned], default=pinned)
    rows = by_check(checks_versions.addons(config, aws))
    aws.done()
    assert rows["add-on coredns"].status is Status.BLOCKER
    assert "(default: v1.13.2-eksbuild.22)" in rows["add-on coredns"].detail
    assert 'versions.ADDON_VERSIONS["coredns"]' in rows["add-on coredns"].fix
    assert rows["add-on kube-proxy"].status is Status.BLOCKER and "no kube-proxy build" in rows["add-on kube-proxy"].detail
    assert rows["add-on vpc-cni"].status is Status.OK


def test_a_missing_ami_release_blocks(config, pools):
    aws = FakeAws()
    ok_amis(aws, missing={("x86_64", "neuron")})
    rows = by_check(checks_versions.ami(config, aws, pools))
    aws.done()
    row = rows[f"AMI {ALIAS} x86_64/neuron"]
    assert row.status is Status.BLOCKER and ami_param("x86_64", "neuron") in row.detail
    assert "KARPENTER_AMI_ALIAS" in row.fix
    assert rows[f"AMI {ALIAS} x86_64/nvidia"].status is Status.OK


def test_a_g5g_pool_needs_the_arm64_nvidia_image():
    arm = [Pool("nvidia-x", "nvidia", "local-zone", ("g5g",), (LZ,), 16, ("on-demand",))]
    aws = FakeAws()
    name = ami_param("arm64", "nvidia")
    aws.stub("ssm").add_response("get_parameter", {"Parameter": {"Name": name, "Value": "ami-1"}}, {"Name": name})
    rows = checks_versions.ami(load(), aws, arm)
    aws.done()
    assert [(r.check, r.status) for r in rows] == [(f"AMI {ALIAS} arm64/nvidia", Status.OK)]


# ---------------------------------------------------------------- ACME hosted zone
ACME = {"tls.mode": "acme", "tls.acme.hosted_zone_id": "Z0123456789ABCDEFGHIJ",
        "tls.acme.hosted_zone_name": "example.com", "tls.acme.email": "ops@example.com"}


def acme_config():
    return load(account=ACCOUNT, **{k: v for k, v in ACME.items()})


def hosted(aws, name="example.com.", private=False):
    aws.stub("route53").add_response("get_hosted_zone", {"HostedZone": {
        "Id": "/hostedzone/Z0123456789ABCDEFGHIJ", "Name": name, "CallerReference": "r",
        "Config": {"PrivateZone": private}}}, {"Id": "Z0123456789ABCDEFGHIJ"})


@pytest.mark.parametrize(("answer", "status", "text"), [
    ({}, Status.OK, "public zone example.com"),
    ({"name": "other.org."}, Status.BLOCKER, "is other.org, not example.com"),
    ({"private": True}, Status.BLOCKER, "private zone"),
    ("missing", Status.BLOCKER, "no hosted zone"),
])
def test_acme_hosted_zone(answer, status, text):
    aws = FakeAws()
    if answer == "missing":
        aws.stub("route53").add_client_error("get_hosted_zone", "NoSuchHostedZone", http_status_code=404,
                                             expected_params={"Id": "Z0123456789ABCDEFGHIJ"})
    else:
        hosted(aws, **answer)
    (row,) = checks_account.hosted_zone(acme_config(), aws)
    aws.done()
    assert row.status is status and text in row.detail


def test_private_ca_mode_does_not_look_up_a_zone(config):
    aws = FakeAws()
    assert checks_account.hosted_zone(config, aws) == []
    assert not aws.clients


def test_expired_credentials_stop_the_run_as_could_not_check(config, pools):
    from tools.preflight import run_checks

    aws = FakeAws()
    aws.stub("sts").add_client_error("get_caller_identity", "ExpiredToken", "The security token included in the "
                                     "request is expired", http_status_code=403)
    rows = run_checks(config, pools, aws)
    aws.done()
    assert [r.status for r in rows] == [Status.UNCHECKED, Status.UNCHECKED]
    assert rows[0].detail.startswith("ExpiredToken:") and "valid AWS credentials" in rows[0].fix
    assert set(aws.clients) == {"sts"}
