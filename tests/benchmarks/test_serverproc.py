"""benchmarks.serverproc: the keep-alive client survives a server that dropped an idle connection."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks.serverproc import GenerateClient


class _DropsAfterEachAnswer(BaseHTTPRequestHandler):
    """Answers, then closes the socket without saying so, as uvicorn does after its keep-alive timeout."""

    protocol_version = "HTTP/1.1"
    served = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).served += 1
        body = b"png"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Inference-Ms", "1.5")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_client_reconnects_when_the_server_dropped_the_connection():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DropsAfterEachAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = GenerateClient(server.server_address[1], timeout=10)
    try:
        for _ in range(3):
            elapsed, data = client.generate({"prompt": "x"})
            assert data == b"png" and elapsed >= 0 and client.last_inference_ms == 1.5
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert _DropsAfterEachAnswer.served == 3  # each request reached the server exactly once
