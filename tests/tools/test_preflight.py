"""The preflight's checks against botocore's Stubber: every check passing and failing, denied and unreachable
calls reported as "could not check". No test reaches AWS: the HTTP layer raises if anything tries."""
from __future__ import annotations

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import CredentialResolver
from botocore.exceptions import EndpointConnectionError
from botocore.httpsession import URLLib3Session
from botocore.stub import Stubber

import edge_config
from app import _cdk_json_context
from tools.preflight import checks_account, checks_capacity, checks_versions, run_checks
from tools.preflight.plan import Pool, ami_parameter, render_pools
from tools.preflight.report import EXIT_BLOCKER, EXIT_OK, EXIT_UNCHECKED, Status, exit_code, render_table

ACCOUNT = "123456789012"
REGION = "us-west-2"
LZ = "us-west-2-lax-1a"
ALIAS = "al2023@v20260709"
ADDONS = {"vpc-cni": "v1.22.4-eksbuild.3", "coredns": "v1.13.2-eksbuild.21",
          "kube-proxy": "v1.35.3-eksbuild.18", "eks-pod-identity-agent": "v1.3.10-eksbuild.3",
          "amazon-cloudwatch-observability": "v4.6.0-eksbuild.1"}
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Fake credentials, no shared config, no instance metadata, and an HTTP layer that fails the test if used."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")

    def no_network(self, request):
        raise AssertionError(f"a test tried to reach {request.url}")

    monkeypatch.setattr(URLLib3Session, "send", no_network)


class FakeAws:
    """A `Clients` factory of Stubber-backed clients; `done()` asserts every queued response was consumed."""

    def __init__(self, credentials: bool = True) -> None:
        core = botocore.session.get_session()
        if not credentials:
            core.register_component("credential_provider", CredentialResolver(providers=[]))
        self.session = boto3.Session(botocore_session=core, region_name=REGION)
        self.clients: dict = {}
        self.stubbers: dict[str, Stubber] = {}

    def __call__(self, service: str):
        if service not in self.clients:
            self.clients[service] = self.session.client(service, config=NO_RETRY)
            self.stubbers[service] = Stubber(self.clients[service])
            self.stubbers[service].activate()
        return self.clients[service]

    def stub(self, service: str) -> Stubber:
        self(service)
        return self.stubbers[service]

    def unstubbed(self, service: str) -> None:
        """The client sends for real, into the offline HTTP layer (for errors raised before any request)."""
        self(service)
        self.stubbers.pop(service).deactivate()

    def unreachable(self, service: str, operation: str) -> None:
        """The next `operation` call fails as if the endpoint could not be reached (a real botocore error)."""
        client = self(service)
        if service in self.stubbers:
            self.unstubbed(service)

        def fail(request, **_):
            raise EndpointConnectionError(endpoint_url=request.url)

        client.meta.events.register(f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}",
                                    fail)

    def done(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


def load(**overrides) -> edge_config.EdgeConfig:
    return edge_config.load_config({**_cdk_json_context(), **{f"edge.{k}": v for k, v in overrides.items()}})


@pytest.fixture(scope="module")
def config() -> edge_config.EdgeConfig:
    return load(account=ACCOUNT)


@pytest.fixture(scope="module")
def pools(config) -> list[Pool]:
    return render_pools(config)


# ---------------------------------------------------------------- queued AWS answers, one helper per check
def ok_identity(aws, account=ACCOUNT):
    aws.stub("sts").add_response("get_caller_identity", {"UserId": "AIDA", "Account": account,
                                                         "Arn": f"arn:aws:iam::{account}:user/dev"}, {})


def ok_bootstrap(aws, status="CREATE_COMPLETE", version="29"):
    outputs = [{"OutputKey": "BootstrapVersion", "OutputValue": version}] if version else []
    aws.stub("cloudformation").add_response("describe_stacks", {"Stacks": [{
        "StackName": "CDKToolkit", "CreationTime": "2026-01-01T00:00:00Z", "StackStatus": status,
        "Outputs": outputs}]}, {"StackName": "CDKToolkit"})


def zone(name, opt_in="opt-in-not-required", zone_type="availability-zone", group=REGION, state="available"):
    return {"ZoneName": name, "OptInStatus": opt_in, "ZoneType": zone_type, "GroupName": group, "State": state,
            "RegionName": REGION}


def ok_zones(aws, lz_opt_in="opted-in", lz_state="available"):
    aws.stub("ec2").add_response("describe_availability_zones", {"AvailabilityZones": [
        zone("us-west-2a"), zone("us-west-2b"),
        zone(LZ, lz_opt_in, "local-zone", "us-west-2-lax-1", lz_state)]}, {"AllAvailabilityZones": True})


OFFERED_EVERYWHERE = {LZ: ("g4dn", "g5"), "us-west-2a": ("g6", "g5", "g4dn", "inf2"),
                      "us-west-2b": ("g6", "g5", "g4dn", "inf2")}


def ok_offerings(aws, offered=OFFERED_EVERYWHERE):
    offerings = [{"InstanceType": f"{fam}.xlarge", "LocationType": "availability-zone", "Location": z}
                 for z, fams in offered.items() for fam in fams]
    # Two pages: the check must follow NextToken.
    expected = {"LocationType": "availability-zone", "Filters": [
        {"Name": "location", "Values": [LZ, REGION + "a", REGION + "b"]},
        {"Name": "instance-type", "Values": ["g4dn.*", "g5.*", "g6.*", "inf2.*"]}]}
    ec2 = aws.stub("ec2")
    ec2.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": offerings[:2], "NextToken": "p2"},
                     expected)
    ec2.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": offerings[2:]},
                     {**expected, "NextToken": "p2"})


