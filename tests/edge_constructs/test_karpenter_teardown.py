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
