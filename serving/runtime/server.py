"""Process lifecycle: listen at once, load -> warm up -> ready, and drain on SIGTERM.

Both ports come up before the model loads so liveness answers during a long load while readiness stays 503.
On SIGTERM readiness turns 503 immediately and new generation requests get 503. Admitted requests (running or
queued) finish if they can before the generation deadline (--drain-timeout minus a margin); at it, queued
ones get 503 without starting and running ones are aborted with 503. Responses still being sent (slow
readers) get the rest of --drain-timeout, until their client has acknowledged every byte (the process's buffers
and the kernel's send queue are empty); then the process exits 0, within --drain-timeout + 1 s.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import uvicorn

from serving.auth.credentials import Authenticator
from serving.auth.sources import keep_fresh
from serving.auth.tokens import SigningKey
from serving.backends.base import GenerationParams
from serving.api.connections import bounded_h11
from serving.engine.scheduler import Engine, request_cost
from serving.runtime.metrics import Metrics
from serving.core.settings import Settings, SettingsError
from serving.engine.state import ServerState

log = logging.getLogger("serving.server")

# Seconds of --drain-timeout reserved after the generation deadline, for the 503s of aborted requests and for
# responses still being sent.
SHUTDOWN_MARGIN_S = 1.5
# Seconds reserved at the very end for uvicorn to close connections and the process to exit.
EXIT_MARGIN_S = 0.3


class _Server(uvicorn.Server):
    """uvicorn server whose signals are handled by serve(), so draining happens before it stops listening."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def build_state(settings: Settings, api_key: str | Sequence[str] | None = None,
                signing_keys: Sequence[SigningKey] = ()) -> ServerState:
    """``api_key``: the master key (or keys, during a rotation); ``signing_keys``: the device-token keys, the first
    signs."""
    engine = Engine(None, settings.max_concurrency, settings.max_queue, settings.request_timeout)
    state = ServerState(settings=settings, engine=engine)
    # A broken accelerator fails /healthz (liveness restarts the pod) and /readyz (traffic moves elsewhere).
    engine.on_failed = lambda _reason: state.set_phase("failed")
    from prometheus_client import CollectorRegistry

    from serving.stream.hub import StreamHub

    # The load signal KEDA scales on counts open streams as busy slots (StreamHub.load_snapshot).
    registry = CollectorRegistry(auto_describe=True)
    state.streams = StreamHub(settings, engine, registry)
    state.metrics = Metrics(lambda: state.streams.load_snapshot(engine.load_snapshot()), lambda: state.ready,
                            registry=registry)
    master = (api_key,) if isinstance(api_key, str) else tuple(api_key or ())
    state.auth = Authenticator(settings, registry, master, signing_keys)
    engine.on_queue_wait = state.metrics.queue_wait.observe
    engine.on_accelerator_error = lambda kind: state.metrics.accelerator_errors.labels(kind).inc()
    if settings.inventory_service:
        from serving.fleet.inventory import InventoryError, KubernetesInventory

        try:
            state.inventory = KubernetesInventory(settings.inventory_service, settings.inventory_namespace,
                                                  settings.inventory_node_port,
                                                  scheme="https" if settings.tls_cert_file else "http",
                                                  node_domain=settings.inventory_node_domain)
        except (InventoryError, ValueError) as exc:
            raise SettingsError(f"--inventory-service {settings.inventory_service!r}: {exc}") from None
    elif settings.inventory_file:
        from serving.fleet.inventory import InventoryError
        from serving.fleet.static import StaticInventory

        try:
            state.inventory = StaticInventory(settings.inventory_file)
        except InventoryError as exc:
            raise SettingsError(f"--inventory-file: {exc}") from None
    if settings.webrtc_public_host == "node":
        node = os.environ.get("NODE_NAME")
        # Only the Kubernetes inventory knows node addresses (--inventory-file lists endpoints, not nodes).
        if not settings.inventory_service or not node:
            raise SettingsError("--webrtc-public-host node: needs --inventory-service and NODE_NAME (the pod's "
                                "spec.nodeName through the downward API)")
        state.streams.public_address = lambda: state.inventory.node_address(node)
    return state


def _in_daemon_thread(fn: Callable[[], Any]) -> asyncio.Future:
    """Run ``fn`` on a daemon thread: a SIGTERM during a long model load must not wait for the load."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: Any, failed: bool) -> None:
        if not future.done():
            (future.set_exception if failed else future.set_result)(outcome)

    def target():
        # The exception is passed as an argument: Python unbinds an `except ... as` name when the block ends, so a
        # closure over it would raise NameError on the loop and the load would never finish.
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, exc, True)
        else:
            loop.call_soon_threadsafe(settle, result, False)

    threading.Thread(target=target, name="model-load", daemon=True).start()
    return future


async def load_model(state: ServerState, create_backend: Callable | None = None) -> None:
    if create_backend is None:
        from serving.backends import create_backend
    settings = state.settings
    started = time.perf_counter()
    backend = await _in_daemon_thread(lambda: create_backend(settings))
    loaded = time.perf_counter()
    backend.on_eager_fallback = lambda reason: state.metrics.eager_fallback.labels(reason=reason).inc()
    state.engine.backend = backend
    state.engine.max_cost = settings.max_request_cost or default_max_cost(settings, backend.defaults)
    state.defaults = backend.defaults
    state.device = backend.name
    log.info("model loaded", extra={"fields": {"device": backend.name, "load_s": round(loaded - started, 3),
                                                "defaults": backend.defaults.__dict__, "max_request_cost": state.engine.max_cost}})
    if state.phase == "draining":
        return
    # The stream's runner (and its tiny autoencoder) loads with the model, so a bad --stream-vae fails the start.
    await _in_daemon_thread(lambda: state.streams.start(backend))
    if not settings.skip_warmup:
        state.set_phase("warming up")
        await state.engine.warm_up(lambda cancel: backend.warmup(settings.warmup_shapes, cancel))
        await _in_daemon_thread(lambda: state.streams.warmup(backend.defaults))
        log.info("warm-up done", extra={"fields": {"warmup_s": round(time.perf_counter() - loaded, 3)}})
    if state.phase != "draining":
        state.set_phase("ready")
        log.info("ready", extra={"fields": {"startup_s": round(time.perf_counter() - started, 3)}})


def default_max_cost(settings: Settings, defaults) -> int:
    """The cost of the largest request at the model's default size and steps: --max-images images, with guidance."""
    largest = GenerationParams(prompt="", width=defaults.width, height=defaults.height, steps=defaults.steps,
                               guidance_scale=max(defaults.guidance_scale, 2.0), seed=0, n=settings.max_images)
    return request_cost(largest)


