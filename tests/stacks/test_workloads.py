"""The inference workloads inside the synthesized EdgeClusterStack: secret, Pod Identity, NodePort rule, chart,
and checkov's Kubernetes checks on the rendered manifests."""
from __future__ import annotations

import ipaddress
import json
import subprocess

import aws_cdk as cdk
from aws_cdk import assertions
import pytest
import yaml
from aws_cdk import aws_ec2 as ec2

import edge_config
from charts import inference
from charts.nodepools import DISCOVERY_TAG
from edge_constructs.cluster_addons import KEDA_NAMESPACE
from edge_constructs.inference_node_port import InferenceNodePortAccess
from edge_constructs.inference_workloads import SERVICE_ACCOUNT_NAME, pipeline_image_uri
from tests.conftest import REPO_ROOT
from tests.k8s_schema import validate_k8s_object
from tools.render_manifests import extract_helm_releases, extract_manifests, render_intrinsics

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
CHECKOV_INSTALL = "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30"
CHART_GROUP = "InferenceChart"


@pytest.fixture(scope="module")
def cfg() -> edge_config.EdgeConfig:
    return edge_config.load_config(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


@pytest.fixture(scope="module")
def template(templates) -> dict:
    return templates["EdgeClusterStack"]


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


@pytest.fixture(scope="module")
def manifests(template) -> dict[str, list[dict]]:
    return extract_manifests(template)


def _of_type(resources: dict, type_: str) -> dict[str, dict]:
    return {lid: r for lid, r in resources.items() if r["Type"] == type_}


def _ref(value) -> str:
    """The logical id a Ref / GetAtt points at."""
    if "Ref" in value:
        return value["Ref"]
    return value["Fn::GetAtt"][0]


def _secret(resources: dict) -> tuple[str, dict]:
    secrets = {lid: r for lid, r in _of_type(resources, "AWS::SecretsManager::Secret").items()
               if r["Properties"].get("Name", "").endswith("/inference-api-key")}
    assert len(secrets) == 1, sorted(secrets)
    return next(iter(secrets.items()))


def _association(resources: dict, cfg) -> dict:
    associations = [r for r in _of_type(resources, "AWS::EKS::PodIdentityAssociation").values()
                    if r["Properties"]["Namespace"] == cfg.workloads.namespace]
    assert len(associations) == 1
    return associations[0]


# ---------------------------------------------------------------- API key


def test_api_key_is_generated_by_secrets_manager(resources, cfg):
    _, secret = _secret(resources)
    props = secret["Properties"]
    assert props["Name"] == f"{cfg.cluster_name}/inference-api-key"
    # Generated at deploy time: the template holds the rules, never a value.
    assert "SecretString" not in props
    assert props["GenerateSecretString"]["PasswordLength"] >= 32
    assert props["GenerateSecretString"]["ExcludePunctuation"] is True
    assert secret["DeletionPolicy"] == "Retain"


# ---------------------------------------------------------------- Pod Identity


def test_pod_identity_association_binds_the_inference_service_account(resources, cfg):
    props = _association(resources, cfg)["Properties"]
    assert props["ServiceAccount"] == SERVICE_ACCOUNT_NAME
    assert _ref(props["ClusterName"]) in _of_type(resources, "AWS::EKS::Cluster")


def _role_statements(resources: dict, role_id: str) -> list[dict]:
    return [
        statement
        for policy in _of_type(resources, "AWS::IAM::Policy").values()
        if any(_ref(r) == role_id for r in policy["Properties"]["Roles"])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _cache_bucket(resources: dict) -> str:
    buckets = [lid for lid in _of_type(resources, "AWS::S3::Bucket") if lid.startswith("CompileCache")]
    assert len(buckets) == 1, buckets
    return buckets[0]


def test_pod_identity_role_reads_the_secret_and_only_the_compile_cache_prefix(resources, cfg):
    secret_id, _ = _secret(resources)
    bucket_id = _cache_bucket(resources)
    role_id = _ref(_association(resources, cfg)["Properties"]["RoleArn"])
    role = resources[role_id]["Properties"]

    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    conditions = trust["Condition"]["StringEquals"]
    assert conditions["aws:RequestTag/kubernetes-namespace"] == cfg.workloads.namespace
    assert conditions["aws:RequestTag/kubernetes-service-account"] == SERVICE_ACCOUNT_NAME
    assert _ref(conditions["aws:RequestTag/eks-cluster-name"]) in _of_type(resources, "AWS::EKS::Cluster")
    assert not role.get("ManagedPolicyArns") and not role.get("Policies")

    prefix = cfg.workloads.cuda.compile_cache.s3_prefix
    assert prefix == "compile-cache/"
    bucket_arn = {"Fn::GetAtt": [bucket_id, "Arn"]}
    assert _role_statements(resources, role_id) == [
        {"Action": "secretsmanager:GetSecretValue", "Effect": "Allow", "Resource": {"Ref": secret_id}},
        # Objects below the prefix only: get and put, no delete, nothing else in the bucket.
        {"Sid": "CompileCacheObjects", "Action": ["s3:GetObject", "s3:PutObject"], "Effect": "Allow",
         "Resource": {"Fn::Join": ["", [bucket_arn, "/compile-cache/*"]]}},
        # Listing only within the prefix (a missing key is then a 404 miss, not a 403).
        {"Sid": "CompileCacheListPrefix", "Action": "s3:ListBucket", "Effect": "Allow", "Resource": bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": ["compile-cache/*"]}}},
    ]
    # No other policy in the stack grants anything on the cache bucket to a principal other than the pods' role
    # (the bucket policy only denies insecure transport and lets CDK's auto-delete handler empty it on teardown).
    for lid, policy in _of_type(resources, "AWS::IAM::Policy").items():
        if not any(_ref(r) == role_id for r in policy["Properties"]["Roles"]):
            assert bucket_id not in json.dumps(policy), lid


def test_compile_cache_bucket_is_private_encrypted_tls_only_and_expiring(resources, cfg):
    bucket_id = _cache_bucket(resources)
    bucket = resources[bucket_id]
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert "VersioningConfiguration" not in props
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and "Prefix" not in rule and "Filter" not in rule
    assert rule["ExpirationInDays"] == cfg.workloads.cuda.compile_cache.expiration_days == 30
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # Disposable: emptied and deleted with the stack (see "Teardown and redeploy" in docs/cluster.md).
    assert bucket["DeletionPolicy"] == "Delete"
    (policy,) = [p for p in _of_type(resources, "AWS::S3::BucketPolicy").values()
                 if _ref(p["Properties"]["Bucket"]) == bucket_id]
    denies = [st for st in policy["Properties"]["PolicyDocument"]["Statement"] if st["Effect"] == "Deny"]
    assert {json.dumps(st["Condition"], sort_keys=True) for st in denies} == {
        json.dumps({"Bool": {"aws:SecureTransport": "false"}}), json.dumps({"NumericLessThan": {"s3:TlsVersion": 1.2}},
                                                                          sort_keys=True)}
    allows = [st for st in policy["Properties"]["PolicyDocument"]["Statement"] if st["Effect"] == "Allow"]
    assert [_ref(st["Principal"]["AWS"]) for st in allows] == ["CustomS3AutoDeleteObjectsCustomResourceProviderRole3B1BD092"]


def test_pods_go_before_the_cache_bucket_is_emptied(resources):
    bucket_id = _cache_bucket(resources)
    (emptier,) = [lid for lid, r in _of_type(resources, "Custom::S3AutoDeleteObjects").items()
                  if _ref(r["Properties"]["BucketName"]) == bucket_id]
    (chart,) = [r for lid, r in _of_type(resources, "Custom::AWSCDK-EKS-KubernetesResource").items()
                if "inference-nvidia" in json.dumps(r["Properties"]["Manifest"])
                and "InferenceChart" in lid]
    # The manifest depends on the emptier, so a delete removes the pods first and then empties the bucket.
    assert {emptier, bucket_id} <= set(chart["DependsOn"])


def test_nvidia_pods_get_the_cache_bucket_and_neuron_pods_nothing(manifests, resources, cfg):
    bucket_id = _cache_bucket(resources)
    deployments = {o["metadata"]["name"]: o for o in manifests[CHART_GROUP] if o["kind"] == "Deployment"}
    env = {name: {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
           for name, d in deployments.items()}
    assert env["inference-nvidia"]["SERVING_COMPILE_CACHE_S3"] == f"s3://<Ref:{bucket_id}>/compile-cache/"
    assert env["inference-nvidia"]["SERVING_COMPILE"] == "true"
    assert not any(k.startswith("SERVING_COMPILE") or k in ("SERVING_WARMUP_SIZES", "SERVING_MAX_IMAGES")
                   for k in env["inference-neuron"])


def test_without_the_s3_cache_there_is_no_bucket_and_no_s3_grant(cluster_template, cfg):
    for overrides in ({"workloads__cuda__compile_cache__s3": False}, {"workloads__cuda__compile": False}):
        resources = cluster_template(**overrides)["Resources"]
        assert not _of_type(resources, "AWS::S3::Bucket"), overrides
        role_id = _ref(_association(resources, cfg)["Properties"]["RoleArn"])
        assert [st["Action"] for st in _role_statements(resources, role_id)] == ["secretsmanager:GetSecretValue"]
        (chart,) = [r for lid, r in _of_type(resources, "Custom::AWSCDK-EKS-KubernetesResource").items()
                    if "InferenceChart" in lid]
        assert "SERVING_COMPILE_CACHE_S3" not in json.dumps(chart["Properties"]["Manifest"])


def test_pods_get_the_secret_arn_and_the_service_account(manifests, resources, cfg):
    secret_id, _ = _secret(resources)
    objects = manifests[CHART_GROUP]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == SERVICE_ACCOUNT_NAME
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
        assert env["SERVING_API_KEY_SECRET_ARN"] == f"<Ref:{secret_id}>"
        assert env["AWS_REGION"] == cfg.region
        # The key reaches the server only through Secrets Manager, never as a value or a file in the manifest.
        assert not {"SERVING_API_KEY_FILE", "SERVING_API_KEY"} & set(env)


# ---------------------------------------------------------------- NodePort security-group rule


def _node_port_rules(resources: dict, port: int) -> list[dict]:
    """Every ingress rule in the template whose port range includes `port` (standalone or inline)."""
    rules = [r["Properties"] for r in _of_type(resources, "AWS::EC2::SecurityGroupIngress").values()]
    for lid, group in _of_type(resources, "AWS::EC2::SecurityGroup").items():
        rules += [{**rule, "GroupId": {"Fn::GetAtt": [lid, "GroupId"]}}
                  for rule in group["Properties"].get("SecurityGroupIngress", [])]

    def covers(rule: dict) -> bool:
        if str(rule.get("IpProtocol")) in ("-1", "all"):
            return True
        return rule.get("FromPort", 0) <= port <= rule.get("ToPort", 65535)

    return [rule for rule in rules if covers(rule)]


def test_node_port_rule_covers_exactly_the_node_port_from_allowed_cidrs(resources, cfg, template):
    port = cfg.workloads.node_port
    external = [r for r in _node_port_rules(resources, port) if "CidrIp" in r or "CidrIpv6" in r]
    assert sorted(r["CidrIp"] for r in external) == sorted(cfg.allowed_client_cidrs)
    node_group_id = _ref(template["Outputs"]["NodeSecurityGroupId"]["Value"])
    for rule in external:
        assert rule["IpProtocol"] == "tcp"
        assert rule["FromPort"] == rule["ToPort"] == port
        assert _ref(rule["GroupId"]) == node_group_id
        assert ipaddress.ip_network(rule["CidrIp"]).prefixlen > 0


def test_node_port_rule_is_on_the_group_karpenter_nodes_get(resources, template, manifests, cfg):
    node_group_id = _ref(template["Outputs"]["NodeSecurityGroupId"]["Value"])
    tags = {t["Key"]: t["Value"] for t in resources[node_group_id]["Properties"].get("Tags", [])}
    assert tags[DISCOVERY_TAG] == cfg.cluster_name
    node_classes = [o for objects in manifests.values() for o in objects if o["kind"] == "EC2NodeClass"]
    assert node_classes
    for node_class in node_classes:
        assert node_class["spec"]["securityGroupSelectorTerms"] == [{"tags": {DISCOVERY_TAG: cfg.cluster_name}}]
    # No other security group carries the discovery tag, so the selector resolves to this group alone.
    tagged = [lid for lid, r in _of_type(resources, "AWS::EC2::SecurityGroup").items()
              if any(t["Key"] == DISCOVERY_TAG for t in r["Properties"].get("Tags", []))]
    assert tagged == [node_group_id]


def test_no_public_node_port_unless_opted_in(resources, cfg):
    assert cfg.allow_public_nodeport is False
    for rule in _node_port_rules(resources, cfg.workloads.node_port):
        assert rule.get("CidrIp") != "0.0.0.0/0"
        assert rule.get("CidrIpv6") != "::/0"


def test_metrics_port_is_not_opened_to_clients(resources, cfg):
    vpc = ipaddress.ip_network(cfg.vpc_cidr)
    for rule in _node_port_rules(resources, inference.METRICS_PORT):
        if "CidrIp" in rule:
            # Only in-VPC sources (if any) reach 9090; client networks get the NodePort alone.
            assert ipaddress.ip_network(rule["CidrIp"]).subnet_of(vpc), rule


def test_keda_on_system_nodes_reaches_the_metrics_port(resources, template):
    """The KEDA operator runs on the system node group (cluster security group) and polls pods on 9090."""
    node_group_id = _ref(template["Outputs"]["NodeSecurityGroupId"]["Value"])
    cluster_sg = {"Fn::GetAtt": [next(iter(_of_type(resources, "AWS::EKS::Cluster"))), "ClusterSecurityGroupId"]}
    allowed = [rule for rule in _node_port_rules(resources, inference.METRICS_PORT)
               if _ref(rule["GroupId"]) == node_group_id and rule.get("SourceSecurityGroupId") == cluster_sg]
    assert allowed


def _small_stack() -> tuple[cdk.Stack, ec2.SecurityGroup]:
    stack = cdk.Stack(cdk.App(), "Small", env=cdk.Environment(account="111122223333", region="us-west-2"))
    vpc = ec2.Vpc(stack, "Vpc", max_azs=1, subnet_configuration=[
        ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)], nat_gateways=0)
    return stack, ec2.SecurityGroup(stack, "Nodes", vpc=vpc)


def test_public_node_port_needs_the_explicit_opt_in():
    stack, group = _small_stack()
    with pytest.raises(ValueError, match=r"edge\.allowed_client_cidrs\[1\].*allow_public_nodeport"):
        InferenceNodePortAccess(stack, "Refused", security_group=group, node_port=30080,
                                client_cidrs=["198.51.100.0/24", "0.0.0.0/0"], allow_public=False)


def test_public_node_port_when_opted_in_is_still_one_port():
    stack, group = _small_stack()
    InferenceNodePortAccess(stack, "Public", security_group=group, node_port=31000,
                            client_cidrs=["0.0.0.0/0"], allow_public=True)
    rules = _of_type(assertions.Template.from_stack(stack).to_json()["Resources"],
                     "AWS::EC2::SecurityGroupIngress")
    assert [(r["Properties"]["CidrIp"], r["Properties"]["FromPort"], r["Properties"]["ToPort"])
            for r in rules.values()] == [("0.0.0.0/0", 31000, 31000)]


@pytest.mark.parametrize(
    ("image_tag", "suffix"),
    [("v1.2.0", "edge-diffusion-neuron:v1.2.0"), ("sha256:" + "b" * 64, "edge-diffusion-neuron@sha256:" + "b" * 64)],
)
def test_image_uri_by_tag_or_digest(image_tag, suffix):
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context["edge.workloads.image_tag"] = image_tag
    config = edge_config.load_config(context)
    stack, _ = _small_stack()
    uri = stack.resolve(pipeline_image_uri(stack, config, "neuron"))
    rendered = render_intrinsics(uri)
    assert rendered == f"111122223333.dkr.ecr.us-west-2.<AWS::URLSuffix>/{suffix}"


# ---------------------------------------------------------------- chart attachment


def test_chart_is_attached_after_keda_and_pod_identity(resources, cfg):
    def applies_inference(resource: dict) -> bool:
        objects = json.loads(render_intrinsics(resource["Properties"]["Manifest"]))
        return any(o["kind"] == "Deployment" and o["metadata"]["name"].startswith("inference-") for o in objects)

    charts = {lid: r for lid, r in _of_type(resources, "Custom::AWSCDK-EKS-KubernetesResource").items()
              if applies_inference(r)}
    assert len(charts) == 1
    (chart,) = charts.values()
    depends = set(chart.get("DependsOn", []))
    association_ids = {lid for lid, r in _of_type(resources, "AWS::EKS::PodIdentityAssociation").items()
                       if r["Properties"]["Namespace"] == cfg.workloads.namespace}
    assert association_ids <= depends
    keda = [lid for lid, r in _of_type(resources, "Custom::AWSCDK-EKS-HelmChart").items()
            if r["Properties"].get("Chart") == "keda"]
    assert len(keda) == 1 and keda[0] in depends


def test_scaled_objects_poll_from_the_keda_namespace(template, manifests):
    keda = [r for r in extract_helm_releases(template).values() if r["chart"] == "keda"]
    assert [r["namespace"] for r in keda] == [KEDA_NAMESPACE]
    (policy,) = [o for o in manifests[CHART_GROUP] if o["kind"] == "NetworkPolicy"]
    metrics_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == inference.METRICS_PORT)
    assert metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": KEDA_NAMESPACE}


def test_rendered_chart_objects_validate_and_use_the_pipeline_images(manifests, cfg):
    objects = manifests[CHART_GROUP]
    for obj in objects:
        validate_k8s_object(obj)
    images = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
              for d in objects if d["kind"] == "Deployment"}
    flavors = {"nvidia": "cuda", "neuron": "neuron"}
    assert set(images) == {inference.deployment_name(a) for a in cfg.accelerators}
    for accelerator in cfg.accelerators:
        repository = cfg.pipeline.repository_name(flavors[accelerator])
        assert images[inference.deployment_name(accelerator)] == (
            f"<AWS::AccountId>.dkr.ecr.{cfg.region}.<AWS::URLSuffix>/{repository}:{cfg.workloads.image_tag}"
        )


# ---------------------------------------------------------------- checkov


def test_checkov_kubernetes_checks_pass_on_rendered_manifests(manifests, tmp_path):
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}; run `make setup` (or: {CHECKOV_INSTALL})")
    for group, objects in manifests.items():
        (tmp_path / f"{group}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    # --skip-download: no calls to the Prisma Cloud API (there is no network here, and the checks are local).
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(tmp_path), "--framework", "kubernetes", "--output", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.stdout.strip(), f"checkov produced no report (rc {result.returncode}): {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert all(r["check_type"] == "kubernetes" for r in reports)
    failed = [(c["check_id"], c["resource"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, f"checkov findings (fix them, or skip with a checkov.io/skip<N> annotation and a reason): {failed}"
    assert sum(r["summary"]["passed"] for r in reports) > 100
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    for r in reports:
        for check in r["results"]["skipped_checks"]:
            reason = check["check_result"].get("suppress_comment") or ""
            assert len(reason) > 30, f"{check['check_id']} on {check['resource']} is skipped without a reason"
