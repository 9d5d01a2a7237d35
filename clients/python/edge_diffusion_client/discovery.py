"""Discovery: the inventory from the seeds (GET /v1/endpoints), round trips measured with GET /healthz, the
choice, and a background thread that does it all again every ``refresh_interval`` seconds."""
from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import httpx

from edge_diffusion_client.endpoints import Endpoint, choose, endpoint_from, rank

log = logging.getLogger("edge_diffusion_client")

# An endpoint that just failed a stream or request is not chosen again for this long (its drain takes the pod
# out of the inventory within seconds; until then /healthz may still answer).
FAILED_COOLDOWN_S = 15.0


class Discovery:
    def __init__(self, seeds: list[Endpoint], plain_get: Callable[[Endpoint, str], httpx.Response],
                 authorized_get: Callable[[Endpoint, str], httpx.Response], probes: int = 3, refresh_interval: float = 30.0,
                 on_change: Callable[[Endpoint | None, Endpoint], None] | None = None,
                 learn: Callable[[Endpoint], None] | None = None, discover: bool = True) -> None:
        if not seeds:
            raise ValueError("seeds: give at least one URL (an endpoint, or a server that lists them)")
        if probes < 1:
            raise ValueError(f"probes: at least 1 GET /healthz per endpoint, got {probes}")
        self.seeds = seeds
        self._plain_get = plain_get
        self._get = authorized_get
        self.probes = probes
        self.refresh_interval = refresh_interval
        self._on_change = on_change
        self._learn = learn or (lambda _e: None)
        self.discover = discover
        self.endpoints: list[Endpoint] = []
        self.rtt: dict[str, float] = {}
        self.current: Endpoint | None = None
        self._failed: dict[str, float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- inventory ---------------------------------------------------------------------------------------------
    def _inventory(self) -> list[Endpoint]:
        """The first answer among the known endpoints and the seeds; a seed without an inventory (404) stands for
        itself."""
        if not self.discover:
            return list(self.seeds)
        errors = []
        with self._lock:
            sources = [*self.endpoints, *[s for s in self.seeds if s.url not in {e.url for e in self.endpoints}]]
        for source in sources:
            try:
                response = self._get(source, "/v1/endpoints")
            except (httpx.HTTPError, OSError) as exc:
                errors.append(f"{source.url}: {exc!r}")
                continue
            if response.status_code == 404 and source in self.seeds:
                return [source]
            if response.status_code != 200:
                errors.append(f"{source.url}: {response.status_code} {response.text[:200]}")
                continue
            try:
                items = [endpoint_from(item) for item in response.json()]
            except ValueError as exc:
                errors.append(f"{source.url}: {exc}")
                continue
            for item in items:
                self._learn(item)
            return items
        raise ConnectionError("no seed or known endpoint listed the endpoints: " + "; ".join(errors))

    def _probe(self, endpoint: Endpoint) -> float:
        """Median round trip of ``probes`` GET /healthz on one kept-alive connection (the first pays the handshake,
        the median leaves it out); inf when the endpoint does not answer 200."""
        samples = []
        for _ in range(self.probes):
            started = time.perf_counter()
            try:
                ok = self._plain_get(endpoint, "/healthz").status_code == 200
            except (httpx.HTTPError, OSError):
                return math.inf
            if not ok:
                return math.inf
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    def refresh(self) -> Endpoint | None:
        """Read the inventory, probe every endpoint (in parallel) and choose; returns the choice."""
        items = self._inventory()
        with ThreadPoolExecutor(max_workers=min(8, len(items)) or 1) as pool:
            rtts = dict(zip([e.url for e in items], pool.map(self._probe, items)))
        with self._lock:
            self.endpoints, self.rtt = items, rtts
            return self._choose()

    def _choose(self) -> Endpoint | None:
        now = time.monotonic()
        self._failed = {url: until for url, until in self._failed.items() if until > now}
        before = self.current
        chosen = choose(self.endpoints, self.rtt, before.url if before else None, set(self._failed))
        if chosen is not None and (before is None or chosen.url != before.url):
            self.current = chosen
            if before is not None and self._on_change:
                self._on_change(before, chosen)
        elif chosen is not None:
            self.current = chosen  # the same URL, possibly with a new ready flag or pin
        return chosen

    # -- failures and order ------------------------------------------------------------------------------------
    def mark_failed(self, endpoint: Endpoint, cooldown: float = FAILED_COOLDOWN_S) -> None:
        with self._lock:
            self._failed[endpoint.url] = time.monotonic() + cooldown
            if self.current and self.current.url == endpoint.url:
                self.current = None

    def candidates(self) -> list[Endpoint]:
        """Endpoints to try, in order: the current choice, then the rest ranked; those that failed recently last."""
        with self._lock:
            now = time.monotonic()
            failed = {url for url, until in self._failed.items() if until > now}
            ranked = rank(self.endpoints, self.rtt)
            first = [self.current] if self.current and self.current.url not in failed else []
            rest = [e for e in ranked if e.url not in failed and e not in first and math.isfinite(self.rtt.get(e.url, math.inf))]
            unreachable = [e for e in ranked if e.url not in failed and e not in first and e not in rest]
            return first + rest + unreachable + [e for e in ranked if e.url in failed]

    # -- background --------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None and self.refresh_interval > 0:
            self._thread = threading.Thread(target=self._loop, name="edge-discovery", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the last list; the next round tries again
                log.warning("endpoint refresh failed: %s", exc)
