"""`make preflight` / `python -m tools.preflight`: config from cdk.json plus -c overrides, the table, exit codes."""
from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO_ROOT
from tests.tools.test_preflight import ACCOUNT, LZ, FakeAws, ok_identity, ok_zones, queue_all
from tests.tools.test_preflight import offline  # noqa: F401 - fixture (no network, fake credentials)
from tools.preflight.__main__ import main
from tools.preflight.report import Row, Status, render_table


def run(capsys, argv, aws):
    code = main(argv, clients=lambda region: aws)
    return code, capsys.readouterr()


def test_all_clear_prints_the_table_and_exits_0(capsys):
    aws = FakeAws()
    queue_all(aws)
    code, out = run(capsys, ["-c", f"edge.account={ACCOUNT}"], aws)
    aws.done()
    assert code == 0
    lines = out.out.splitlines()
    assert lines[0].startswith(f"preflight: account {ACCOUNT}, region us-west-2, Kubernetes 1.35")
    assert re.match(r"^check +status +detail +fix$", lines[1])
    assert any(re.match(rf"^zone {LZ} +ok +opted-in", ln) for ln in lines)
    assert lines[-1].startswith("17 ok, 0 warning(s), 0 blocker(s), 0 could not check: nothing blocks a deploy")


def test_a_blocker_exits_1(capsys):
    aws = FakeAws()
    queue_all(aws, zones=lambda aws: ok_zones(aws, lz_opt_in="not-opted-in"))
    code, out = run(capsys, ["-c", f"edge.account={ACCOUNT}"], aws)
    aws.done()
    assert code == 1
    assert re.search(rf"^zone {LZ} +BLOCKER +not opted in", out.out, re.M)
    assert "1 blocker(s)" in out.out.splitlines()[-1]


def test_context_overrides_reach_the_checks(capsys):
    aws = FakeAws()
    ok_identity(aws)
    aws.stub("cloudformation").add_client_error("describe_stacks", "AccessDenied", http_status_code=403)
    aws.stub("ec2").add_client_error("describe_availability_zones", "UnauthorizedOperation", http_status_code=403)
    aws.stub("ec2").add_client_error("describe_instance_type_offerings", "UnauthorizedOperation",
                                     http_status_code=403)
    # nvidia only: one quota (G and VT) and one AMI variant are asked for.
    aws.stub("service-quotas").add_client_error("get_service_quota", "AccessDeniedException")
    aws.stub("eks").add_client_error("describe_cluster_versions", "AccessDeniedException")
    for _ in range(5):
        aws.stub("eks").add_client_error("describe_addon_versions", "AccessDeniedException")
    aws.stub("ssm").add_client_error("get_parameter", "AccessDeniedException")
    code, out = run(capsys, ["-c", "edge.account=210987654321", "-c", 'edge.accelerators=["nvidia"]'], aws)
    aws.done()
    assert code == 1  # the credentials are account 123456789012
    assert "but edge.account is 210987654321" in out.out
    assert "nodepool neuron-region" not in out.out and "could not check" in out.out


def test_an_invalid_config_names_the_field_and_exits_1(capsys):
    aws = FakeAws()
    code, out = run(capsys, ["-c", "edge.account=12345"], aws)
    assert code == 1 and "edge.account" in out.err
    assert not aws.clients


