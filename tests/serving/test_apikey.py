"""API key sources: file, and Secrets Manager through boto3 (stubbed with botocore's Stubber; no network)."""
from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from serving.auth.sources import load_master_keys
from serving.core.settings import Settings, SettingsError

ARN = "arn:aws:secretsmanager:us-west-2:123456789012:secret:edge-diffusion/api-key-AbCdEf"


def stubbed_client(response=None, error_code=None):
    client = boto3.client("secretsmanager", region_name="us-west-2", aws_access_key_id="test",
                          aws_secret_access_key="test")
    stubber = Stubber(client)
    if error_code:
        stubber.add_client_error("get_secret_value", service_error_code=error_code, expected_params={"SecretId": ARN})
    else:
        stubber.add_response("get_secret_value", {"ARN": ARN, "Name": "edge-diffusion/api-key", **response},
                             expected_params={"SecretId": ARN})
    stubber.activate()
    return client, stubber


@pytest.mark.parametrize("secret", ["k3y-from-secrets-manager", json.dumps({"api_key": "k3y-from-secrets-manager"})])
def test_reads_plain_or_json_secret(secret):
    client, stubber = stubbed_client({"SecretString": secret})
    assert load_master_keys(Settings(model="m", api_key_secret_arn=ARN), client) == ("k3y-from-secrets-manager",)
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("response", "error_code", "needle"),
    [
        ({"SecretString": json.dumps({"password": "x"})}, None, "string field 'api_key'"),
        ({"SecretString": "  "}, None, "empty"),
        ({"SecretBinary": b"\x00"}, None, "binary"),
        (None, "AccessDeniedException", "cannot read the secret"),
    ],
)
def test_secret_errors_name_the_flag(response, error_code, needle):
    client, _ = stubbed_client(response, error_code)
    with pytest.raises(SettingsError, match=needle) as err:
        load_master_keys(Settings(model="m", api_key_secret_arn=ARN), client)
    assert "--api-key-secret-arn" in str(err.value)


def test_key_file(tmp_path):
    path = tmp_path / "key"
    path.write_text("file-key\n")
    assert load_master_keys(Settings(model="m", api_key_file=str(path))) == ("file-key",)
    path.write_text("two words")
    with pytest.raises(SettingsError, match="without whitespace"):
        load_master_keys(Settings(model="m", api_key_file=str(path)))
    with pytest.raises(SettingsError, match="--api-key-file .*cannot read"):
        load_master_keys(Settings(model="m", api_key_file=str(tmp_path / "missing")))
    assert load_master_keys(Settings(model="m")) == ()  # no key configured: an open server
