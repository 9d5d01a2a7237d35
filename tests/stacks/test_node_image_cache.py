"""The node image cache in the synthesized stacks: the pipeline's snapshot stage and state machine, the builder's
launch template and IAM, and the cluster side reading the recorded snapshot id."""
from __future__ import annotations

import json
import subprocess

import pytest

import edge_config
import versions
from charts.image_cache import CACHE_DEVICE
from edge_constructs import node_image_cache, node_image_cache_guard
from edge_constructs.handlers import snapshot_guard
from tools.render_manifests import MANIFEST_TYPE, extract_manifests

PARAMETER = "/edge-diffusion/node-image-cache/snapshot-id"


@pytest.fixture(scope="module")
def pipeline_template(templates) -> dict:
    return templates["ImagePipelineStack"]


def _of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _definition(template: dict) -> dict:
    (machine,) = _of_type(template, "AWS::StepFunctions::StateMachine").values()
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))


def _statements(template: dict, fragment: str) -> list[dict]:
    return [s for lid, r in _of_type(template, "AWS::IAM::Policy").items() if fragment in lid
            for s in r["Properties"]["PolicyDocument"]["Statement"]]


def _actions(statement: dict) -> list[str]:
    actions = statement["Action"]
    return [a.lower() for a in ([actions] if isinstance(actions, str) else actions)]


def test_the_pipeline_snapshots_the_published_cuda_images_last(pipeline_template):
    (pipeline,) = _of_type(pipeline_template, "AWS::CodePipeline::Pipeline").values()
    stage = pipeline["Properties"]["Stages"][-1]
    assert stage["Name"] == "NodeImageCache"
    (action,) = stage["Actions"]
    assert action["ActionTypeId"]["Provider"] == "StepFunctions"
    images = json.dumps(action["Configuration"]["Input"])
    # The moving tag the Publish stage set, in the repository of the flavor Local Zone nodes run.
    assert "RepositoriesCuda" in images and f":{edge_config.PipelineConfig().image_tag_moving}" in images
    assert "RepositoriesNeuron" not in images and "RepositoriesCpu" not in images


def test_the_state_machine_reports_through_the_builder_state(pipeline_template):
    states = _definition(pipeline_template)["States"]
    assert states["Launch"]["Resource"].endswith(":states:::aws-sdk:ec2:runInstances")
    choices = states["Pulled?"]["Choices"]
    assert choices[0] == {"Variable": "$.status.state", "StringEquals": "stopped", "Next": "Snapshot"}
    assert states["Pulled?"]["Default"] == "TerminateAfterFailure"
    assert CACHE_DEVICE in states["Describe"]["ResultSelector"]["volumes.$"]
    assert states["Record"]["Parameters"]["Name"] == PARAMETER
    assert states["Record"]["Next"] == "Terminate" and states["Terminate"]["End"] is True
    assert states["TerminateAfterFailure"]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"
    for name in ("Describe", "Snapshot", "SnapshotState", "Record"):
        assert states[name]["Catch"][0]["Next"] == "TerminateAfterFailure", name


def test_ending_an_instance_needs_the_builder_tag(pipeline_template):
    statements = _statements(pipeline_template, "NodeImageCache")
    terminating = [s for s in statements if "ec2:terminateinstances" in _actions(s)]
    assert len(terminating) == 2  # the state machine's and the builder's own
    for statement in terminating:
        assert statement["Condition"] == {
            "StringEquals": {f"ec2:ResourceTag/{node_image_cache.ROLE_TAG}": node_image_cache.ROLE_VALUE}}
    tagging = [s for s in statements if "ec2:createtags" in _actions(s)]
    assert tagging and all(s["Condition"]["StringEquals"]["ec2:CreateAction"] for s in tagging)
    (recording,) = [s for s in statements if "ssm:putparameter" in _actions(s)]
    assert json.dumps(recording["Resource"]).endswith(f':parameter{PARAMETER}"]]}}')


