"""Where the bearer key comes from: a file, or AWS Secrets Manager through the pod's identity."""
from __future__ import annotations

import json
from pathlib import Path

from serving.core.settings import Settings, SettingsError

#: When the secret string is a JSON object, the key is read from this field.
SECRET_JSON_FIELD = "api_key"


def _check(key: str, source: str) -> str:
    key = key.strip()
    if not key:
        raise SettingsError(f"{source}: the API key is empty; store a non-empty key")
    if any(c.isspace() for c in key) or not key.isprintable():
        raise SettingsError(f"{source}: the API key must be printable without whitespace (it is sent in a header)")
    return key


def key_from_secret_string(secret: str, arn: str) -> str:
    text = secret.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise SettingsError(f"--api-key-secret-arn {arn}: the secret looks like JSON but does not parse") from None
        if not isinstance(data, dict) or not isinstance(data.get(SECRET_JSON_FIELD), str):
            raise SettingsError(f"--api-key-secret-arn {arn}: the JSON secret needs a string field {SECRET_JSON_FIELD!r}")
        text = data[SECRET_JSON_FIELD]
    return _check(text, f"--api-key-secret-arn {arn}")


def read_secret(arn: str, client=None) -> str:
    """Fetch the key from Secrets Manager; credentials come from the default chain (EKS Pod Identity)."""
    if client is None:
        import boto3

        region = arn.split(":")[3] if arn.count(":") >= 6 else None
        client = boto3.client("secretsmanager", region_name=region or None)
    try:
        response = client.get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore ClientError / NoCredentialsError: report, never guess a key
        raise SettingsError(f"--api-key-secret-arn {arn}: cannot read the secret ({exc})") from exc
    if "SecretString" not in response:
        raise SettingsError(f"--api-key-secret-arn {arn}: the secret is binary; store the key as a string")
    return key_from_secret_string(response["SecretString"], arn)


def load_api_key(settings: Settings, client=None) -> str | None:
    if settings.api_key_file:
        path = Path(settings.api_key_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SettingsError(f"--api-key-file (env SERVING_API_KEY_FILE): cannot read {path}: {exc.strerror}") from None
        return _check(text, f"--api-key-file {path}")
    if settings.api_key_secret_arn:
        return read_secret(settings.api_key_secret_arn, client)
    return None
