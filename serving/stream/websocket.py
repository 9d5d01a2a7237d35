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
import threading
import time

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from serving.auth.credentials import TOKEN_EXPIRED_CLOSE, Denied, bearer_for_websocket
from serving.backends.base import GenerationParams
from serving.core.errors import InvalidRequest, ServingError, Unavailable
from serving.stream.frames import FrameConfig
from serving.stream.protocol import INLINE_BYTES, INLINE_PIXELS, MEDIA, PREPARED_PER_STREAM, ConfigMessage
from serving.core.imaging import encode_image
from serving.core.img2img import check_strength, decode_image
from serving.core.prompts import require_visible_text
from serving.engine.state import ServerState

log = logging.getLogger("serving.stream")


class _DenialFilter(logging.Filter):
    """uvicorn logs "returned without completing handshake" as an error after every denial response (the
    401/429/503 refusals below) although the response was sent, so here the line carries no information."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


logging.getLogger("uvicorn.error").addFilter(_DenialFilter())

class StreamSession:
    def __init__(self, ws: WebSocket, state: ServerState, expires_at: float | None = None):
        self.ws = ws
        # When the device token that opened the stream expires (epoch seconds): the stream closes then, with
        # TOKEN_EXPIRED_CLOSE, so a token's lifetime bounds what it can use.
        self.expires_at = expires_at
        self.state = state
        self.hub = state.streams
        self.settings = state.settings
        self.config: FrameConfig | None = None
        # Why the last config was refused: frames before any accepted config report it instead of asking again.
        self.config_error: str | None = None
        self.pending: tuple[int, bytes, float] | None = None
        self.received = 0
        self.dropped = 0
        self.processed = 0
        self.wake = asyncio.Event()
        self.finished = asyncio.Event()
        self.stopping = False
        self.busy = False
        self._send_lock = asyncio.Lock()
        self._prepared: dict[tuple, object] = {}
        self._reader: asyncio.Task | None = None

    # -- control -------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Drain: finish the frame in progress, drop the waiting one, then close with 1001."""
        self.stopping = True
        self.wake.set()

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
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            await self.send_error(f"config is not valid JSON: {exc.msg}", None)
            return
        if not isinstance(raw, dict):
            await self.send_error("config must be a JSON object", None)
            return
        try:
            self.config = self._resolve(ConfigMessage(**raw))
            self.config_error = None
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg")
            await self._refuse_config(f"{field}: {message}", field)
        except InvalidRequest as exc:
            await self._refuse_config(exc.message, exc.param)

    async def _refuse_config(self, message: str, field: str | None) -> None:
        self.config_error = message
        await self.send_error(message, field)

    def _resolve(self, msg: ConfigMessage) -> FrameConfig:
        d, s = self.state.defaults, self.settings
        if d is None:
            raise InvalidRequest("the model is still loading", param=None)
        try:
            require_visible_text(msg.prompt)
        except ValueError as exc:
            raise InvalidRequest(f"prompt: {exc}", param="prompt") from None
        if len(msg.prompt) > s.max_prompt_length:
            raise InvalidRequest(f"prompt: at most {s.max_prompt_length} characters", param="prompt")
        # One denoising step by default (steps x strength = 1): the frame-rate setting of few-step models.
        steps = msg.num_inference_steps or max(d.steps, 2)
        if steps > s.max_steps:
            raise InvalidRequest(f"num_inference_steps: at most {s.max_steps}", param="num_inference_steps")
        strength = 0.5 if msg.strength is None else msg.strength
        check_strength(steps, strength)
        return FrameConfig(prompt=msg.prompt, negative_prompt=msg.negative_prompt, strength=strength, steps=steps,
                           guidance_scale=d.guidance_scale if msg.guidance_scale is None else msg.guidance_scale,
                           seed=0 if msg.seed is None else msg.seed, output_format=msg.output_format)

    async def _on_frame(self, data: bytes) -> None:
        self.received += 1
        if len(data) > self.settings.max_frame_bytes:
            await self.send_error(f"frame: {len(data)} bytes is over --max-frame-bytes ({self.settings.max_frame_bytes})",
                                  "frame")
            return
        if self.pending is not None:
            self.dropped += 1
            if self.hub.metrics:
                self.hub.metrics.dropped.inc()
        self.pending = (self.received, data, time.perf_counter())
        self.wake.set()

    async def _work(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.stopping:
                await self.close_now(1001, "server shutting down")
                return
            if self.pending is None:
                continue
            seq, data, received = self.pending
            self.pending = None
            self.busy = True
            try:
                await self._process(seq, data, received)
            except (WebSocketDisconnect, RuntimeError):
                return  # the client went away mid-send
            finally:
                self.busy = False
            if self.pending is not None or self.stopping:
                self.wake.set()

    async def _process(self, seq: int, data: bytes, received: float) -> None:
        config = self.config
        if config is None:
            if self.config_error is None:
                await self.send_error("send a JSON config message (at least a prompt) before frames", "config")
            else:
                await self.send_error(f"no config accepted yet; the last one was refused ({self.config_error}): "
                                      "send a corrected config", "config")
            return
        s = self.settings
        try:
            if len(data) <= INLINE_BYTES:
                image = decode_image(data, "frame", s.min_image_size, s.max_image_size)
            else:
                image = await asyncio.to_thread(decode_image, data, "frame", s.min_image_size, s.max_image_size)
            result = await self._infer(config, image)
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
        if output.width * output.height <= INLINE_PIXELS:
            encoded = encode_image(output, media)
        else:
            encoded = await asyncio.to_thread(encode_image, output, media)
        header = {"type": "frame", "seq": seq, "inference_ms": round(result.inference_ms, 2), "dropped": self.dropped}
        await self._send_text(header, encoded)
        self.processed += 1
        if self.hub.metrics:
            self.hub.metrics.frames.inc()
            self.hub.metrics.latency.observe(time.perf_counter() - received)

    async def _infer(self, config: FrameConfig, image):
        width, height = image.size
        key = (config, width, height)
        hub = self.hub

        def work(cancel: threading.Event) -> list:
            runner = hub.runner()
            prepared = self._prepared.get(key)
            if prepared is None:  # embeddings, noise and schedule: once per config and size
                prepared = runner.prepare(config, width, height)
                if hub.metrics:
                    hub.metrics.prepared.inc()
                while len(self._prepared) >= PREPARED_PER_STREAM:
                    self._prepared.pop(next(iter(self._prepared)))
                self._prepared[key] = prepared
            return [runner.run(prepared, image, cancel)]

        params = GenerationParams(prompt=config.prompt, width=width, height=height, steps=config.steps,
                                  guidance_scale=config.guidance_scale, seed=config.seed, image=image,
                                  strength=config.strength)
        hub.frames_in_engine += 1
        try:
            return await self.state.engine.generate(params, work=work, queue_exempt=True)
        finally:
            hub.frames_in_engine -= 1


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

