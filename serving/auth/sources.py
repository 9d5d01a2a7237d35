"""Key material and its rotation: the master keys and the token signing keys, re-read from their source.

Files: --api-key-file holds one key per line (every line is accepted, so a rotation writes the new key beside
the old one, redistributes, then removes the old line); --token-keys-file holds a signing-key document
(serving.auth.tokens.parse_key_document). Secrets Manager: the AWSCURRENT version and, while a rotation is
under way, the AWSPREVIOUS one are both accepted; the current signing key signs. ``keep_fresh`` re-reads
everything every --credentials-refresh seconds and swaps it into the Authenticator; a failed read keeps the
keys in use (and says so in the log), so a Secrets Manager hiccup never locks devices out.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from serving.auth.apikey import _check, key_from_secret_string, read_secret
from serving.auth.tokens import KeyDocumentError, SigningKey, merge_keys, parse_key_document
from serving.core.settings import Settings, SettingsError

log = logging.getLogger("serving.auth")


@dataclass(frozen=True)
class KeyMaterial:
    master_keys: tuple[str, ...] = ()
    signing_keys: tuple[SigningKey, ...] = ()


def _client(arn: str, client):
    if client is not None:
        return client
    import boto3

    region = arn.split(":")[3] if arn.count(":") >= 6 else None
    return boto3.client("secretsmanager", region_name=region or None)


def _previous(arn: str, client) -> str | None:
    """The AWSPREVIOUS version's string, or None when the secret was never rotated (or it is unreadable)."""
    try:
        response = client.get_secret_value(SecretId=arn, VersionStage="AWSPREVIOUS")
    except Exception as exc:  # ResourceNotFoundException before a first rotation
        if "ResourceNotFound" not in type(exc).__name__ + str(exc):
            log.warning("cannot read AWSPREVIOUS", extra={"fields": {"secret": arn, "error": repr(exc)[:200]}})
        return None
    return response.get("SecretString")


def _read_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{flag} {path}: cannot read: {exc.strerror}") from None


def load_master_keys(settings: Settings, client=None) -> tuple[str, ...]:
    if settings.api_key_file:
        text = _read_file(settings.api_key_file, "--api-key-file")
        keys = tuple(_check(line, f"--api-key-file {settings.api_key_file}") for line in text.splitlines()
                     if line.strip())
        if not keys:
            raise SettingsError(f"--api-key-file {settings.api_key_file}: the API key is empty; store a non-empty key")
        return keys
    arn = settings.api_key_secret_arn
    if not arn:
        return ()
    client = _client(arn, client)
    keys = [read_secret(arn, client)]
    previous = _previous(arn, client)
    if previous is not None:
        try:
            keys.append(key_from_secret_string(previous, arn))
        except SettingsError as exc:
            log.warning("AWSPREVIOUS ignored", extra={"fields": {"error": str(exc)}})
    return tuple(dict.fromkeys(keys))


def load_signing_keys(settings: Settings, client=None) -> tuple[SigningKey, ...]:
    if settings.token_keys_file:
        path = settings.token_keys_file
        try:
            return tuple(parse_key_document(_read_file(path, "--token-keys-file"), f"--token-keys-file {path}"))
        except KeyDocumentError as exc:
            raise SettingsError(str(exc)) from None
    arn = settings.token_keys_secret_arn
    if not arn:
        return ()
    client = _client(arn, client)
    try:
        response = client.get_secret_value(SecretId=arn)
    except Exception as exc:  # botocore ClientError / NoCredentialsError: report, never guess a key
        raise SettingsError(f"--token-keys-secret-arn {arn}: cannot read the secret ({exc})") from exc
    if "SecretString" not in response:
        raise SettingsError(f"--token-keys-secret-arn {arn}: the secret is binary; store the JSON document as a string")
    try:
        current = parse_key_document(response["SecretString"], f"--token-keys-secret-arn {arn}")
    except KeyDocumentError as exc:
        raise SettingsError(str(exc)) from None
    previous: list[SigningKey] = []
    text = _previous(arn, client)
    if text is not None:
        try:
            previous = parse_key_document(text, f"--token-keys-secret-arn {arn} (AWSPREVIOUS)")
        except KeyDocumentError as exc:
            log.warning("AWSPREVIOUS ignored", extra={"fields": {"error": str(exc)}})
    return merge_keys(current, previous)


def load_key_material(settings: Settings, client=None) -> KeyMaterial:
    return KeyMaterial(load_master_keys(settings, client), load_signing_keys(settings, client))


async def keep_fresh(auth, settings: Settings, interval: float | None = None) -> None:
    """Re-read the key material every ``interval`` seconds (--credentials-refresh) into ``auth`` (an
    Authenticator) until cancelled."""
    interval = settings.credentials_refresh if interval is None else interval
    if not (settings.api_key_file or settings.api_key_secret_arn or settings.token_keys_file
            or settings.token_keys_secret_arn):
        return
    while True:
        await asyncio.sleep(interval)
        try:
            material = await asyncio.to_thread(load_key_material, settings)
        except SettingsError as exc:
            log.warning("key refresh failed; keeping the keys in use", extra={"fields": {"error": str(exc)}})
            continue
        if not material.master_keys and auth.enabled:
            log.warning("key refresh found no master key; keeping the keys in use")
            continue
        if auth.replace(material.master_keys, material.signing_keys):
            log.info("keys rotated", extra={"fields": {"master_keys": len(material.master_keys),
                                                       "signing_kids": auth.kids}})
