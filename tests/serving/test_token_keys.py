"""Key sources during a rotation (Secrets Manager AWSCURRENT + AWSPREVIOUS through botocore's Stubber, no network),
the signing-key document and the per-subject request budget."""
from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.stub import Stubber

from serving.auth.credentials import Authenticator, Denied, Grant
from serving.auth.sources import load_master_keys, load_signing_keys
from serving.auth.tokens import KeyDocumentError, SigningKey, mint, parse_key_document
from serving.core.settings import Settings, SettingsError

ARN = "arn:aws:secretsmanager:us-west-2:123456789012:secret:edge-diffusion/token-keys-AbCdEf"


def client_with(current: str, previous: str | None):
    client = boto3.client("secretsmanager", region_name="us-west-2", aws_access_key_id="test",
                          aws_secret_access_key="test")
    stubber = Stubber(client)
    stubber.add_response("get_secret_value", {"ARN": ARN, "SecretString": current}, expected_params={"SecretId": ARN})
    stage = {"SecretId": ARN, "VersionStage": "AWSPREVIOUS"}
    if previous is None:
        stubber.add_client_error("get_secret_value", service_error_code="ResourceNotFoundException",
                                 expected_params=stage)
    else:
        stubber.add_response("get_secret_value", {"ARN": ARN, "SecretString": previous}, expected_params=stage)
    stubber.activate()
    return client, stubber


def test_master_key_current_and_previous_are_both_accepted():
    client, stubber = client_with("new-key", "old-key")
    assert load_master_keys(Settings(model="m", api_key_secret_arn=ARN), client) == ("new-key", "old-key")
    stubber.assert_no_pending_responses()
    client, _ = client_with("only-key", None)  # never rotated: no AWSPREVIOUS version
    assert load_master_keys(Settings(model="m", api_key_secret_arn=ARN), client) == ("only-key",)


def test_signing_keys_current_signs_and_previous_verifies():
    new = json.dumps({"kid": "k2", "secret": "b" * 32})
    old = json.dumps({"kid": "k1", "secret": "a" * 32})
    client, stubber = client_with(new, old)
    keys = load_signing_keys(Settings(model="m", token_keys_secret_arn=ARN), client)
    assert [k.kid for k in keys] == ["k2", "k1"]
    stubber.assert_no_pending_responses()
    client, _ = client_with(new, "{broken")  # a bad previous version is ignored, never fatal
    assert [k.kid for k in load_signing_keys(Settings(model="m", token_keys_secret_arn=ARN), client)] == ["k2"]


def test_master_key_file_accepts_one_key_per_line(tmp_path):
    path = tmp_path / "key"
    path.write_text("new-key\nold-key\n\n")
    assert load_master_keys(Settings(model="m", api_key_file=str(path))) == ("new-key", "old-key")
    path.write_text("two words")
    with pytest.raises(SettingsError, match="without whitespace"):
        load_master_keys(Settings(model="m", api_key_file=str(path)))


@pytest.mark.parametrize(("text", "needle"), [
    ("plain", "not JSON"),
    ('{"kid": "k1"}', '"kid" and "secret"'),
    ('{"kid": "k 1", "secret": "' + "a" * 32 + '"}', "kid must be"),
    ('{"kid": "k1", "secret": "short"}', "at least 32 bytes"),
    ('{"keys": []}', "non-empty list"),
    ('{"keys": [{"kid": "k", "secret": "' + "a" * 32 + '"}, {"kid": "k", "secret": "' + "b" * 32 + '"}]}',
     "appears twice"),
])
def test_key_document_errors_name_the_source(text, needle):
    with pytest.raises(KeyDocumentError, match=needle) as err:
        parse_key_document(text, "--token-keys-file keys.json")
    assert str(err.value).startswith("--token-keys-file keys.json")


def test_token_keys_file_errors_are_settings_errors(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text("{}")
    with pytest.raises(SettingsError, match="--token-keys-file"):
        load_signing_keys(Settings(model="m", token_keys_file=str(path)))


def test_request_budget_refills_at_rate_per_minute_and_says_when():
    auth = Authenticator(Settings(model="m"), master_keys=("k",))
    grant = Grant("token", "ab" * 32, frozenset({"generate"}), requests_per_minute=6, max_streams=1)
    for _ in range(6):
        auth.admit(grant, now=100.0)
    with pytest.raises(Denied) as refused:
        auth.admit(grant, now=100.0)
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "10"}  # 6/min: one per 10 s
    auth.admit(grant, now=110.0)  # one request's worth refilled
    with pytest.raises(Denied):
        auth.admit(grant, now=111.0)


def test_a_remembered_token_is_checked_again_after_key_removal_or_expiry():
    key = SigningKey("k1", b"s" * 32)
    auth = Authenticator(Settings(model="m", token_clock_skew=0), master_keys=("m",), signing_keys=(key,))
    token, expires_at = mint(key, "dev", "edge-diffusion", ttl_s=1)
    assert auth.authorize(token, "generate").kind == auth.authorize(token, "generate").kind == "token"
    auth.replace(("m",), (SigningKey("k2", b"t" * 32),))
    with pytest.raises(Denied) as refused:
        auth.authorize(token)
    assert refused.value.code == "unknown_key"
    auth.replace(("m",), (SigningKey("k1", b"s" * 32),))  # the same key, re-read: still valid
    assert auth.authorize(token).kind == "token"
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(Denied) as refused:
        auth.authorize(token)
    assert refused.value.code == "token_expired"
