"""Connection limits enforced before a request reaches the app (so before auth): a cap on open connections and
a deadline for complete request headers.

uvicorn bounds idle keep-alive connections (timeout_keep_alive) and header size (h11_max_incomplete_event_size),
and its limit_concurrency answers 503 only once a request's headers have arrived, so none of them stops
thousands of sockets that connect and never finish their headers. This h11 protocol subclass adds both limits.
"""
from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

_BUSY = json.dumps({"error": {"message": "server has too many open connections; retry shortly", "type": "unavailable",
                              "param": None, "code": 503}}).encode()
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                 b"connection: close\r\ncontent-length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


def bounded_h11(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """An H11Protocol class (uvicorn's `http=` option) with the given header deadline and connection cap."""

    class BoundedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                # Refused before reading anything: no request exists yet, so nothing is logged per connection.
                transport.write(BUSY_RESPONSE)
                transport.close()
                return
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            between_requests = self.cycle is None or self.cycle.response_complete
            if between_requests and self._header_timer is None:
                self._arm_header_timer()  # the first bytes of a keep-alive connection's next request
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a complete request head was parsed
                self._cancel_header_timer()

        def handle_websocket_upgrade(self, event) -> None:
            self._cancel_header_timer()  # the WebSocket protocol takes the connection over, idle limits included
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return BoundedH11Protocol
