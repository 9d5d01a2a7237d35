"""Image-to-image and the WebSocket frame stream, black-box through a real server process.

The stream is driven with the `websockets` client, /v1/images/edits with the official `openai` client.
"""
from __future__ import annotations

import base64
import io
import json
import signal
import threading
import time

import httpx
import openai
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.serving.conftest import LiveServer

pytestmark = pytest.mark.slow

KEY = "stream-test-key-5150"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_FRAME_BYTES = 8192


def image_bytes(size=(64, 64), fmt="JPEG", color=(30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def taesd(tmp_path_factory):
    from serving.model.tiny import write_tiny_taesd

    return write_tiny_taesd(tmp_path_factory.mktemp("taesd") / "taesd")


def start(tiny_model, taesd, tmp_path_factory, name, *extra) -> LiveServer:
    tmp = tmp_path_factory.mktemp(name)
    (tmp / "key").write_text(KEY)
    return LiveServer(tiny_model, tmp / "server.log", "--api-key-file", str(tmp / "key"), "--max-concurrency", "1",
                      "--max-queue", "2", "--max-image-size", "256", "--stream-vae", str(taesd),
                      "--stream-warmup-size", "64x64", "--max-frame-bytes", str(MAX_FRAME_BYTES), *extra)


@pytest.fixture(scope="module")
def server(tiny_model, taesd, tmp_path_factory):
    srv = start(tiny_model, taesd, tmp_path_factory, "stream", "--max-streams", "2", "--stream-idle-timeout", "1.5",
                "--max-steps", "200")
    try:
        yield srv.wait_ready()
    finally:
        assert srv.stop() == 0, srv.log_text()


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v1/stream"


def open_stream(server, **kwargs):
    kwargs.setdefault("additional_headers", AUTH)
    return connect(ws_url(server), open_timeout=10, close_timeout=5, **kwargs)


def recv_json(ws, timeout=20) -> dict:
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str), f"expected a JSON text message, got {len(message)} bytes"
    return json.loads(message)


def recv_frame(ws, timeout=20) -> tuple[dict, bytes]:
    header = recv_json(ws, timeout)
    assert header["type"] == "frame", header
    data = ws.recv(timeout=timeout)
    assert isinstance(data, bytes)
    return header, data


def metric(server, name: str) -> float:
    for line in httpx.get(server.metrics_url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


# -- REST image-to-image -----------------------------------------------------------------------------------
def test_generate_image_to_image(server):
    source = image_bytes((72, 64), "PNG")
    r = httpx.post(server.url + "/generate", headers=AUTH, timeout=30,
                   json={"prompt": "a watercolour", "image": b64(source), "strength": 0.5, "num_inference_steps": 2})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (72, 64)  # the input's size
    resized = httpx.post(server.url + "/generate", headers=AUTH, timeout=30,
                         json={"prompt": "x", "image": b64(image_bytes((100, 80), "WEBP")), "width": 64, "height": 96})
    assert resized.status_code == 200, resized.text
    assert Image.open(io.BytesIO(resized.content)).size == (64, 96)


@pytest.mark.parametrize(("body", "param", "text"), [
    ({"image": "not base64!"}, "image", "base64"),
    ({"image": b64(b"GIF89a not really")}, "image", "PNG, JPEG or WebP"),
    ({"image": b64(image_bytes((68, 64)))}, "image", "multiples of 8"),
    ({"image": b64(image_bytes((512, 64)))}, "image", "bounds"),
    ({"image": b64(image_bytes()), "strength": 0}, "strength", ""),
    ({"image": b64(image_bytes()), "strength": 1.5}, "strength", ""),
    ({"image": b64(image_bytes()), "strength": 0.3, "num_inference_steps": 2}, "strength", ">= 1"),
    ({"strength": 0.5}, "strength", "image"),
])
def test_generate_image_to_image_validation(server, body, param, text):
    r = httpx.post(server.url + "/generate", headers=AUTH, json={"prompt": "x", **body}, timeout=30)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == param and text in error["message"]


def test_openai_images_edit(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    result = client.images.edit(image=("in.png", image_bytes((64, 64), "PNG"), "image/png"), prompt="make it blue",
                                n=2, size="64x64", response_format="b64_json")
    assert len(result.data) == 2
    for item in result.data:
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (64, 64)
    with pytest.raises(openai.BadRequestError) as err:
        client.images.edit(image=("in.png", image_bytes(fmt="PNG"), "image/png"), prompt="x",
                           mask=("mask.png", image_bytes(fmt="PNG"), "image/png"))
    assert err.value.status_code == 400 and "masks are not supported" in str(err.value)
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["param"] == "mask"
    with pytest.raises(openai.BadRequestError) as err:
        client.images.edit(image=("in.png", b"not an image", "image/png"), prompt="x")
    assert err.value.body["param"] == "image"


# -- the stream --------------------------------------------------------------------------------------------
def test_auth_header_subprotocol_and_refusal(server):
    with open_stream(server) as ws:
        assert ws.subprotocol is None
        # The client offers permessage-deflate; frames are compressed images already, so the server declines it.
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    with open_stream(server, additional_headers={}, subprotocols=[f"bearer.{KEY}"]) as ws:
        assert ws.subprotocol == f"bearer.{KEY}"  # echoed, as browsers require
    for kwargs in ({"additional_headers": {}}, {"additional_headers": {"Authorization": "Bearer nope"}},
                   {"additional_headers": {}, "subprotocols": ["bearer.nope"]}):
        with pytest.raises(InvalidStatus) as refused:
            open_stream(server, **kwargs)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["type"] == "authentication_error"
    assert "without completing handshake" not in server.log_text()


def test_frames_round_trip_with_config_once(server):
    prepared_before = metric(server, "edge_diffusion_stream_configs_prepared_total")
    with open_stream(server) as ws:
        ws.send(json.dumps({"prompt": "neon city", "strength": 0.5, "num_inference_steps": 2, "seed": 7,
                            "output_format": "png"}))
        for seq in range(1, 4):
            ws.send(image_bytes((96, 64)))
            header, data = recv_frame(ws)
            assert header["seq"] == seq and header["inference_ms"] > 0 and header["dropped"] == 0
            out = Image.open(io.BytesIO(data))
            assert out.format == "PNG" and out.size == (96, 64)
        # A new config applies to the next frame and is prepared once more.
        ws.send(json.dumps({"prompt": "forest", "output_format": "webp"}))
        ws.send(image_bytes((96, 64)))
        _, data = recv_frame(ws)
        assert Image.open(io.BytesIO(data)).format == "WEBP"
    assert metric(server, "edge_diffusion_stream_configs_prepared_total") - prepared_before == 2
    entries = [e for e in server.log_entries() if e.get("msg") == "stream runner"]
    assert entries and entries[0]["vae"] == "AutoencoderTiny"  # --stream-vae


def test_latest_frame_wins(server):
    dropped_before = metric(server, "edge_diffusion_stream_frames_dropped_total{transport=\"websocket\"}")
    with open_stream(server) as ws:
        ws.send(json.dumps({"prompt": "fast", "num_inference_steps": 8, "strength": 1.0}))
        for _ in range(12):  # far faster than 8 steps a frame on a CPU
            ws.send(image_bytes())
        headers = []
        while not headers or headers[-1]["seq"] != 12:
            headers.append(recv_frame(ws)[0])
    seqs = [h["seq"] for h in headers]
    assert seqs == sorted(seqs) and len(seqs) < 12  # never a queue: older frames were skipped
    assert headers[-1]["dropped"] == 12 - len(seqs) > 0
    assert metric(server, "edge_diffusion_stream_frames_dropped_total{transport=\"websocket\"}") - dropped_before == 12 - len(seqs)


def test_errors_name_the_field_and_keep_the_stream_open(server):
    with open_stream(server) as ws:
        ws.send(image_bytes())
        assert recv_json(ws)["error"]["field"] == "config"
        cases = [
            ("{nope", None), (json.dumps([1]), None), (json.dumps({"prompt": "x", "colour": 1}), "colour"),
            (json.dumps({"prompt": "x", "strength": 2}), "strength"), (json.dumps({"prompt": " "}), "prompt"),
            (json.dumps({"prompt": "x", "num_inference_steps": 2, "strength": 0.2}), "strength"),
            (json.dumps({"prompt": "x", "output_format": "gif"}), "output_format"),
        ]
        for message, field in cases:
            ws.send(message)
            reply = recv_json(ws)
            assert reply["type"] == "error" and reply["error"]["field"] == field and reply["error"]["message"], reply
        ws.send(json.dumps({"prompt": "ok", "num_inference_steps": 2}))
        for frame in (b"\x00garbage", image_bytes((60, 64)), image_bytes((512, 64)), b"\xff" * (MAX_FRAME_BYTES + 1)):
            ws.send(frame)
            reply = recv_json(ws)
            assert reply["type"] == "error" and reply["error"]["field"] == "frame", reply
        ws.send(image_bytes(fmt="WEBP"))
        header, _ = recv_frame(ws)
        assert header["seq"] == 6


def test_a_frame_after_a_refused_first_config_says_why(server):
    """One step at strength 0.5 is an empty schedule; the frame that follows must not ask for a config again."""
    with open_stream(server) as ws:
        ws.send(json.dumps({"prompt": "x", "num_inference_steps": 1, "strength": 0.5}))
        assert recv_json(ws)["error"]["field"] == "strength"
        ws.send(image_bytes())
        error = recv_json(ws)["error"]
        assert error["field"] == "config" and "refused" in error["message"] and "strength" in error["message"]


def test_max_streams_and_load_signal(server):
    with open_stream(server), open_stream(server):
        with pytest.raises(InvalidStatus) as refused:
            open_stream(server)
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["Retry-After"]
        load = httpx.get(server.metrics_url + "/load").json()
        # Two open streams on one slot: the pod reads as loaded (2.0) though no frame is running.
        assert load["streams"] == 2 and load["load"] == 2.0
        assert metric(server, "edge_diffusion_streams_active{transport=\"websocket\"}") == 2
    deadline = time.monotonic() + 5
    while httpx.get(server.metrics_url + "/load").json()["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(server.metrics_url + "/load").json()["load"] == 0.0


def test_idle_stream_is_closed(server):
    with open_stream(server) as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
        assert 1.0 < time.monotonic() - started < 8


def test_a_client_waiting_for_a_slow_frame_is_not_idle(server):
    with open_stream(server) as ws:
        # The largest frame and step count the server allows, so the frame outlasts the 1.5 s idle timeout by a
        # wide margin even on a fast CPU (128x128 at 150 steps once took only 1.39 s in CI).
        ws.send(json.dumps({"prompt": "slow", "num_inference_steps": 200, "strength": 1.0}))
        ws.send(image_bytes((256, 256)))
        header, _ = recv_frame(ws, timeout=60)
        assert header["inference_ms"] > 1500  # longer than --stream-idle-timeout, and still answered


def test_rest_requests_are_served_while_a_stream_runs(server):
    """Frames queue in the same FIFO as REST requests, so a REST request is not starved by a busy stream."""
    stop = threading.Event()
    answered = []

    def pump():
        with open_stream(server) as ws:
            ws.send(json.dumps({"prompt": "busy", "num_inference_steps": 4, "strength": 1.0}))
            while not stop.is_set():
                ws.send(image_bytes())
                answered.append(recv_frame(ws)[0]["seq"])

    thread = threading.Thread(target=pump)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not answered and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(3):
            r = httpx.post(server.url + "/generate", headers=AUTH, json={"prompt": "rest", "num_inference_steps": 2},
                           timeout=30)
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        thread.join(30)
    assert len(answered) >= 2


def test_stream_load_client(server, tmp_path, capsys):
    from loadtest import bench

    out, plot = tmp_path / "stream.json", tmp_path / "stream.png"
    argv = ["--stream", "--url", server.url, "--api-key", KEY, "--frames", "4", "--size", "64x64", "--steps", "2",
            "--out", str(out), "--plot", str(plot)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["frames_sent"] == result["frames_received"] == 4 and result["dropped_fraction"] == 0
    assert result["delivered_fps_per_stream"] > 0
    assert result["latency_ms"]["p50"] >= result["overhead_ms"]["p50"] and result["latency_ms"]["p99"] > 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert "delivered:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        bench.main(["--stream", "--url", "ws://nope", "--frames", "1"])
    assert usage.value.code == 2


def test_sigterm_closes_streams_with_1001_after_the_frame_in_progress(tiny_model, taesd, tmp_path_factory):
    srv = start(tiny_model, taesd, tmp_path_factory, "stream-drain", "--drain-timeout", "20").wait_ready()
    try:
        with open_stream(srv) as ws:
            ws.send(json.dumps({"prompt": "slow", "num_inference_steps": 40, "strength": 1.0}))
            ws.send(image_bytes((128, 128), "JPEG"))
            deadline = time.monotonic() + 10
            while httpx.get(srv.metrics_url + "/load").json()["in_flight"] == 0:
                assert time.monotonic() < deadline, "the frame never started"
                time.sleep(0.01)
            ws.send(image_bytes((128, 128), "JPEG"))  # waiting: dropped by the drain, never processed
            srv.proc.send_signal(signal.SIGTERM)
            header, data = recv_frame(ws)
            assert header["seq"] == 1 and Image.open(io.BytesIO(data)).size == (128, 128)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=15)
            assert closed.value.rcvd.code == 1001
        assert srv.proc.wait(timeout=20) == 0
    finally:
        srv.stop()
