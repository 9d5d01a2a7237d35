"""POST /v1/tokens: an app backend trades the master key for a short-lived device token (serving.auth.tokens).

The gateway lets only the master key through (a device token gets 403 master_key_required).
"""
from __future__ import annotations

from typing import Literal, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.api.responses import json_error
from serving.api.schemas import error_responses
from serving.auth.credentials import subject_hash
from serving.auth.tokens import AUDIENCE, DEFAULT_TTL_S, LIMIT_MAX, MAX_TTL_S, SCOPES, check_subject, mint
from serving.engine.state import ServerState


class TokenLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    requests_per_minute: Optional[int] = Field(None, ge=1, le=LIMIT_MAX["requests_per_minute"],
                                               description="Requests per minute for this subject, per server "
                                               "(default --token-requests-per-minute)")
    max_streams: Optional[int] = Field(None, ge=1, le=LIMIT_MAX["max_streams"],
                                       description="Open streams for this subject, per server (default --max-streams)")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    subject: str = Field(description="The device or user the token is for (1-128 printable characters); logs and "
                         "metrics carry only its SHA-256")
    ttl_s: int = Field(DEFAULT_TTL_S, ge=1, le=MAX_TTL_S, description="Lifetime in seconds")
    scopes: list[Literal["generate", "edit", "stream"]] = Field(default_factory=lambda: list(SCOPES), min_length=1,
                                                                description="What the token may do")
    limits: Optional[TokenLimits] = None

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return check_subject(value)


class TokenResponse(BaseModel):
    token: str = Field(description="A JWT (RFC 7519); send it as 'Authorization: Bearer <token>'")
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: int = Field(description="Expiry, unix seconds")


def add_token_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/tokens", name="tokens", status_code=201, response_model=TokenResponse,
              summary="Mint a short-lived device token (master key only)",
              responses=error_responses(400, 401, 403, 404))
    async def tokens(body: TokenRequest, request: Request):
        key = state.auth.signing_key
        if key is None:
            return json_error(404, "device tokens are not enabled on this server (--token-keys-file or "
                              "--token-keys-secret-arn)", "not_found")
        limits = body.limits.model_dump(exclude_none=True) if body.limits else None
        token, expires_at = mint(key, body.subject, AUDIENCE, body.ttl_s, body.scopes, limits)
        request.scope["state"]["log_fields"].update(minted_for=subject_hash(body.subject)[:16], kid=key.kid,
                                                    ttl_s=body.ttl_s)
        return JSONResponse({"token": token, "token_type": "Bearer", "expires_at": expires_at}, status_code=201)
