"""EdgeClusterStack: snapshot plus one group of targeted assertions per numbered point of the cluster issue."""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

import versions
from edge_config import load_config
from tests.conftest import normalize_template
from tests.k8s_schema import validate_k8s_object
from tests.test_edge_config import DEFAULT_CONTEXT
from tools.render_manifests import extract_helm_releases, extract_manifests

CONFIG = load_config(DEFAULT_CONTEXT)
DISCOVERY = "karpenter.sh/discovery"


@pytest.fixture(scope="module")
def template(templates) -> dict:
    return templates["EdgeClusterStack"]


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


def of_type(resources: dict, cfn_type: str) -> dict[str, dict]:
    return {lid: r for lid, r in resources.items() if r["Type"] == cfn_type}


def one(resources: dict, cfn_type: str) -> tuple[str, dict]:
    found = of_type(resources, cfn_type)
    assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
    return next(iter(found.items()))


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource["Properties"].get("Tags", [])}


def statements(resources: dict, policy_logical_prefix: str) -> list[dict]:
    out = []
    for lid, res in of_type(resources, "AWS::IAM::Policy").items():
        if lid.startswith(policy_logical_prefix):
            out.extend(res["Properties"]["PolicyDocument"]["Statement"])
    assert out, f"no IAM policy starting with {policy_logical_prefix}"
    return out


def test_snapshot(template, snapshot):
    assert normalize_template(template) == snapshot(extension_class=JSONSnapshotExtension)


# ---------------------------------------------------------------- 1. VPC


def test_vpc_has_region_public_private_subnets_and_nat(resources):
    subnets = of_type(resources, "AWS::EC2::Subnet")
    region = [s for s in subnets.values() if s["Properties"]["AvailabilityZone"] in CONFIG.region_azs]
    azs = {s["Properties"]["AvailabilityZone"] for s in region}
    assert len(azs) >= 2
    public = [s for s in region if s["Properties"].get("MapPublicIpOnLaunch")]
    private = [s for s in region if not s["Properties"].get("MapPublicIpOnLaunch")]
    assert {s["Properties"]["AvailabilityZone"] for s in public} == azs
    assert {s["Properties"]["AvailabilityZone"] for s in private} == azs
    assert of_type(resources, "AWS::EC2::NatGateway")
    nat_routes = [r for r in of_type(resources, "AWS::EC2::Route").values() if "NatGatewayId" in r["Properties"]]
    assert len(nat_routes) == len(private)


def test_each_local_zone_gets_a_public_subnet_routed_to_the_internet(resources):
    subnets = of_type(resources, "AWS::EC2::Subnet")
    routes = of_type(resources, "AWS::EC2::Route").values()
    assocs = of_type(resources, "AWS::EC2::SubnetRouteTableAssociation").values()
    for lz in CONFIG.local_zones:
        [(lid, subnet)] = [(k, s) for k, s in subnets.items() if s["Properties"]["AvailabilityZone"] == lz.name]
        assert subnet["Properties"]["CidrBlock"] == lz.subnet_cidr
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is True
        [table] = [a["Properties"]["RouteTableId"]["Ref"] for a in assocs if a["Properties"]["SubnetId"] == {"Ref": lid}]
        igw_routes = [r for r in routes if r["Properties"]["RouteTableId"] == {"Ref": table}
                      and "GatewayId" in r["Properties"]]
        assert [r["Properties"]["DestinationCidrBlock"] for r in igw_routes] == ["0.0.0.0/0"]


def test_no_overlapping_subnet_cidrs_and_model_matches_cdk(resources):
    subnets = of_type(resources, "AWS::EC2::Subnet").values()
    nets = [ipaddress.ip_network(s["Properties"]["CidrBlock"]) for s in subnets]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b), f"{a} overlaps {b}"
    modelled = set(CONFIG.region_subnets["public"] + CONFIG.region_subnets["private"])
    modelled |= {lz.subnet_cidr for lz in CONFIG.local_zones}
    assert {str(n) for n in nets} == modelled


