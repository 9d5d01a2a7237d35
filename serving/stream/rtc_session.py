"""One WebRTC frame stream: the client's video track in, a track of generated frames out, a `config` data channel.

The same rules as the WebSocket stream (serving.stream.session): config messages validated the same way, errors
naming the field without ending the session, and latest frame wins: frames decoded while one is in the engine
replace the waiting one and count as dropped. Per processed frame the channel carries {"type": "frame", "seq",
"inference_ms", "dropped", "overhead_ms"} (overhead: from the decoded frame taken up to the generated frame handed
to the encoder, inference excluded: the RGB conversions and the hops to and from the engine's worker thread).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from aiortc import MediaStreamTrack
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError
from av import VideoFrame

from serving.core.errors import ServingError, Unavailable
from serving.engine.state import ServerState
from serving.stream.protocol import INLINE_PIXELS
from serving.auth.credentials import TOKEN_EXPIRED_CLOSE
from serving.stream.session import ConfigRefused, FrameSession, infer_frame, parse_config

log = logging.getLogger("serving.stream")

# A frame-level error (no config yet, a camera size the model cannot take) repeats with every frame of a 30 fps
# track; the channel carries it at most this often.
ERROR_REPEAT_S = 1.0


class GeneratedTrack(MediaStreamTrack):
    """The outgoing video: the newest generated frame, timestamped when the encoder takes it (latest wins here too)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._frame: VideoFrame | None = None
        self._ready = asyncio.Event()
        self._start: float | None = None

    def put(self, frame: VideoFrame) -> None:
        self._frame = frame
        self._ready.set()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._ready.wait()
        self._ready.clear()
        frame = self._frame
        now = time.monotonic()
        if self._start is None:
            self._start = now
        frame.pts = int((now - self._start) / VIDEO_TIME_BASE)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class RtcSession(FrameSession):
    transport = "webrtc"

    def __init__(self, state: ServerState, session_id: str, expires_at: float | None = None):
        super().__init__(state, expires_at)
        self.id = session_id
        self.pc = None
        self.output = GeneratedTrack()
        self.channel = None
        self.ended = asyncio.Event()
        self.close_reason = "client closed"
        self._readers: list[asyncio.Task] = []
        self._last_error: tuple[str, float] = ("", 0.0)

    # -- wiring (called while the offer is applied) -------------------------------------------------------
    def attach_track(self, track) -> None:
        self._readers.append(asyncio.ensure_future(self._read(track)))

    def attach_channel(self, channel) -> None:
        self.channel = channel
        channel.on("message", self._on_message)

    def on_state(self, connection_state: str) -> None:
        if connection_state in ("failed", "closed") and not self.ended.is_set():
            self.close_reason = f"connection {connection_state}"
            self.ended.set()

    # -- control --------------------------------------------------------------------------------------------
    async def close_now(self, code: int, reason: str) -> None:
        # The code is the WebSocket stream's close code for the same cause (1001 drain, 4401 token expired).
        self._send({"type": "closed", "code": code, "reason": reason})
        self.close_reason = reason
        self.ended.set()

    def _send(self, payload: dict) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(payload))

    def send_error(self, message: str, field: str | None, repeat: bool = True) -> None:
        now = time.monotonic()
        if not repeat and self._last_error[0] == message and now - self._last_error[1] < ERROR_REPEAT_S:
            return
        self._last_error = (message, now)
        self._send({"type": "error", "error": {"message": message, "field": field}})

    # -- the loops -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        worker = asyncio.ensure_future(self._work())
        ended = asyncio.ensure_future(self.ended.wait())
        tasks = [worker, ended, *self._readers]
        if self.expires_at is not None:
            tasks.append(asyncio.ensure_future(self._expire()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pc.close()
            self.hub.closed(self)
            self.finished.set()
            log.info("webrtc session closed", extra={"fields": {
                "session": self.id, "frames": self.processed, "received": self.received, "dropped": self.dropped,
                "reason": self.close_reason}})

    async def _expire(self) -> None:
        await asyncio.sleep(max(0.0, self.expires_at - time.time()))
        await self.close_now(*TOKEN_EXPIRED_CLOSE)

    def _on_message(self, message) -> None:
        if not isinstance(message, str):
            self.send_error("the config channel carries JSON text messages", None)
            return
        try:
            self.config = parse_config(self.state, message)
            self.config_error = None
        except ConfigRefused as exc:
            self.config_error = exc.message
            self.send_error(exc.message, exc.field)

    async def _read(self, track) -> None:
        idle = self.settings.stream_idle_timeout
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), idle)
            except TimeoutError:
                if self.busy:
                    continue
                self.close_reason = f"no video for {idle:g} s (--stream-idle-timeout)"
                return
            except MediaStreamError:
                self.close_reason = "the client's video track ended"
                return
            self.received += 1
            self.offer(self.received, frame, time.perf_counter())

    def _check_size(self, width: int, height: int) -> str | None:
        s = self.settings
        if not (s.min_image_size <= width <= s.max_image_size and s.min_image_size <= height <= s.max_image_size):
            return (f"video: {width}x{height} is outside this server's bounds: each side within "
                    f"{s.min_image_size}..{s.max_image_size}")
        if width % 8 or height % 8:
            return f"video: {width}x{height}: both sides must be multiples of 8"
        return None

    async def _process(self, seq: int, frame: VideoFrame, received: float) -> None:
        config = self.config
        if config is None:
            if self.config_error is None:
                self.send_error("send a JSON config message (at least a prompt) on the 'config' channel", "config",
                                repeat=False)
            else:
                self.send_error(f"no config accepted yet; the last one was refused ({self.config_error}): send a "
                                "corrected config", "config", repeat=False)
            return
        problem = self._check_size(frame.width, frame.height)
        if problem:
            self.send_error(problem, "video", repeat=False)
            return
        started = time.perf_counter()
        inline = frame.width * frame.height <= INLINE_PIXELS
        image = frame.to_image() if inline else await asyncio.to_thread(frame.to_image)
        try:
            result = await infer_frame(self.state, self._prepared, config, image)
        except Unavailable as exc:
            if not (self.stopping or self.state.engine.draining):
                self.send_error(exc.message, None)
            return
        except ServingError as exc:
            self.send_error(exc.message, exc.param)
            return
        except Exception:  # noqa: BLE001 - one broken frame must not end the session
            log.exception("webrtc frame failed")
            self.send_error("internal error while processing this frame", None)
            return
        (output,) = result.images
        out = VideoFrame.from_image(output) if inline else await asyncio.to_thread(VideoFrame.from_image, output)
        self.output.put(out)
        done = time.perf_counter()
        self.processed += 1
        overhead_ms = (done - started) * 1000 - result.inference_ms
        self._send({"type": "frame", "seq": seq, "inference_ms": round(result.inference_ms, 2),
                    "dropped": self.dropped, "overhead_ms": round(max(overhead_ms, 0.0), 3)})
        if self.metrics:
            self.metrics.frames.inc()
            self.metrics.latency.observe(done - received)
