"""Device tokens: JWTs (RFC 7519) signed with HMAC-SHA256 (RFC 7518 "HS256") under a key id.

Why HS256: every pod both mints (POST /v1/tokens) and verifies, so every pod holds the signing key whatever the
algorithm; an asymmetric pair (EdDSA) would only pay off with a minting service apart from the verifiers. HS256 is
in every JWT library on every platform an app backend runs, verifies in microseconds, and its key is one random
string that Secrets Manager generates and rotates like the master key, in a secret of its own (so a leaked
signing key never administers the fleet, and rotating one never touches the other).

A token, whoever minted it (a pod, or an app backend with any JWT library and the signing key):
  header  {"alg": "HS256", "typ": "JWT", "kid": <signing key id>}        kid must name a key the pods hold
  iss     "edge-diffusion" when a pod minted it (any string otherwise; not checked)
  aud     "edge-diffusion" (AUDIENCE)                                   checked
  sub     the device or user, 1-128 printable characters                required
  iat     issued at, unix seconds                                       required; exp - iat <= MAX_TTL_S
  nbf     not before, unix seconds                                      optional; checked with the clock skew
  exp     expiry, unix seconds                                          required; checked with the clock skew
  jti     random id                                                     optional
  scope   space-separated subset of "generate edit stream"             required
  limits  {"requests_per_minute": int >= 1, "max_streams": int >= 1}    optional, either key; absent = the
          server's own (--token-requests-per-minute, --max-streams)
May import serving.core only.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import jwt

ALGORITHM = "HS256"
ISSUER = "edge-diffusion"
# One audience for every fleet: fleets are told apart by their signing keys, which they never share.
AUDIENCE = "edge-diffusion"
SCOPES = ("generate", "edit", "stream")
MAX_TTL_S = 3600
DEFAULT_TTL_S = 600
MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key of at least the hash's size
KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
LIMIT_NAMES = ("requests_per_minute", "max_streams")
LIMIT_MAX = {"requests_per_minute": 100_000, "max_streams": 1000}


class TokenError(Exception):
    """Why a token was refused: ``code`` is the machine-readable reason clients see in error.code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class KeyDocumentError(ValueError):
    """A signing-key document does not parse; the message says what the document must look like."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Claims:
    subject: str
    scopes: frozenset[str]
    limits: Mapping[str, int]
    expires_at: int
    kid: str
    not_before: int | None = None


def check_subject(subject: object) -> str:
    if not isinstance(subject, str) or not 1 <= len(subject) <= 128 or not subject.isprintable():
        raise ValueError("must be 1-128 printable characters")
    return subject


def check_limits(limits: object) -> dict[str, int]:
    if not isinstance(limits, dict):
        raise ValueError("must be an object with requests_per_minute and/or max_streams")
    out = {}
    for name, value in limits.items():
        if name not in LIMIT_NAMES:
            raise ValueError(f"unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT_MAX[name]:
            raise ValueError(f"{name} must be an integer 1..{LIMIT_MAX[name]}")
        out[name] = value
    return out


def parse_key_document(text: str, source: str) -> list[SigningKey]:
    """{"kid": "...", "secret": "..."} or {"keys": [{"kid", "secret"}, ...]} (the first signs)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise KeyDocumentError(f'{source}: not JSON; store {{"kid": "<id>", "secret": "<32+ random characters>"}} '
                               '(or {"keys": [...]}, the first signs)') from None
    items = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
    if not isinstance(items, list) or not items:
        raise KeyDocumentError(f'{source}: "keys" must be a non-empty list of {{"kid", "secret"}} objects')
    keys: list[SigningKey] = []
    for i, item in enumerate(items):
        where = f"{source}: keys[{i}]" if isinstance(data, dict) and "keys" in data else source
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str) or not isinstance(item.get("secret"), str):
            raise KeyDocumentError(f'{where}: needs string fields "kid" and "secret"')
        if not KID.fullmatch(item["kid"]):
            raise KeyDocumentError(f"{where}: kid must be 1-64 of A-Z a-z 0-9 . _ -")
        secret = item["secret"].encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyDocumentError(f"{where}: secret must be at least {MIN_SECRET_BYTES} bytes (HS256)")
        if any(k.kid == item["kid"] for k in keys):
            raise KeyDocumentError(f"{where}: kid {item['kid']!r} appears twice")
        keys.append(SigningKey(item["kid"], secret))
    return keys


