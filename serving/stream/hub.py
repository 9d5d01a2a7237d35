"""The stream registry: --max-streams, stream metrics, the load signal's stream term, warm-up and drain."""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("serving.stream")

#: Sub-directory of the model directory holding the stream's AutoencoderTiny when --stream-vae is not given.
STREAM_VAE_DIR = "stream_vae"

# Seconds; a frame on a GPU is milliseconds, on the CPU tiny model tens of milliseconds.
FRAME_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.033, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5)


#: The frame stream's transports; metrics carry one of these as their ``transport`` label.
TRANSPORTS = ("websocket", "webrtc")


class TransportMetrics:
    """One transport's children of the labelled stream metrics."""

    def __init__(self, frames, dropped, latency):
        self.frames, self.dropped, self.latency = frames, dropped, latency


class StreamMetrics:
    def __init__(self, registry, active: Callable[[str], int]):
        gauge = Gauge("edge_diffusion_streams_active", "Open frame streams by transport", ("transport",),
                      registry=registry)
        frames = Counter("edge_diffusion_stream_frames_processed", "Stream frames answered with an image",
                         ("transport",), registry=registry)
        dropped = Counter("edge_diffusion_stream_frames_dropped",
                          "Stream frames replaced by a newer frame before processing (latest frame wins)",
                          ("transport",), registry=registry)
        latency = Histogram("edge_diffusion_stream_frame_seconds",
                            "Per-frame latency: frame received (decoded, for WebRTC) to output sent (handed to the "
                            "encoder, for WebRTC)", ("transport",), buckets=FRAME_BUCKETS, registry=registry)
        self.transports = {}
        for name in TRANSPORTS:
            gauge.labels(name).set_function(lambda name=name: active(name))
            self.transports[name] = TransportMetrics(frames.labels(name), dropped.labels(name), latency.labels(name))
        self.prepared = Counter("edge_diffusion_stream_configs_prepared",
                                "Stream configs prepared (prompt encoded, noise and schedule set up): once per "
                                "config and frame size, never per frame", registry=registry)
        self.eager = Counter("edge_diffusion_stream_frames_eager",
                             "Stream frames run eagerly although CUDA graphs are on: their graph key (size, steps, "
                             "start index, CFG on/off) was not captured in warm-up, and frames never capture",
                             registry=registry)
        self.codec_fallback = Counter("edge_diffusion_stream_codec_fallback",
                                      "Stream frames the device JPEG codec refused, decoded or encoded by the CPU "
                                      "codec instead, by operation", ("op",), registry=registry)
        self.refused = Counter("edge_diffusion_stream_refused", "Stream upgrades and WebRTC offers refused, by reason",
                               ("reason",), registry=registry)


class StreamHub:
    """Open streams of one server. Every method runs on the event loop, except the runner's frames."""

    def __init__(self, settings, engine, registry=None):
        self.settings = settings
        self.engine = engine
        self.sessions: set = set()
        self.frames_in_engine = 0
        self.draining = False
        self.metrics = StreamMetrics(registry, self._active) if registry is not None else None
        # Where WebRTC media reaches this pod from outside (the node's public address); None: its own addresses.
        self.public_address: Callable[[], Any] | None = None
        self._runner = None
        self._runner_lock = threading.Lock()

    # -- admission -----------------------------------------------------------------------------------------
    def try_open(self, session) -> bool:
        if self.draining or len(self.sessions) >= self.settings.max_streams:
            return False
        self.sessions.add(session)
        return True

    def _active(self, transport: str) -> int:
        return sum(1 for s in self.sessions if getattr(s, "transport", "websocket") == transport)

    def closed(self, session) -> None:
        self.sessions.discard(session)

    def load_snapshot(self, base: dict) -> dict:
        """The engine's load with each open stream counted as one busy slot.

        A stream is continuous demand for one slot, so a pod full of streams must read as loaded even between
        frames; the stream's own frame in the engine is subtracted so it is not counted twice.
        """
        streams = len(self.sessions)
        demand = base["in_flight"] + base["queue_depth"] - self.frames_in_engine + streams
        return {**base, "streams": streams, "load": max(demand, 0) / self.engine.max_concurrency}

    # -- frames --------------------------------------------------------------------------------------------
    def runner(self) -> Any:
        """The FrameRunner on the loaded backend's pipeline (built on first use, on a worker thread)."""
        if self._runner is None:
            with self._runner_lock:
                if self._runner is None:
                    from serving.stream.frames import FrameRunner, load_stream_vae

                    pipe = self.engine.backend.pipe
                    path = self.stream_vae_path()
                    vae = load_stream_vae(path, pipe) if path else None
                    runner = FrameRunner(pipe, vae, cuda_graphs=not self.settings.stream_eager)
                    if self.metrics is not None:
                        metrics = self.metrics
                        runner.on_eager = metrics.eager.inc
                        runner.codec.on_fallback = lambda op: metrics.codec_fallback.labels(op).inc()
                    self._runner = runner
                    log.info("stream runner", extra={"fields": {"vae": type(runner.vae).__name__,
                                                                "cuda_graphs": runner.cuda_graphs,
                                                                "device_jpeg": runner.codec.on_device}})
        return self._runner

    def stream_vae_path(self) -> str | None:
        """--stream-vae, else the model directory's stream_vae/ (where the image's weights stage puts TAESD)."""
        if self.settings.stream_vae:
            return self.settings.stream_vae
        bundled = Path(self.settings.model) / STREAM_VAE_DIR
        return str(bundled) if (bundled / "config.json").is_file() else None

    def start(self, backend) -> None:
        """Build the runner now when streams are enabled and the backend can run them (model-load thread)."""
        if self.settings.max_streams and backend.supports_img2img and getattr(backend, "pipe", None) is not None:
            self.runner()

    def warmup(self, defaults) -> None:
        """Capture the stream's graphs on the calling (model-load) thread, the only place frames capture: at
        --stream-warmup-size, or on cuda the model's default size, one graph per key of
        serving.stream.frames.warmup_configs (the default config first, then other start indices and CFG on/off).
        Without graphs, one eager frame (cuDNN's algorithm search, allocator warm-up)."""
        from serving.stream.frames import warmup_configs

        if self._runner is None:
            return
        shape = self.settings.stream_warmup_shape
        if shape is None and self._runner.cuda_graphs:
            shape = (defaults.width, defaults.height)
        if shape is None:
            return
        width, height = shape
        runner = self.runner()
        # The websocket's default steps (serving.stream.websocket: num_inference_steps or max(model steps, 2)).
        configs = warmup_configs(max(defaults.steps, 2), defaults.guidance_scale)
        if not runner.cuda_graphs:
            configs = configs[:1]
        for config in configs:
            runner.warm(runner.prepare(config, width, height))
        log.info("stream warmed", extra={"fields": {"width": width, "height": height, "graphs": runner.captures,
                                                    "keys": [list(k) for k in runner.graph_keys]}})

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def drain(self, timeout: float) -> bool:
        """Close every stream with 1001 after its frame in progress; True when all closed within ``timeout``."""
        self.draining = True
        sessions = list(self.sessions)
        if not sessions:
            return True
        log.info("closing streams", extra={"fields": {"streams": len(sessions)}})
        for session in sessions:
            session.shutdown()
        done, pending = await asyncio.wait([asyncio.ensure_future(s.finished.wait()) for s in sessions],
                                           timeout=timeout)
        for session in sessions:
            if not session.finished.is_set():
                await session.close_now(1001, "server shutting down")
        for task in pending:
            task.cancel()
        return not pending