def test_the_builder_pulls_only_the_cached_repository(pipeline_template):
    statements = _statements(pipeline_template, "NodeImageCacheBuilderRole")
    pulls = [s for s in statements if "ecr:batchgetimage" in _actions(s)]
    assert [s["Resource"]["Fn::GetAtt"][0] for s in pulls] == [
        next(k for k in pipeline_template["Resources"] if k.startswith("RepositoriesCuda"))]
    assert not any(a.startswith(("ecr:put", "ecr:upload", "ecr:complete")) for s in statements for a in _actions(s))


def test_the_builder_runs_the_nodes_ami_release_locked_down(pipeline_template):
    (template,) = _of_type(pipeline_template, "AWS::EC2::LaunchTemplate").values()
    data = template["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpPutResponseHopLimit": 1, "HttpTokens": "required",
                                       "InstanceMetadataTags": "enabled"}
    assert data["InstanceInitiatedShutdownBehavior"] == "stop"
    devices = {d["DeviceName"]: d["Ebs"] for d in data["BlockDeviceMappings"]}
    assert set(devices) == {"/dev/xvda", CACHE_DEVICE} and all(e["Encrypted"] for e in devices.values())
    ami = data["ImageId"]["Ref"]
    release = versions.KARPENTER_AMI_ALIAS.split("@")[1]
    assert release in pipeline_template["Parameters"][ami]["Default"]
    assert pipeline_template["Parameters"][ami]["Default"] == node_image_cache.builder_ami_parameter(
        versions.KUBERNETES_VERSION, versions.KARPENTER_AMI_ALIAS)
    (group,) = _of_type(pipeline_template, "AWS::EC2::SecurityGroup").values()
    assert "SecurityGroupIngress" not in group["Properties"]


def test_builder_script_is_valid_bash_and_reports_by_its_state():
    subprocess.run(["bash", "-n"], input=node_image_cache.BUILDER_SCRIPT, text=True, check=True)
    script = node_image_cache.BUILDER_SCRIPT
    assert "trap fail ERR" in script and script.rstrip().endswith("shutdown -h now")
    assert f"tags/instance/{node_image_cache.IMAGES_TAG}" in script and "/" not in node_image_cache.IMAGES_TAG


def test_nodes_leave_the_cache_off_by_default(templates):
    manifests = extract_manifests(templates["EdgeClusterStack"])
    classes = [o for objects in manifests.values() for o in objects if o.get("kind") == "EC2NodeClass"]
    assert classes and all(len(c["spec"]["blockDeviceMappings"]) == 1 for c in classes)
    assert not any(p.get("Default") == PARAMETER for p in templates["EdgeClusterStack"].get("Parameters", {}).values())


CACHED_ZONE = json.dumps([{"name": "us-west-2-lax-1a", "subnet_cidr": "10.40.128.0/22",
                           "instance_families": ["g5", "inf2"]},
                          {"name": "us-west-2-lax-1b", "subnet_cidr": "10.40.132.0/22", "instance_families": ["inf2"]}])


def test_nodes_mount_only_a_snapshot_the_guard_verified(cluster_template):
    template = cluster_template(node_image_cache__attach_to_nodes=True, local_zones=CACHED_ZONE,
                                accelerators='["nvidia", "neuron"]')
    resources = template["Resources"]
    [guard] = [lid for lid, r in resources.items() if r["Type"] == node_image_cache_guard.RESOURCE_TYPE]
    [parameter] = [name for name, p in template["Parameters"].items() if p.get("Default") == PARAMETER]
    assert template["Parameters"][parameter]["Type"] == "AWS::SSM::Parameter::Value<String>"
    props = resources[guard]["Properties"]
    assert props["SnapshotId"] == {"Ref": parameter} and props["ParameterName"] == PARAMETER
    assert (props["TagKey"], props["TagValue"]) == (node_image_cache.ROLE_TAG, node_image_cache.SNAPSHOT_ROLE_VALUE)
    # The raw parameter reaches nothing but the guard; the node classes name the guard's verified output.
    users = [lid for lid, r in resources.items() if f'"Ref": "{parameter}"' in json.dumps(r)]
    assert users == [guard]
    classes = [r for r in resources.values() if r["Type"] == MANIFEST_TYPE and "snapshotID" in json.dumps(r)]
    assert len(classes) == 1 and json.dumps({"Fn::GetAtt": [guard, "SnapshotId"]}) in json.dumps(classes)
    # The instance-store zone's class has no cache volume: only lax-1b (inf2, EBS only) mounts it.
    assert json.dumps(classes).count("snapshotID") == 1


