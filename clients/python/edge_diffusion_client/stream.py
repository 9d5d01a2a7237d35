"""A frame stream (GET /v1/stream) that keeps going when its endpoint goes away.

Up to ``max_in_flight`` frames are on their way or on the server at once: with two, the next frame already waits
on the server while the current one is inferred, so the network round trip hides behind inference. The server
keeps one waiting frame per stream (latest wins), and so does this client: a frame submitted while the window is
full replaces the one not yet sent.

Failover: when the stream closes with 1001 (the node drains), the connection resets, no answer comes within
``frame_timeout`` while frames are out, or the upgrade is refused with 503/429, the session connects to the next
endpoint, sends the config again, re-sends the newest frame (so output resumes without waiting for the camera)
and reports an ``Event("failover")``; the first frame after it is reported as ``Event("resumed", gap_s=...)``.
A close for an expired credential (1008, 4001 or 4401, or a reason naming an expired token) asks the credential
provider for a new token and reconnects to the same endpoint.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from edge_diffusion_client.errors import AuthError, EdgeError, NoEndpointError
from edge_diffusion_client.events import Event

# Close codes after which a fresh credential is worth a reconnect (policy violation, and the 4000-4999 range an
# application uses for "unauthorized").
AUTH_CLOSE_CODES = {1008, 4001, 4401}
# The config message's fields (serving's stream protocol): an error naming one is about the config, not a frame.
CONFIG_FIELDS = {"type", "prompt", "negative_prompt", "strength", "num_inference_steps", "guidance_scale", "seed",
                 "output_format"}
MAX_MESSAGE_BYTES = 32 << 20


@dataclass(frozen=True)
class Frame:
    """One output frame: ``seq`` is the server's count of frames received on that connection."""

    seq: int
    image: bytes
    inference_ms: float
    dropped: int
    endpoint: str
    received_at: float


def _auth_close(code: int | None, reason: str) -> bool:
    text = (reason or "").lower()
    return code in AUTH_CLOSE_CODES or ("token" in text and "expir" in text)


