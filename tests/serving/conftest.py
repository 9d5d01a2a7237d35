"""Serving fixtures: one tiny random-weight model per session, in-process apps and real server subprocesses."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from serving.model.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def cpu_backend(tiny_model):
    """The real CPU backend on the tiny model, two slots, shared by the in-process tests."""
    import torch

    from serving.backends import create_backend
    from serving.core.settings import Settings

    # One intra-op thread: on a shared 2-core CI box, OpenMP threads spin-waiting on each other make a 30 ms
    # tiny-model generation take seconds; one thread keeps it ~100 ms even under load.
    torch.set_num_threads(1)
    return create_backend(Settings(model=str(tiny_model), device="cpu", max_concurrency=2))


def make_state(backend, api_key: str | None = None, **overrides):
    """A ready ServerState around an already-loaded backend (skips the load/warm-up lifecycle)."""
    from serving.runtime.server import build_state
    from serving.core.settings import Settings

    settings = Settings(model=overrides.pop("model", "tiny"), device="cpu", **overrides)
    state = build_state(settings, api_key)
    state.engine.backend = backend
    state.defaults = backend.defaults
    state.device = backend.name
    state.set_phase("ready")
    return state


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`python -m serving serve` as a subprocess on 127.0.0.1, with its JSON log captured."""

    def __init__(self, model: Path, log_path: Path, *args: str, env: dict[str, str] | None = None):
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "serving", "serve", "--model", str(model), "--device", "cpu", "--host", "127.0.0.1",
               "--port", str(self.port), "--metrics-port", str(self.metrics_port), *args]
        if "--max-request-cost" not in args:
            # The default limit follows the model's defaults (tiny: 64x64, 2 steps), far below what tests ask for.
            cmd += ["--max-request-cost", str(10**12)]
        # See cpu_backend: one OpenMP thread keeps tiny-model latency stable on a contended CI box.
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90.0) -> "LiveServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_entries(self) -> list[dict]:
        entries = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                entries.append(json.loads(line))
        return entries

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
