"""The real server as a subprocess (uvicorn, 127.0.0.1): lifecycle, auth, error classes, backpressure, logs, drain."""
from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import signal
import threading
import time

import httpx
import openai
import pytest
from PIL import Image

from tests.serving.conftest import LiveServer

pytestmark = pytest.mark.slow

KEY = "live-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    (tmp / "key").write_text(KEY + "\n")
    srv = LiveServer(tiny_model, tmp / "server.log", "--max-concurrency", "1", "--max-queue", "2",
                     "--request-timeout", "5", "--drain-timeout", "20", "--max-steps", "5000",
                     "--max-images", "2",
                     env={"SERVING_API_KEY_FILE": str(tmp / "key")})
    # Lifecycle: the ports answer while the model loads; readiness turns 200 only after load + warm-up.
    saw_not_ready = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(srv.url + "/healthz", timeout=1).status_code == 200:
                saw_not_ready = saw_not_ready or httpx.get(srv.url + "/readyz", timeout=1).status_code == 503
                if httpx.get(srv.url + "/readyz", timeout=1).status_code == 200:
                    break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    srv.wait_ready()
    srv.saw_not_ready = saw_not_ready
    yield srv
    assert srv.stop() == 0, srv.log_text()


def gen(server, body=None, headers=None, timeout=30, path="/generate"):
    return httpx.post(server.url + path, json=body or {"prompt": "a lighthouse"}, headers={**AUTH, **(headers or {})},
                      timeout=timeout)


def test_readiness_lifecycle(server):
    assert server.saw_not_ready, "readyz should answer 503 while the model loads"
    log = server.log_entries()
    messages = [e["msg"] for e in log]
    assert messages.index("model loaded") < messages.index("warm-up done") < messages.index("ready")


def test_auth(server):
    assert httpx.post(server.url + "/generate", json={"prompt": "x"}).status_code == 401
    assert gen(server, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(server.url + "/openapi.json").status_code == 401
    for public in ("/healthz", "/readyz", "/", "/static/app.js"):
        assert httpx.get(server.url + public).status_code == 200
    r = gen(server, {"prompt": "x", "seed": 5})
    assert r.status_code == 200 and r.headers["x-seed"] == "5"


def test_error_classes(server):
    url = server.url + "/generate"
    bad_json = httpx.post(url, content=b"{nope", headers={**AUTH, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]["message"]
    invalid = gen(server, {"prompt": "x", "width": 65})
    assert invalid.status_code == 422 and invalid.json()["error"]["param"] == "width"
    too_big = httpx.post(url, content=b"x" * (1024 * 1024 + 1), headers={**AUTH, "Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert gen(server, headers={"Accept": "text/plain"}).status_code == 406
    assert httpx.get(server.url + "/nope", headers=AUTH).json()["error"]["type"] == "not_found"
    assert gen(server, {"prompt": "x", "response_format": "url"}, path="/v1/images/generations").status_code == 400


def test_timeout_is_504_and_the_generation_is_aborted(server):
    started = time.monotonic()
    r = gen(server, {"prompt": "slow", "num_inference_steps": 5000})
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
    assert time.monotonic() - started < 8  # answered at the 5 s deadline, not after 5000 steps
    # The aborted generation stops at its next step: the slot is free again almost at once.
    deadline = time.monotonic() + 2
    while httpx.get(server.metrics_url + "/load").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert httpx.get(server.metrics_url + "/load").json() == {"in_flight": 0, "queue_depth": 0, "load": 0.0, "streams": 0}
    assert gen(server).status_code == 200


def test_burst_past_the_queue_gets_429_and_no_5xx(server):
    def one(i):
        return gen(server, {"prompt": f"burst {i}", "num_inference_steps": 15, "seed": i})

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(one, range(12)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) >= 6 and statuses.count(200) >= 3  # 1 running + 2 queued admitted at the peak
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"
    metrics = httpx.get(server.metrics_url + "/metrics").text
    assert 'edge_diffusion_requests_total{route="generate",status="429"}' in metrics


def test_openai_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    result = client.images.generate(model="edge-diffusion", prompt="a red kite", n=2, size="64x64",
                                    response_format="b64_json")
    assert len(result.data) == 2
    for item in result.data:
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (64, 64)
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="a red kite", response_format="url")
    assert "b64_json" in str(err.value)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).images.generate(prompt="x")


def test_structured_request_logs_without_prompts(server):
    marker = "secret-prompt-text-7781"
    r = gen(server, {"prompt": marker, "width": 80, "height": 64, "num_inference_steps": 2},
            headers={"X-Request-ID": "req-abc-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-abc-123"
    time.sleep(0.2)
    assert marker not in server.log_text()
    entries = [e for e in server.log_entries() if e.get("request_id") == "req-abc-123"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["status"] == 200 and entry["size"] == "80x64" and entry["steps"] == 2
    assert entry["latency_ms"] > 0 and entry["bytes"] == len(r.content)


def test_metrics_port_is_separate(server):
    assert httpx.get(server.url + "/metrics", headers=AUTH).status_code == 404
    text = httpx.get(server.metrics_url + "/metrics").text
    assert "edge_diffusion_load" in text and "edge_diffusion_images_generated_total" in text


def test_sigterm_drains_in_flight_request_and_exits_0(server):
    """Runs last in this module: it shuts the shared server down."""
    result: dict = {}

    def slow_request():
        result["response"] = gen(server, {"prompt": "drain", "num_inference_steps": 60, "width": 96, "height": 96})

    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 10
    while httpx.get(server.metrics_url + "/load").json()["in_flight"] == 0:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.01)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    assert httpx.get(server.url + "/readyz").status_code == 503  # readiness turns off at once
    refused = gen(server, {"prompt": "late"})
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    worker.join(30)
    assert result["response"].status_code == 200, result["response"].text
    assert server.proc.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 20  # --drain-timeout
    assert json.loads(server.log_text().strip().splitlines()[-1])["msg"] == "exit"


def test_a_model_that_fails_to_load_exits_1_with_the_reason(tiny_model, tmp_path):
    """Black-box: weights that cannot be read fail the load on the loader thread; the process logs why and exits 1
    instead of answering /readyz 503 forever."""
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(tiny_model, broken)
    weights = next((broken / "vae").glob("*.safetensors"))
    weights.write_bytes(b"\x00" * 16)  # not a safetensors header
    srv = LiveServer(broken, tmp_path / "server.log", "--skip-warmup")
    try:
        srv.proc.wait(timeout=60)
        log = srv.log_text()
    finally:
        srv.stop()
    assert srv.proc.returncode == 1, log
    failed = [json.loads(line) for line in log.splitlines() if '"model load failed"' in line]
    assert failed and "safetensors" in json.dumps(failed[0]).lower(), log
