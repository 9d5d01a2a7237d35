"""Builds the node image cache: an EBS snapshot of a containerd store that already holds the serving images.

A Step Functions state machine, started by the pipeline after each publish, launches one builder instance from
the same EKS AL2023 release the Karpenter nodes run, lets it pull the images onto its second volume, snapshots
that volume and records the snapshot id in an SSM parameter; Local Zone nodes start from that snapshot
(charts/image_cache.py). Every step is an EC2 or SSM API call; the builder reports through its own state:
stopped means pulled, terminated means failed (it terminates itself on any error and after an hour at most).
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

import versions
from charts.image_cache import CACHE_DEVICE, EBS_DEVICE_FUNCTIONS
from edge_config import EdgeConfig, NodeImageCacheConfig
from edge_constructs.nag import acknowledge

# IMDS serves instance tags only when their keys have no "/", so these keys use ":".
ROLE_TAG = "edge-diffusion:role"
ROLE_VALUE = "node-image-cache-builder"
IMAGES_TAG = "edge-diffusion:cache-images"
# The tag value CreateSnapshot puts on every cache snapshot; the cluster accepts only snapshots carrying it
# (node_image_cache_guard.py).
SNAPSHOT_ROLE_VALUE = "node-image-cache"
POLL = cdk.Duration.seconds(30)
# Bounded waits, so every path ends at a terminate step well inside the state machine's timeout (which no Catch
# can handle): the builder's own watchdog fires at 60 min, the wait gives up at 70; a snapshot gets 60 min.
MAX_BUILDER_POLLS = 140
MAX_SNAPSHOT_POLLS = 120
TIMEOUT = cdk.Duration.hours(3)
# Throttling and EC2's eventual consistency (a new instance id not yet visible) are retried with backoff.
RETRY = {"errors": ["States.TaskFailed"], "interval": cdk.Duration.seconds(2), "max_attempts": 6, "backoff_rate": 2.0}


def builder_ami_parameter(kubernetes_version: str, ami_alias: str) -> str:
    """The public SSM parameter of the EKS AL2023 x86_64 AMI of the release the Karpenter alias pins."""
    release = ami_alias.split("@", 1)[1]
    return (f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/x86_64/standard/"
            f"amazon-eks-node-al2023-x86_64-standard-{kubernetes_version}-{release}/image_id")


BUILDER_SCRIPT = r"""#!/bin/bash
# Pull the images named by this instance's tag onto the cache volume, then stop (success) or terminate (failure).
set -euo pipefail
__FUNCTIONS__
# Terminate this instance, retried: a builder that cannot end itself is ended by the state machine's bounded wait.
fail() {
  local instance region
  for _ in 1 2 3 4 5; do
    if instance=$(imds instance-id) && region=$(imds placement/region) &&
      aws ec2 terminate-instances --region "$region" --instance-ids "$instance"; then return 0; fi
    sleep 10
  done
  return 1
}
# The watchdog comes first, before any call that can hang: an hour is several times a pull of the largest image.
( sleep 3600; fail ) &
trap fail ERR
instance=$(imds instance-id)
region=$(imds placement/region)
images=$(imds "tags/instance/__IMAGES_TAG__")
device=$(wait_ebs_device "$instance" "$region" __DEVICE__ 120)
systemctl stop kubelet.service containerd.service || true
mkfs.xfs -f "$device"
# Keep what the AMI already cached (pause image), then make the volume containerd's store.
mkdir -p /mnt/cache
mount "$device" /mnt/cache
cp -a /var/lib/containerd/. /mnt/cache/
umount /mnt/cache
mount -o noatime "$device" /var/lib/containerd
systemctl start containerd.service
password=$(aws ecr get-login-password --region "$region")
for image in $images; do
  ctr --namespace k8s.io images pull --platform linux/amd64 --label io.cri-containerd.image=managed \
    --user "AWS:$password" "$image"