class StreamSession:
    def __init__(self, client, config: dict, *, max_in_flight: int = 2, frame_timeout: float = 10.0,
                 on_event=None, reconnect_timeout: float = 30.0, keep: int = 4) -> None:
        if not isinstance(config, dict) or not config.get("prompt"):
            raise ValueError("config: a JSON object with at least a prompt, e.g. {'prompt': 'a watercolour'}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight: at least 1, got {max_in_flight}")
        self.client = client
        self.config = dict(config)
        self.max_in_flight = max_in_flight
        self.frame_timeout = frame_timeout
        self.reconnect_timeout = reconnect_timeout
        self.on_event = on_event or (lambda _e: None)
        self.endpoint = None
        self.errors: list[dict] = []
        self.events: list[Event] = []
        self.replaced = 0  # frames replaced on the client before they were sent (latest wins)
        self.outputs_dropped = 0  # outputs discarded because the consumer fell more than ``keep`` behind
        self._keep = keep
        self._cond = threading.Condition()
        self._ws = None
        self._pending: bytes | None = None
        self._last_sent: bytes | None = None
        self._resend: bytes | None = None
        self._sent = self._answered = self._server_dropped = self._lost_to_errors = 0
        self._header: dict | None = None
        self._results: deque[Frame] = deque()
        self._resume_from: float | None = None
        self._idle = False
        self._closed = False
        self._error: Exception | None = None
        self._reader: threading.Thread | None = None

    # -- the caller's side ---------------------------------------------------------------------------------------
    def open(self) -> "StreamSession":
        self._connect()
        self._reader = threading.Thread(target=self._run, name="edge-stream", daemon=True)
        self._reader.start()
        return self

    def submit(self, frame: bytes) -> None:
        """Queue a frame (JPEG, PNG or WebP); it replaces a submitted frame that has not been sent yet."""
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise RuntimeError("the stream is closed")
            if self._pending is not None:
                self.replaced += 1
            self._pending = frame
            self._pump()
            self._cond.notify_all()

    def reconfigure(self, config: dict) -> None:
        """A new config for the next frames (also sent again after every reconnect)."""
        with self._cond:
            self.config = dict(config)
            if self._ws is not None:
                try:
                    self._ws.send(json.dumps(self.config))
                except (ConnectionClosed, OSError):
                    pass  # the reader sees the close; the reconnect sends the new config

    def get(self, timeout: float | None = None) -> Frame:
        """The next output frame; raises the session's error when it failed for good, TimeoutError after
        ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._results or self._error or self._closed, timeout):
                raise TimeoutError(f"no frame within {timeout} s")
            if self._results:
                return self._results.popleft()
            raise self._error or RuntimeError("the stream is closed")

    @property
    def in_flight(self) -> int:
        return self._sent - self._answered - self._server_dropped - self._lost_to_errors

    def close(self) -> None:
        with self._cond:
            self._closed = True
            ws, self._ws = self._ws, None
            self._cond.notify_all()
        if ws is not None:
            ws.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- sending -------------------------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Send the waiting frame while the window has room (called with the lock held)."""
        while self._ws is not None and self._pending is not None and self.in_flight < self.max_in_flight:
            data = self._pending
            try:
                self._ws.send(data)
            except (ConnectionClosed, OSError):
                return  # kept as pending: the reader sees the close and resends it elsewhere
            self._pending, self._last_sent = None, data
            self._sent += 1

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        self.on_event(event)

    # -- connecting ----------------------------------------------------------------------------------------------
    def _open_ws(self, endpoint):
        credentials = self.client.credentials
        token = credentials.token()
        for attempt in (0, 1):
            try:
                ws = connect(endpoint.stream_url, additional_headers=credentials.headers(token),
                             ssl=self.client.trust.context(endpoint),
                             server_hostname=(endpoint.server_name or endpoint.host) if endpoint.tls else None,
                             open_timeout=self.client.connect_timeout, close_timeout=1, compression=None,
                             max_size=MAX_MESSAGE_BYTES, legacy=True)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 401 and attempt == 0 and credentials.refreshable:
                    token = credentials.refresh(token)
                    self._emit(Event("credential_refreshed", endpoint.url, endpoint.url, "401"))
                    continue
                if status == 401:
                    raise AuthError(f"{endpoint.url}: the stream upgrade was refused with 401 "
                                    f"({exc.response.body[:200]!r})", 401, url=endpoint.url) from None
                raise
            ws.send(json.dumps(self.config))
            return ws
        raise AssertionError("unreachable")

    def _connect(self, prefer=None, exclude: str | None = None) -> None:
        """Connect to ``prefer``, else the best other endpoint; retry (re-reading the inventory) until
        ``reconnect_timeout``; install the connection and re-send the newest frame."""
        deadline = time.monotonic() + self.reconnect_timeout
        discovery = self.client.discovery
        errors: list[str] = []
        while True:
            order = [e for e in discovery.candidates() if e.url != exclude] + \
                [e for e in discovery.candidates() if e.url == exclude]
            if prefer is not None:
                order = [prefer] + [e for e in order if e.url != prefer.url]
            for endpoint in order:
                try:
                    ws = self._open_ws(endpoint)
                except AuthError:
                    raise
                except (InvalidStatus, InvalidHandshake, WebSocketException, OSError, TimeoutError, EdgeError) as exc:
                    status = getattr(getattr(exc, "response", None), "status_code", None)
                    errors.append(f"{endpoint.url}: {status or exc.__class__.__name__}")
                    discovery.mark_failed(endpoint)
                    continue
                if self._closed:  # close() ran while this connection was being made
                    ws.close()
                    return
                with self._cond:
                    self._ws, self.endpoint = ws, endpoint
                    self._sent = self._answered = self._server_dropped = self._lost_to_errors = 0
                    self._header, self._idle = None, False
                    if self._pending is None and self._resend is not None:
                        self._pending = self._resend  # the newest frame the old connection left unanswered
                    self._resend = None
                    self._pump()
                return
            if time.monotonic() >= deadline or self._closed:
                raise NoEndpointError("the stream found no endpoint to continue on: " + "; ".join(errors[-6:]))
            time.sleep(0.2)
            prefer = None
            try:
                discovery.refresh()
            except Exception:  # noqa: BLE001 - the seeds may be down too; keep trying the known endpoints
                pass

    def _reconnect(self, kind: str, reason: str, code: int | None, same: bool) -> None:
        closed_at = time.monotonic()
        old, ws = self.endpoint, self._ws
        with self._cond:
            self._ws = None
            self._resend = self._last_sent if self.in_flight > 0 else None
        if ws is not None:
            # A connection that timed out may take close_timeout to close: never on the frame path.
            threading.Thread(target=ws.close, daemon=True).start()
        if not same:
            self.client.discovery.mark_failed(old)
        self._connect(prefer=old if same else None, exclude=None if same else old.url)
        self._resume_from = closed_at
        self._emit(Event(kind, old.url, self.endpoint.url, reason, code, at=closed_at))

    # -- the reader thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._closed:
                ws = self._ws
                if ws is None:
                    with self._cond:
                        if self._idle and self._pending is None and not self._closed:
                            self._cond.wait(0.5)
                            continue
                    if not self._closed:
                        self._reconnect("reconnect", "idle close", 1000, same=True)
                    continue
                try:
                    message = ws.recv(timeout=self.frame_timeout if self.in_flight > 0 else 1.0)
                except TimeoutError:
                    if self.in_flight > 0 and ws is self._ws:
                        self._reconnect("failover", "timeout", None, same=False)
                    continue
                except ConnectionClosed as exc:
                    if self._closed or ws is not self._ws:
                        continue
                    code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
                    self._on_close(code, reason)
                    continue
                except (OSError, WebSocketException):
                    if not self._closed and ws is self._ws:
                        self._reconnect("failover", "reset", None, same=False)
                    continue
                self._on_message(message)
        except Exception as exc:  # noqa: BLE001 - handed to the caller through get()/submit()
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _on_close(self, code: int | None, reason: str) -> None:
        if _auth_close(code, reason) and self.client.credentials.refreshable:
            self.client.credentials.refresh(self.client.credentials.token())
            self._emit(Event("credential_refreshed", self.endpoint.url, self.endpoint.url, reason or "close", code))
            self._reconnect("reconnect", f"close {code}", code, same=True)
        elif code == 1000:
            # The server closed an idle stream: reconnect when the next frame comes.
            with self._cond:
                self._ws, self._idle = None, True
        else:
            self._reconnect("failover", f"close {code}" if code else "reset", code, same=False)

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            try:
                data = json.loads(message)
            except ValueError:
                return
            if data.get("type") == "frame":
                self._header = data
            elif data.get("type") == "error":
                error = data.get("error") or {}
                self.errors.append(error)
                self._emit(Event("error", self.endpoint.url, None, error.get("message"), None))
                if error.get("field") not in CONFIG_FIELDS:
                    with self._cond:  # a frame that was refused gets no output: it left the window
                        self._lost_to_errors += 1
                        self._pump()
            return
        header, self._header = self._header, None
        if header is None:
            return
        now = time.monotonic()
        frame = Frame(header.get("seq", 0), message, float(header.get("inference_ms", 0.0)),
                      int(header.get("dropped", 0)), self.endpoint.url, now)
        with self._cond:
            self._answered += 1
            self._server_dropped = frame.dropped
            self._results.append(frame)
            while len(self._results) > self._keep:
                self._results.popleft()
                self.outputs_dropped += 1
            self._pump()
            self._cond.notify_all()
        if self._resume_from is not None:
            gap, self._resume_from = now - self._resume_from, None
            self._emit(Event("resumed", None, frame.endpoint, None, None, gap_s=gap, at=now))
