"""Events the client reports through its ``on_event`` callback (failover, credential refresh, endpoint choice)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Event:
    """One thing that happened to a client or a stream.

    kind: ``"failover"`` (a stream or request moved to another endpoint; ``reason`` says why: ``"close 1001"``,
    ``"reset"``, ``"timeout"``, ``"503"`` ...), ``"resumed"`` (the first frame after a failover or reconnect
    arrived; ``gap_s`` is the time from the close to that frame), ``"credential_refreshed"`` (the provider was
    asked for a new token after a 401 or an expiry close), ``"endpoint_changed"`` (the background refresh found a
    clearly faster endpoint), ``"reconnect"`` (the same endpoint again, e.g. after an idle close or a refresh),
    ``"error"`` (the server refused a frame or the config; ``reason`` is its message; the stream stays open).
    Times are ``time.monotonic()``.
    """

    kind: str
    from_url: str | None = None
    to_url: str | None = None
    reason: str | None = None
    code: int | None = None
    gap_s: float | None = None
    at: float = field(default_factory=time.monotonic)