done
systemctl stop containerd.service
sync
umount /var/lib/containerd
shutdown -h now
""".replace("__IMAGES_TAG__", IMAGES_TAG).replace("__DEVICE__", CACHE_DEVICE).replace(
    "__FUNCTIONS__", EBS_DEVICE_FUNCTIONS.rstrip())


class NodeImageCacheBuilder(Construct):
    """The state machine, its builder launch template and a one-subnet VPC without NAT for the builder."""

    def __init__(self, scope: Construct, construct_id: str, *, config: NodeImageCacheConfig, parameter_name: str,
                 repositories: Sequence[ecr.IRepository], kubernetes_version: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.parameter_name = parameter_name
        self.vpc = ec2.Vpc(self, "Vpc", ip_addresses=ec2.IpAddresses.cidr("10.254.0.0/26"), max_azs=1,
                           nat_gateways=0, subnet_configuration=[
                               ec2.SubnetConfiguration(name="builder", subnet_type=ec2.SubnetType.PUBLIC,
                                                       cidr_mask=27)])
        self.vpc.add_flow_log("FlowLog")
        # No inbound rule at all: the builder only calls ECR, EC2 and S3.
        self.security_group = security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=self.vpc, allow_all_outbound=True,
                                           description="node image cache builder: outbound only")
        role = iam.Role(self, "BuilderRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                        description="node image cache builder: pull the serving images, end itself")
        for repository in repositories:
            repository.grant_pull(role)
        # The builder finds its cache disk by the volume id (charts/image_cache.py: ebs_volume_id).
        role.add_to_policy(iam.PolicyStatement(actions=["ec2:DescribeVolumes"], resources=["*"]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["ec2:TerminateInstances"],
            resources=[stack.format_arn(service="ec2", resource="instance", resource_name="*")],
            conditions={"StringEquals": {f"ec2:ResourceTag/{ROLE_TAG}": ROLE_VALUE}},
        ))
        user_data = ec2.UserData.custom(BUILDER_SCRIPT)
        self.launch_template = ec2.LaunchTemplate(
            self, "Builder",
            machine_image=ec2.MachineImage.from_ssm_parameter(
                builder_ami_parameter(kubernetes_version, versions.KARPENTER_AMI_ALIAS)),
            instance_type=ec2.InstanceType(config.builder_instance_type),
            role=role,
            security_group=security_group,
            user_data=user_data,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            instance_metadata_tags=True,
            instance_initiated_shutdown_behavior=ec2.InstanceInitiatedShutdownBehavior.STOP,
            block_devices=[
                ec2.BlockDevice(device_name="/dev/xvda", volume=ec2.BlockDeviceVolume.ebs(
                    40, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3, delete_on_termination=True)),
                ec2.BlockDevice(device_name=CACHE_DEVICE, volume=ec2.BlockDeviceVolume.ebs(
                    config.volume_size_gib, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3,
                    throughput=1000, iops=6000, delete_on_termination=True)),
            ],
        )
        self.state_machine = self._state_machine(stack, role)

    def _call(self, construct_id: str, action: str, parameters: dict, resources: Sequence[str],
              result_selector: dict | None = None, result_path: str | None = None) -> tasks.CallAwsService:
        service = "ssm" if action == "putParameter" else "ec2"
        task = tasks.CallAwsService(self, construct_id, service=service, action=action, parameters=parameters,
                                    iam_resources=list(resources), result_selector=result_selector,
                                    result_path=result_path or sfn.JsonPath.DISCARD)
        task.add_retry(**RETRY, jitter_strategy=sfn.JitterType.FULL)
        return task

    def _counter(self, construct_id: str, path: str, start: bool = False) -> sfn.Pass:
        """A Pass state that sets the poll counter at ``path`` to 0 (``start``) or adds one to it."""
        value = 0 if start else sfn.JsonPath.math_add(sfn.JsonPath.number_at(f"{path}.value"), 1)
        return sfn.Pass(self, construct_id, parameters={"value": value}, result_path=path)

    def _state_machine(self, stack: cdk.Stack, role: iam.IRole) -> sfn.StateMachine:
        def arn(resource: str, name: str = "*", account: bool = True) -> str:
            return stack.format_arn(service="ec2", resource=resource, resource_name=name,
                                    account=None if account else "")

        tagged = {"StringEquals": {f"ec2:ResourceTag/{ROLE_TAG}": ROLE_VALUE}}
        subnet = self.vpc.public_subnets[0]
        launch = self._call("Launch", "runInstances", {
            "LaunchTemplate": {"LaunchTemplateId": self.launch_template.launch_template_id,
                               "Version": self.launch_template.version_number},
            "MinCount": 1, "MaxCount": 1, "SubnetId": subnet.subnet_id,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": ROLE_TAG, "Value": ROLE_VALUE},
                                                      {"Key": IMAGES_TAG, "Value.$": "$.images"}]},
                {"ResourceType": "volume", "Tags": [{"Key": ROLE_TAG, "Value": ROLE_VALUE}]},
            ],
        }, [arn("instance"), arn("volume"), arn("network-interface"), arn("subnet", subnet.subnet_id),
            arn("security-group", self.security_group.security_group_id), arn("launch-template", self.launch_template.launch_template_id or "*"),
            arn("image", account=False)],
            result_selector={"id.$": "$.Instances[0].InstanceId"}, result_path="$.instance")
        describe = self._call("Describe", "describeInstances", {"InstanceIds.$": "States.Array($.instance.id)"},
                              ["*"], result_selector={
                                  "state.$": "$.Reservations[0].Instances[0].State.Name",
                                  "volumes.$": "$.Reservations[0].Instances[0].BlockDeviceMappings"
                                               f"[?(@.DeviceName == '{CACHE_DEVICE}')].Ebs.VolumeId"},
                              result_path="$.status")
        snapshot = self._call("Snapshot", "createSnapshot", {
            "VolumeId.$": "States.ArrayGetItem($.status.volumes, 0)",
            "Description": "edge-diffusion node image cache (containerd store with the serving images)",
            "TagSpecifications": [{"ResourceType": "snapshot", "Tags": [
                {"Key": ROLE_TAG, "Value": SNAPSHOT_ROLE_VALUE}, {"Key": IMAGES_TAG, "Value.$": "$.images"}]}],
        }, [arn("volume"), arn("snapshot", account=False)], result_selector={"id.$": "$.SnapshotId"},
            result_path="$.snapshot")
        snapshot_state = self._call("SnapshotState", "describeSnapshots",
                                    {"SnapshotIds.$": "States.Array($.snapshot.id)"}, ["*"],
                                    result_selector={"state.$": "$.Snapshots[0].State"},
                                    result_path="$.snapshotStatus")
        record = self._call("Record", "putParameter", {
            "Name": self.parameter_name, "Type": "String", "Overwrite": True, "Value.$": "$.snapshot.id",
            "Description": "Snapshot id of the node image cache, written by the image pipeline",
        }, [stack.format_arn(service="ssm", resource="parameter", resource_name=self.parameter_name.lstrip("/"))])
        terminate = self._terminate("Terminate")
        cleanup = self._terminate("TerminateAfterFailure")
        failed = sfn.Fail(self, "Failed", error="NodeImageCacheFailed",
                          cause="the builder could not pull the images or the snapshot failed")
        cleanup.next(failed)
        for task in (describe, snapshot, snapshot_state, record):
            task.add_catch(cleanup, result_path="$.error")

        wait_builder = sfn.Wait(self, "WaitForBuilder", time=sfn.WaitTime.duration(POLL))
        wait_snapshot = sfn.Wait(self, "WaitForSnapshot", time=sfn.WaitTime.duration(POLL))
        builder_polls, snapshot_polls = "$.builderPolls", "$.snapshotPolls"
        start_builder_polls = self._counter("StartBuilderPolls", builder_polls, start=True)
        count_builder_poll = self._counter("CountBuilderPoll", builder_polls)
        start_snapshot_polls = self._counter("StartSnapshotPolls", snapshot_polls, start=True)
        count_snapshot_poll = self._counter("CountSnapshotPoll", snapshot_polls)
        builder_done = (sfn.Choice(self, "Pulled?")
                        .when(sfn.Condition.string_equals("$.status.state", "stopped"), snapshot)
                        .when(sfn.Condition.number_greater_than_equals(f"{builder_polls}.value", MAX_BUILDER_POLLS),
                              cleanup)
                        .when(sfn.Condition.or_(*(sfn.Condition.string_equals("$.status.state", s)
                                                  for s in ("pending", "running", "stopping"))), wait_builder)
                        .otherwise(cleanup))
        snapshot_done = (sfn.Choice(self, "Snapshot complete?")
                         .when(sfn.Condition.string_equals("$.snapshotStatus.state", "completed"), record)
                         .when(sfn.Condition.number_greater_than_equals(f"{snapshot_polls}.value",
                                                                        MAX_SNAPSHOT_POLLS), cleanup)
                         .when(sfn.Condition.string_equals("$.snapshotStatus.state", "pending"), wait_snapshot)
                         .otherwise(cleanup))
        launch.next(start_builder_polls)
        start_builder_polls.next(wait_builder)
        wait_builder.next(count_builder_poll)
        count_builder_poll.next(describe)
        describe.next(builder_done)
        snapshot.next(start_snapshot_polls)
        start_snapshot_polls.next(wait_snapshot)
        wait_snapshot.next(count_snapshot_poll)
        count_snapshot_poll.next(snapshot_state)
        snapshot_state.next(snapshot_done)
        record.next(terminate)

        machine = sfn.StateMachine(
            self, "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(launch),
            timeout=TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH),
                                level=sfn.LogLevel.ALL),
        )
        machine.add_to_role_policy(iam.PolicyStatement(actions=["iam:PassRole"], resources=[role.role_arn]))
        # Only builders: the state machine can end the instances it launched and nothing else.
        machine.add_to_role_policy(iam.PolicyStatement(actions=["ec2:TerminateInstances"], resources=[arn("instance")],
                                                       conditions=tagged))
        machine.add_to_role_policy(iam.PolicyStatement(
            actions=["ec2:CreateTags"], resources=[arn("instance"), arn("volume"), arn("snapshot", account=False)],
            conditions={"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateSnapshot"]}}))
        self._acknowledge(stack, machine, role)
        return machine

    def _terminate(self, construct_id: str) -> sfn.CustomState:
        # A CustomState, not CallAwsService: that would grant terminateInstances without the builder-tag
        # condition; the conditioned grant is added to the state machine's role instead.
        return sfn.CustomState(self, construct_id, state_json={
            "Type": "Task",
            "Resource": f"arn:{cdk.Aws.PARTITION}:states:::aws-sdk:ec2:terminateInstances",
            "Parameters": {"InstanceIds.$": "States.Array($.instance.id)"},
            "ResultPath": None,
            "Retry": [{"ErrorEquals": RETRY["errors"], "IntervalSeconds": RETRY["interval"].to_seconds(),
                       "MaxAttempts": RETRY["max_attempts"], "BackoffRate": RETRY["backoff_rate"],
                       "JitterStrategy": "FULL"}],
        })

    def _acknowledge(self, stack: cdk.Stack, machine: sfn.StateMachine, role: iam.IRole) -> None:
        def text(value: str, placeholder: str) -> str:
            return placeholder if cdk.Token.is_unresolved(value) else value

        region, account = text(stack.region, "<AWS::Region>"), text(stack.account, "<AWS::AccountId>")
        prefix = f"arn:{text(stack.partition, '<AWS::Partition>')}:ec2:{region}"
        instances = f"AwsSolutions-IAM5[Resource::{prefix}:{account}:instance/*]"
        acknowledge(machine, "AwsSolutions-IAM5[Resource::*]",
                    "ec2:DescribeInstances and ec2:DescribeSnapshots have no resource-level permissions; every "
                    "call that changes something is scoped to its own resources in the same policy.")
        acknowledge(machine, instances,
                    "RunInstances names instance ids that do not exist yet; TerminateInstances is conditioned on "
                    "the builder role tag, which the same call puts on every instance it launches.")
        for resource, why in (("volume/*", "the builder's two new volumes (ids unknown before launch), and the "
                                           "cache volume CreateSnapshot reads"),
                              ("network-interface/*", "the builder's new interface, created by RunInstances"),
                              ("snapshot/*", "the new snapshot CreateSnapshot makes and tags")):
            owner = "" if resource.startswith("snapshot") else account
            acknowledge(machine, f"AwsSolutions-IAM5[Resource::{prefix}:{owner}:{resource}]",
                        f"New resources of one builder run: {why}; their ids exist only after the call.")
        acknowledge(machine, f"AwsSolutions-IAM5[Resource::{prefix}::image/*]",
                    "The launch template's AMI is resolved at deploy time from the EKS public SSM parameter of "
                    "the pinned release; its id is not known at synth.")
        acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken and ec2:DescribeVolumes have no resource-level permissions; pulls "
                    "are limited to the serving repositories in the same policy, and describing changes nothing.")
        acknowledge(role, instances,
                    "The builder ends itself: TerminateInstances only on instances carrying the builder role tag.")


def execution_finding(state_machine: sfn.IStateMachine) -> str:
    """cdk-nag's finding id for CodePipeline's grant to describe the state machine's executions."""
    logical_id = cdk.Stack.of(state_machine).resolve(state_machine.state_machine_arn)["Ref"]

    def part(index: int) -> str:
        return json.dumps({"Fn::Select": [index, {"Fn::Split": [":", {"Ref": logical_id}]}]}, separators=(",", ":"))

    return f"AwsSolutions-IAM5[Resource::arn:{part(1)}:states:{part(3)}:{part(4)}:execution:{part(6)}:*]"
