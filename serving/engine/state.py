"""Mutable server state shared by the public app, the metrics app and the lifecycle code."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.engine.scheduler import Engine
from serving.model.config import ModelDefaults
from serving.core.settings import Settings

PHASES = ("loading", "warming up", "ready", "draining", "failed")


@dataclass
class ServerState:
    settings: Settings
    engine: Engine
    # serving.auth.credentials.Authenticator: the credential check every route calls (master key, device tokens).
    auth: Any = None
    metrics: Any = None
    inventory: Any = None
    streams: Any = None
    tls: Any = None
    defaults: ModelDefaults | None = None
    device: str | None = None
    phase: str = "loading"
    # Requests inside the public app (a response may still be being written); drain waits for them.
    http_active: int = 0

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def failed(self) -> bool:
        return self.phase == "failed"

    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        # "failed" is terminal: a broken accelerator (or load) must not look healthy again because warm-up
        # finished or a drain started; only a restart leaves it. A plain assignment, so worker threads may call it.
        if self.phase == "failed":
            return
        self.phase = phase
