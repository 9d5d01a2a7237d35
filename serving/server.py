"""Process lifecycle: listen at once, load -> warm up -> ready, and drain on SIGTERM.

Both ports come up before the model loads so liveness answers during a long load while readiness stays 503.
On SIGTERM readiness turns 503 immediately, new generation requests get 503, admitted ones finish, and the
process exits 0 within --drain-timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from typing import Any, Callable

import uvicorn

from serving.engine import Engine
from serving.metrics import Metrics
from serving.settings import Settings
from serving.state import ServerState

log = logging.getLogger("serving.server")

# Seconds reserved at the end of --drain-timeout for closing connections and exiting.
SHUTDOWN_MARGIN_S = 1.5


class _Server(uvicorn.Server):
    """uvicorn server whose signals are handled by serve(), so draining happens before it stops listening."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def build_state(settings: Settings, api_key: str | None = None) -> ServerState:
    engine = Engine(None, settings.max_concurrency, settings.max_queue, settings.request_timeout)
    state = ServerState(settings=settings, engine=engine, api_key=api_key)
    # A broken accelerator fails /healthz (liveness restarts the pod) and /readyz (traffic moves elsewhere).
    engine.on_failed = lambda _reason: state.set_phase("failed")
    from prometheus_client import CollectorRegistry

    from serving.streams import StreamHub

    # The load signal KEDA scales on counts open streams as busy slots (StreamHub.load_snapshot).
    registry = CollectorRegistry(auto_describe=True)
    state.streams = StreamHub(settings, engine, registry)
    state.metrics = Metrics(lambda: state.streams.load_snapshot(engine.load_snapshot()), lambda: state.ready,
                            registry=registry)
    if settings.inventory_service:
        from serving.inventory import KubernetesInventory

        state.inventory = KubernetesInventory(settings.inventory_service, settings.inventory_namespace, settings.inventory_node_port,
                                              scheme="https" if settings.tls_cert_file else "http",
                                              node_domain=settings.inventory_node_domain)
    return state


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future:
    """Run ``fn`` on a daemon thread: a SIGTERM during a long model load must not wait for the load."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def target():
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(exc))
        else:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

    threading.Thread(target=target, name="model-load", daemon=True).start()
    return future


async def load_model(state: ServerState, create_backend: Callable | None = None) -> None:
    if create_backend is None:
        from serving.backends import create_backend
    settings = state.settings
    started = time.perf_counter()
    backend = await _in_daemon_thread(lambda: create_backend(settings))
    loaded = time.perf_counter()
    state.engine.backend = backend
    state.defaults = backend.defaults
    state.device = backend.name
    log.info("model loaded", extra={"fields": {"device": backend.name, "load_s": round(loaded - started, 3),
                                                "defaults": backend.defaults.__dict__}})
    if state.phase == "draining":
        return
    # The stream's runner (and its tiny autoencoder) loads with the model, so a bad --stream-vae fails the start.
    await _in_daemon_thread(lambda: state.streams.start(backend))
    if not settings.skip_warmup:
        state.set_phase("warming up")
        await _in_daemon_thread(lambda: backend.warmup(settings.warmup_shapes))
        await _in_daemon_thread(lambda: state.streams.warmup(backend.defaults))
        log.info("warm-up done", extra={"fields": {"warmup_s": round(time.perf_counter() - loaded, 3)}})
    if state.phase != "draining":
        state.set_phase("ready")
        log.info("ready", extra={"fields": {"startup_s": round(time.perf_counter() - started, 3)}})


async def serve(settings: Settings, api_key: str | None = None, tls: Any = None) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a failed model load (exit 1); ``tls`` (serving.tls.ServerTLS) makes
    the public port HTTPS-only."""
    state = build_state(settings, api_key)
    state.tls = tls
    from serving.api import create_app

    common = dict(log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=SHUTDOWN_MARGIN_S,
                  server_header=False, date_header=False)
    public_tls = {} if tls is None else {"ssl_context_factory": lambda _config, _default: tls.front}
    # Room over --max-frame-bytes so an oversized frame gets the stream's error message rather than a 1009 close.
    public = _Server(uvicorn.Config(create_app(state), host=settings.host, port=settings.port,
                                    ws_max_size=settings.max_frame_bytes + 64 * 1024,
                                    # Frames are JPEG/PNG/WebP already: deflate would spend CPU and latency on nothing.
                                    ws_per_message_deflate=False, **common, **public_tls))
    private = _Server(uvicorn.Config(state.metrics.app(), host=settings.host, port=settings.metrics_port, **common))
    stop = asyncio.Event()
    exit_code = 0

    async def drain_and_stop(reason: str) -> None:
        state.set_phase("draining")
        budget = max(0.0, settings.drain_timeout - SHUTDOWN_MARGIN_S)
        log.info("draining", extra={"fields": {"reason": reason, "in_flight": state.engine.running,
                                               "queue_depth": state.engine.waiting, "budget_s": budget}})
        finished, _ = await asyncio.gather(state.engine.drain(budget), state.streams.drain(budget))
        if not finished:
            log.warning("drain timeout: aborting unfinished generations",
                        extra={"fields": {"in_flight": state.engine.running, "queue_depth": state.engine.waiting}})
        stop.set()

    loop = asyncio.get_running_loop()
    drain_task: list[asyncio.Task] = []

    def on_signal(sig: signal.Signals) -> None:
        if drain_task:
            if sig == signal.SIGINT:  # a second Ctrl+C stops at once
                stop.set()
            return
        drain_task.append(loop.create_task(drain_and_stop(sig.name)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    servers = [loop.create_task(public.serve()), loop.create_task(private.serve())]
    loader = loop.create_task(load_model(state))

    def on_loaded(task: asyncio.Task) -> None:
        nonlocal exit_code
        if task.cancelled() or task.exception() is None:
            return
        log.error("model load failed", exc_info=task.exception())
        state.set_phase("failed")
        exit_code = 1
        stop.set()

    loader.add_done_callback(on_loaded)
    stopper = loop.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *servers], return_when=asyncio.FIRST_COMPLETED)
    if stopper not in done:  # a server could not start (port in use)
        for task in servers:
            if task.done() and task.exception() is not None:
                log.error("server failed", exc_info=task.exception())
        exit_code = 1
    public.should_exit = private.should_exit = True
    await asyncio.gather(*servers, return_exceptions=True)
    stopper.cancel()
    if not loader.done():
        loader.cancel()
    state.engine.shutdown()
    log.info("exit", extra={"fields": {"code": exit_code}})
    return exit_code
