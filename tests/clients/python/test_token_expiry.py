"""A token that expires mid-stream: the stream closes with an auth close code, the client asks its provider for a
new token and reconnects to the same endpoint, and frames keep coming.

The server's device tokens are built beside this client; until they are merged, a small WebSocket server in this
file plays their announced behaviour (401 with error code "token_expired" on the upgrade, an auth close code
mid-stream) and otherwise speaks the /v1/stream protocol, echoing each frame.
"""
from __future__ import annotations

import json
import threading

import pytest
from websockets.sync.server import serve

from edge_diffusion_client import AuthError, EdgeClient


class TokenGate:
    """/healthz, /v1/endpoints and /v1/stream on loopback; a token expires after ``frames_per_token`` frames."""

    def __init__(self, close_code: int, close_reason: str, frames_per_token: int = 3) -> None:
        self.valid = {"token-1"}
        self.close_code, self.close_reason = close_code, close_reason
        self.frames_per_token = frames_per_token
        self.server = serve(self._handler, "127.0.0.1", 0, process_request=self._process_request, compression=None)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _token(self, request) -> str:
        return (request.headers.get("Authorization") or "").removeprefix("Bearer ")

    def _process_request(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(200, '{"status": "ok"}')
        if self._token(request) not in self.valid:
            return connection.respond(401, json.dumps({"error": {"message": "the token expired", "code": "token_expired",
                                                                 "type": "authentication_error", "param": None}}))
        if request.path == "/v1/endpoints":
            return connection.respond(200, json.dumps([{"url": self.url, "ready": True}]))
        return None  # the WebSocket upgrade

    def _handler(self, ws) -> None:
        token = self._token(ws.request)
        json.loads(ws.recv())  # the config comes first
        for seq in range(1, self.frames_per_token + 1):
            frame = ws.recv()
            ws.send(json.dumps({"type": "frame", "seq": seq, "inference_ms": 1.0, "dropped": 0}))
            ws.send(frame)
        self.valid.discard(token)
        ws.close(self.close_code, self.close_reason)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.mark.parametrize(("code", "reason"), [
    (4401, "token_expired: the device token expired; reconnect with a fresh token"),
    (4001, "token_expired"), (1008, "token expired")])
def test_expired_token_mid_stream_is_refreshed_and_the_stream_reconnects(code, reason):
    gate = TokenGate(code, reason)
    minted = []

    def provider(refresh: bool) -> str:
        if refresh or not minted:
            minted.append(f"token-{len(minted) + 1}")
            gate.valid.add(minted[-1])
        return minted[-1]

    events = []
    try:
        with EdgeClient(gate.url, provider, refresh_interval=0, on_event=events.append) as client, \
                client.stream({"prompt": "x"}, max_in_flight=1) as session:
            outputs = []
            for i in range(7):
                session.submit(bytes([i]) * 16)
                outputs.append(session.get(timeout=10))
    finally:
        gate.stop()
    # Each output is the frame it answers: nothing was lost or duplicated across the two reconnects.
    assert [o.image for o in outputs] == [bytes([i]) * 16 for i in range(7)]
    assert minted == ["token-1", "token-2", "token-3"]
    kinds = [e.kind for e in events]
    assert kinds.count("credential_refreshed") == 2 and kinds.count("reconnect") == 2 and "failover" not in kinds
    assert {e.code for e in events if e.kind == "reconnect"} == {code}


def test_a_refused_fresh_token_is_an_auth_error_not_a_loop():
    gate = TokenGate(4001, "token_expired")
    try:
        client = EdgeClient(gate.url, lambda refresh: "never-valid", refresh_interval=0)
        with pytest.raises(AuthError, match="401"):
            client.start()
    finally:
        gate.stop()
