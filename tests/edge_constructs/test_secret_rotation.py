"""Scheduled rotation of the master key and the token signing key: the stack's wiring, cdk-nag, and the
rotation handler's four steps against a fake Secrets Manager."""
from __future__ import annotations

import importlib.util
import json

import aws_cdk as cdk
import pytest

from tests.conftest import ADDONS_VARIANT, REPO_ROOT

HANDLER = REPO_ROOT / "edge_constructs" / "handlers" / "secret_rotation.py"


def _of_type(resources: dict, type_: str) -> dict[str, dict]:
    return {lid: r for lid, r in resources.items() if r["Type"] == type_}


def test_both_secrets_rotate_on_the_configured_schedule(cluster_template):
    assert ADDONS_VARIANT["workloads__secret_rotation_days"] == 30
    resources = cluster_template(**ADDONS_VARIANT)["Resources"]
    secrets = _of_type(resources, "AWS::SecretsManager::Secret")
    schedules = _of_type(resources, "AWS::SecretsManager::RotationSchedule")
    assert {s["Properties"]["SecretId"]["Ref"] for s in schedules.values()} == set(secrets) and len(secrets) == 2
    for schedule in schedules.values():
        assert schedule["Properties"]["RotationRules"]["ScheduleExpression"] == "rate(30 days)"
    (function,) = [r for r in _of_type(resources, "AWS::Lambda::Function").values()
                   if r["Properties"].get("Handler") == "secret_rotation.handler"]
    assert function["Properties"]["Runtime"] == "python3.14"


def test_rotation_is_off_by_default(templates):
    resources = templates["EdgeClusterStack"]["Resources"]
    assert not _of_type(resources, "AWS::SecretsManager::RotationSchedule")
    assert len(_of_type(resources, "AWS::SecretsManager::Secret")) == 2  # the master key and the signing key


def test_rotation_constructs_are_cdk_nag_clean(tmp_path):
    from cdk_nag import AwsSolutionsChecks

    from edge_constructs.inference_api_key import InferenceApiKey
    from edge_constructs.inference_token_keys import InferenceTokenKeys
    from edge_constructs.secret_rotation import SecretRotation

    app = cdk.App(outdir=str(tmp_path))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    stack = cdk.Stack(app, "RotationStack", env=cdk.Environment(account="123456789012", region="us-west-2"))
    api_key = InferenceApiKey(stack, "ApiKey", name_prefix="edge", rotated=True)
    token_keys = InferenceTokenKeys(stack, "TokenKeys", rotated=True)
    SecretRotation(stack, "Rotation", secrets=[api_key.secret, token_keys.secret], every_days=7)
    app.synth()  # raises on any unacknowledged finding


# ---------------------------------------------------------------- the handler


def _handler():
    spec = importlib.util.spec_from_file_location("secret_rotation", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeSecretsManager:
    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

    def __init__(self, current: str):
        self.values = {"v1": current}
        self.stages = {"v1": ["AWSCURRENT"]}

    def describe_secret(self, SecretId):
        return {"RotationEnabled": True, "VersionIdsToStages": {k: list(v) for k, v in self.stages.items()}}

    def get_secret_value(self, SecretId, VersionId=None, VersionStage="AWSCURRENT"):
        for version, stages in self.stages.items():
            if (VersionId in (None, version)) and VersionStage in stages and version in self.values:
                return {"SecretString": self.values[version]}
        raise self.exceptions.ResourceNotFoundException(VersionStage)

    def get_random_password(self, PasswordLength, ExcludePunctuation, IncludeSpace):
        assert ExcludePunctuation and not IncludeSpace
        return {"RandomPassword": "R" * PasswordLength}

    def put_secret_value(self, SecretId, ClientRequestToken, SecretString, VersionStages):
        self.values[ClientRequestToken] = SecretString
        self.stages[ClientRequestToken] = list(VersionStages)

    def update_secret_version_stage(self, SecretId, VersionStage, MoveToVersionId, RemoveFromVersionId):
        self.stages[RemoveFromVersionId] = ["AWSPREVIOUS"]  # what Secrets Manager does when AWSCURRENT moves
        self.stages[MoveToVersionId] = [VersionStage]


def _rotate(fake: FakeSecretsManager, token: str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789") -> None:
    module = _handler()
    fake.stages[token] = ["AWSPENDING"]
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        module.handler({"SecretId": "arn:secret", "ClientRequestToken": token, "Step": step}, None, client=fake)
    # A retried step after the finish changes nothing.
    module.handler({"SecretId": "arn:secret", "ClientRequestToken": token, "Step": "finishSecret"}, None, client=fake)


@pytest.mark.parametrize(("current", "expect"), [
    ("old-master-key", lambda new: new == "R" * 48),
    (json.dumps({"api_key": "old", "note": "kept"}), lambda new: json.loads(new) == {"api_key": "R" * 48,
                                                                                     "note": "kept"}),
    (json.dumps({"kid": "k1", "secret": "a" * 48}), lambda new: json.loads(new) == {"kid": "k-0a1b2c3d4e5f6789",
                                                                                   "secret": "R" * 48}),
])
def test_rotation_keeps_the_shape_and_leaves_the_old_version_previous(current, expect):
    fake = FakeSecretsManager(current)
    _rotate(fake)
    new = fake.get_secret_value("arn:secret")["SecretString"]
    assert expect(new)
    assert fake.get_secret_value("arn:secret", VersionStage="AWSPREVIOUS")["SecretString"] == current


def test_rotation_refuses_a_version_that_is_not_pending():
    fake = FakeSecretsManager("k")
    fake.stages["other"] = []
    with pytest.raises(ValueError, match="not AWSPENDING"):
        _handler().handler({"SecretId": "arn:secret", "ClientRequestToken": "other", "Step": "createSecret"}, None,
                           client=fake)