def buffered_bytes(transport: Any) -> int:
    """Bytes of a connection's responses still in this process: the transport's buffer and, under TLS, the buffer of
    the socket transport beneath asyncio's TLS transport (the TLS layer hands ciphertext down as soon as it is
    encrypted, and its own size does not count what it handed down). A closing transport still flushes them."""
    pending = transport.get_write_buffer_size()
    # asyncio's _SSLProtocolTransport keeps the socket transport in _ssl_protocol._transport (no public accessor).
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    if inner is not None:
        pending += inner.get_write_buffer_size()
    return pending


def kernel_unsent_bytes(ports: set[int], proc_net: Path = Path("/proc/net")) -> int | None:
    """Bytes the kernel holds for TCP connections on ``ports`` that their peers have not acknowledged.

    Read from /proc/net/tcp and tcp6, whose tx_queue is write_seq - snd_una for a connection (net/ipv4/tcp_ipv4.c,
    get_tcp4_sock), so it also covers sockets already closed by the process: uvicorn closes a keep-alive
    connection when its response is buffered, and the kernel goes on sending from the orphaned socket. Those bytes
    count because a pod's network namespace goes away with its last container. None where /proc is not Linux's.
    """
    total, found = 0, False
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) < 5 or fields[3] == "0A":  # 0A: LISTEN, whose queues are the accept backlog
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) in ports:
                total += int(fields[4].split(":", 1)[0], 16)
    return total if found else None


def _listening_ports(server: uvicorn.Server) -> set[int]:
    return {sock.getsockname()[1] for srv in getattr(server, "servers", []) for sock in srv.sockets}


async def responses_sent(server: uvicorn.Server, state: ServerState, timeout: float) -> bool:
    """Wait until no request is in the app and every byte already written has reached its client (slow readers
    done), or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ports = _listening_ports(server)
    while True:
        pending = sum(buffered_bytes(c.transport) for c in list(server.server_state.connections)
                      if getattr(c, "transport", None) is not None)
        pending += kernel_unsent_bytes(ports) or 0
        if state.http_active == 0 and pending == 0:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)


async def serve(state: ServerState) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a failed model load (exit 1); ``state.tls`` (serving.api.tls.ServerTLS)
    makes the public port HTTPS-only."""
    settings = state.settings
    tls = state.tls
    if tls is not None:
        state.metrics.watch_certificate(tls)
    from serving.api.app import create_app

    common = dict(log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=EXIT_MARGIN_S,
                  server_header=False, date_header=False, timeout_keep_alive=settings.keepalive_timeout)
    public_tls = {} if tls is None else {"ssl_context_factory": lambda _config, _default: tls.front}
    # Room over --max-frame-bytes so an oversized frame gets the stream's error message rather than a 1009 close.
    public = _Server(uvicorn.Config(create_app(state), host=settings.host, port=settings.port,
                                    http=bounded_h11(settings.header_timeout, settings.max_connections),
                                    ws_max_size=settings.max_frame_bytes + 64 * 1024,
                                    # Frames are JPEG/PNG/WebP already: deflate would spend CPU and latency on nothing.
                                    ws_per_message_deflate=False, **common, **public_tls))
    private = _Server(uvicorn.Config(state.metrics.app(), host=settings.metrics_host or settings.host,
                                     port=settings.metrics_port, **common))
    stop = asyncio.Event()
    exit_code = 0

    async def drain_and_stop(reason: str) -> None:
        state.set_phase("draining")
        end = loop.time() + settings.drain_timeout - EXIT_MARGIN_S
        budget = max(0.0, settings.drain_timeout - SHUTDOWN_MARGIN_S)
        log.info("draining", extra={"fields": {"reason": reason, "in_flight": state.engine.running,
                                               "queue_depth": state.engine.waiting, "budget_s": budget}})
        finished, _ = await asyncio.gather(state.engine.drain(budget), state.streams.drain(budget))
        if not finished:
            log.warning("drain deadline: queued requests refused, running generations aborted",
                        extra={"fields": {"in_flight": state.engine.running, "queue_depth": state.engine.waiting}})
            # Aborted generations stop at their next step and answer 503; no new one can start.
            await state.engine.wait_idle(max(0.0, end - loop.time()))
        if not await responses_sent(public, state, max(0.0, end - loop.time())):
            log.warning("drain timeout: closing connections with responses still being sent",
                        extra={"fields": {"requests": state.http_active}})
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
    refresher = loop.create_task(keep_fresh(state.auth, settings))

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
    refresher.cancel()
    if not loader.done():
        loader.cancel()
    state.engine.shutdown()
    log.info("exit", extra={"fields": {"code": exit_code}})
    return exit_code
