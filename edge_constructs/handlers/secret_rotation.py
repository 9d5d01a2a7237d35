"""Secrets Manager rotation of the inference secrets: the master key and the device-token signing key.

The four steps Secrets Manager invokes (createSecret, setSecret, testSecret, finishSecret). Nothing downstream
holds a copy to update: every inference pod re-reads the secret every --credentials-refresh seconds and accepts
both AWSCURRENT and AWSPREVIOUS, so setSecret and testSecret have nothing to do, and finishSecret's move of
AWSCURRENT (Secrets Manager moves AWSPREVIOUS onto the old version itself) starts the overlap in which old and new
are both valid. The new value keeps the secret's shape: a bare key stays a bare key, {"api_key": ...} keeps its
field, and a signing-key document {"kid", "secret"} gets a new kid so tokens of the old key still find theirs.
Flow: https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_lambda-functions.html
"""
from __future__ import annotations

import json

import boto3

KEY_LENGTH = 48


def handler(event, _context, client=None):
    client = client or boto3.client("secretsmanager")
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    metadata = client.describe_secret(SecretId=arn)
    if not metadata.get("RotationEnabled"):
        raise ValueError(f"rotation is not enabled on {arn}")
    versions = metadata["VersionIdsToStages"]
    if token not in versions:
        raise ValueError(f"version {token} of {arn} has no stage for rotation")
    if "AWSCURRENT" in versions[token]:
        return  # a retried invocation after finishSecret
    if "AWSPENDING" not in versions[token]:
        raise ValueError(f"version {token} of {arn} is not AWSPENDING")
    if step == "createSecret":
        _create(client, arn, token)
    elif step == "finishSecret":
        current = next(version for version, stages in versions.items() if "AWSCURRENT" in stages)
        client.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token,
                                           RemoveFromVersionId=current)
    elif step not in ("setSecret", "testSecret"):
        raise ValueError(f"unknown rotation step {step!r}")


def _create(client, arn: str, token: str) -> None:
    try:
        client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
        return  # created by an earlier try of this step
    except client.exceptions.ResourceNotFoundException:
        pass
    current = client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"]
    # Letters and digits only, like the generated first version: header-safe and copy-paste-safe.
    key = client.get_random_password(PasswordLength=KEY_LENGTH, ExcludePunctuation=True,
                                     IncludeSpace=False)["RandomPassword"]
    client.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=new_value(current, key, token),
                            VersionStages=["AWSPENDING"])


def new_value(current: str, key: str, token: str) -> str:
    text = current.strip()
    if text.startswith("{"):
        document = json.loads(text)
        if "kid" in document:
            return json.dumps({"kid": "k-" + token.replace("-", "")[:16], "secret": key})
        if "api_key" in document:
            return json.dumps({**document, "api_key": key})
    return key
