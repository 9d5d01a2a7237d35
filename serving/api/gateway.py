"""ASGI middleware in front of every route: request id, bearer auth, the body limit, client-disconnect
cancellation, one JSON log line and the request metrics per request.

Pure ASGI (no BaseHTTPMiddleware) to keep the per-request overhead in the tens of microseconds.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse

from serving.api.responses import json_error
from serving.auth.credentials import Denied, bearer_from_headers
from serving.engine.state import ServerState

MAX_BODY_BYTES = 1024 * 1024
# An oversized body is read and discarded up to this much (and this long) before the 413 goes out: a client
# that writes its whole body before reading (urllib, many mobile HTTP stacks) would otherwise see a connection
# reset, because closing a socket with unread input makes the kernel send RST, which discards the 413.
DISCARD_LIMIT_BYTES = 16 * 1024 * 1024
DISCARD_LIMIT_S = 5.0
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})
# The scope a device token needs per route (each request to one counts against its requests_per_minute); other
# routes (/v1/endpoints, /openapi.json) take any valid credential, and MASTER_ONLY ones the master key alone.
ROUTE_SCOPES = {"/generate": "generate", "/v1/images/generations": "generate", "/v1/images/edits": "edit",
                "/v1/stream": "stream", "/v1/webrtc": "stream"}
MASTER_ONLY = frozenset({"/v1/tokens"})
REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
# nginx's "client closed request": logged and counted when the client went away before its response was sent.
CLIENT_GONE = 499

access_log = logging.getLogger("serving.access")
log = logging.getLogger("serving.api")


class GatewayMiddleware:
    def __init__(self, app, state: ServerState, routes: list):
        self.app = app
        self.state = state
        self._routes = routes  # the app's route list, read once it is complete (at the first request)
        self._labels: dict[str, str] | None = None

    def route_label(self, path: str) -> str:
        """The metrics label of a path: its route's name, so the label set stays bounded whatever clients send."""
        if self._labels is None:
            self._labels = {r.path: r.name for r in self._routes if getattr(r, "path", None) and getattr(r, "name", None)}
        if path in self._labels:
            return self._labels[path]
        return "static" if path.startswith("/static/") else "other"

    def _check_auth(self, scope, log_fields: dict):
        """None when the request may proceed, else the refusal (serving.auth.credentials: 400, 401, 403, 429)."""
        path = scope["path"]
        try:
            credential = bearer_from_headers(scope["headers"])
            if path in PUBLIC_PATHS or path.startswith("/static/"):
                return None
            need = ROUTE_SCOPES.get(path)
            grant = self.state.auth.authorize(credential, need, master_only=path in MASTER_ONLY)
            if need is not None:
                self.state.auth.admit(grant)
        except Denied as exc:
            log_fields["auth"] = exc.code
            if exc.status == 400:
                return json_error(400, exc.message, "invalid_request_error", param="Authorization")
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        log_fields["auth"] = grant.kind
        if grant.subject_hash:
            log_fields["subject_hash"] = grant.subject_hash[:16]
        scope["state"]["grant"] = grant
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
                request_id = value.decode()
            elif name == b"content-length":
                content_length = value
        # An id that is not a plain token (control characters, spaces, over 64 bytes) is replaced, never echoed.
        request_id = request_id or uuid.uuid4().hex
        log_fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log_fields"] = log_fields
        info = {"status": 500, "bytes": 0, "started": False, "complete": False}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                info["started"] = True
                info["status"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                info["bytes"] += len(message.get("body", b""))
                info["complete"] = not message.get("more_body", False)
            await send(message)

        self.state.http_active += 1
        try:
            refusal = self._check_auth(scope, log_fields)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                # bytes.isdigit() is ASCII-only, so this also rejects signs ("-1"), spaces and empty values.
                if content_length is not None and not content_length.isdigit():
                    bad = json_error(400, "Content-Length header must be a non-negative integer", "invalid_request_error",
                                     param="Content-Length")
                    await bad(scope, receive, send_wrapper)
                    return
                body, ok = await self._read_body(receive, content_length)
                if not ok:
                    too_large = json_error(413, f"request body exceeds {MAX_BODY_BYTES} bytes (1 MiB)", "request_too_large")
                    await too_large(scope, receive, send_wrapper)
                    return
                if body is None:  # the client left while sending its body
                    info["status"] = CLIENT_GONE
                    return
                await self._run_until_disconnect(scope, body, receive, send_wrapper, info)
                return
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
            self.state.http_active -= 1
            self._record(scope, request_id, started, info, log_fields)

    async def _run_until_disconnect(self, scope, body: bytes, receive, send, info: dict) -> None:
        """Run the app with the buffered body; cancel it when the client disconnects before its response is sent.

        Starlette does not cancel a handler whose client has gone, so without this a queued or running generation
        would finish for nobody. Cancelling the handler task makes the engine drop the request from its queue or
        abort the generation at its next denoising step.
        """
        watcher_done = asyncio.Event()
        gone = False

        async def watch() -> None:
            nonlocal gone
            try:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        # uvicorn also answers disconnect once the response is complete; only before that is it
                        # the client leaving.
                        gone = not info["complete"]
                        return
            finally:
                watcher_done.set()

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await watcher_done.wait()  # the watcher is the only reader of the connection
            return {"type": "http.disconnect"}

        handler = asyncio.ensure_future(self.app(scope, replay, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not handler.done() and gone:
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
                info["status"] = CLIENT_GONE
                return
            await handler
            if gone and not info["complete"]:
                info["status"] = CLIENT_GONE
        finally:
            watcher.cancel()
            if not handler.done():  # this task itself was cancelled (server shutdown)
                handler.cancel()

    @staticmethod
    async def _read_body(receive, content_length: bytes | None) -> tuple[bytes | None, bool]:
        """(body, True); (None, True) when the client disconnected; (b"", False) when it is over the limit."""
        declared = int(content_length) if content_length is not None else None
        if declared is not None and declared > DISCARD_LIMIT_BYTES:
            return b"", False  # not worth reading: answer at once (this client may see a reset)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, True
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > MAX_BODY_BYTES or (declared is not None and declared > MAX_BODY_BYTES):
                await _discard(receive, message, total)
                return b"", False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    def _record(self, scope, request_id, started, info, fields) -> None:
        elapsed = time.perf_counter() - started
        fields.pop("route", None)
        route = self.route_label(scope["path"])
        status = str(info["status"])
        metrics = self.state.metrics
        if metrics is not None:
            metrics.requests.labels(route, status).inc()
            metrics.latency.labels(route, status).observe(elapsed)
        entry = {
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": info["status"],
            "latency_ms": round(elapsed * 1000, 2),
            "bytes": info["bytes"],
        }
        entry.update(fields)
        if scope["path"] in ("/healthz", "/readyz") and info["status"] == 200:
            access_log.debug("request", extra={"fields": entry})
        else:
            access_log.info("request", extra={"fields": entry})


async def _discard(receive, message: dict, total: int) -> None:
    """Read and drop the rest of an oversized body, bounded in bytes and time."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DISCARD_LIMIT_S):
            while message.get("more_body", False) and total <= DISCARD_LIMIT_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                total += len(message.get("body", b""))
