"""ASGI middleware in front of every route: request id, bearer auth, the body limit, one JSON log line and
the request metrics per request.

Pure ASGI (no BaseHTTPMiddleware) to keep the per-request overhead in the tens of microseconds.
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

from serving.api.responses import json_error
from serving.state import ServerState

MAX_BODY_BYTES = 1024 * 1024
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})

access_log = logging.getLogger("serving.access")
log = logging.getLogger("serving.api")


class GatewayMiddleware:
    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state

    def _authorized(self, scope) -> bool:
        key = self.state.api_key_bytes
        if key is None:
            return True
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # compare_digest runs in time independent of where the first difference is.
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
                request_id = value.decode()
            elif name == b"content-length":
                content_length = value
        request_id = request_id or uuid.uuid4().hex
        log_fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log_fields"] = log_fields
        info = {"status": 500, "bytes": 0, "started": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                info["started"] = True
                info["status"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                info["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            if not self._authorized(scope):
                response = json_error(
                    401, "missing or invalid API key: send 'Authorization: Bearer <key>'", "authentication_error",
                    headers={"WWW-Authenticate": 'Bearer realm="edge-diffusion"'},
                )
                await response(scope, receive, send_wrapper)
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                too_large = json_error(413, f"request body exceeds {MAX_BODY_BYTES} bytes (1 MiB)", "request_too_large")
                # bytes.isdigit() is ASCII-only, so this also rejects signs ("-1"), spaces and empty values.
                if content_length is not None and not content_length.isdigit():
                    bad = json_error(400, "Content-Length header must be a non-negative integer", "invalid_request_error",
                                     param="Content-Length")
                    await bad(scope, receive, send_wrapper)
                    return
                if content_length is not None and int(content_length) > MAX_BODY_BYTES:
                    await too_large(scope, receive, send_wrapper)
                    return
                body, ok = await self._read_body(receive)
                if not ok:
                    await too_large(scope, receive, send_wrapper)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Handled here rather than by an app-level Exception handler: Starlette runs that one in its outermost
            # ServerErrorMiddleware, which sends through the raw `send` (no X-Request-ID, 500 missing from our
            # request log) and re-raises, so uvicorn logs the traceback a second time.
            if info["started"]:
                raise  # too late for an error response; the server logs it and closes the connection
            log.exception("unhandled error", extra={"fields": {"request_id": request_id, "method": scope["method"],
                                                               "path": scope["path"]}})
            response = json_error(500, "internal error; the request id is in the X-Request-ID header", "server_error")
            await response(scope, receive, send_wrapper)
        finally:
            self._record(scope, request_id, started, info, log_fields)

    @staticmethod
    async def _read_body(receive) -> tuple[bytes, bool]:
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                return b"", False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    def _record(self, scope, request_id, started, info, fields) -> None:
        elapsed = time.perf_counter() - started
        route = fields.pop("route", None)
        metrics = self.state.metrics
        if metrics is not None:
            metrics.requests.labels(route or "other", str(info["status"])).inc()
            if route in ("generate", "openai") and info["status"] == 200:
                metrics.latency.labels(route).observe(elapsed)
        entry = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": info["status"],
            "latency_ms": round(elapsed * 1000, 2),
            "bytes": info["bytes"],
        }
        entry.update(fields)
        if scope["path"] in ("/healthz", "/readyz") and info["status"] == 200:
            access_log.debug("request", extra={"fields": entry})
        else:
            access_log.info("request", extra={"fields": entry})


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
