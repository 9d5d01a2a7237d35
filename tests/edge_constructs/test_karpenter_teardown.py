"""Teardown and redeploy: Karpenter's nodes are gone before Karpenter goes, and nothing retained blocks a redeploy."""
from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import ADDONS_VARIANT, REPO_ROOT
from tools.render_manifests import HELM_TYPE, MANIFEST_TYPE, _group_names, extract_manifests

HANDLER = REPO_ROOT / "edge_constructs" / "handlers" / "karpenter_teardown.py"


def _deps(resources: dict, lid: str) -> set[str]:
    """Every logical id `lid` depends on, transitively (DependsOn and Ref/GetAtt)."""
    seen: set[str] = set()
    stack = [lid]
    while stack:
        res = resources[stack.pop()]
        direct = res.get("DependsOn", [])
        direct = [direct] if isinstance(direct, str) else list(direct)
        text = json.dumps(res.get("Properties", {}))
        direct += [other for other in resources if f'"Ref": "{other}"' in text or f'["{other}",' in text]
        for dep in direct:
            if dep not in seen and dep in resources:
                seen.add(dep)
                stack.append(dep)
    return seen


def _has_pods(objects: list[dict]) -> bool:
    return any(o.get("kind") == "Pod"
               or "containers" in (((o.get("spec") or {}).get("template") or {}).get("spec") or {}) for o in objects)


@pytest.fixture(scope="module")
def cluster(cluster_template) -> dict:
    # Warm spare on, so every pod-carrying chart the stack can apply is present.
    return cluster_template(**ADDONS_VARIANT)


def test_nodes_are_terminated_after_the_workloads_and_before_karpenter(cluster):
    resources = cluster["Resources"]
    [teardown] = [lid for lid, r in resources.items() if r["Type"] == "Custom::KarpenterNodeTeardown"]
    [karpenter] = [lid for lid, r in resources.items()
                   if r["Type"] == HELM_TYPE and r["Properties"]["Release"] == "karpenter"]
    names = _group_names(resources)
    groups = extract_manifests(cluster)
    by_group = {names[lid]: lid for lid, r in resources.items() if r["Type"] == MANIFEST_TYPE}
    nodepools = [by_group[name] for name, objects in groups.items() if any(o["kind"] == "NodePool" for o in objects)]
    assert nodepools
    # CloudFormation deletes in reverse dependency order: teardown before the NodePools, NodePools before Karpenter.
    assert karpenter in _deps(resources, teardown)
    assert set(nodepools) <= _deps(resources, teardown)
    pod_groups = {name for name, objects in groups.items() if _has_pods(objects)}
    assert {"InferenceChart", "WarmSpareChart"} <= pod_groups
    for name in pod_groups:
        assert teardown in _deps(resources, by_group[name]), f"{name} could be deleted after the nodes are gone"


def test_the_teardown_can_only_terminate_this_clusters_karpenter_instances(cluster):
    resources = cluster["Resources"]
    statements = [s for r in resources.values() if r["Type"] == "AWS::IAM::Policy"
                  for s in r["Properties"]["PolicyDocument"]["Statement"]
                  if "ec2:TerminateInstances" in json.dumps(s.get("Action"))
                  and "KarpenterTeardown" in json.dumps(r["Properties"].get("Roles", []))]
    assert len(statements) == 1
    conditions = statements[0]["Condition"]
    assert conditions["StringEquals"] == {"aws:ResourceTag/kubernetes.io/cluster/edge-diffusion": "owned"}
    assert conditions["StringLike"] == {"aws:ResourceTag/karpenter.sh/nodepool": "*"}


NAME_PROPERTIES = ("RepositoryName", "Name", "BucketName", "LogGroupName", "AliasName", "TopicName", "QueueName")


def _fixed_name(resource: dict) -> str | None:
    for prop in NAME_PROPERTIES:
        value = resource.get("Properties", {}).get(prop)
        if isinstance(value, str):
            return value
    return None