def merge_keys(*groups: Iterable[SigningKey]) -> tuple[SigningKey, ...]:
    """Keys in order, the first of a kid winning (AWSCURRENT before AWSPREVIOUS)."""
    seen: dict[str, SigningKey] = {}
    for group in groups:
        for key in group:
            seen.setdefault(key.kid, key)
    return tuple(seen.values())


def mint(key: SigningKey, subject: str, audience: str, ttl_s: int = DEFAULT_TTL_S,
         scopes: Iterable[str] = SCOPES, limits: Mapping[str, int] | None = None,
         now: float | None = None) -> tuple[str, int]:
    """(token, expires_at)."""
    issued = int(time.time() if now is None else now)
    expires = issued + ttl_s
    claims = {"iss": ISSUER, "aud": audience, "sub": subject, "iat": issued, "nbf": issued, "exp": expires,
              "jti": secrets.token_urlsafe(12), "scope": " ".join(s for s in SCOPES if s in set(scopes))}
    if limits:
        claims["limits"] = dict(limits)
    return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid}), expires


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2


def verify(token: str, keys: Mapping[str, SigningKey], audience: str, skew_s: float) -> Claims:
    """The token's claims, or TokenError(code): malformed_token, unknown_key, invalid_signature, token_expired,
    token_not_yet_valid, invalid_audience, invalid_claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise TokenError("malformed_token", "the bearer credential is neither the key nor a well-formed JWT") from None
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM:
        raise TokenError("malformed_token", f"token alg must be {ALGORITHM}")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise TokenError("unknown_key", "the token's kid names no signing key this server holds (removed or never "
                                        "installed): mint a new token")
    # PyJWT compares exp and nbf with `now` +- leeway; exp is checked before aud, so an expired token says so.
    options = {"require": ["exp", "iat", "sub", "aud"], "verify_iat": False}
    try:
        claims = jwt.decode(token, key.secret, algorithms=[ALGORITHM], audience=audience, leeway=skew_s,
                            options=options)
    except jwt.InvalidSignatureError:
        raise TokenError("invalid_signature", "the token's signature does not verify") from None
    except jwt.ExpiredSignatureError:
        raise TokenError("token_expired", "the device token has expired: ask the app backend for a new one") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("token_not_yet_valid", "the device token is not valid yet (nbf); check the minting clock") from None
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
        code = "invalid_audience" if isinstance(exc, jwt.InvalidAudienceError) else "invalid_claims"
        raise TokenError(code, f"token claims: {exc}") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError("malformed_token", f"token: {exc}") from None
    return _claims(claims, kid)


def _claims(claims: dict, kid: str) -> Claims:
    def bad(message: str) -> TokenError:
        return TokenError("invalid_claims", f"token claims: {message}")

    try:
        subject = check_subject(claims["sub"])
    except ValueError as exc:
        raise bad(f"sub {exc}") from None
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(iat, (int, float)) or exp - iat > MAX_TTL_S:
        raise bad(f"exp - iat must be at most {MAX_TTL_S} s")
    scope = claims.get("scope")
    if not isinstance(scope, str):
        raise bad('scope must be a space-separated string such as "generate edit stream"')
    scopes = frozenset(scope.split())
    if not scopes <= set(SCOPES):
        raise bad(f"scope may hold only {', '.join(SCOPES)}")
    try:
        limits = check_limits(claims.get("limits", {}))
    except ValueError as exc:
        raise bad(f"limits: {exc}") from None
    nbf = claims.get("nbf")
    return Claims(subject=subject, scopes=scopes, limits=limits, expires_at=int(exp), kid=kid,
                  not_before=int(nbf) if isinstance(nbf, (int, float)) else None)
