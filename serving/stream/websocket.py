"""GET /v1/stream: the WebSocket frame stream (protocol in docs/streaming.md).

Client -> server: a JSON config text message (again at any time; it applies to the next frame), then binary
frames (JPEG, PNG or WebP). Server -> client per processed frame: {"type": "frame", "seq", "inference_ms",
"dropped"} and the output image as one binary message. Latest frame wins: one frame may wait per stream; a newer
one replaces it and counts as dropped. Errors ({"type": "error", "error": {"message", "field"}}) keep it open.
Credentials go through serving.auth.credentials; a stream opened with a device token closes with 4401 when it expires.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from serving.auth.credentials import TOKEN_EXPIRED_CLOSE, Denied, bearer_for_websocket
from serving.core.errors import ServingError, Unavailable
from serving.stream.frames import FrameConfig
from serving.stream.protocol import INLINE_BYTES, INLINE_PIXELS, MEDIA
from serving.stream.session import ConfigRefused, FrameSession, infer_frame, parse_config
from serving.core.imaging import encode_image
from serving.engine.state import ServerState

log = logging.getLogger("serving.stream")


class _DenialFilter(logging.Filter):
    """uvicorn logs "returned without completing handshake" as an error after every denial response (the
    401/429/503 refusals below) although the response was sent, so here the line carries no information."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


logging.getLogger("uvicorn.error").addFilter(_DenialFilter())

class StreamSession(FrameSession):
    transport = "websocket"
    gone = (WebSocketDisconnect, RuntimeError)  # the client went away mid-send

    def __init__(self, ws: WebSocket, state: ServerState, expires_at: float | None = None):
        super().__init__(state, expires_at)
        self.ws = ws
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task | None = None

    async def close_now(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, reason)
            except RuntimeError:  # a close raced with the client's
                pass
        if self._reader is not None:
            self._reader.cancel()

    async def send_error(self, message: str, field: str | None) -> None:
        await self._send_text({"type": "error", "error": {"message": message, "field": field}})

    async def _send_text(self, payload: dict, binary: bytes | None = None) -> None:
        async with self._send_lock:
            await self.ws.send_text(json.dumps(payload))
            if binary is not None:
                await self.ws.send_bytes(binary)

    # -- the two loops -------------------------------------------------------------------------------------
    async def run(self) -> None:
        self._reader = asyncio.create_task(self._read())
        tasks = [self._reader, asyncio.create_task(self._work())]
        if self.expires_at is not None:
            tasks.append(asyncio.create_task(self._expire()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.finished.set()

    async def _expire(self) -> None:
        await asyncio.sleep(max(0.0, self.expires_at - time.time()))
        async with self._send_lock:  # never between a frame's header and its image
            await self.close_now(*TOKEN_EXPIRED_CLOSE)
        log.info("stream token expired", extra={"fields": {"frames": self.processed}})

    async def _read(self) -> None:
        idle = self.settings.stream_idle_timeout
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), idle)
            except TimeoutError:
                if self.busy:
                    continue  # a client waiting for a slow frame is not idle
                await self.close_now(1000, f"idle for {idle:g} s (--stream-idle-timeout)")
                return
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await self._on_config(message["text"])
            elif message.get("bytes") is not None:
                await self._on_frame(message["bytes"])

    async def _on_config(self, text: str) -> None:
        try:
            self.config = parse_config(self.state, text)
            self.config_error = None
        except ConfigRefused as exc:
            self.config_error = exc.message
            await self.send_error(exc.message, exc.field)

    async def _on_frame(self, data: bytes) -> None:
        self.received += 1
        if len(data) > self.settings.max_frame_bytes:
            await self.send_error(f"frame: {len(data)} bytes is over --max-frame-bytes ({self.settings.max_frame_bytes})",
                                  "frame")
            return
        staged = None
        if self.busy and self.config is not None:  # decode and upload it beside the frame on the device
            staged = asyncio.ensure_future(asyncio.to_thread(self._decode, data, True))
            staged.add_done_callback(lambda f: f.cancelled() or f.exception())  # a dropped frame's error is moot
        # (seq, bytes, received, the frame's decode/upload already under way while the previous one ran, or None)
        self.offer(self.received, data, time.perf_counter(), staged)

    def _decode(self, data: bytes, stage: bool):
        return self.hub.runner().decode(data, self.settings.min_image_size, self.settings.max_image_size, stage)

    async def _process(self, seq: int, data: bytes, received: float, staged: asyncio.Future | None = None) -> None:
        config = self.config
        if config is None:
            if self.config_error is None:
                await self.send_error("send a JSON config message (at least a prompt) before frames", "config")
            else:
                await self.send_error(f"no config accepted yet; the last one was refused ({self.config_error}): "
                                      "send a corrected config", "config")
            return
        try:
            if staged is not None:
                frame, size = await staged
            elif len(data) <= INLINE_BYTES:
                frame, size = self._decode(data, False)
            else:
                frame, size = await asyncio.to_thread(self._decode, data, False)
            result = await self._infer(config, frame, size)
        except Unavailable as exc:
            if self.stopping or self.state.engine.draining:
                return  # the drain closes the stream with 1001
            await self.send_error(exc.message, None)
            return
        except ServingError as exc:
            await self.send_error(exc.message, exc.param)
            return
        except Exception:  # noqa: BLE001 - one broken frame must not end the stream
            log.exception("stream frame failed")
            await self.send_error("internal error while processing this frame", None)
            return
        (output,) = result.images
        media = MEDIA[config.output_format]
        if isinstance(output, bytes):  # encoded on the device (serving.stream.codec)
            encoded = output
        elif output.width * output.height <= INLINE_PIXELS:
            encoded = encode_image(output, media)
        else:
            encoded = await asyncio.to_thread(encode_image, output, media)
        header = {"type": "frame", "seq": seq, "inference_ms": round(result.inference_ms, 2), "dropped": self.dropped}
        await self._send_text(header, encoded)
        self.processed += 1
        if self.hub.metrics:
            self.metrics.frames.inc()
            self.metrics.latency.observe(time.perf_counter() - received)

    async def _infer(self, config: FrameConfig, image, size: tuple[int, int]):
        return await infer_frame(self.state, self._prepared, config, image, size, MEDIA[config.output_format])


