"""Prometheus metrics and the JSON load signal, served on the private metrics port only."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Seconds; spans 1-step tiny models on CPU to 50-step SD on a busy GPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One registry per server instance (tests build several apps in one process)."""

    def __init__(self, engine_state: Callable[[], dict], ready: Callable[[], bool], registry=None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edge_diffusion_requests", "HTTP requests by route and status code", ("route", "status"), registry=self.registry
        )
        # Every response is counted and timed under its route's name and status, errors and 499s (client gone)
        # included, so a latency regression hidden behind fast 4xx/5xx answers shows up.
        self.latency = Histogram(
            "edge_diffusion_request_duration_seconds",
            "Latency of HTTP requests by route and status code, from headers received to response sent",
            ("route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "edge_diffusion_inference_seconds", "Time spent in the pipeline per request", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.queue_wait = Histogram(
            "edge_diffusion_queue_wait_seconds", "Time admitted requests waited for a generation slot",
            buckets=(0.001,) + LATENCY_BUCKETS, registry=self.registry,
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (Linux /proc).
        ProcessCollector(registry=self.registry)
        self.eager_fallback = Counter(
            "edge_diffusion_eager_fallback",
            "Requests served off the compiled fast path (cuda with --compile or --cuda-graphs): reason=shape when "
            "size, guidance or n was not warmed, reason=signature when a warmed request met an unwarmed call",
            ("reason",), registry=self.registry,
        )
        self.images = Counter("edge_diffusion_images_generated", "Images generated", registry=self.registry)
        self.accelerator_errors = Counter(
            "edge_diffusion_accelerator_errors", "Requests the accelerator failed: kind=oom (out of memory) or "
            "kind=error (any other device error)", ("kind",), registry=self.registry)
        for kind in ("oom", "error"):
            self.accelerator_errors.labels(kind)  # present at 0, so the first error is an increase
        self._state = engine_state
        Gauge("edge_diffusion_queue_depth", "Requests waiting for a slot", registry=self.registry).set_function(
            lambda: self._state()["queue_depth"]
        )
        Gauge("edge_diffusion_in_flight", "Generations running now", registry=self.registry).set_function(
            lambda: self._state()["in_flight"]
        )
        Gauge(
            "edge_diffusion_load",
            "(in_flight + queue_depth) / max_concurrency: the autoscaling signal, 1.0 = every slot busy",
            registry=self.registry,
        ).set_function(lambda: self._state()["load"])
        Gauge("edge_diffusion_ready", "1 when the model is loaded, warmed up and not draining", registry=self.registry).set_function(
            lambda: 1.0 if ready() else 0.0
        )

    def watch_certificate(self, tls) -> None:
        """Export the served certificate's remaining lifetime (an api.tls.ReloadingTLS): each scrape first looks for
        renewed files, as a handshake would, so the value is that of the leaf the next handshake gets."""

        def remaining() -> float:
            tls.reload_if_changed()
            return (tls.current.certificate.not_valid_after_utc - datetime.now(timezone.utc)).total_seconds()

        Gauge("edge_diffusion_tls_certificate_expiry_seconds", "Seconds until the serving certificate's notAfter "
              "(the leaf the public port presents)", registry=self.registry).set_function(remaining)

    def app(self) -> Starlette:
        async def metrics(_: Request) -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        async def load(_: Request) -> JSONResponse:
            return JSONResponse(self._state())

        return Starlette(routes=[Route("/metrics", metrics), Route("/load", load)])