def test_nothing_retained_blocks_a_redeploy(templates):
    """A resource kept on delete under a fixed name makes the next deploy fail with AlreadyExists unless that
    deploy imports it: those are exactly the ones the documented deploy imports (--import-existing-resources),
    and every retained resource type is listed in docs/cluster.md with the reason it is kept."""
    retained = [(stack, r) for stack, t in templates.items() for r in t["Resources"].values()
                if r.get("DeletionPolicy") == "Retain"]
    named = {(stack, r["Type"]) for stack, r in retained if _fixed_name(r)}
    assert named == {("ImagePipelineStack", "AWS::ECR::Repository"),
                     ("EdgeClusterStack", "AWS::SecretsManager::Secret")}
    docs = (REPO_ROOT / "docs" / "cluster.md").read_text()
    section = docs[docs.index("## Teardown and redeploy"):]
    for cfn_type in {r["Type"] for _, r in retained}:
        assert f"`{cfn_type}`" in section, f"{cfn_type} is retained but not documented"
    readme = (REPO_ROOT / "README.md").read_text()
    for stack in templates:
        assert f"npx cdk deploy --import-existing-resources {stack}" in readme


# ---------------------------------------------------------------- the handler, against a fake EC2


def _handler():
    spec = importlib.util.spec_from_file_location("karpenter_teardown", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeEc2:
    def __init__(self, instances: dict[str, str], enis: list[str]):
        self.instances = dict(instances)  # id -> state
        self.enis = list(enis)
        self.calls: list[tuple[str, tuple]] = []

    def get_paginator(self, name):
        fake = self

        class Paginator:
            def paginate(self, Filters):
                fake.calls.append((name, tuple(sorted(f["Name"] for f in Filters))))
                if name == "describe_instances":
                    states = next(f["Values"] for f in Filters if f["Name"] == "instance-state-name")
                    yield {"Reservations": [{"Instances": [
                        {"InstanceId": i, "State": {"Name": s}} for i, s in fake.instances.items() if s in states]}]}
                else:
                    yield {"NetworkInterfaces": [{"NetworkInterfaceId": e} for e in fake.enis]}
        return Paginator()

    def terminate_instances(self, InstanceIds):
        self.calls.append(("terminate_instances", tuple(InstanceIds)))
        for i in InstanceIds:
            self.instances[i] = "shutting-down"

    def delete_network_interface(self, NetworkInterfaceId):
        self.calls.append(("delete_network_interface", (NetworkInterfaceId,)))
        self.enis.remove(NetworkInterfaceId)

    def tick(self):
        for i, s in self.instances.items():
            if s == "shutting-down":
                self.instances[i] = "terminated"


def test_handler_terminates_waits_and_removes_leftover_enis(monkeypatch):
    handler = _handler()
    ec2 = FakeEc2({"i-1": "running", "i-2": "pending", "i-3": "terminated"}, ["eni-9"])
    clock = iter(range(0, 10_000, 15))
    summary = handler.teardown(ec2, "edge-diffusion", "vpc-1", deadline=600,
                               sleep=lambda s: ec2.tick(), clock=lambda: next(clock))
    assert ("terminate_instances", ("i-1", "i-2")) in ec2.calls
    assert all(s == "terminated" for s in ec2.instances.values())
    assert ec2.enis == []
    assert "2 instances" in summary and "1 network interface" in summary
    filters = dict(ec2.calls)["describe_instances"]
    assert {"tag:kubernetes.io/cluster/edge-diffusion", "tag-key", "instance-state-name"} <= set(filters)


def test_handler_fails_loudly_when_instances_outlive_the_deadline():
    handler = _handler()
    ec2 = FakeEc2({"i-1": "running"}, [])
    clock = iter(range(0, 10_000, 100))
    with pytest.raises(TimeoutError, match="i-1"):
        handler.teardown(ec2, "edge-diffusion", "vpc-1", deadline=300, sleep=lambda s: None, clock=lambda: next(clock))


def test_handler_does_nothing_on_create_and_update(monkeypatch):
    handler = _handler()
    sent = []
    monkeypatch.setattr(handler, "send_response", lambda event, status, reason, physical_id: sent.append(
        (status, physical_id)))
    monkeypatch.setattr(handler, "ec2_client", lambda: pytest.fail("no EC2 call outside Delete"))
    for request in ("Create", "Update"):
        handler.handler({"RequestType": request, "ResponseURL": "https://example.invalid", "StackId": "s",
                         "RequestId": "r", "LogicalResourceId": "l", "ResourceProperties": {}}, None)
    assert [status for status, _ in sent] == ["SUCCESS", "SUCCESS"]


# ---------------------------------------------------------------- ACME: the node records go after the nodes

ACME = {"tls__mode": "acme", "tls__acme__hosted_zone_id": "Z0123456789ABCDEFGHIJ",
        "tls__acme__hosted_zone_name": "example.com"}
OWNER = "edge-diffusion"


def _txt(name: str, owner: str, resource: str = "node/n") -> dict:
    value = f'"heritage=external-dns,external-dns/owner={owner},external-dns/resource={resource}"'
    return {"Name": name, "Type": "TXT", "TTL": 300, "ResourceRecords": [{"Value": value}]}


def _a(name: str, kind: str = "A") -> dict:
    return {"Name": name, "Type": kind, "TTL": 300, "ResourceRecords": [{"Value": "198.51.100.7"}]}


class FakeRoute53:
    def __init__(self, records: list[dict]):
        self.records = records
        self.batches: list[list[dict]] = []

    def get_paginator(self, name):
        assert name == "list_resource_record_sets"
        fake = self

        class Paginator:
            def paginate(self, HostedZoneId):
                assert HostedZoneId == ACME["tls__acme__hosted_zone_id"]
                yield {"ResourceRecordSets": fake.records[:3]}
                yield {"ResourceRecordSets": fake.records[3:]}
        return Paginator()

    def change_resource_record_sets(self, HostedZoneId, ChangeBatch):
        changes = ChangeBatch["Changes"]
        assert all(c["Action"] == "DELETE" for c in changes)
        self.batches.append([c["ResourceRecordSet"] for c in changes])


def test_handler_deletes_exactly_the_records_this_cluster_owns():
    handler = _handler()
    owned = [
        _a("node-1.nodes.example.com."), _txt("node-1.nodes.example.com.", OWNER),      # legacy format
        _txt("a-node-1.nodes.example.com.", OWNER),                                       # new format
        _a("node-2.nodes.example.com.", "AAAA"), _txt("aaaa-node-2.nodes.example.com.", OWNER),
        _a("node-3.nodes.example.com."), _txt("a._metadata.node-3.nodes.example.com.", OWNER),  # metadata format
    ]
    kept = [
        _a("other.nodes.example.com."), _txt("a-other.nodes.example.com.", "another-cluster"),
        _txt("a-node-9.nodes.example.com.", "edge-diffusion-2"),  # an owner id that only starts with ours
        _a("node-1.example.com."), _txt("a-node-1.example.com.", OWNER),  # outside the node subdomain
        {"Name": "nodes.example.com.", "Type": "CAA", "TTL": 3600, "ResourceRecords": [{"Value": '0 issue "x"'}]},
    ]
    route53 = FakeRoute53(kept[:2] + owned + kept[2:])
    assert handler.remove_owned_records(route53, ACME["tls__acme__hosted_zone_id"], "nodes.example.com",
                                        OWNER) == len(owned)
    deleted = [r for batch in route53.batches for r in batch]
    assert sorted(map(json.dumps, deleted)) == sorted(map(json.dumps, owned))


def test_handler_removes_the_records_only_after_the_nodes(monkeypatch):
    handler = _handler()
    order = []
    monkeypatch.setenv("CLUSTER_NAME", OWNER)
    monkeypatch.setenv("VPC_ID", "vpc-1")
    monkeypatch.setenv("HOSTED_ZONE_ID", ACME["tls__acme__hosted_zone_id"])
    monkeypatch.setenv("NODE_DOMAIN", "nodes.example.com")
    monkeypatch.setenv("DNS_OWNER_ID", OWNER)
    monkeypatch.setattr(handler, "ec2_client", lambda: "ec2")
    monkeypatch.setattr(handler, "route53_client", lambda: "route53")
    monkeypatch.setattr(handler, "teardown", lambda *a, **k: order.append("nodes") or "terminated")
    monkeypatch.setattr(handler, "remove_owned_records", lambda *a: order.append(("dns", a)) or 4)
    sent = []
    monkeypatch.setattr(handler, "send_response", lambda event, status, reason, pid: sent.append((status, reason)))

    class Context:
        def get_remaining_time_in_millis(self):
            return 900_000

    handler.handler({"RequestType": "Delete", "ResponseURL": "https://example.invalid", "StackId": "s",
                     "RequestId": "r", "LogicalResourceId": "l"}, Context())
    assert order == ["nodes", ("dns", ("route53", ACME["tls__acme__hosted_zone_id"], "nodes.example.com", OWNER))]
    assert sent[0][0] == "SUCCESS" and "4 DNS record set(s)" in sent[0][1]


@pytest.fixture(scope="module")
def acme_cluster(cluster_template) -> dict:
    return cluster_template(**ACME)


def test_external_dns_goes_before_the_teardown_and_the_caa_record_after(acme_cluster):
    resources = acme_cluster["Resources"]
    [teardown] = [lid for lid, r in resources.items() if r["Type"] == "Custom::KarpenterNodeTeardown"]
    [caa] = [lid for lid, r in resources.items()
             if r["Type"] == "AWS::Route53::RecordSet" and r["Properties"]["Type"] == "CAA"]
    names = _group_names(resources)
    groups = extract_manifests(acme_cluster)
    [external_dns] = [lid for lid, r in resources.items() if r["Type"] == MANIFEST_TYPE
                      and any(o["kind"] == "Deployment" and o["metadata"]["name"] == "external-dns"
                              for o in groups[names[lid]])]
    # Dependents are deleted first: external-dns, then the teardown (nodes, then records), then the CAA record.
    assert teardown in _deps(resources, external_dns)
    assert caa in _deps(resources, teardown)
    # The teardown deletes records under the owner id external-dns writes.
    [deployment] = [o for o in groups[names[external_dns]] if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    [function] = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"
                  and "HOSTED_ZONE_ID" in json.dumps(r["Properties"].get("Environment", {}))]
    env = function["Properties"]["Environment"]["Variables"]
    assert f"--txt-owner-id={env['DNS_OWNER_ID']}" in args
    assert f"--domain-filter={env['NODE_DOMAIN']}" in args
    assert env["HOSTED_ZONE_ID"] == ACME["tls__acme__hosted_zone_id"]


def test_the_teardown_may_only_delete_node_records(acme_cluster):
    statements = [s for r in acme_cluster["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                  and "KarpenterTeardown" in json.dumps(r["Properties"].get("Roles", []))
                  for s in r["Properties"]["PolicyDocument"]["Statement"]]
    [change] = [s for s in statements if s["Action"] == "route53:ChangeResourceRecordSets"]
    assert change["Condition"] == {
        "ForAllValues:StringEquals": {"route53:ChangeResourceRecordSetsActions": ["DELETE"],
                                      "route53:ChangeResourceRecordSetsRecordTypes": ["A", "AAAA", "TXT"]},
        "ForAllValues:StringLike": {"route53:ChangeResourceRecordSetsNormalizedRecordNames": ["*.nodes.example.com"]},
    }


def test_the_caa_record_limits_issuance_to_the_acme_account(acme_cluster, cluster_template):
    def caa(template: dict) -> dict:
        [record] = [r["Properties"] for r in template["Resources"].values()
                    if r["Type"] == "AWS::Route53::RecordSet" and r["Properties"]["Type"] == "CAA"]
        return record

    record = caa(acme_cluster)
    assert record["Name"] == "nodes.example.com." and record["HostedZoneId"] == ACME["tls__acme__hosted_zone_id"]
    assert record["ResourceRecords"] == ['0 issue "letsencrypt.org; validationmethods=dns-01"']
    account = "https://acme-v02.api.letsencrypt.org/acme/acct/123456789"
    pinned = caa(cluster_template(**ACME, tls__acme__account_uri=account))
    assert pinned["ResourceRecords"] == [f'0 issue "letsencrypt.org; accounturi={account}; validationmethods=dns-01"']
    # Only the acme mode publishes node names: no CAA record in the default private-ca mode.
    assert not [r for r in cluster_template()["Resources"].values() if r["Type"] == "AWS::Route53::RecordSet"]
