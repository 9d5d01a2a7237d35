"""HTTP tests against the app in-process (real tiny CPU pipeline): every route and every error class."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from serving.api.app import create_app, negotiate_image_type
from serving.core.errors import ServingError
from tests.serving.conftest import make_state

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def state(cpu_backend):
    return make_state(cpu_backend, api_key=KEY, max_concurrency=2, max_image_size=256, max_steps=8, max_images=2)


@pytest.fixture(scope="module")
def client(state):
    with TestClient(create_app(state)) as c:
        yield c


def post(client, path="/generate", body=None, headers=None, **kwargs):
    return client.post(path, json=body, headers={**AUTH, **(headers or {})}, **kwargs)


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    err = response.json()["error"]
    assert err["message"] and err["type"]
    return err


# -- unit: Accept negotiation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "image/png"),
        ("*/*", "image/png"),
        ("image/webp", "image/webp"),
        ("image/jpeg;q=0.5, image/webp;q=0.9", "image/webp"),
        ("text/html, image/jpeg", "image/jpeg"),
        ("image/*", "image/png"),
        ("image/png;q=0, image/jpeg", "image/jpeg"),
        # RFC 9110: q is 0..1; a non-finite or out-of-range weight invalidates (ignores) that media range.
        ("image/webp;q=nan, image/jpeg;q=0.1", "image/jpeg"),
        ("image/webp;q=inf, image/jpeg;q=0.1", "image/jpeg"),
        ("image/webp;q=2, image/jpeg;q=0.1", "image/jpeg"),
        ("image/webp;q=-1, image/jpeg;q=0.1", "image/jpeg"),
        ("image/webp;q=abc, image/jpeg;q=0.1", "image/jpeg"),
    ],
)
def test_accept_negotiation(accept, expected):
    assert negotiate_image_type(accept) == expected


@pytest.mark.parametrize("accept", ["application/json", "image/png;q=nan", "*/*;q=NaN", "image/webp;q=1.5"])
def test_unacceptable_accept_is_406(accept):
    with pytest.raises(ServingError) as err:
        negotiate_image_type(accept)
    assert err.value.status == 406 and err.value.param == "Accept"


# -- /generate -----------------------------------------------------------------------------------------------
def test_generate_png_with_headers(client):
    r = post(client, body={"prompt": "a red barn", "seed": 42})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-seed"] == "42" and float(r.headers["x-inference-ms"]) > 0
    assert len(r.headers["x-request-id"]) >= 16
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)  # the model's serving.json defaults


@pytest.mark.parametrize(("accept", "fmt"), [("image/jpeg", "JPEG"), ("image/webp", "WEBP")])
def test_generate_jpeg_and_webp(client, accept, fmt):
    r = post(client, body={"prompt": "x", "width": 72, "height": 64}, headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"] == accept
    image = Image.open(io.BytesIO(r.content))
    assert image.format == fmt and image.size == (72, 64)


def test_same_seed_same_bytes_and_random_seed_is_reported(client):
    body = {"prompt": "determinism", "seed": 1234, "num_inference_steps": 2, "guidance_scale": 3.0,
            "negative_prompt": "blur"}
    first, second = post(client, body=body), post(client, body=body)
    assert first.content == second.content
    other = post(client, body={**body, "seed": 1235})
    assert other.content != first.content
    unseeded = post(client, body={"prompt": "determinism", "num_inference_steps": 2, "guidance_scale": 3.0,
                                  "negative_prompt": "blur"})
    seed = int(unseeded.headers["x-seed"])
    assert 0 <= seed < 2**32
    assert post(client, body={**body, "seed": seed}).content == unseeded.content


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "width": 70}, "width"),
        ({"prompt": "x", "width": 1024}, "width"),
        ({"prompt": "x", "height": 8}, "height"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": "x", "num_inference_steps": 9}, "num_inference_steps"),
        ({"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
        ({"prompt": "x", "guidance_scale": 21}, "guidance_scale"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "seed": 2**32}, "seed"),
        ({"prompt": "x", "seed": 1.5}, "seed"),
        ({"prompt": "x", "seed": True}, "seed"),
        ({"prompt": "x", "width": "64"}, "width"),
        ({"prompt": "x", "negative_prompt": "y" * 1001}, "negative_prompt"),
        ({"prompt": "x", "widht": 64}, "widht"),
    ],
)
def test_validation_errors_name_the_field(client, body, param):
    err = error_of(post(client, body=body), 422)
    assert err["param"] == param and param in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b'{"prompt": ', "not valid JSON"), (b"[1, 2]", "JSON object"), (b"null", "JSON object"), (b"", "request body is required")],
)
def test_malformed_bodies_are_400(client, content, needle):
    r = client.post("/generate", content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert needle in error_of(r, 400)["message"]


def test_json_without_json_content_type_is_400(client):
    r = client.post("/generate", content=b'{"prompt": "x"}', headers={**AUTH, "Content-Type": "text/plain"})
    assert "Content-Type: application/json" in error_of(r, 400)["message"]


def test_integral_guidance_is_accepted(client):
    assert post(client, body={"prompt": "x", "guidance_scale": 2}).status_code == 200


def test_body_over_1_mib_is_413(client):
    big = json.dumps({"prompt": "x", "negative_prompt": "y" * (1024 * 1024)}).encode()
    error_of(client.post("/generate", content=big, headers={**AUTH, "Content-Type": "application/json"}), 413)

    def chunks():  # no Content-Length: the limit is enforced on the streamed bytes
        for _ in range(20):
            yield b"x" * 65536

    error_of(client.post("/generate", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}), 413)


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b" 12", b""])
def test_malformed_content_length_is_400_naming_the_header(state, length):
    # Sent through the ASGI app directly: HTTP clients (and uvicorn's parser) refuse such headers themselves.
    app = create_app(state)
    sent = []

    async def receive():
        return {"type": "http.request", "body": b'{"prompt": "x"}', "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/generate", "headers": [
        (b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json"), (b"content-length", length)],
        "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("c", 1),
        "root_path": ""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert (b"x-request-id", sent[0]["headers"][-1][1]) in sent[0]["headers"]
    err = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]
    assert err["param"] == "Content-Length" and err["type"] == "invalid_request_error" and err["code"] == 400


def test_unexpected_error_is_500_with_request_id_and_logged_once(cpu_backend, caplog):
    state = make_state(cpu_backend)

    class Broken:
        def __getattr__(self, name):
            return getattr(cpu_backend, name)

        def generate(self, params, cancel):
            raise KeyError("internal detail 7f3a")

    state.engine.backend = Broken()
    with caplog.at_level(logging.INFO), TestClient(create_app(state)) as c:
        r = c.post("/generate", json={"prompt": "x"}, headers={"X-Request-ID": "req-500"})
    err = error_of(r, 500)
    assert err["type"] == "server_error" and "X-Request-ID" in err["message"]
    assert r.headers["x-request-id"] == "req-500" and "7f3a" not in r.text
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].fields["request_id"] == "req-500"
    access = [rec.fields for rec in caplog.records if rec.name == "serving.access"]
    assert [(a["request_id"], a["status"]) for a in access] == [("req-500", 500)]


def test_unacceptable_image_type_is_406(client):
    err = error_of(post(client, body={"prompt": "x"}, headers={"Accept": "application/json"}), 406)
    assert err["param"] == "Accept"


# -- auth ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY},
     {"Authorization": f"Bearer {KEY}x"}],
)
def test_auth_is_required_for_api_routes(client, headers):
    for method, path in (("POST", "/generate"), ("POST", "/v1/images/generations"), ("GET", "/openapi.json"),
                         ("GET", "/v1/endpoints"), ("GET", "/nope")):
        r = client.request(method, path, json={"prompt": "x"}, headers=headers)
        err = error_of(r, 401)
        assert err["type"] == "authentication_error" and r.headers["www-authenticate"].startswith("Bearer")


def test_probes_playground_and_static_are_public(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "static/app.js" in page.text and "http" not in page.text.split("<body")[0].replace("http-equiv", "")
    for asset, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    error_of(client.get("/static/missing.js"), 404)


def test_bearer_scheme_is_case_insensitive(client):
    assert client.get("/openapi.json", headers={"Authorization": f"bearer {KEY}"}).status_code == 200


# -- OpenAI-compatible ---------------------------------------------------------------------------------------
def test_openai_generations(client):
    r = post(client, "/v1/images/generations",
             {"prompt": "a boat", "n": 2, "size": "64x64", "response_format": "b64_json", "model": "sd", "seed": 9})
    assert r.status_code == 200, r.text
    data = r.json()
    assert isinstance(data["created"], int) and len(data["data"]) == 2
    images = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in data["data"]]
    assert all(i.size == (64, 64) and i.format == "PNG" for i in images)
    assert r.headers["x-seed"] == "9"


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"prompt": "x", "response_format": "url"}, "response_format", "b64_json"),
        ({"prompt": "x", "size": "big"}, "size", "size"),
        ({"prompt": "x", "size": "60x64"}, "size", "multiple of 8"),
        ({"prompt": "x", "size": "64x1024"}, "size", "64..256"),
        ({"prompt": "x", "n": 3}, "n", "n"),
        ({"prompt": "x", "n": 0}, "n", "n"),
    ],
)
def test_openai_validation(client, body, param, needle):
    # OpenAI answers validation errors with 400, so openai.BadRequestError handlers catch them.
    err = error_of(post(client, "/v1/images/generations", body), 400)
    assert err["param"] == param and needle in err["message"]
    assert err["type"] == "invalid_request_error" and set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("body", "param"),
    [({}, "prompt"), ({"prompt": "x", "seed": "1"}, "seed"), ({"prompt": "x", "widht": 64}, "widht"),
     ({"prompt": "x", "output_format": "gif"}, "output_format"), ({"prompt": "x", "num_inference_steps": 99}, "num_inference_steps")],
)
def test_openai_schema_errors_are_400_in_the_openai_shape(client, body, param):
    err = error_of(post(client, "/v1/images/generations", body), 400)
    assert err["param"] == param and err["type"] == "invalid_request_error"
    # /generate keeps 422 for the same kind of error.
    assert post(client, body={"prompt": "x", "seed": "1"}).status_code == 422


def test_openai_size_auto_is_the_model_default_size(client, state):
    r = post(client, "/v1/images/generations", {"prompt": "a boat", "size": "auto", "seed": 1})
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))
    assert image.size == (state.defaults.width, state.defaults.height)


@pytest.mark.parametrize(("output_format", "fmt"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_openai_output_format(client, output_format, fmt):
    r = post(client, "/v1/images/generations", {"prompt": "a boat", "output_format": output_format, "seed": 2})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).format == fmt


# -- hygiene ----------------------------------------------------------------------------------------------------
def test_duplicate_authorization_headers_are_400(client):
    r = client.post("/generate", json={"prompt": "x"},
                    headers=[("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer other")])
    assert error_of(r, 400)["param"] == "Authorization"


@pytest.mark.parametrize("request_id", ["abc\x01def", "has space", "x" * 65, "semi;colon", "new\tline"])
def test_request_id_that_is_not_a_plain_token_is_replaced(client, request_id):
    r = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert r.headers["x-request-id"] != request_id and len(r.headers["x-request-id"]) == 32


def test_plain_request_id_is_kept(client):
    assert client.get("/healthz", headers={"X-Request-ID": "A-z_0.9"}).headers["x-request-id"] == "A-z_0.9"


@pytest.mark.parametrize("prompt", ["\x00\x00", "\u200b\u200c\u200d\ufeff", " \u2060\t\x07 ", "\u00ad\u200e"])
def test_prompt_of_only_control_or_zero_width_characters_is_422(client, prompt):
    assert error_of(post(client, body={"prompt": prompt}), 422)["param"] == "prompt"
    assert error_of(post(client, "/v1/images/generations", {"prompt": prompt}), 400)["param"] == "prompt"


# -- readiness, load state and accelerator failures ----------------------------------------------------------
def test_not_ready_is_503_on_readyz_and_generate(cpu_backend):
    state = make_state(cpu_backend)
    state.set_phase("loading")
    state.engine.backend, state.defaults = None, None
    with TestClient(create_app(state)) as c:
        assert c.get("/healthz").status_code == 200
        err = error_of(c.get("/readyz"), 503)
        assert "loading" in err["message"]
        assert error_of(c.post("/generate", json={"prompt": "x"}), 503)["type"] == "unavailable"


def test_accelerator_oom_is_503_and_the_server_stays_healthy(cpu_backend, monkeypatch):
    state = make_state(cpu_backend)
    calls = {"n": 0}
    original = type(cpu_backend.pipe).__call__

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(cpu_backend.pipe), "__call__", flaky)
    with TestClient(create_app(state)) as c:
        r = c.post("/generate", json={"prompt": "x"})
        err = error_of(r, 503)
        assert "accelerator" in err["message"] and r.headers["retry-after"] == "1"
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.post("/generate", json={"prompt": "x"}).status_code == 200


def _always_oom(monkeypatch, cpu_backend):
    def oom(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(cpu_backend.pipe), "__call__", oom)


def _always_device_fault(monkeypatch, cpu_backend):
    def fault(self, *args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(type(cpu_backend.pipe), "__call__", fault)
    monkeypatch.setattr(cpu_backend, "is_accelerator_error", lambda exc: "CUDA error" in str(exc))


def test_out_of_memory_never_fails_liveness(cpu_backend, monkeypatch):
    from serving.engine.scheduler import MAX_CONSECUTIVE_ACCELERATOR_ERRORS

    state = make_state(cpu_backend)
    _always_oom(monkeypatch, cpu_backend)
    with TestClient(create_app(state)) as c:
        for _ in range(MAX_CONSECUTIVE_ACCELERATOR_ERRORS * 2):
            assert "out of memory" in error_of(c.post("/generate", json={"prompt": "x"}), 503)["message"]
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    assert state.phase == "ready"


def test_repeated_accelerator_errors_fail_liveness_and_readiness(cpu_backend, monkeypatch, caplog):
    from serving.engine.scheduler import MAX_CONSECUTIVE_ACCELERATOR_ERRORS

    state = make_state(cpu_backend)
    _always_device_fault(monkeypatch, cpu_backend)
    with caplog.at_level(logging.INFO), TestClient(create_app(state)) as c:
        for i in range(MAX_CONSECUTIVE_ACCELERATOR_ERRORS):
            assert c.get("/healthz").status_code == 200, f"unhealthy after {i} errors"
            assert "accelerator failed" in error_of(c.post("/generate", json={"prompt": "x"}), 503)["message"]
        assert "restart" in error_of(c.get("/healthz"), 503)["message"]
        assert "failed" in error_of(c.get("/readyz"), 503)["message"]
        # Later requests are refused before they reach the broken device.
        assert "unusable" in error_of(c.post("/generate", json={"prompt": "x"}), 503)["message"]
    assert state.phase == "failed"
    marked = [rec for rec in caplog.records if "marking the server unhealthy" in rec.getMessage()]
    assert len(marked) == 1 and marked[0].levelno == logging.ERROR


def test_unrecoverable_accelerator_fails_liveness_at_once(cpu_backend, monkeypatch):
    state = make_state(cpu_backend)
    _always_oom(monkeypatch, cpu_backend)
    monkeypatch.setattr(cpu_backend, "recover", lambda: False)  # the device probe fails
    with TestClient(create_app(state)) as c:
        error_of(c.post("/generate", json={"prompt": "x"}), 503)
        error_of(c.get("/healthz"), 503)
        error_of(c.get("/readyz"), 503)
        state.set_phase("ready")  # "failed" is terminal: nothing but a restart makes the server healthy again
        error_of(c.get("/healthz"), 503)


def test_timeout_is_504_and_frees_the_slot(cpu_backend):
    state = make_state(cpu_backend, request_timeout=0.05, max_steps=1000, max_concurrency=1)
    with TestClient(create_app(state)) as c:
        err = error_of(c.post("/generate", json={"prompt": "x", "num_inference_steps": 1000, "width": 256,
                                                  "height": 256}), 504)
        assert err["type"] == "timeout"
        state.engine.request_timeout = 30
        assert c.post("/generate", json={"prompt": "x"}).status_code == 200
        assert state.engine.running == 0


def test_queue_full_is_429_with_retry_after(cpu_backend):
    state = make_state(cpu_backend, max_concurrency=1, max_queue=0)
    release = threading.Event()
    entered = threading.Event()

    class Blocking:
        """Wraps the real backend; holds the only slot until released."""

        def __getattr__(self, name):
            return getattr(cpu_backend, name)

        def generate(self, params, cancel):
            entered.set()
            release.wait(10)
            return cpu_backend.generate(params, cancel)

    state.engine.backend = Blocking()
    with TestClient(create_app(state)) as c:
        worker = threading.Thread(target=lambda: c.post("/generate", json={"prompt": "x"}))
        worker.start()
        assert entered.wait(10)
        r = c.post("/generate", json={"prompt": "y"})
        err = error_of(r, 429)
        assert err["type"] == "rate_limit_error" and int(r.headers["retry-after"]) >= 1
        release.set()
        worker.join(10)


# -- inventory -------------------------------------------------------------------------------------------------
def test_endpoints_404_when_inventory_disabled(client):
    err = error_of(client.get("/v1/endpoints", headers=AUTH), 404)
    assert "--inventory-service" in err["message"]


def test_endpoints_lists_inventory_and_maps_api_failures_to_503(cpu_backend):
    class FakeInventory:
        def __init__(self):
            self.fail = False

        async def list_endpoints(self):
            if self.fail:
                raise OSError("connection refused")
            return [{"url": "http://198.51.100.7:30080", "zone": "us-west-2-lax-1a", "accelerator": "nvidia", "ready": True}]

    state = make_state(cpu_backend)
    state.inventory = FakeInventory()
    with TestClient(create_app(state)) as c:
        assert c.get("/v1/endpoints").json()[0]["url"] == "http://198.51.100.7:30080"
        state.inventory.fail = True
        error_of(c.get("/v1/endpoints"), 503)


def test_inventory_is_built_from_settings(cpu_backend):
    state = make_state(cpu_backend, inventory_service="edge-diffusion", inventory_namespace="inference",
                       inventory_node_port=30080)
    from serving.fleet.inventory import KubernetesInventory

    assert isinstance(state.inventory, KubernetesInventory)
    assert (state.inventory.service, state.inventory.namespace, state.inventory.node_port) == (
        "edge-diffusion", "inference", 30080)


# -- schema and metrics ----------------------------------------------------------------------------------------
def test_openapi_describes_every_route_and_bounds(client):
    spec = client.get("/openapi.json", headers=AUTH).json()
    paths = spec["paths"]
    for path in ("/generate", "/v1/images/generations", "/healthz", "/readyz", "/", "/v1/endpoints"):
        assert path in paths
    gen = paths["/generate"]["post"]
    assert set(gen["responses"]["200"]["content"]) == {"image/png", "image/jpeg", "image/webp"}
    assert {"X-Seed", "X-Inference-Ms"} <= set(gen["responses"]["200"]["headers"])
    for code in ("400", "401", "413", "422", "429", "503", "504"):
        assert gen["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    schema = spec["components"]["schemas"]
    width = next(s for s in schema["GenerateRequest"]["properties"]["width"]["anyOf"] if s.get("type") == "integer")
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 256, 8)
    assert "HTTPValidationError" not in schema


def test_every_response_is_counted_and_timed_under_its_route(state, client):
    def count(route, status):
        return state.metrics.registry.get_sample_value("edge_diffusion_requests_total", {"route": route, "status": status}) or 0

    def timed(route, status):
        return state.metrics.registry.get_sample_value(
            "edge_diffusion_request_duration_seconds_count", {"route": route, "status": status}) or 0

    before = {k: count(*k) for k in [("generate", "401"), ("generate", "406"), ("generate", "422"), ("openai", "400"),
                                     ("generate", "413")]}
    client.post("/generate", json={"prompt": "x"})
    post(client, body={"prompt": "x"}, headers={"Accept": "text/plain"})
    post(client, body={"prompt": "x", "width": 7})
    post(client, "/v1/images/generations", {"prompt": "x", "n": 99})
    post(client, content=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"})
    for key, value in before.items():
        assert count(*key) == value + 1, key
        assert timed(*key) >= 1, key
    registry = state.metrics.registry
    assert registry.get_sample_value("edge_diffusion_queue_wait_seconds_count") >= 1
    assert registry.get_sample_value("process_resident_memory_bytes") > 0
    assert registry.get_sample_value("process_open_fds") > 0


def test_metrics_app_exposes_counters_and_load(state, client):
    post(client, body={"prompt": "count me"})
    metrics = TestClient(state.metrics.app())
    text = metrics.get("/metrics").text
    for name in ("edge_diffusion_requests_total", "edge_diffusion_request_duration_seconds_bucket",
                 "edge_diffusion_queue_depth", "edge_diffusion_in_flight", "edge_diffusion_images_generated_total",
                 "edge_diffusion_load", "edge_diffusion_ready 1.0"):
        assert name in text
    assert 'edge_diffusion_requests_total{route="generate",status="200"}' in text
    assert metrics.get("/load").json() == {"in_flight": 0, "queue_depth": 0, "load": 0.0, "streams": 0}
    assert client.get("/metrics", headers=AUTH).status_code == 404  # never on the public port


def test_log_prompts_puts_the_prompt_in_the_request_line_only_when_asked(cpu_backend, caplog):
    for log_prompts in (False, True):
        state = make_state(cpu_backend, log_prompts=log_prompts)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="serving.access"), TestClient(create_app(state)) as c:
            assert c.post("/generate", json={"prompt": "lantern-marker", "num_inference_steps": 1}).status_code == 200
        (line,) = [r for r in caplog.records if r.name == "serving.access"]
        assert (line.fields.get("prompt") == "lantern-marker") is log_prompts


def test_library_warnings_quoting_the_prompt_are_redacted_unless_log_prompts():
    from serving.core.logconfig import PromptRedaction

    def record():
        return logging.LogRecord("diffusers.pipelines.stable_diffusion", logging.WARNING, __file__, 1,
                                 "The following part of your input was truncated because CLIP can only handle "
                                 "sequences up to %d tokens: %s", (77, ["secret tail"]), None)

    redacted = record()
    assert PromptRedaction().filter(redacted) and "secret tail" not in redacted.getMessage()
    assert "truncated" in redacted.getMessage() and "--log-prompts" in redacted.getMessage()
