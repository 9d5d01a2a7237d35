"""Endpoints as /v1/endpoints lists them, and the choice among them by measured round trip (pure functions)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

# Another endpoint replaces the current one only when it is clearly faster: both a relative and an absolute
# margin, so probe jitter on a fast link (a few ms) never makes a stream hop back and forth.
SWITCH_RATIO = 0.7
SWITCH_MIN_GAIN_S = 0.005


@dataclass(frozen=True)
class Endpoint:
    url: str
    stream_url: str
    ready: bool = True
    zone: str | None = None
    accelerator: str | None = None
    server_name: str | None = None
    ca_spki_sha256: str | None = None
    stale: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")


def endpoint_from(item: dict) -> Endpoint:
    """One /v1/endpoints item; ValueError names the field that is missing or wrong."""
    if not isinstance(item, dict):
        raise ValueError(f"endpoint: expected a JSON object, got {type(item).__name__}")
    url = item.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ValueError(f"endpoint.url: expected http(s)://HOST:PORT, got {url!r}")
    url = url.rstrip("/")
    stream = item.get("stream_url") or "ws" + url.removeprefix("http") + "/v1/stream"
    return Endpoint(url=url, stream_url=stream, ready=item.get("ready", True) is not False, zone=item.get("zone"),
                    accelerator=item.get("accelerator"), server_name=item.get("server_name"),
                    ca_spki_sha256=item.get("ca_spki_sha256"), stale=bool(item.get("stale")))


def seed_endpoint(url: str, server_name: str | None = None, pin: str | None = None) -> Endpoint:
    """A seed URL used as an endpoint itself (a server without an inventory answers /v1/endpoints with 404)."""
    return endpoint_from({"url": url, "server_name": server_name, "ca_spki_sha256": pin})


def rank(endpoints: list[Endpoint], rtt: dict[str, float]) -> list[Endpoint]:
    """Ready endpoints first, then by measured round trip (unmeasured or unreachable last), then by URL."""
    return sorted(endpoints, key=lambda e: (not e.ready, rtt.get(e.url, math.inf), e.url))


def choose(endpoints: list[Endpoint], rtt: dict[str, float], current: str | None,
           excluded: set[str] = frozenset()) -> Endpoint | None:
    """The endpoint to use: the current one while it is listed, ready, reachable and not clearly slower than the
    best; otherwise the best ranked. ``excluded`` (endpoints that just failed) are never chosen."""
    usable = [e for e in endpoints if e.url not in excluded and math.isfinite(rtt.get(e.url, math.inf))]
    ranked = rank(usable, rtt)
    if not ranked:
        return None
    best = ranked[0]
    now = next((e for e in ranked if e.url == current), None)
    if now is None or (best.ready and not now.ready):
        return best
    now_rtt, best_rtt = rtt[now.url], rtt[best.url]
    if best_rtt < now_rtt * SWITCH_RATIO and now_rtt - best_rtt > SWITCH_MIN_GAIN_S:
        return best
    return now