def test_the_default_clients_without_credentials_report_could_not_check(capsys, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main([]) == 2
    out = capsys.readouterr().out
    assert re.search(r"^credentials +could not check +NoCredentialsError", out, re.M)
    assert " ok " not in out


def test_long_cells_wrap_inside_their_columns():
    table = render_table([Row("c", Status.WARNING, "word " * 30, "fix " * 20), Row("d", Status.OK, "short")])
    lines = table.splitlines()
    detail_at = len("check") + 2 + len("could not check") + 2
    fix_at = detail_at + 64 + 2
    assert lines[2].startswith("c      warning ") and lines[2][detail_at:].startswith("word word")
    assert lines[2][fix_at:].startswith("fix fix")
    # Continuation lines leave check and status empty and keep detail and fix in their columns.
    assert lines[3][:detail_at].strip() == "" and lines[3][detail_at:].startswith("word")
    assert lines[3][fix_at:].startswith("fix")
    assert len(lines) == 2 + 3 + 1 and lines[-1].startswith("d      ok")


def test_make_preflight_needs_only_the_venv():
    makefile = (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ")  # Make joins continued lines
    assert re.search(r"^\.PHONY:.* preflight\b", makefile, re.M)
    assert re.search(r"^preflight: \$\(VENV\)/\.installed$", makefile, re.M)
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "preflight", "PREFLIGHT_ARGS=-c edge.account=1"],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines() == [".venv/bin/python -m tools.preflight -c edge.account=1"]


def test_the_sdk_pins_agree_with_each_other_and_the_venv():
    import importlib.metadata

    def pins(name):
        return {m[1]: m[2] for m in re.finditer(r"^(boto3|botocore)==(\S+)", (REPO_ROOT / name).read_text(), re.M)}

    infra, serving = pins("requirements.txt"), pins("requirements-serving.txt")
    assert infra["boto3"] == serving["boto3"]
    assert {name: importlib.metadata.version(name) for name in infra} == infra


# Every call the preflight makes, the request members it sends and the response members it reads, checked against
# the installed botocore's service models (the Stubber tests validate the same shapes on each stubbed call).
CALLS = [
    ("sts", "GetCallerIdentity", [], ["Account", "Arn"]),
    ("cloudformation", "DescribeStacks", ["StackName"],
     ["Stacks.StackStatus", "Stacks.Outputs.OutputKey", "Stacks.Outputs.OutputValue"]),
    ("ec2", "DescribeAvailabilityZones", ["AllAvailabilityZones"],
     ["AvailabilityZones.ZoneName", "AvailabilityZones.OptInStatus", "AvailabilityZones.GroupName",
      "AvailabilityZones.ZoneType", "AvailabilityZones.State", "AvailabilityZones.ParentZoneName"]),
    ("ec2", "DescribeInstanceTypeOfferings", ["LocationType", "Filters", "NextToken"],
     ["InstanceTypeOfferings.InstanceType", "InstanceTypeOfferings.Location", "NextToken"]),
    ("service-quotas", "GetServiceQuota", ["ServiceCode", "QuotaCode"], ["Quota.Value"]),
    ("service-quotas", "GetAWSDefaultServiceQuota", ["ServiceCode", "QuotaCode"], ["Quota.Value"]),
    ("eks", "DescribeClusterVersions", ["clusterVersions", "includeAll"],
     ["clusterVersions.clusterVersion", "clusterVersions.versionStatus", "clusterVersions.status"]),
    ("eks", "DescribeAddonVersions", ["addonName", "kubernetesVersion", "nextToken"],
     ["addons.addonName", "addons.addonVersions.addonVersion",
      "addons.addonVersions.compatibilities.defaultVersion"]),
    ("ssm", "GetParameter", ["Name"], ["Parameter.Value"]),
    ("route53", "GetHostedZone", ["Id"], ["HostedZone.Name", "HostedZone.Config.PrivateZone"]),
]


def test_the_calls_match_the_installed_service_models():
    import botocore.session

    session = botocore.session.get_session()

    def member(shape, path):
        for part in path.split("."):
            while shape.type_name == "list":
                shape = shape.member
            assert part in shape.members, f"{shape.name} has no {part}"
            shape = shape.members[part]
        return shape

    for service, operation, request, response in CALLS:
        op = session.get_service_model(service).operation_model(operation)
        for name in request:
            member(op.input_shape, name)
        for path in response:
            member(op.output_shape, path)
    assert member(session.get_service_model("ec2").operation_model("DescribeAvailabilityZones").output_shape,
                  "AvailabilityZones.OptInStatus").enum == ["opt-in-not-required", "opted-in", "not-opted-in"]
    assert {"availability-zone"} <= set(member(session.get_service_model("ec2").operation_model(
        "DescribeInstanceTypeOfferings").input_shape, "LocationType").enum)
    assert "UNSUPPORTED" in member(session.get_service_model("eks").operation_model(
        "DescribeClusterVersions").output_shape, "clusterVersions.versionStatus").enum