def test_no_guard_and_no_parameter_where_no_class_takes_the_cache(cluster_template):
    # The default zone offers g4dn and g5 only: containerd goes on their instance store, never on the cache.
    template = cluster_template(node_image_cache__attach_to_nodes=True)
    assert not [r for r in template["Resources"].values() if r["Type"] == node_image_cache_guard.RESOURCE_TYPE]
    assert not any(p.get("Default") == PARAMETER for p in template.get("Parameters", {}).values())


class FakeEc2:
    def __init__(self, snapshots: list[dict] | Exception):
        self.snapshots, self.calls = snapshots, []

    def describe_snapshots(self, **kwargs):
        self.calls.append(kwargs)
        if isinstance(self.snapshots, Exception):
            raise self.snapshots
        return {"Snapshots": self.snapshots}


def _guard(ec2, snapshot="snap-0123456789abcdef0"):
    return snapshot_guard.verified_snapshot(ec2, snapshot, *node_image_cache_guard.SNAPSHOT_TAG, PARAMETER)


def test_the_guard_accepts_only_this_accounts_tagged_completed_snapshot():
    ec2 = FakeEc2([{"SnapshotId": "snap-0123456789abcdef0"}])
    assert _guard(ec2) == "snap-0123456789abcdef0"
    (call,) = ec2.calls
    assert call["OwnerIds"] == ["self"] and call["SnapshotIds"] == ["snap-0123456789abcdef0"]
    assert {"Name": f"tag:{node_image_cache.ROLE_TAG}", "Values": [node_image_cache.SNAPSHOT_ROLE_VALUE]} in call[
        "Filters"]
    assert {"Name": "status", "Values": ["completed"]} in call["Filters"]


@pytest.mark.parametrize(("ec2", "snapshot", "why"), [
    (FakeEc2([]), "snap-0123456789abcdef0", "not a completed snapshot owned by this account"),
    (FakeEc2(RuntimeError("An error occurred (InvalidSnapshot.NotFound)")), "snap-0123456789abcdef0",
     "not a completed snapshot owned by this account"),
    (FakeEc2([{"SnapshotId": "snap-0ffffffffffffffff"}]), "snap-0123456789abcdef0", "not a completed snapshot"),
    (FakeEc2([]), "ami-0123", "holds 'ami-0123', not a snapshot id"),
])
def test_the_guard_refuses_anything_else_and_names_the_parameter(ec2, snapshot, why):
    with pytest.raises(ValueError, match=why) as error:
        _guard(ec2, snapshot)
    assert PARAMETER in str(error.value)


def test_a_refused_snapshot_fails_the_deploy_with_the_reason(monkeypatch):
    sent = []
    monkeypatch.setattr(snapshot_guard, "ec2_client", lambda: FakeEc2([]))
    monkeypatch.setattr(snapshot_guard, "send_response", lambda event, status, reason, pid, data=None: sent.append(
        (status, reason, data)))
    event = {"RequestType": "Update", "ResponseURL": "https://example.invalid", "StackId": "s", "RequestId": "r",
             "LogicalResourceId": "l", "ResourceProperties": {
                 "SnapshotId": "snap-0123456789abcdef0", "ParameterName": PARAMETER,
                 "TagKey": node_image_cache.ROLE_TAG, "TagValue": node_image_cache.SNAPSHOT_ROLE_VALUE}}
    snapshot_guard.handler(event, None)
    monkeypatch.setattr(snapshot_guard, "ec2_client", lambda: FakeEc2([{"SnapshotId": "snap-0123456789abcdef0"}]))
    snapshot_guard.handler(event, None)
    assert [s[0] for s in sent] == ["FAILED", "SUCCESS"] and "refusing" in sent[0][1]
    assert sent[1][2] == {"SnapshotId": "snap-0123456789abcdef0"}


