"""benchmarks/soak.py: its counting (what is lost, what a quarter's peak is) and a short run against a real server."""
from __future__ import annotations

import socket
import threading

import pytest

from benchmarks.soak import CLASSES, _exchange, _rss_by_quarter, run


def test_peak_rss_is_taken_per_quarter_of_the_run():
    samples = [(0.5, 100), (1.0, 150), (3.0, 160), (5.5, 170), (7.9, 175)]
    assert _rss_by_quarter(samples, 8.0) == [150, 160, 170, 175]
    assert _rss_by_quarter([], 8.0) == [0, 0, 0, 0]


def _one_shot_server(response: bytes) -> int:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(response)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


@pytest.mark.parametrize(("response", "expected"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", (200, True)),
    # The connection closed before the body's last bytes: an answer, but not a complete one (counted as lost).
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", (200, False)),
    (b"garbage", (None, False)),
])
def test_an_answer_is_complete_only_with_its_whole_body(response, expected):
    port = _one_shot_server(response)
    assert _exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") == expected


@pytest.mark.slow
def test_a_short_soak_has_no_5xx_and_loses_nothing():
    result = run(requests=40, concurrency=6, seed=3)
    assert (result["client_5xx"], result["server_logged_5xx"], result["lost_after_admission"]) == (0, 0, 0)
    assert sum(row["count"] for row in result["classes"].values()) == 40
    assert set(result["classes"]) == set(CLASSES)
    disconnects = result["classes"]["disconnect"]["count"]
    # Every client that hung up is logged as 499 by the server, unless its request failed validation first.
    assert result["server_logged_499"] == disconnects
    assert len(result["rss_kib_peak_by_quarter"]) == 4