def test_flow_logs_capture_all_vpc_traffic(resources):
    vpc_id, _ = one(resources, "AWS::EC2::VPC")
    _, flow_log = one(resources, "AWS::EC2::FlowLog")
    assert flow_log["Properties"]["ResourceId"] == {"Ref": vpc_id}
    assert flow_log["Properties"]["ResourceType"] == "VPC"
    assert flow_log["Properties"]["TrafficType"] == "ALL"


def test_discovery_tag_on_exactly_the_karpenter_subnets_and_one_security_group(resources):
    tagged = {lid: r["Type"] for lid, r in resources.items() if DISCOVERY in tags(r)}
    subnets = of_type(resources, "AWS::EC2::Subnet")
    expected_subnets = {lid for lid, s in subnets.items() if s["Properties"].get("MapPublicIpOnLaunch")}
    assert {lid for lid, t in tagged.items() if t == "AWS::EC2::Subnet"} == expected_subnets
    groups = [lid for lid, t in tagged.items() if t == "AWS::EC2::SecurityGroup"]
    assert len(groups) == 1 and groups[0].startswith("KarpenterNodeSecurityGroup")
    assert set(tagged.values()) == {"AWS::EC2::Subnet", "AWS::EC2::SecurityGroup"}
    assert all(tags(resources[lid])[DISCOVERY] == CONFIG.cluster_name for lid in tagged)


# ---------------------------------------------------------------- 2. EKS


def test_cluster_version_logging_auth_and_encryption(resources):
    key_id, key = one(resources, "AWS::KMS::Key")
    _, cluster = one(resources, "AWS::EKS::Cluster")
    props = cluster["Properties"]
    assert props["Version"] == versions.KUBERNETES_VERSION == "1.35"
    assert props["AccessConfig"]["AuthenticationMode"] == "API"
    assert {t["Type"] for t in props["Logging"]["ClusterLogging"]["EnabledTypes"]} == {
        "api", "audit", "authenticator", "controllerManager", "scheduler"}
    assert props["EncryptionConfig"] == [{"Provider": {"KeyArn": {"Fn::GetAtt": [key_id, "Arn"]}},
                                          "Resources": ["secrets"]}]
    assert key["Properties"]["EnableKeyRotation"] is True


def test_control_plane_enis_only_in_parent_region_subnets(resources):
    _, cluster = one(resources, "AWS::EKS::Cluster")
    subnets = of_type(resources, "AWS::EC2::Subnet")
    for ref in cluster["Properties"]["ResourcesVpcConfig"]["SubnetIds"]:
        subnet = subnets[ref["Ref"]]["Properties"]
        assert subnet["AvailabilityZone"] in CONFIG.region_azs
        assert not subnet.get("MapPublicIpOnLaunch")


def test_public_endpoint_restricted_to_configured_cidrs(resources):
    _, cluster = one(resources, "AWS::EKS::Cluster")
    vpc_config = cluster["Properties"]["ResourcesVpcConfig"]
    assert vpc_config["EndpointPublicAccess"] is True
    assert vpc_config["EndpointPrivateAccess"] is True
    assert vpc_config["PublicAccessCidrs"] == list(CONFIG.cluster_endpoint_cidrs)
    assert "0.0.0.0/0" not in vpc_config["PublicAccessCidrs"]


def test_kubectl_handler_uses_the_private_endpoint_from_the_vpc(resources):
    handlers = [r for lid, r in of_type(resources, "AWS::Lambda::Function").items()
                if lid.startswith("EksClusterKubectlProviderHandler")]
    assert len(handlers) == 1
    assert handlers[0]["Properties"]["VpcConfig"]["SubnetIds"]


# ---------------------------------------------------------------- 3. system node group