def _refusal(status: int, message: str, type_: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": status}},
                        status_code=status, headers=headers)


def add_stream_routes(app: FastAPI, state: ServerState) -> None:
    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        hub = state.streams
        try:
            credential, subprotocol = bearer_for_websocket(ws.scope["headers"], ws.scope.get("subprotocols", []))
            grant = state.auth.authorize(credential, "stream")
            state.auth.admit(grant)
        except Denied as exc:
            await ws.send_denial_response(JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers))
            _refused(hub, {400: "unauthorized", 401: "unauthorized", 403: "forbidden"}.get(exc.status, exc.code))
            return
        if not state.ready or state.engine.backend is None:
            await ws.send_denial_response(_refusal(503, f"not ready: {state.phase}", "unavailable", {"Retry-After": "1"}))
            _refused(hub, "not_ready")
            return
        if not state.engine.backend.supports_img2img or not state.settings.max_streams:
            await ws.send_denial_response(_refusal(
                404, f"this endpoint does not serve frame streams ({state.engine.backend.name} backend, "
                f"--max-streams {state.settings.max_streams})", "not_found"))
            _refused(hub, "unsupported")
            return
        try:
            release = state.auth.open_stream(grant)
        except Denied as exc:
            await ws.send_denial_response(JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers))
            _refused(hub, exc.code)
            return
        session = StreamSession(ws, state, grant.expires_at)
        if not hub.try_open(session):
            release()
            await ws.send_denial_response(_refusal(
                429, f"this server already has --max-streams ({state.settings.max_streams}) open streams; "
                "retry later or on another endpoint", "rate_limit_error", {"Retry-After": "5"}))
            _refused(hub, "max_streams")
            return
        opened = time.perf_counter()
        try:
            await ws.accept(subprotocol=subprotocol)
            log.info("stream open", extra={"fields": {"streams": len(hub.sessions), "auth": grant.kind,
                                                      "subject_hash": (grant.subject_hash or "")[:16] or None}})
            await session.run()
        finally:
            release()
            hub.closed(session)
            log.info("stream closed", extra={"fields": {"frames": session.processed, "received": session.received,
                                                        "dropped": session.dropped,
                                                        "seconds": round(time.perf_counter() - opened, 3)}})


def _refused(hub, reason: str) -> None:
    if hub.metrics:
        hub.metrics.refused.labels(reason).inc()

