"""The WebRTC frame stream (POST /v1/webrtc), black-box through a real server process with an aiortc client.

Everything stays on 127.0.0.1: the server binds its ICE candidates there (--webrtc-bind-host) within a port range
(--webrtc-ports), and the client gathers on 127.0.0.1 only, with no STUN server.
"""
from __future__ import annotations

import asyncio
import signal
import time

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from loadtest.webrtc import RtcClient
from tests.serving.conftest import LiveServer, free_port

pytestmark = pytest.mark.slow

KEY = "webrtc-test-key-8086"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONFIG = {"prompt": "a watercolour", "seed": 1, "strength": 1.0, "num_inference_steps": 2}


def frames(size: int = 64) -> list[np.ndarray]:
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    base = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 90, np.uint8)],
                    axis=-1)
    return [np.roll(base, shift, axis=1) for shift in (0, 8, 16)]


def start(tiny_model, tmp_path_factory, name: str, *extra: str) -> LiveServer:
    tmp = tmp_path_factory.mktemp(name)
    (tmp / "key").write_text(KEY)
    low = free_port() // 16 * 16 % 20000 + 30000
    return LiveServer(tiny_model, tmp / "server.log", "--api-key-file", str(tmp / "key"), "--max-concurrency", "1",
                      "--max-image-size", "256", "--stream-warmup-size", "64x64", "--webrtc-bind-host", "127.0.0.1",
                      "--webrtc-ports", f"{low}-{low + 7}", *extra).wait_ready()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    srv = start(tiny_model, tmp_path_factory, "webrtc", "--max-streams", "2")
    try:
        yield srv
    finally:
        srv.stop()


def metric(server, name: str) -> float:
    for line in httpx.get(server.metrics_url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_offer_refusals_are_http_answers_before_any_media(server):
    url = server.url + "/v1/webrtc"
    r = httpx.post(url, content=b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", headers={"Content-Type": "application/sdp"})
    assert r.status_code == 401
    r = httpx.post(url, json={"sdp": "v=0"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "sdp"
    assert "application/sdp" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"hello", headers={**AUTH, "Content-Type": "application/sdp"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "sdp"
    r = httpx.post(url, content=b"v=0\r\nm=video 9 nonsense\r\n", headers={**AUTH, "Content-Type": "application/sdp"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "sdp", r.text
    r = httpx.delete(url + "/nope", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["param"] == "session_id"


def test_generated_frames_stats_config_changes_and_delete(server):
    async def scenario():
        client = RtcClient(server.url, frames(), fps=10, codec="VP8", api_key=KEY)
        response = await client.open(CONFIG)
        assert response.status_code == 201, response.text
        assert response.headers["content-type"].startswith("application/sdp")
        low, high = (int(p) for p in server.proc.args[server.proc.args.index("--webrtc-ports") + 1].split("-"))
        ports = {int(line.split()[5]) for line in client.answer.split("\r\n") if line.startswith("a=candidate:")}
        assert ports and all(low <= p <= high for p in ports)
        await client.wait_for(lambda: len(client.stats()) >= 3 and len(client.received) >= 3)
        stats = client.stats()
        assert all({"seq", "inference_ms", "dropped", "overhead_ms"} <= s.keys() for s in stats)
        assert [s["seq"] for s in stats] == sorted(s["seq"] for s in stats)
        _, out = client.received[-1]
        assert out.shape == (64, 64, 3)
        # Generated, not echoed: far from every input frame.
        assert min(np.abs(out.astype(int) - f.astype(int)).mean() for f in frames()) > 10
        # A bad config names its field and the session keeps going; a new seed is prepared and changes the output.
        prepared = metric(server, "edge_diffusion_stream_configs_prepared_total")
        client.send({**CONFIG, "strength": 5})
        await client.wait_for(lambda: any(e["field"] == "strength" for e in client.errors()))
        before = len(client.stats())
        await client.wait_for(lambda: len(client.stats()) >= before + 2)
        first = np.mean([f for _, f in client.received[-2:]], axis=0)
        client.send({**CONFIG, "seed": 7})
        await client.wait_for(lambda: metric(server, "edge_diffusion_stream_configs_prepared_total") > prepared)
        marker = time.monotonic()
        await client.wait_for(lambda: sum(t > marker + 0.3 for t, _ in client.received) >= 2)
        second = np.mean([f for t, f in client.received if t > marker + 0.3][-2:], axis=0)
        assert np.abs(first - second).mean() > 5
        assert metric(server, 'edge_diffusion_streams_active{transport="webrtc"}') == 1
        assert await client.delete() == 204
        await client.close()
        assert metric(server, 'edge_diffusion_streams_active{transport="webrtc"}') == 0
        assert metric(server, 'edge_diffusion_stream_frames_processed_total{transport="webrtc"}') >= 5

    run(scenario())


def test_h264_and_latest_frame_wins_under_a_burst(server):
    async def scenario():
        # 128x128 frames at 60 fps against ~10+ fps of 8-step generation: most frames must be dropped, none queued.
        big = frames(128)
        client = RtcClient(server.url, big, fps=60, codec="H264", api_key=KEY)
        assert (await client.open({**CONFIG, "num_inference_steps": 8, "strength": 0.5})).status_code == 201
        assert "H264" in client.answer
        await client.wait_for(lambda: len(client.stats()) >= 4 and len(client.received) >= 2, timeout=40)
        stats = client.stats()
        assert stats[-1]["dropped"] > 0
        seqs = [s["seq"] for s in stats]
        assert seqs[-1] - seqs[0] > len(seqs) - 1  # gaps: the frames that were replaced
        assert client.received[-1][1].shape == (128, 128, 3)
        await client.delete()
        await client.close()
        assert metric(server, 'edge_diffusion_stream_frames_dropped_total{transport="webrtc"}') > 0

    run(scenario())


def test_max_streams_counts_both_transports(server):
    async def scenario():
        ws_url = server.url.replace("http", "ws") + "/v1/stream"
        with connect(ws_url, additional_headers=AUTH):
            client = RtcClient(server.url, frames(), fps=5, api_key=KEY)
            assert (await client.open(CONFIG)).status_code == 201
            extra = RtcClient(server.url, frames(), fps=5, api_key=KEY)
            refused = await extra.open(CONFIG)
            assert refused.status_code == 429 and refused.headers["retry-after"]
            assert "--max-streams" in refused.json()["error"]["message"]
            await client.delete()
            await client.close()

    run(scenario())


def test_sigterm_ends_webrtc_sessions_within_the_drain_budget(tiny_model, tmp_path_factory):
    srv = start(tiny_model, tmp_path_factory, "webrtc-drain", "--max-streams", "2", "--drain-timeout", "5")

    async def scenario():
        client = RtcClient(srv.url, frames(), fps=10, api_key=KEY)
        assert (await client.open(CONFIG)).status_code == 201
        await client.wait_for(lambda: len(client.stats()) >= 1)
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        await client.wait_for(lambda: any(m.get("type") == "closed" for m in client.messages), timeout=6)
        closed = [m for m in client.messages if m.get("type") == "closed"]
        await client.close()
        return time.monotonic() - started, closed

    try:
        elapsed, closed = run(scenario())
        assert closed[0]["reason"] == "server shutting down"
        assert elapsed < 5
        assert srv.proc.wait(timeout=10) == 0
    finally:
        srv.stop()
