"""Run the real server (`python -m serving serve`) as a subprocess on 127.0.0.1 and time requests against it."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    """The server subprocess failed to start, exited early or answered with an error."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One server subprocess bound to 127.0.0.1.

    `started_at` is the perf_counter() and `started_wall` the time.time() just before the spawn; the latter lines
    up with the `ts` of the server's log lines.
    """

    def __init__(self, model: str | Path, device: str = "cpu", extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.model = str(model)
        self.device = device
        self.extra_args = list(extra_args or [])
        self.env = env
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.started_wall = 0.0
        self._log = tempfile.NamedTemporaryFile(prefix="serving-bench-", suffix=".log", delete=False)

    @property
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "serving", "serve",
            "--model", self.model, "--device", self.device,
            "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", str(self.metrics_port),
            *self.extra_args,
        ]

    def start(self) -> "ServerProcess":
        env = {**os.environ, **(self.env or {})}
        env.setdefault("PYTHONPATH", str(REPO_ROOT))
        self.started_wall = time.time()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 120.0, poll_s: float = 0.005) -> float:
        """Poll GET /readyz until 200; returns seconds from spawn to the first 200."""
        assert self.proc is not None, "start() first"
        deadline = self.started_at + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return time.perf_counter() - self.started_at
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise ServerError(f"server not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(poll_s)

    def log_entries(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far (other output skipped)."""
        self._log.flush()
        entries = []
        for line in Path(self._log.name).read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class GenerateClient:
    """Keep-alive HTTP/1.1 client for POST /generate (stdlib, so the client adds as little as possible)."""

    # uvicorn closes a keep-alive connection idle for 5 s (timeout_keep_alive); on a loaded machine the direct
    # call between two HTTP requests can take that long, so an older connection is replaced before timing.
    MAX_IDLE_S = 4.0

    def __init__(self, port: int, timeout: float = 600.0, api_key: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = {"Content-Type": "application/json", "Accept": "image/png"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.last_inference_ms: float | None = None
        self._last_used = time.perf_counter()

    def _fresh_connection(self) -> None:
        self.conn.close()
        self.conn.connect()

    def _send(self, payload: bytes) -> tuple[float, http.client.HTTPResponse, bytes]:
        start = time.perf_counter()
        self.conn.request("POST", "/generate", body=payload, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return time.perf_counter() - start, response, data

    def generate(self, body: dict[str, Any]) -> tuple[float, bytes]:
        """Send one request; returns (seconds from send to the last body byte, body)."""
        payload = json.dumps(body).encode()
        if time.perf_counter() - self._last_used > self.MAX_IDLE_S:
            self._fresh_connection()
        try:
            elapsed, response, data = self._send(payload)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # Closed by the server between requests: nothing was processed, so send it again on a new one.
            self._fresh_connection()
            elapsed, response, data = self._send(payload)
        self._last_used = time.perf_counter()
        if response.status != 200:
            raise ServerError(f"POST /generate answered {response.status}: {data[:500]!r}")
        inference = response.getheader("X-Inference-Ms")
        self.last_inference_ms = float(inference) if inference else None
        return elapsed, data

    def close(self) -> None:
        self.conn.close()
