"""ImagePipelineStack: snapshot plus one assertion per requirement (repositories, buckets, pipeline, IAM)."""
from __future__ import annotations

import json

import pytest

from edge_config import IMAGE_FLAVORS, ConfigError, PipelineConfig
from tests.conftest import normalize_template

STACK = "ImagePipelineStack"


@pytest.fixture(scope="module")
def template(templates) -> dict:
    return templates[STACK]


def _of_type(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _one(template: dict, kind: str) -> tuple[str, dict]:
    found = _of_type(template, kind)
    assert len(found) == 1, f"expected one {kind}, found {list(found)}"
    return next(iter(found.items()))


def _pipeline(template: dict) -> dict:
    return _one(template, "AWS::CodePipeline::Pipeline")[1]["Properties"]


def test_snapshot(template, snapshot):
    assert normalize_template(template) == snapshot


# ---------------------------------------------------------------- ECR


def test_repositories_follow_the_naming_contract_and_hardening(template):
    config = PipelineConfig()
    repositories = _of_type(template, "AWS::ECR::Repository")
    by_name = {r["Properties"]["RepositoryName"]: r["Properties"] for r in repositories.values()}
    assert set(by_name) == {f"edge-diffusion-{flavor}" for flavor in IMAGE_FLAVORS}
    key_id, _ = _one(template, "AWS::KMS::Key")
    for name, props in by_name.items():
        assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}, name
        assert props["ImageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION", name
        filters = {f["ImageTagMutabilityExclusionFilterValue"] for f in props["ImageTagMutabilityExclusionFilters"]}
        assert filters == {config.image_tag_moving, "cache-*"}, f"{name}: only the moving tag and cache are mutable"
        assert props["EncryptionConfiguration"] == {"EncryptionType": "KMS",
                                                    "KmsKey": {"Fn::GetAtt": [key_id, "Arn"]}}
    for resource in repositories.values():
        assert resource["DeletionPolicy"] == "Retain"


def test_lifecycle_keeps_the_cache_and_recent_images(template):
    for resource in _of_type(template, "AWS::ECR::Repository").values():
        policy = json.loads(resource["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])
        rules = sorted(policy["rules"], key=lambda r: r["rulePriority"])
        cache, untagged, *per_arch, recent = rules
        assert [r["selection"]["tagPatternList"] for r in per_arch] == [["*-amd64"], ["*-arm64"]]
        assert cache["selection"]["tagPatternList"] == ["cache-*"]
        assert cache["selection"]["countType"] == "imageCountMoreThan"
        assert untagged["selection"]["tagStatus"] == "untagged"
        assert untagged["selection"]["countType"] == "sinceImagePushed"
        assert recent["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan",
                                       "countNumber": PipelineConfig().keep_images}


# ---------------------------------------------------------------- buckets and key


def _bucket_policy_denies_insecure_transport(template: dict, bucket_id: str) -> bool:
    for policy in _of_type(template, "AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"] != {"Ref": bucket_id}:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                    "Bool": {"aws:SecureTransport": "false"}}:
                return True
    return False


def test_artifact_bucket_is_encrypted_private_versioned_tls_only_and_logged(template):
    buckets = _of_type(template, "AWS::S3::Bucket")
    artifacts_id = next(k for k in buckets if k.startswith("ArtifactStoreArtifacts"))
    logs_id = next(k for k in buckets if k.startswith("ArtifactStoreAccessLogs"))
    artifacts = buckets[artifacts_id]["Properties"]
    encryption = artifacts["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert artifacts["VersioningConfiguration"] == {"Status": "Enabled"}
    assert artifacts["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}
    for bucket_id in (artifacts_id, logs_id):
        assert buckets[bucket_id]["Properties"]["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}
        assert _bucket_policy_denies_insecure_transport(template, bucket_id), bucket_id
    assert _pipeline(template)["ArtifactStore"]["Location"] == {"Ref": artifacts_id}


def test_key_rotates(template):
    assert _one(template, "AWS::KMS::Key")[1]["Properties"]["EnableKeyRotation"] is True


# ---------------------------------------------------------------- pipeline


def test_pipeline_is_v2_with_source_parallel_builds_and_manifest_stage(template):
    pipeline = _pipeline(template)
    assert pipeline["PipelineType"] == "V2"
    assert pipeline["RestartExecutionOnUpdate"] is True
    # NodeImageCache (tests/stacks/test_node_image_cache.py) snapshots the published images for new nodes.
    assert [s["Name"] for s in pipeline["Stages"]] == ["Source", "Build", "Publish", "NodeImageCache"]
    source = pipeline["Stages"][0]["Actions"][0]
    assert source["ActionTypeId"]["Provider"] == "S3"
    assert source["Configuration"]["PollForSourceChanges"] is False
    build = pipeline["Stages"][1]["Actions"]
    assert {a["Name"] for a in build} == {f"{t.accelerator}-{t.arch}" for t in PipelineConfig().targets}
    assert {a["RunOrder"] for a in build} == {1}, "per-arch builds must run in parallel"
    publish = pipeline["Stages"][2]["Actions"]
    assert [a["Name"] for a in publish] == ["manifests"]


def test_actions_pass_source_revision_and_build_settings(template):
    pipeline = _pipeline(template)
    namespace = pipeline["Stages"][0]["Actions"][0]["Namespace"]
    for stage in pipeline["Stages"][1:]:
        if stage["Name"] == "NodeImageCache":  # a Step Functions action: it reads the moving tag, not the revision
            continue
        for action in stage["Actions"]:
            variables = {v["name"]: v["value"] for v in json.loads(action["Configuration"]["EnvironmentVariables"])}
            assert variables["SOURCE_REVISION"] == f"#{{{namespace}.ETag}}"
            assert variables["BUILD_FINGERPRINT"] == PipelineConfig().build_fingerprint
            if action["Name"] == "neuron-amd64":
                assert variables["NEURON_HEIGHT"] == "512" and variables["NEURON_DTYPE"] == "bf16"
            if stage["Name"] == "Build":
                assert variables["MODEL_ID"] == "stabilityai/sd-turbo"


def test_source_archive_is_seeded_from_the_stack_assets(template):
    source = _pipeline(template)["Stages"][0]["Actions"][0]["Configuration"]
    assert source["S3ObjectKey"].endswith(".zip")
    assert "cdk-" in json.dumps(source["S3Bucket"]), "the stack's own file asset seeds the source"


def test_build_projects_use_buildspecs_from_the_source_and_the_neuron_compile_runs_on_large_x86(template):
    projects = _of_type(template, "AWS::CodeBuild::Project")
    assert len(projects) == len(PipelineConfig().targets) + 1
    for project in projects.values():
        props = project["Properties"]
        assert props["Source"]["BuildSpec"] in ("buildspecs/build-image.yml", "buildspecs/manifest.yml")
        assert props["EncryptionKey"]["Fn::GetAtt"][0].startswith("ArtifactStoreKey")
        assert props["LogsConfig"]["CloudWatchLogs"]["Status"] == "ENABLED"
        variables = {v["Name"]: v for v in props["Environment"].get("EnvironmentVariables", [])}
        if variables.get("FLAVOR", {}).get("Value") == "neuron":
            assert props["Environment"]["Type"] == "LINUX_CONTAINER"
            assert props["Environment"]["ComputeType"] == "BUILD_GENERAL1_2XLARGE"


def test_failures_notify_an_encrypted_tls_only_topic(template):
    topic_id, topic = _one(template, "AWS::SNS::Topic")
    assert "KmsMasterKeyId" in topic["Properties"]
    _, rule = _one(template, "AWS::CodeStarNotifications::NotificationRule")
    assert rule["Properties"]["EventTypeIds"] == ["codepipeline-pipeline-pipeline-execution-failed"]
    assert rule["Properties"]["Targets"] == [{"TargetAddress": {"Ref": topic_id}, "TargetType": "SNS"}]
    policies = [p for p in _of_type(template, "AWS::SNS::TopicPolicy").values()
                if {"Ref": topic_id} in p["Properties"]["Topics"]]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert any(s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
               for s in statements)


# ---------------------------------------------------------------- IAM


def _role_statements(template: dict, role_id: str) -> list[dict]:
    statements = []
    for policy in _of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_build_roles_push_only_to_their_own_repository(template):
    resources = template["Resources"]
    repo_ids = {r["Properties"]["RepositoryName"].rsplit("-", 1)[1]: k
                for k, r in _of_type(template, "AWS::ECR::Repository").items()}
    for project in _of_type(template, "AWS::CodeBuild::Project").values():
        props = project["Properties"]
        role_id = props["ServiceRole"]["Fn::GetAtt"][0]
        variables = {v["Name"]: v["Value"] for v in props["Environment"].get("EnvironmentVariables", [])}
        allowed = ({repo_ids[variables["FLAVOR"]]} if "FLAVOR" in variables else set(repo_ids.values()))
        pushed = set()
        for statement in _role_statements(template, role_id):
            for action in _actions(statement):
                assert action != "*" and not action.endswith(":*"), f"{role_id}: {action} is too broad"
                if action.startswith("ecr:") and action != "ecr:GetAuthorizationToken":
                    targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                    pushed |= {t["Fn::GetAtt"][0] for t in targets}
                if action == "ecr:PutImage":
                    assert statement["Resource"] != "*"
        assert pushed == allowed, f"{role_id} may push to {pushed}, expected {allowed}"
        assert resources[role_id]["Type"] == "AWS::IAM::Role"


def test_no_plaintext_credentials_in_codebuild_environments(template):
    for project in _of_type(template, "AWS::CodeBuild::Project").values():
        for variable in project["Properties"]["Environment"].get("EnvironmentVariables", []):
            assert variable.get("Type", "PLAINTEXT") in ("PLAINTEXT", "SECRETS_MANAGER")
            if any(word in variable["Name"] for word in ("TOKEN", "SECRET", "PASSWORD", "KEY")):
                assert variable["Type"] == "SECRETS_MANAGER", variable["Name"]


def test_outputs_expose_repository_uris_for_the_cluster_config(template):
    outputs = template["Outputs"]
    for flavor in IMAGE_FLAVORS:
        assert f"{flavor.capitalize()}RepositoryUri" in outputs


# ---------------------------------------------------------------- config validation (no synth)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model_source": "s3"}, "edge.pipeline.model_s3_uri: required when model_source is \"s3\""),
        ({"model_s3_uri": "s3://models-bucket/sd/"}, "edge.pipeline.model_s3_uri: is set but model_source is \"hf\""),
        ({"model_source": "gcs"}, "edge.pipeline.model_source: unknown model source"),
        ({"image_tag_moving": "cache-amd64"}, "edge.pipeline.image_tag_moving: 'cache-amd64' collides"),
        ({"image_tag_moving": "0123456789ab-f281394e"}, "edge.pipeline.image_tag_moving:"),
        ({"neuron_compute_type": "BUILD_GENERAL1_SMALL"}, "edge.pipeline.neuron_compute_type:"),
        ({"build_compute_type": "BUILD_GENERAL1_MEDIUM"}, "edge.pipeline.build_compute_type:"),
        ({"hf_token_secret_name": "hf token!"}, "edge.pipeline.hf_token_secret_name:"),
        ({"keep_images": 1}, "edge.pipeline.keep_images: 1 is out of range"),
        ({"targets": [{"accelerator": "neuron", "arch": "arm64"}]}, "edge.pipeline.targets[0].arch"),
        ({"source": "codeconnections"}, "edge.pipeline.connection_arn: required"),
    ],
)
def test_pipeline_config_errors_name_the_field(override, message):
    with pytest.raises(ConfigError) as error:
        PipelineConfig.from_dict(override, "edge.pipeline")
    assert message in str(error.value)
    assert "Fix:" in str(error.value)


def test_build_fingerprint_changes_with_the_model_only():
    base = PipelineConfig.from_dict({}, "edge.pipeline")
    assert base.build_fingerprint == PipelineConfig.from_dict({"branch": "dev"}, "edge.pipeline").build_fingerprint
    assert base.build_fingerprint != PipelineConfig.from_dict(
        {"model_revision": "0" * 40}, "edge.pipeline").build_fingerprint
    assert base.build_fingerprint != PipelineConfig.from_dict(
        {"neuron_compile": {"height": 768, "width": 768}}, "edge.pipeline").build_fingerprint


# ---------------------------------------------------------------- the optional sources (one extra synth)

ALTERNATE = {
    "source": "codeconnections",
    "connection_arn": "arn:aws:codeconnections:us-west-2:123456789012:connection/12345678-1234-1234-1234-123456789012",
    "repository": "example/edge-diffusion",
    "model_source": "s3",
    "model_s3_uri": "s3://example-models/sd-turbo/v1/",
    "hf_token_secret_name": "edge-diffusion/hf-token",
    "notification_emails": ["ops@example.com"],
}


@pytest.fixture(scope="module")
def alternate_template(tmp_path_factory) -> dict:
    """Only this stack, with cdk-nag, for a Git source, an S3 model and a Hub token (synth fails on findings)."""
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    import edge_config
    from stacks.image_pipeline_stack import ImagePipelineStack
    from tests.conftest import REPO_ROOT

    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context["edge"]["pipeline"].update(ALTERNATE)
    app = cdk.App(context=context, outdir=str(tmp_path_factory.mktemp("alternate")))
    config = edge_config.load_config(app.node.get_all_context())
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    ImagePipelineStack(app, STACK, config=config, env=cdk.Environment(account=config.account, region=config.region))
    return app.synth().get_stack_by_name(STACK).template


def test_codeconnections_source_triggers_on_build_inputs_only(alternate_template):
    pipeline = _pipeline(alternate_template)
    source = pipeline["Stages"][0]["Actions"][0]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    assert source["Configuration"]["FullRepositoryId"] == "example/edge-diffusion"
    push = pipeline["Triggers"][0]["GitConfiguration"]["Push"][0]
    assert push["Branches"]["Includes"] == ["main"]
    assert push["FilePaths"]["Includes"] == ["serving/**", "buildspecs/**", "requirements-serving.txt"]
    variables = json.loads(pipeline["Stages"][1]["Actions"][0]["Configuration"]["EnvironmentVariables"])
    revision = next(v["value"] for v in variables if v["name"] == "SOURCE_REVISION")
    assert revision == f"#{{{source['Namespace']}.CommitId}}"


def test_hub_token_is_a_secrets_manager_reference_with_a_scoped_grant(alternate_template):
    for project_id, project in _of_type(alternate_template, "AWS::CodeBuild::Project").items():
        variables = {v["Name"]: v for v in project["Properties"]["Environment"]["EnvironmentVariables"]}
        if "FLAVOR" not in variables:
            continue
        assert variables["HF_TOKEN"] == {"Name": "HF_TOKEN", "Type": "SECRETS_MANAGER",
                                         "Value": "edge-diffusion/hf-token"}
        role_id = project["Properties"]["ServiceRole"]["Fn::GetAtt"][0]
        grants = [s for s in _role_statements(alternate_template, role_id)
                  if "secretsmanager:GetSecretValue" in _actions(s)]
        assert len(grants) == 1 and "secret:edge-diffusion/hf-token-??????" in json.dumps(grants[0]["Resource"])


def test_s3_model_source_grants_read_on_the_prefix_only(alternate_template):
    for project in _of_type(alternate_template, "AWS::CodeBuild::Project").values():
        role_id = project["Properties"]["ServiceRole"]["Fn::GetAtt"][0]
        statements = _role_statements(alternate_template, role_id)
        text = json.dumps(statements)
        if "FLAVOR" not in json.dumps(project["Properties"]["Environment"]):
            assert "example-models" not in text
            continue
        model = [s for s in statements if "arn:aws:s3:::example-models/sd-turbo/v1/*" in json.dumps(s["Resource"])]
        assert model and all(not any(a.startswith("s3:Put") or a.startswith("s3:Delete") for a in _actions(s))
                             for s in model)
    email = _of_type(alternate_template, "AWS::SNS::Subscription")
    assert [s["Properties"]["Endpoint"] for s in email.values()] == ["ops@example.com"]
