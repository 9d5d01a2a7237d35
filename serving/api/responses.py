"""The JSON error shape every route answers with, and the exception handlers that produce it."""
from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.core.errors import ServingError


def json_error(status: int, message: str, type_: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}}, status_code=status, headers=headers)


# OpenAI answers an invalid field with 400 (openai.BadRequestError); /generate keeps 422.
OPENAI_PREFIX = "/v1/"


def _openai_status(path: str, status: int) -> int:
    return 400 if status == 422 and path.startswith(OPENAI_PREFIX) else status


def error_response(exc: ServingError, path: str = "") -> JSONResponse:
    status = _openai_status(path, exc.status)
    body = exc.body()
    body["error"]["code"] = status
    return JSONResponse(body, status_code=status, headers=exc.headers)


def validation_error_response(exc: RequestValidationError, path: str = "") -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "value_error", "loc": ("body",), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return json_error(400, f"request body is not valid JSON: {ctx.get('error', first.get('msg'))}", "invalid_request_error")
    if not loc:
        if first.get("type") == "missing":
            return json_error(400, "a JSON request body is required (Content-Type: application/json)", "invalid_request_error")
        return json_error(400, "request body must be a JSON object sent with Content-Type: application/json",
                          "invalid_request_error")
    param = ".".join(loc)
    if first.get("type") == "extra_forbidden":
        message = f"{param}: unknown field; check the spelling against /openapi.json"
    else:
        message = f"{param}: {first.get('msg')}"
        if "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {json.dumps(first['input'], default=str)[:80]})"
    return json_error(_openai_status(path, 422), message, "invalid_request_error", param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def _serving_error(request: Request, exc: ServingError):
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return validation_error_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
        return json_error(exc.status_code, str(exc.detail), kind, headers=getattr(exc, "headers", None))