def test_the_builder_watchdog_starts_before_any_call_that_can_hang():
    script = node_image_cache.BUILDER_SCRIPT
    watchdog = script.index("( sleep 3600; fail ) &")
    body = script.index("\n}\n", script.index("fail() {"))
    # fail() looks its instance up itself, so the watchdog needs nothing the metadata calls return.
    assert script.index("fail() {") < watchdog and "imds instance-id" in script[script.index("fail() {"):body]
    for call in ("\ninstance=$(imds instance-id)", "\nimages=$(imds", "wait_ebs_device \"$instance\"", "ctr "):
        assert watchdog < script.index(call), call


def test_every_wait_is_bounded_and_ends_at_terminate(pipeline_template):
    definition = _definition(pipeline_template)
    states = definition["States"]
    assert states["WaitForBuilder"]["Next"] == "CountBuilderPoll" and states["CountBuilderPoll"]["Next"] == "Describe"
    assert states["WaitForSnapshot"]["Next"] == "CountSnapshotPoll"
    assert states["CountSnapshotPoll"]["Next"] == "SnapshotState"
    for choice, counter, limit in (("Pulled?", "$.builderPolls.value", node_image_cache.MAX_BUILDER_POLLS),
                                   ("Snapshot complete?", "$.snapshotPolls.value",
                                    node_image_cache.MAX_SNAPSHOT_POLLS)):
        (bound,) = [c for c in states[choice]["Choices"] if c.get("Variable") == counter]
        assert bound == {"Variable": counter, "NumericGreaterThanEquals": limit, "Next": "TerminateAfterFailure"}
    # The counters start at 0 right before each loop and count up by one per poll.
    assert states["Launch"]["Next"] == "StartBuilderPolls" and states["StartBuilderPolls"]["Parameters"] == {
        "value": 0}
    assert states["CountBuilderPoll"]["Parameters"] == {"value.$": "States.MathAdd($.builderPolls.value, 1)"}
    # Both loops together, with every task retried to the end, stay inside the uncatchable timeout.
    poll = node_image_cache.POLL.to_seconds()
    retries = sum(2 * 2 ** i for i in range(6)) * 8  # the backoff of every SDK state, at its worst
    worst = (node_image_cache.MAX_BUILDER_POLLS + node_image_cache.MAX_SNAPSHOT_POLLS) * poll + retries
    assert worst < definition["TimeoutSeconds"]
    # The builder's own watchdog fires before the state machine gives up on it.
    assert 3600 < node_image_cache.MAX_BUILDER_POLLS * poll


def test_every_sdk_task_retries_throttling(pipeline_template):
    tasks = {name: state for name, state in _definition(pipeline_template)["States"].items()
             if state["Type"] == "Task"}
    assert {"Launch", "Describe", "Snapshot", "SnapshotState", "Record", "Terminate",
            "TerminateAfterFailure"} == set(tasks)
    for name, state in tasks.items():
        (retry,) = state["Retry"]
        assert retry["ErrorEquals"] == ["States.TaskFailed"] and retry["MaxAttempts"] >= 3, name
        assert retry["BackoffRate"] > 1, name


def test_the_builder_may_look_up_its_volume_ids(pipeline_template):
    statements = _statements(pipeline_template, "NodeImageCacheBuilderRole")
    (describe,) = [s for s in statements if "ec2:describevolumes" in _actions(s)]
    # Merged by CDK with ecr:GetAuthorizationToken, the other call without resource-level permissions.
    assert set(_actions(describe)) <= {"ec2:describevolumes", "ecr:getauthorizationtoken"}
    assert describe["Resource"] == "*" and "Condition" not in describe


def test_the_attached_cache_synthesizes_cdk_nag_clean(tmp_path):
    """The default synth leaves the cache off; the guard's function and role get their own cdk-nag run."""
    from app import build_app

    app = build_app({"edge.admin_principal_arn": "arn:aws:iam::123456789012:role/Admin",
                     "edge.node_image_cache.attach_to_nodes": "true", "edge.local_zones": CACHED_ZONE,
                     "edge.accelerators": '["nvidia", "neuron"]'}, outdir=str(tmp_path))
    app.synth()  # raises ValidationFailed on any unacknowledged finding
    report = tmp_path / "validation-report.json"
    violations = json.loads(report.read_text())["pluginReports"] if report.exists() else []
    assert not [v for r in violations for v in r["violations"]]
