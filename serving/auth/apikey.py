"""The bearer key's rules (printable, no whitespace) and how it is read from a Secrets Manager secret string;
serving.auth.sources reads it (and re-reads it) from a file or Secrets Manager."""
from __future__ import annotations

import json

from serving.core.settings import SettingsError

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


def read_secret(arn: str, client) -> str:
    """Fetch the key from Secrets Manager with ``client`` (serving.auth.sources makes it: credentials from the default
    chain, EKS Pod Identity in a pod)."""
    try:
        response = client.get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore ClientError / NoCredentialsError: report, never guess a key
        raise SettingsError(f"--api-key-secret-arn {arn}: cannot read the secret ({exc})") from exc
    if "SecretString" not in response:
        raise SettingsError(f"--api-key-secret-arn {arn}: the secret is binary; store the key as a string")
    return key_from_secret_string(response["SecretString"], arn)