def quota(aws, code, value):
    aws.stub("service-quotas").add_response("get_service_quota", {"Quota": {"QuotaCode": code, "Value": value}},
                                            {"ServiceCode": "ec2", "QuotaCode": code})


def ok_quotas(aws):
    quota(aws, "L-1945791B", 192.0)  # Inf: neuron-region 192
    quota(aws, "L-DB2E81BA", 384.0)  # G and VT: nvidia Local Zone 192 + nvidia-region 192


def ok_kubernetes(aws, status="STANDARD_SUPPORT", listed=True):
    versions = [{"clusterVersion": "1.35", "versionStatus": status}] if listed else []
    aws.stub("eks").add_response("describe_cluster_versions", {"clusterVersions": versions},
                                 {"clusterVersions": ["1.35"], "includeAll": True})


def addon(aws, name, builds, default=None):
    aws.stub("eks").add_response("describe_addon_versions", {"addons": [{"addonName": name, "addonVersions": [
        {"addonVersion": b, "compatibilities": [{"clusterVersion": "1.35", "defaultVersion": b == default}]}
        for b in builds]}]}, {"addonName": name, "kubernetesVersion": "1.35"})


def ok_addons(aws, **replace):
    for name, pinned in ADDONS.items():
        addon(aws, name, replace.get(name, [pinned, "v0.0.1-eksbuild.1"]), default=pinned)


def ami_param(arch, variant):
    return (f"/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/{arch}/{variant}/"
            f"amazon-eks-node-al2023-{arch}-{variant}-1.35-v20260709/image_id")


def ok_amis(aws, missing=()):
    ssm = aws.stub("ssm")
    for arch, variant in (("x86_64", "neuron"), ("x86_64", "nvidia")):
        name = ami_param(arch, variant)
        if (arch, variant) in missing:
            ssm.add_client_error("get_parameter", "ParameterNotFound", http_status_code=400,
                                 expected_params={"Name": name})
        else:
            ssm.add_response("get_parameter", {"Parameter": {"Name": name, "Type": "String",
                                                             "Value": "ami-0123456789abcdef0"}}, {"Name": name})


def queue_all(aws, **replace):
    """Queue every check's answer in call order; `replace[step](aws)` queues a different answer for one step."""
    for name, step in (("identity", ok_identity), ("bootstrap", ok_bootstrap), ("zones", ok_zones),
                       ("offerings", ok_offerings), ("quotas", ok_quotas), ("kubernetes", ok_kubernetes),
                       ("addons", ok_addons), ("amis", ok_amis)):
        replace.get(name, step)(aws)


def statuses(rows) -> dict[str, Status]:
    return {row.check: row.status for row in rows}


# ---------------------------------------------------------------- the plan follows what the stack renders
def test_pools_are_the_rendered_nodepools(pools):
    assert pools == [
        Pool(f"nvidia-{LZ}", "nvidia", "local-zone", ("g4dn", "g5"), (LZ,), 192, ("on-demand",)),
        Pool("nvidia-region", "nvidia", "region", ("g6", "g5", "g4dn"), ("us-west-2a", "us-west-2b"), 192,
             ("on-demand",)),
        Pool("neuron-region", "neuron", "region", ("inf2",), ("us-west-2a", "us-west-2b"), 192, ("on-demand",)),
    ]


def test_ami_parameter_is_the_one_karpenter_and_the_cache_builder_read():
    from edge_constructs.node_image_cache import builder_ami_parameter

    assert ami_parameter("1.35", ALIAS, "x86_64", "standard") == builder_ami_parameter("1.35", ALIAS)
    assert ami_parameter("1.35", ALIAS, "x86_64", "nvidia") == ami_param("x86_64", "nvidia")
    assert ami_parameter("1.35", "al2023@latest", "arm64", "nvidia") == (
        "/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/arm64/nvidia/recommended/image_id")
    with pytest.raises(ValueError, match="al2023@"):
        ami_parameter("1.35", "bottlerocket@latest", "x86_64", "nvidia")


# ---------------------------------------------------------------- the whole run
def test_everything_offered_passes_with_exit_0(config, pools):
    aws = FakeAws()
    queue_all(aws)
    rows = run_checks(config, pools, aws)
    aws.done()
    assert {r.status for r in rows} == {Status.OK}, render_table(rows)
    assert exit_code(rows) == EXIT_OK
    assert list(statuses(rows)) == [
        "credentials", "CDK bootstrap", f"zone {LZ}", "region AZs", f"nodepool nvidia-{LZ}", "nodepool nvidia-region",
        "nodepool neuron-region", "quota L-1945791B", "quota L-DB2E81BA", "Kubernetes 1.35",
        *(f"add-on {n}" for n in ADDONS), f"AMI {ALIAS} x86_64/neuron", f"AMI {ALIAS} x86_64/nvidia"]


