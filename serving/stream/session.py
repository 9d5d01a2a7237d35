"""What both frame-stream transports share: the config message's validation and one frame through the engine.

The WebSocket (serving.stream.websocket) and WebRTC (serving.stream.webrtc) sessions differ in how frames and
messages travel; the config a client may send, its error messages and the frame's path through the prepared-config
cache and the engine's FIFO are the same, so a client can switch transports without a second set of rules.
"""
from __future__ import annotations

import asyncio
import json
import threading

from pydantic import ValidationError

from serving.backends.base import GenerationParams
from serving.core.errors import InvalidRequest
from serving.core.img2img import check_strength
from serving.core.prompts import require_visible_text
from serving.engine.state import ServerState
from serving.stream.codec import JPEG_MEDIA
from serving.stream.frames import FrameConfig
from serving.stream.protocol import PREPARED_PER_STREAM, ConfigMessage


class ConfigRefused(Exception):
    """A config message the server will not apply; ``field`` names the offending key (None: the whole message)."""

    def __init__(self, message: str, field: str | None):
        super().__init__(message)
        self.message = message
        self.field = field


def parse_config(state: ServerState, text: str) -> FrameConfig:
    """A JSON config message -> the FrameConfig it asks for, or ConfigRefused naming the field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigRefused(f"config is not valid JSON: {exc.msg}", None) from None
    if not isinstance(raw, dict):
        raise ConfigRefused("config must be a JSON object", None)
    try:
        return resolve_config(state, ConfigMessage(**raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg")
        raise ConfigRefused(f"{field}: {message}", field) from None
    except InvalidRequest as exc:
        raise ConfigRefused(exc.message, exc.param) from None


def resolve_config(state: ServerState, msg: ConfigMessage) -> FrameConfig:
    d, s = state.defaults, state.settings
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


async def infer_frame(state: ServerState, prepared_cache: dict, config: FrameConfig, image,
                      size: tuple[int, int] | None = None, media: str | None = None):
    """One frame through the shared FrameRunner, in the engine's FIFO (exempt from --max-queue: each stream holds at
    most one waiting frame). ``image`` is an RGB PIL image or what FrameRunner.decode returned (a device tensor
    where the device codec decoded it; then ``size`` is given). ``media``: the transport wants this encoded image
    back; JPEG is then encoded where the pixels are when the codec can (bytes come back), anything else leaves as
    PIL. ``prepared_cache`` is the session's own: embeddings, noise and schedule are built once per config and size."""
    width, height = size if size is not None else image.size
    key = (config, width, height)
    hub = state.streams

    def work(cancel: threading.Event) -> list:
        runner = hub.runner()
        prepared = prepared_cache.get(key)
        if prepared is None:
            prepared = runner.prepare(config, width, height)
            if hub.metrics:
                hub.metrics.prepared.inc()
            while len(prepared_cache) >= PREPARED_PER_STREAM:
                prepared_cache.pop(next(iter(prepared_cache)))
            prepared_cache[key] = prepared
        on_device = media == JPEG_MEDIA and runner.codec.on_device
        return [runner.run(prepared, image, cancel, media=media if on_device else None)]

    params = GenerationParams(prompt=config.prompt, width=width, height=height, steps=config.steps,
                              guidance_scale=config.guidance_scale, seed=config.seed, image=image,
                              strength=config.strength)
    hub.frames_in_engine += 1
    try:
        return await state.engine.generate(params, work=work, queue_exempt=True)
    finally:
        hub.frames_in_engine -= 1


class FrameSession:
    """What one stream holds whatever its transport, and its worker: latest frame wins.

    The transport's reader puts each frame with ``offer`` (a frame still waiting is replaced and counted as
    dropped); the worker (``_work``) runs ``_process(*pending)`` on one frame at a time and closes with 1001 once
    ``shutdown`` (drain) has set ``stopping``. Subclasses set ``transport`` and ``gone`` (the exceptions that mean
    the client left mid-send) and define ``_process`` and ``close_now``.
    """

    transport = ""
    gone: tuple[type[BaseException], ...] = ()

    def __init__(self, state: ServerState, expires_at: float | None = None):
        self.state = state
        self.settings = state.settings
        self.hub = state.streams
        self.metrics = self.hub.metrics.transports[self.transport] if self.hub.metrics else None
        # When the device token that opened the stream expires (epoch seconds): the stream ends then, with
        # TOKEN_EXPIRED_CLOSE, so a token's lifetime bounds what it can use.
        self.expires_at = expires_at
        self.config: FrameConfig | None = None
        # Why the last config was refused: frames before any accepted config report it instead of asking again.
        self.config_error: str | None = None
        # (seq, the frame, received at, transport-specific extras...): at most one frame waits.
        self.pending: tuple | None = None
        self.received = self.dropped = self.processed = 0
        self.wake = asyncio.Event()
        self.finished = asyncio.Event()
        self.stopping = False
        self.busy = False
        self._prepared: dict = {}

    def shutdown(self) -> None:
        """Drain: finish the frame in progress, drop the waiting one, then close with 1001."""
        self.stopping = True
        self.wake.set()

    def offer(self, *pending) -> None:
        if self.pending is not None:
            self.dropped += 1
            if self.metrics:
                self.metrics.dropped.inc()
        self.pending = pending
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
            pending, self.pending = self.pending, None
            self.busy = True
            try:
                await self._process(*pending)
            except self.gone:
                return
            finally:
                self.busy = False
            if self.pending is not None or self.stopping:
                self.wake.set()
