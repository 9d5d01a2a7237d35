"""benchmarks.device_client's delay proxy: each direction is held back by the one-way delay, bytes in order."""
from __future__ import annotations

import socket
import threading
import time

from benchmarks.device_client import DelayProxy


def test_the_proxy_adds_the_round_trip_and_keeps_the_bytes_in_order():
    upstream = socket.create_server(("127.0.0.1", 0))

    def echo():
        conn, _ = upstream.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    proxy = DelayProxy(upstream.getsockname()[1], one_way_s=0.05)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        started = time.perf_counter()
        for chunk in (b"one ", b"two ", b"three"):
            client.sendall(chunk)
        received = b""
        while len(received) < 13:
            received += client.recv(65536)
        elapsed = time.perf_counter() - started
    upstream.close()
    assert received == b"one two three"
    assert 0.1 <= elapsed < 1.0
