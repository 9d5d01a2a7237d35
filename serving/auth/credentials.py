"""The one credential check every route calls: the master key or a device token, scopes and per-subject limits.

    auth = Authenticator(settings, registry)            # one per server: state.auth
    credential = bearer_from_headers(headers)           # str | None; Denied(400) for two Authorization headers
    credential, echo = bearer_for_websocket(headers, subprotocols)   # header first, else "bearer.<credential>"
    grant = auth.authorize(credential, need="generate" | "edit" | "stream" | None, master_only=False) -> Grant
    auth.admit(grant)                                   # counts one request against the subject's requests_per_minute
    release = auth.open_stream(grant)                   # counts one open stream against max_streams; call release()
                                                        # when it closes (idempotent)
Each raises Denied(status, code, message, headers) where the caller answers
{"error": {"message", "type", "param": null, "code": <code>}} with that status and headers:
    401 missing_credentials | invalid_api_key | malformed_token | unknown_key | invalid_signature | token_expired |
        token_not_yet_valid | invalid_audience | invalid_claims
    403 insufficient_scope | master_key_required (a device token on POST /v1/tokens)
    429 rate_limited (requests_per_minute) | stream_limit (max_streams), with Retry-After
A Grant with kind "open" means the server runs without a key (nothing is checked). A stream opened with a token
ends at ``grant.expires_at`` (seconds since the epoch, plus the clock skew): close it with TOKEN_EXPIRED_CLOSE.
Metrics: edge_diffusion_auth{outcome} and edge_diffusion_token_subject_requests{subject_bucket, outcome}, where the
bucket is the first two hex digits of sha256(sub) (256 values at most, whatever the number of devices); logs
carry subject_hash (16 hex digits of the same hash), never the token or the subject.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from prometheus_client import Counter

from serving.auth.tokens import AUDIENCE, SigningKey, TokenError, looks_like_jwt, verify
from serving.core.settings import Settings

SUBPROTOCOL_PREFIX = "bearer."
REALM = 'Bearer realm="edge-diffusion"'
#: WebSocket close code (private range 4000-4999, after HTTP 401) and reason when a stream's token expires.
TOKEN_EXPIRED_CLOSE = (4401, "token_expired: the device token expired; reconnect with a fresh token")
# Subjects idle this long have full buckets again and are forgotten (bounded memory whatever the device count).
_IDLE_S = 60.0
_PRUNE_AT = 10_000
# Verified tokens remembered (a device sends the same token until it expires): PyJWT's decode costs a few hundred
# microseconds of pure Python per request, a dictionary hit about one. Bounded, oldest out first.
_VERIFIED_CACHE = 4096


class Denied(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    @property
    def type(self) -> str:
        return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}


@dataclass(frozen=True)
class Grant:
    kind: str  # "master", "token" or "open"
    subject_hash: str | None = None
    scopes: frozenset[str] = frozenset()
    requests_per_minute: int = 0  # 0: no limit
    max_streams: int = 0
    expires_at: float | None = None  # when a stream opened with this grant must close


def subject_hash(subject: str) -> str:
    return hashlib.sha256(subject.encode()).hexdigest()


def bearer_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    values = [v for name, v in headers if name == b"authorization"]
    if len(values) > 1:
        raise Denied(400, "invalid_request", "send exactly one Authorization header")
    if not values:
        return None
    scheme, _, credential = values[0].partition(b" ")
    if scheme.lower() != b"bearer":
        return ""
    return credential.strip().decode("latin-1")


def bearer_for_websocket(headers: Iterable[tuple[bytes, bytes]],
                         subprotocols: Sequence[str]) -> tuple[str | None, str | None]:
    """(credential, subprotocol to echo). A browser cannot set headers, so the credential may come as bearer.X."""
    offered = [p for p in subprotocols if p.startswith(SUBPROTOCOL_PREFIX)]
    credential = bearer_from_headers(headers)
    if credential is not None or not offered:
        return credential, (offered[0] if offered else None)
    return offered[0][len(SUBPROTOCOL_PREFIX):], offered[0]


class Authenticator:
    def __init__(self, settings: Settings, registry=None, master_keys: Sequence[str] = (),
                 signing_keys: Sequence[SigningKey] = ()):
        self.settings = settings
        self._lock = threading.Lock()
        self._master: tuple[bytes, ...] = ()
        self._keys: dict[str, SigningKey] = {}
        self.signing_key: SigningKey | None = None
        self.replace(master_keys, signing_keys)
        self._buckets: dict[str, list[float]] = {}  # subject hash -> [tokens, last refill]
        self._streams: dict[str, int] = {}
        self._verified: dict[str, tuple] = {}  # token -> (Claims, the SigningKey that verified it)
        self._outcomes = self._subjects = None
        if registry is not None:
            self._outcomes = Counter("edge_diffusion_auth", "Credential checks by outcome (master, token, open or "
                                     "the refusal's error code)", ("outcome",), registry=registry)
            self._subjects = Counter("edge_diffusion_token_subject_requests", "Device-token checks by subject bucket "
                                     "(first two hex digits of sha256(sub)) and outcome", ("subject_bucket", "outcome"),
                                     registry=registry)

    # -- keys ----------------------------------------------------------------------------------------------
    def replace(self, master_keys: Sequence[str], signing_keys: Sequence[SigningKey]) -> bool:
        """Install a fresh key set (rotation); True when it differs from the one in use."""
        master = tuple(k.encode() for k in master_keys)
        keys = {k.kid: k for k in signing_keys}
        with self._lock:
            changed = master != self._master or keys != self._keys
            self._master, self._keys = master, keys
            self.signing_key = signing_keys[0] if signing_keys else None
        return changed

    @property
    def enabled(self) -> bool:
        return bool(self._master)

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    # -- checks --------------------------------------------------------------------------------------------
    def authorize(self, credential: str | None, need: str | None = None, *, master_only: bool = False) -> Grant:
        try:
            grant = self._authorize(credential, need, master_only)
        except Denied as exc:
            self._count(exc.code)
            raise
        self._count(grant.kind)
        return grant

    def _authorize(self, credential: str | None, need: str | None, master_only: bool) -> Grant:
        master = self._master
        if not master:
            return Grant("open")
        if not credential:
            raise _unauthorized("missing_credentials", "missing credentials: send 'Authorization: Bearer <key or "
                                "device token>' (or the WebSocket subprotocol bearer.<credential>)")
        given = credential.encode("latin-1", "replace")
        # Every master key is compared (compare_digest runs in time independent of where a difference is).
        if any([hmac.compare_digest(given, key) for key in master]):
            return Grant("master")
        if not looks_like_jwt(credential):
            raise _unauthorized("invalid_api_key", "invalid API key or device token")
        try:
            claims = self._verify(credential)
        except TokenError as exc:
            raise _unauthorized(exc.code, exc.message) from None
        digest = subject_hash(claims.subject)
        if master_only:
            self._count_subject(digest, "forbidden")
            raise Denied(403, "master_key_required", "device tokens cannot mint tokens: POST /v1/tokens takes the "
                         "master key (from the app backend)")
        if need is not None and need not in claims.scopes:
            self._count_subject(digest, "forbidden")
            raise Denied(403, "insufficient_scope", f"the device token lacks the {need!r} scope",
                         {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{need}"'})
        return Grant("token", digest, claims.scopes,
                     claims.limits.get("requests_per_minute", self.settings.token_requests_per_minute),
                     claims.limits.get("max_streams", self.settings.max_streams),
                     claims.expires_at + self.settings.token_clock_skew)

    def _verify(self, token: str):
        skew, now = self.settings.token_clock_skew, time.time()
        hit = self._verified.get(token)
        # A hit counts only while the key that verified it is still installed and the token is within its times;
        # otherwise the full check runs again and says why it fails.
        if hit is not None:
            claims, key = hit
            if (self._keys.get(claims.kid) == key and now < claims.expires_at + skew
                    and (claims.not_before is None or now >= claims.not_before - skew)):
                return claims
            self._verified.pop(token, None)
        claims = verify(token, self._keys, AUDIENCE, skew)
        with self._lock:
            while len(self._verified) >= _VERIFIED_CACHE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = (claims, self._keys.get(claims.kid))
        return claims

    def admit(self, grant: Grant, now: float | None = None) -> None:
        if grant.kind != "token":
            return
        rate = grant.requests_per_minute
        if rate:
            now = time.monotonic() if now is None else now
            with self._lock:
                if len(self._buckets) > _PRUNE_AT:
                    self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < _IDLE_S}
                bucket = self._buckets.setdefault(grant.subject_hash, [float(rate), now])
                # A token bucket of `rate` requests refilled at rate/60 per second: bursts up to the minute's budget.
                bucket[0] = min(float(rate), bucket[0] + (now - bucket[1]) * rate / 60.0)
                bucket[1] = now
                if bucket[0] < 1.0:
                    wait = math.ceil((1.0 - bucket[0]) * 60.0 / rate)
                    self._refuse_subject(grant, "rate_limited", f"over this token's requests_per_minute ({rate}); "
                                         f"retry in {wait} s", wait)
                bucket[0] -= 1.0
        self._count_subject(grant.subject_hash, "admitted")

    def open_stream(self, grant: Grant) -> Callable[[], None]:
        if grant.kind != "token":
            return lambda: None
        key = grant.subject_hash
        with self._lock:
            if self._streams.get(key, 0) >= grant.max_streams:
                self._refuse_subject(grant, "stream_limit", f"this token's subject already has max_streams "
                                     f"({grant.max_streams}) open streams; close one first", 5)
            self._streams[key] = self._streams.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    left = self._streams.get(key, 1) - 1
                    if left > 0:
                        self._streams[key] = left
                    else:
                        self._streams.pop(key, None)

        return release

    # -- accounting ----------------------------------------------------------------------------------------
    def _refuse_subject(self, grant: Grant, code: str, message: str, retry_after: int) -> None:
        self._count(code)
        self._count_subject(grant.subject_hash, code)
        raise Denied(429, code, message, {"Retry-After": str(max(1, retry_after))})

    def _count(self, outcome: str) -> None:
        if self._outcomes is not None:
            self._outcomes.labels(outcome).inc()

    def _count_subject(self, digest: str | None, outcome: str) -> None:
        if self._subjects is not None and digest:
            self._subjects.labels(digest[:2], outcome).inc()


def _unauthorized(code: str, message: str) -> Denied:
    # RFC 6750 section 3.1: a request without credentials gets the challenge without an error attribute.
    challenge = REALM if code == "missing_credentials" else f'{REALM}, error="invalid_token"'
    return Denied(401, code, message, {"WWW-Authenticate": challenge})