def test_system_node_group_is_small_graviton_in_region(resources):
    _, nodegroup = one(resources, "AWS::EKS::Nodegroup")
    props = nodegroup["Properties"]
    assert props["AmiType"] == "AL2023_ARM_64_STANDARD"
    assert all(t.split(".")[0].endswith("g") for t in props["InstanceTypes"])
    assert props["ScalingConfig"] == {"MinSize": 2, "DesiredSize": 2, "MaxSize": 3}
    assert props["Labels"] == {"edge-diffusion.aws/node-role": "system"}
    subnets = of_type(resources, "AWS::EC2::Subnet")
    assert all(subnets[s["Ref"]]["Properties"]["AvailabilityZone"] in CONFIG.region_azs for s in props["Subnets"])
    _, template = one(resources, "AWS::EC2::LaunchTemplate")
    data = template["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True


def test_karpenter_never_runs_on_nodes_it_manages(template):
    values = extract_helm_releases(template)["Karpenter"]["values"]
    assert values["nodeSelector"]["edge-diffusion.aws/node-role"] == "system"
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"} in terms[0]["matchExpressions"]


# ---------------------------------------------------------------- 4. Karpenter


def test_karpenter_oci_chart_pinned_to_1_14(template):
    release = extract_helm_releases(template)["Karpenter"]
    assert release["repository"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert release["version"] == versions.KARPENTER_VERSION
    assert versions.KARPENTER_VERSION.startswith("1.14.")
    assert release["namespace"] == "kube-system"
    settings = release["values"]["settings"]
    assert settings["clusterName"] == CONFIG.cluster_name
    assert settings["interruptionQueue"].startswith("<GetAtt:KarpenterInterruptionQueue")


def test_controller_role_via_pod_identity(resources):
    associations = [r["Properties"] for r in of_type(resources, "AWS::EKS::PodIdentityAssociation").values()
                    if r["Properties"]["ServiceAccount"] == "karpenter"]
    assert len(associations) == 1 and associations[0]["Namespace"] == "kube-system"
    role = resources[associations[0]["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]


def test_node_role_has_ec2_linux_access_entry(resources):
    entries = [r["Properties"] for r in of_type(resources, "AWS::EKS::AccessEntry").values()
               if r["Properties"].get("Type") == "EC2_LINUX"]
    assert len(entries) == 1
    assert entries[0]["PrincipalArn"]["Fn::GetAtt"][0].startswith("KarpenterNodeRole")


def test_interruption_queue_sse_retention_and_tls_only(resources):
    queue_id, queue = one(resources, "AWS::SQS::Queue")
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 300
    policies = [p for p in of_type(resources, "AWS::SQS::QueuePolicy").values()
                if {"Ref": queue_id} in p["Properties"]["Queues"]]
    stmts = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in stmts if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    allow = [s for s in stmts if s["Effect"] == "Allow"]
    assert all(s["Principal"] == {"Service": "events.amazonaws.com"} for s in allow)


def test_eventbridge_rules_for_every_interruption_source(resources):
    queue_id, _ = one(resources, "AWS::SQS::Queue")
    patterns = set()
    for rule in of_type(resources, "AWS::Events::Rule").values():
        pattern = rule["Properties"]["EventPattern"]
        assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        patterns.add((pattern["source"][0], pattern["detail-type"][0]))
    assert patterns == {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
        ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
        ("aws.ec2", "EC2 Instance State-change Notification"),
        ("aws.health", "AWS Health Event"),
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
    }


def _as_list(value):
    return value if isinstance(value, list) else [value]


def test_controller_iam_is_scoped_like_karpenters_reference(resources):
    stmts = statements(resources, "Karpenter")
    by_sid = {s["Sid"]: s for s in stmts}
    owned_key = f"aws:ResourceTag/kubernetes.io/cluster/{CONFIG.cluster_name}"
    # Only read-only actions are granted on "*".
    for s in stmts:
        if s["Resource"] == "*":
            assert all(a.split(":")[1].startswith(("Describe", "Get", "List")) for a in _as_list(s["Action"])), s
    # Launch, tag and delete only what carries this cluster's ownership tags.
    assert by_sid["AllowScopedDeletion"]["Condition"]["StringEquals"] == {owned_key: "owned"}
    assert by_sid["AllowScopedEC2InstanceActionsWithTags"]["Condition"]["StringEquals"][
        f"aws:RequestTag/kubernetes.io/cluster/{CONFIG.cluster_name}"] == "owned"
    assert by_sid["AllowRegionalReadActions"]["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}
    pass_role = by_sid["AllowPassingInstanceRole"]
    assert pass_role["Resource"]["Fn::GetAtt"][0].startswith("KarpenterNodeRole")
    queue_id, _ = one(resources, "AWS::SQS::Queue")
    assert by_sid["AllowInterruptionQueueActions"]["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert by_sid["AllowAPIServerEndpointDiscovery"]["Resource"]["Fn::Join"][1][-1].endswith(
        f":cluster/{CONFIG.cluster_name}")


def test_karpenter_security_group_rules(resources):
    ingress = of_type(resources, "AWS::EC2::SecurityGroupIngress").values()
    node_sg = [lid for lid in of_type(resources, "AWS::EC2::SecurityGroup") if lid.startswith("KarpenterNode")][0]
    from_cluster = [r["Properties"] for r in ingress
                    if r["Properties"]["GroupId"] == {"Fn::GetAtt": [node_sg, "GroupId"]}
                    and "SourceSecurityGroupId" in r["Properties"]]
    assert from_cluster, "Karpenter nodes must accept the control plane and each other"
    assert not any(r["Properties"].get("CidrIp") == "0.0.0.0/0" for r in ingress)


# ---------------------------------------------------------------- 5. NodePools attached as a cdk8s chart


def test_nodepools_chart_applied_after_karpenter(resources, template):
    groups = extract_manifests(template)
    kinds = {(o["apiVersion"], o["kind"]) for o in groups["NodePools"]}
    assert kinds == {("karpenter.k8s.aws/v1", "EC2NodeClass"), ("karpenter.sh/v1", "NodePool")}
    [nodepools_id] = [lid for lid in of_type(resources, "Custom::AWSCDK-EKS-KubernetesResource")
                      if lid.startswith("EksClusterNodePools")]
    assert any(dep.startswith("EksClusterchartKarpenter") for dep in resources[nodepools_id]["DependsOn"])
    for obj in groups["NodePools"]:
        if obj["kind"] == "EC2NodeClass":
            assert obj["spec"]["role"].startswith("<Ref:KarpenterNodeRole")


# ---------------------------------------------------------------- 6. add-ons


def test_managed_addons_pinned(resources):
    addons = {r["Properties"]["AddonName"]: r["Properties"] for r in of_type(resources, "AWS::EKS::Addon").values()}
    assert set(addons) == set(versions.ADDON_VERSIONS)
    for name, props in addons.items():
        assert props["AddonVersion"] == versions.ADDON_VERSIONS[name]
    [association] = addons["amazon-cloudwatch-observability"]["PodIdentityAssociations"]
    assert association["ServiceAccount"] == "cloudwatch-agent"


def test_vpc_cni_enforces_network_policies(resources):
    (cni,) = [a for a in of_type(resources, "AWS::EKS::Addon").values() if a["Properties"]["AddonName"] == "vpc-cni"]
    assert json.loads(cni["Properties"]["ConfigurationValues"]) == {"enableNetworkPolicy": "true"}


def test_networking_addons_precede_nodes_and_coredns_follows(resources):
    addon_ids = {r["Properties"]["AddonName"]: lid for lid, r in of_type(resources, "AWS::EKS::Addon").items()}
    nodegroup_id, nodegroup = one(resources, "AWS::EKS::Nodegroup")
    for name in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert addon_ids[name] in nodegroup["DependsOn"]
    assert nodegroup_id in resources[addon_ids["coredns"]]["DependsOn"]


def test_helm_charts_pinned(template):
    releases = extract_helm_releases(template)
    expected = {
        "MetricsServer": versions.METRICS_SERVER_CHART,
        "NvidiaDevicePlugin": versions.NVIDIA_DEVICE_PLUGIN_CHART,
        "NeuronDevicePlugin": versions.NEURON_CHART,
        "Keda": versions.KEDA_CHART,
    }
    for name, (repository, chart, version) in expected.items():
        release = releases[name]
        assert (release["repository"], release["chart"], release["version"]) == (repository, chart, version)
    assert versions.VOLCANO_CHART[2].startswith("1.15.")
    assert versions.KEDA_CHART[2].startswith("2.20.")
    assert releases["NvidiaDevicePlugin"]["values"]["tolerations"][0]["key"] == "nvidia.com/gpu"


# ---------------------------------------------------------------- Kubernetes objects


def test_every_applied_kubernetes_object_validates(templates):
    checked = 0
    for stack, template in templates.items():
        for group, objects in extract_manifests(template).items():
            assert objects, f"{stack}.{group} applies no objects"
            for obj in objects:
                validate_k8s_object(obj)
                checked += 1
    cluster_groups = extract_manifests(templates["EdgeClusterStack"])
    assert {"NodePools"} <= set(cluster_groups)
    assert checked >= sum(len(v) for v in cluster_groups.values())


def test_render_manifests_cli_writes_reviewable_yaml(cloud_assembly, tmp_path):
    import yaml

    from tools.render_manifests import main

    assert main(["--assembly", cloud_assembly.directory, "--out", str(tmp_path)]) == 0
    nodepools = list(yaml.safe_load_all((tmp_path / "EdgeClusterStack.NodePools.yaml").read_text()))
    assert {o["kind"] for o in nodepools} == {"EC2NodeClass", "NodePool"}
    karpenter = yaml.safe_load((tmp_path / "helm" / "EdgeClusterStack.Karpenter.values.yaml").read_text())
    assert karpenter["version"] == versions.KARPENTER_VERSION
    assert not any("Token[" in p.read_text() or '"Ref"' in p.read_text() for p in tmp_path.rglob("*.yaml"))


# ---------------------------------------------------------------- 7. cdk-nag


def test_cdk_nag_fails_synth_on_an_unacknowledged_finding(tmp_path):
    """The assembly fixture synthesized cleanly; the same app with one unreasoned finding must not."""
    from aws_cdk import aws_sqs as sqs

    from app import build_app

    # An admin principal, so the only report entry besides the planted finding (the no-admin warning) is absent.
    app = build_app({"edge.admin_principal_arn": "arn:aws:iam::123456789012:role/Admin"}, outdir=str(tmp_path))
    stack = app.node.find_child("EdgeClusterStack")
    sqs.Queue(stack, "UnacknowledgedQueue", enforce_ssl=True)
    with pytest.raises(RuntimeError, match="ValidationFailed") as info:
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {(v["ruleName"], c["constructPath"]) for r in report["pluginReports"] for v in r["violations"]
             for c in v["violatingConstructs"]}
    assert ("AwsSolutions-SQS3", "EdgeClusterStack/UnacknowledgedQueue/Resource") in rules
    assert all(path.startswith("EdgeClusterStack/UnacknowledgedQueue") for _, path in rules), (info, rules)


def test_acknowledgements_need_a_real_reason():
    from aws_cdk import App

    from edge_constructs.nag import acknowledge

    with pytest.raises(ValueError, match="specific reason"):
        acknowledge(App(), "AwsSolutions-SQS3", "not needed")


def test_synth_needs_no_context_lookups(cloud_assembly):
    manifest = json.loads((Path(cloud_assembly.directory) / "manifest.json").read_text())
    assert not manifest.get("missing"), manifest.get("missing")
    environments = {stack.environment.region for stack in cloud_assembly.stacks}
    assert environments == {CONFIG.region}


# ---------------------------------------------------------------- tools/render_manifests unit behaviour


def test_intrinsics_render_as_readable_strings():
    from tools.render_manifests import render_intrinsics

    assert render_intrinsics({"Ref": "NodeRole1234ABCD"}) == "<Ref:NodeRole1234ABCD>"
    assert render_intrinsics({"Ref": "AWS::Region"}) == "<AWS::Region>"
    assert render_intrinsics({"Fn::GetAtt": ["Queue", "QueueName"]}) == "<GetAtt:Queue.QueueName>"
    assert render_intrinsics({"Fn::GetAtt": "Queue.Arn"}) == "<GetAtt:Queue.Arn>"
    assert render_intrinsics({"Fn::Join": ["-", ["a", {"Ref": "B"}]]}) == "a-<Ref:B>"
    assert render_intrinsics({"Fn::Sub": "arn:${AWS::Partition}:x:${Bucket.Arn}:${Name}"}) == (
        "arn:<AWS::Partition>:x:<GetAtt:Bucket.Arn>:<Ref:Name>")
    assert render_intrinsics({"Fn::Sub": ["${X}-y", {"X": {"Ref": "Z"}}]}) == "<Ref:Z>-y"
    assert render_intrinsics({"Fn::Select": [1, ["a", "b"]]}) == "b"
    assert render_intrinsics({"plain": {"nested": [1, {"Ref": "R"}]}}) == {"plain": {"nested": [1, "<Ref:R>"]}}


def test_extract_manifests_reads_manifests_and_helm_embedded_objects():
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"role": "R"}}
    template = {"Resources": {
        "EksCluster12345678": {"Type": "AWS::EKS::Cluster", "Properties": {}},
        "EksClustermanifestThingsABCDEF12": {
            "Type": "Custom::AWSCDK-EKS-KubernetesResource",
            "Properties": {"Manifest": {"Fn::Join": ["", [json.dumps([config_map])[:-3], ', "role2": "',
                                                          {"Ref": "Role"}, '"}}]']]}},
        },
        "EksClusterchartToolDEADBEEF": {
            "Type": "Custom::AWSCDK-EKS-HelmChart",
            "Properties": {"Chart": "tool", "Release": "tool", "Version": "1.0.0", "Namespace": "t",
                           "Values": json.dumps({"replicas": 2, "extraObjects": [config_map]})},
        },
    }}
    groups = extract_manifests(template)
    assert groups["Things"][0]["data"] == {"role": "R", "role2": "<Ref:Role>"}
    assert groups["Tool-values"] == [config_map]
    assert extract_helm_releases(template)["Tool"]["values"]["replicas"] == 2


def test_extract_manifests_rejects_a_manifest_that_is_not_json():
    from tools.render_manifests import RenderError

    template = {"Resources": {"BadABCDEF12": {"Type": "Custom::AWSCDK-EKS-KubernetesResource",
                                              "Properties": {"Manifest": "{not json"}}}}
    with pytest.raises(RenderError, match="BadABCDEF12.Manifest"):
        extract_manifests(template)


def test_optional_local_zone_private_subnet_routes_through_the_region_nat():
    """Network construct alone (no EKS), so a second layout costs no full synth."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from edge_constructs.edge_network import EdgeNetwork

    context = json.loads(json.dumps(DEFAULT_CONTEXT))
    context["edge.local_zones.0.private_subnet_cidr"] = "10.40.136.0/24"
    cfg = load_config(context)
    stack = cdk.Stack(cdk.App(), "NetworkOnly", env=cdk.Environment(region=cfg.region))
    network = EdgeNetwork(stack, "Network", config=cfg)
    subnets = Template.from_stack(stack).find_resources("AWS::EC2::Subnet")
    [(private_id, private)] = [(k, s) for k, s in subnets.items()
                               if s["Properties"]["CidrBlock"] == "10.40.136.0/24"]
    assert private["Properties"]["AvailabilityZone"] == "us-west-2-lax-1a"
    assert not private["Properties"].get("MapPublicIpOnLaunch")
    assert DISCOVERY not in tags(private), "Karpenter must only use the public Local Zone subnet"
    routes = Template.from_stack(stack).find_resources("AWS::EC2::Route")
    table = network.local_zone_private_subnets["us-west-2-lax-1a"].route_table.route_table_id
    nat_routes = [r for r in routes.values() if "NatGatewayId" in r["Properties"]
                  and r["Properties"]["RouteTableId"] == stack.resolve(table)]
    assert len(nat_routes) == 1 and nat_routes[0]["Properties"]["DestinationCidrBlock"] == "0.0.0.0/0"


def test_local_zone_private_subnet_overlap_is_a_config_error():
    from edge_config import ConfigError

    context = json.loads(json.dumps(DEFAULT_CONTEXT))
    context["edge.local_zones.0.private_subnet_cidr"] = "10.40.129.0/24"
    with pytest.raises(ConfigError, match=r"^edge\.local_zones\[0\]\.private_subnet_cidr: 10\.40\.129\.0/24 overlaps"):
        load_config(context)