def test_without_credentials_nothing_else_is_called_and_nothing_passes(config, pools, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    aws = FakeAws(credentials=False)
    aws.unstubbed("sts")  # botocore raises NoCredentialsError while signing, before any send
    rows = run_checks(config, pools, aws)
    aws.done()
    assert [(r.check, r.status) for r in rows] == [("credentials", Status.UNCHECKED),
                                                  ("remaining checks", Status.UNCHECKED)]
    assert "NoCredentialsError" in rows[0].detail and "credentials" in rows[0].fix
    assert set(aws.clients) == {"sts"}
    assert exit_code(rows) == EXIT_UNCHECKED


def test_denied_and_unreachable_calls_are_could_not_check(config, pools):
    aws = FakeAws()
    def quotas_denied(aws):
        aws.stub("service-quotas").add_client_error("get_service_quota", "AccessDeniedException", http_status_code=400)
        aws.stub("service-quotas").add_client_error("get_service_quota", "TooManyRequestsException",
                                                    http_status_code=400)

    def eks_unreachable(aws):
        aws.unreachable("eks", "DescribeClusterVersions")
        aws.unreachable("eks", "DescribeAddonVersions")

    queue_all(aws, bootstrap=lambda aws: aws.stub("cloudformation").add_client_error(
        "describe_stacks", "AccessDenied", "not authorized", http_status_code=403,
        expected_params={"StackName": "CDKToolkit"}),
        offerings=lambda aws: aws.stub("ec2").add_client_error("describe_instance_type_offerings",
                                                               "UnauthorizedOperation", http_status_code=403),
        quotas=quotas_denied, kubernetes=eks_unreachable, addons=lambda aws: None)
    rows = run_checks(config, pools, aws)
    aws.done()
    got = statuses(rows)
    assert got["credentials"] is Status.OK and got[f"zone {LZ}"] is Status.OK
    for check in ("CDK bootstrap", f"nodepool nvidia-{LZ}", "nodepool neuron-region", "quota L-1945791B",
                  "quota L-DB2E81BA", "Kubernetes 1.35", *(f"add-on {n}" for n in ADDONS)):
        assert got[check] is Status.UNCHECKED, check
    by_check = {r.check: r for r in rows}
    assert "AccessDenied" in by_check["CDK bootstrap"].detail
    assert by_check["CDK bootstrap"].fix == "allow cloudformation:DescribeStacks to the caller"
    assert "UnauthorizedOperation" in by_check["nodepool neuron-region"].detail
    assert "EndpointConnectionError" in by_check["Kubernetes 1.35"].detail
    assert exit_code(rows) == EXIT_UNCHECKED


def test_a_blocker_wins_over_unchecked_rows(config, pools):
    aws = FakeAws()
    queue_all(aws, bootstrap=lambda aws: aws.stub("cloudformation").add_client_error("describe_stacks", "Throttling",
                                                                                    http_status_code=400),
              zones=lambda aws: ok_zones(aws, lz_opt_in="not-opted-in"))
    rows = run_checks(config, pools, aws)
    aws.done()
    assert statuses(rows)[f"zone {LZ}"] is Status.BLOCKER
    assert exit_code(rows) == EXIT_BLOCKER


# ---------------------------------------------------------------- one check at a time
def test_credentials_of_another_account_block(config):
    aws = FakeAws()
    ok_identity(aws, account="210987654321")
    row, account = checks_account.credentials(config, aws)
    assert (row.status, account) == (Status.BLOCKER, "210987654321")
    assert ACCOUNT in row.detail and "AWS_PROFILE" in row.fix
    ok_identity(aws, account="210987654321")
    row, _ = checks_account.credentials(load(account=None), aws)
    assert row.status is Status.OK and "edge.account is null" in row.detail
    aws.done()


@pytest.mark.parametrize(("answer", "status", "text"), [
    ("missing", Status.BLOCKER, f"cdk bootstrap aws://{ACCOUNT}/{REGION}"),
    (("ROLLBACK_COMPLETE", "29"), Status.BLOCKER, "repair or delete"),
    (("UPDATE_COMPLETE", "5"), Status.BLOCKER, "update it"),
    (("UPDATE_COMPLETE", None), Status.WARNING, "update it"),
    (("UPDATE_ROLLBACK_COMPLETE", "6"), Status.OK, ""),
])
def test_bootstrap_stack(config, answer, status, text):
    aws = FakeAws()
    if answer == "missing":
        aws.stub("cloudformation").add_client_error(
            "describe_stacks", "ValidationError", "Stack with id CDKToolkit does not exist", 400,
            expected_params={"StackName": "CDKToolkit"})
    else:
        ok_bootstrap(aws, *answer)
    row = checks_account.bootstrap(config, aws, ACCOUNT)
    aws.done()
    assert row.status is status and text in row.fix
