"""Device tokens black-box through one real server process: minting, every answer of the credential check on REST
and on the stream, a token expiring mid-stream, metrics and logs, and key rotation without a restart."""
from __future__ import annotations

import io
import json
import time

import httpx
import jwt
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.serving.conftest import LiveServer

pytestmark = pytest.mark.slow

MASTER = "master-key-for-token-tests-0001"
SECRET = "s" * 40
KEYS = {"kid": "k1", "secret": SECRET}
AUDIENCE = "edge-diffusion"


def master() -> dict:
    return {"Authorization": f"Bearer {MASTER}"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def jpeg(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tokens")
    (tmp / "key").write_text(MASTER + "\n")
    (tmp / "keys.json").write_text(json.dumps(KEYS))
    srv = LiveServer(tiny_model, tmp / "server.log", "--api-key-file", str(tmp / "key"), "--token-keys-file",
                     str(tmp / "keys.json"), "--token-clock-skew", "0", "--credentials-refresh", "0.2",
                     "--max-streams", "3", "--max-image-size", "128", "--stream-warmup-size", "64x64")
    srv.dir = tmp
    try:
        yield srv.wait_ready()
    finally:
        assert srv.stop() == 0, srv.log_text()


def mint(server, **body) -> dict:
    body.setdefault("subject", "device-1")
    r = httpx.post(server.url + "/v1/tokens", json=body, headers=master(), timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def forge(secret=SECRET, kid="k1", **overrides) -> str:
    """A token as an app backend mints it with any JWT library and the signing key."""
    now = int(time.time())
    claims = {"iss": "app-backend", "aud": AUDIENCE, "sub": "device-9", "iat": now, "nbf": now, "exp": now + 60,
              "scope": "generate edit stream", **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256",
                      headers={"kid": kid})


def error(r: httpx.Response) -> dict:
    return r.json()["error"]


def generate(server, headers, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/images/generations", headers=headers, timeout=60,
                      json={"prompt": "a red cube", "size": "64x64", "num_inference_steps": 1, **body})


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/v1/stream"


def test_mint_answers_201_with_a_standard_jwt(server):
    before = int(time.time())
    body = mint(server, subject="device-1", ttl_s=120, scopes=["generate", "stream"],
                limits={"requests_per_minute": 30})
    assert body["token_type"] == "Bearer" and before + 120 <= body["expires_at"] <= int(time.time()) + 120
    header = jwt.get_unverified_header(body["token"])
    assert header == {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["sub"] == "device-1" and claims["scope"] == "generate stream" and claims["iss"] == "edge-diffusion"
    assert claims["limits"] == {"requests_per_minute": 30} and claims["exp"] == body["expires_at"]
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == 120 and claims["jti"]
    default = jwt.decode(mint(server)["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert default["scope"] == "generate edit stream" and default["exp"] - default["iat"] == 600
    assert "limits" not in default


@pytest.mark.parametrize(("body", "param"), [
    ({}, "subject"),
    ({"subject": ""}, "subject"),
    ({"subject": "x" * 129}, "subject"),
    ({"subject": "tab\there"}, "subject"),
    ({"subject": "d", "ttl_s": 3601}, "ttl_s"),
    ({"subject": "d", "ttl_s": "600"}, "ttl_s"),
    ({"subject": "d", "scopes": ["admin"]}, "scopes.0"),
    ({"subject": "d", "scopes": []}, "scopes"),
    ({"subject": "d", "limits": {"max_streams": 0}}, "limits.max_streams"),
    ({"subject": "d", "limits": {"burst": 3}}, "limits.burst"),
    ({"subject": "d", "extra": 1}, "extra"),
])
def test_bad_mint_body_is_400_naming_the_field(server, body, param):
    r = httpx.post(server.url + "/v1/tokens", json=body, headers=master(), timeout=10)
    assert r.status_code == 400 and error(r)["param"] == param, r.text


def test_a_token_works_where_the_master_key_does(server):
    token = mint(server)["token"]
    assert generate(server, bearer(token)).status_code == 200
    r = httpx.post(server.url + "/generate", headers=bearer(token), timeout=60,
                   json={"prompt": "x", "width": 64, "height": 64, "num_inference_steps": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    edit = httpx.post(server.url + "/v1/images/edits", headers=bearer(token), timeout=60,
                      data={"prompt": "x", "strength": "1.0", "num_inference_steps": "1"},
                      files={"image": ("i.jpg", jpeg(), "image/jpeg")})
    assert edit.status_code == 200, edit.text
    # No inventory on this server: 404 from the route itself, so the token passed the check.
    assert httpx.get(server.url + "/v1/endpoints", headers=bearer(token)).status_code == 404
    with connect(ws_url(server), additional_headers=bearer(token), open_timeout=10) as ws:
        assert ws.subprotocol is None
    with connect(ws_url(server), subprotocols=[f"bearer.{token}"], open_timeout=10) as ws:
        assert ws.subprotocol == f"bearer.{token}"
        ws.send(json.dumps({"prompt": "neon", "num_inference_steps": 2}))
        ws.send(jpeg())
        assert json.loads(ws.recv(timeout=30))["type"] == "frame" and isinstance(ws.recv(timeout=30), bytes)


def test_a_token_cannot_mint_tokens(server):
    token = mint(server)["token"]
    r = httpx.post(server.url + "/v1/tokens", json={"subject": "other"}, headers=bearer(token))
    assert r.status_code == 403 and error(r)["code"] == "master_key_required"


@pytest.mark.parametrize(("token", "code"), [
    (lambda: forge(exp=int(time.time()) - 5, iat=int(time.time()) - 65, nbf=None), "token_expired"),
    (lambda: forge(secret="w" * 40), "invalid_signature"),
    (lambda: forge(kid="k-unknown"), "unknown_key"),
    (lambda: forge(aud="another-fleet"), "invalid_audience"),
    (lambda: forge(nbf=int(time.time()) + 300), "token_not_yet_valid"),
    (lambda: forge(exp=int(time.time()) + 7200), "invalid_claims"),  # longer than the 3600 s a token may live
    (lambda: "not.a.jwt", "malformed_token"),
    (lambda: "wrong-master-key", "invalid_api_key"),
])
def test_refused_tokens_are_401_with_the_reason(server, token, code):
    value = token()
    r = generate(server, bearer(value))
    assert r.status_code == 401 and error(r)["code"] == code, r.text
    assert error(r)["type"] == "authentication_error"
    assert r.headers["www-authenticate"] == 'Bearer realm="edge-diffusion", error="invalid_token"'
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server), subprotocols=[f"bearer.{value}"], open_timeout=10)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == code


def test_backend_minted_token_is_accepted(server):
    assert generate(server, bearer(forge())).status_code == 200


def test_missing_scope_is_403(server):
    token = mint(server, scopes=["stream"])["token"]
    r = generate(server, bearer(token))
    assert r.status_code == 403 and error(r)["code"] == "insufficient_scope" and error(r)["type"] == "permission_error"
    assert 'scope="generate"' in r.headers["www-authenticate"]
    no_stream = mint(server, scopes=["generate"])["token"]
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server), additional_headers=bearer(no_stream), open_timeout=10)
    assert refused.value.response.status_code == 403


def test_requests_per_minute_is_per_subject_with_retry_after(server):
    token = mint(server, subject="rpm-device", limits={"requests_per_minute": 2})["token"]
    # The budget is the subject's, not the token's: a second token for the same subject shares it.
    twin = mint(server, subject="rpm-device", limits={"requests_per_minute": 2})["token"]
    for value in (token, twin):
        assert generate(server, bearer(value), size="7x7").status_code == 400  # counted although invalid
    r = generate(server, bearer(token))
    assert r.status_code == 429 and error(r)["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 30
    assert generate(server, bearer(mint(server, subject="other-device")["token"])).status_code == 200


def test_max_streams_is_per_subject_with_retry_after(server):
    token = mint(server, subject="stream-device", limits={"max_streams": 1})["token"]
    with connect(ws_url(server), additional_headers=bearer(token), open_timeout=10):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(server), additional_headers=bearer(token), open_timeout=10)
        assert refused.value.response.status_code == 429 and refused.value.response.headers["Retry-After"]
        assert json.loads(refused.value.response.body)["error"]["code"] == "stream_limit"
    with connect(ws_url(server), additional_headers=bearer(token), open_timeout=10):
        pass  # the closed stream gave its slot back


def test_a_token_expiring_mid_stream_closes_it_with_4401(server):
    body = mint(server, subject="short-lived", ttl_s=2)
    with connect(ws_url(server), additional_headers=bearer(body["token"]), open_timeout=10) as ws:
        ws.send(json.dumps({"prompt": "neon", "num_inference_steps": 2}))
        ws.send(jpeg())
        assert json.loads(ws.recv(timeout=30))["type"] == "frame"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4401 and closed.value.rcvd.reason.startswith("token_expired")
    assert time.time() >= body["expires_at"]


def test_the_device_client_refreshes_an_expiring_token_and_keeps_streaming(server):
    """The device client (clients/python) against the real close: 2 s tokens from the provider, frames throughout."""
    import sys

    from tests.serving.conftest import REPO_ROOT

    if str(REPO_ROOT / "clients" / "python") not in sys.path:  # as tests/clients/python/conftest.py does
        sys.path.insert(0, str(REPO_ROOT / "clients" / "python"))
    from edge_diffusion_client import EdgeClient

    minted: list[str] = []

    def provider(refresh: bool) -> str:  # what an app's backend call would do
        if refresh or not minted:
            minted.append(mint(server, subject="client-device", ttl_s=2)["token"])
        return minted[-1]

    events = []
    deadline = time.monotonic() + 5
    with EdgeClient(server.url, provider, refresh_interval=0, discover=False, on_event=events.append) as client, \
            client.stream({"prompt": "neon", "num_inference_steps": 2}, max_in_flight=1) as session:
        answered = 0
        while time.monotonic() < deadline or not any(e.kind == "reconnect" for e in events):
            session.submit(jpeg())
            assert session.get(timeout=20).image
            answered += 1
            assert time.monotonic() < deadline + 15, events
    reconnects = [e for e in events if e.kind == "reconnect"]
    assert reconnects and {e.code for e in reconnects} == {4401}
    assert len(minted) >= 2 and answered >= 2


def test_metrics_and_logs_carry_outcomes_and_subject_hashes_never_tokens(server):
    token = mint(server, subject="metrics-device")["token"]
    assert generate(server, bearer(token)).status_code == 200
    text = httpx.get(server.metrics_url + "/metrics").text
    assert 'edge_diffusion_auth_total{outcome="token"}' in text
    assert 'edge_diffusion_auth_total{outcome="token_expired"}' in text
    import hashlib

    digest = hashlib.sha256(b"metrics-device").hexdigest()
    assert f'edge_diffusion_token_subject_requests_total{{outcome="admitted",subject_bucket="{digest[:2]}"}}' in text
    log = server.log_text()
    assert token not in log and token.split(".")[2] not in log and "metrics-device" not in log
    lines = [e for e in server.log_entries() if e.get("subject_hash") == digest[:16]]
    assert lines and lines[-1]["auth"] == "token"
    assert any(e.get("auth") == "token_expired" for e in server.log_entries())


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_rotation_without_restart(server):
    """Last in the module: it changes the server's keys."""
    old_token = mint(server, subject="rotating")["token"]
    new_master, new_secret = "master-key-rotated-0002", "n" * 48
    # Master key: both lines are accepted while devices move over, then the old one goes.
    (server.dir / "key").write_text(f"{new_master}\n{MASTER}\n")
    wait_for(lambda: generate(server, bearer(new_master)).status_code == 200)
    assert generate(server, master()).status_code == 200
    # Signing keys: a new first key signs; tokens of the old key stay valid while it is still listed.
    (server.dir / "keys.json").write_text(json.dumps({"keys": [{"kid": "k2", "secret": new_secret}, KEYS]}))
    wait_for(lambda: jwt.get_unverified_header(mint(server)["token"])["kid"] == "k2")
    assert generate(server, bearer(old_token)).status_code == 200
    (server.dir / "key").write_text(new_master)
    (server.dir / "keys.json").write_text(json.dumps({"kid": "k2", "secret": new_secret}))
    wait_for(lambda: generate(server, master()).status_code == 401)
    wait_for(lambda: error(generate(server, bearer(old_token)))["code"] == "unknown_key")
    r = httpx.post(server.url + "/v1/tokens", json={"subject": "d"}, headers=bearer(new_master))
    assert r.status_code == 201 and generate(server, bearer(r.json()["token"])).status_code == 200
    # A broken document keeps the keys in use rather than locking everyone out.
    (server.dir / "keys.json").write_text("{not json")
    time.sleep(0.6)
    assert generate(server, bearer(r.json()["token"])).status_code == 200
    assert "key refresh failed" in server.log_text()
