"""TLS on the public port, black-box: a real server process, real TLS clients, a CA made here with `cryptography`.

The serving certificate names only SERVER_NAME (no IP address), as the cluster's does: clients connect to an IP
and verify the name, which is what devices do against a node.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from PIL import Image

from serving.api.devcerts import issue_server_cert, make_ca, write_pair
from serving.api.tls import spki_pin
from tests.serving.conftest import REPO_ROOT, LiveServer

SERVER_NAME = "inference.edge-diffusion.internal"
KEY = "tls-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
FIRST_SERIAL, SECOND_SERIAL = 0x1001, 0x2002

pytestmark = pytest.mark.slow


class SNITransport(httpx.HTTPTransport):
    """Connects to the URL's IP but sends (and verifies) ``server_name``: what a device does with a node IP."""

    def __init__(self, server_name: str, **kwargs):
        super().__init__(**kwargs)
        self.server_name = server_name

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sni_hostname"] = self.server_name
        return super().handle_request(request)


class TLSLiveServer(LiveServer):
    def __init__(self, model: Path, log_path: Path, ca_file: Path, *args: str, env: dict[str, str] | None = None):
        super().__init__(model, log_path, *args, env=env)
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca_file = ca_file
        self.ca_context = ssl.create_default_context(cafile=str(ca_file))

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(transport=SNITransport(SERVER_NAME, verify=self.ca_context), base_url=self.url, **kwargs)

    def wait_ready(self, timeout: float = 90.0) -> "TLSLiveServer":
        deadline = time.monotonic() + timeout
        with self.client(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout}s:\n{self.log_text()}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    ca = make_ca("edge-diffusion test CA")
    (tmp / "ca.crt").write_bytes(ca.cert_pem())
    write_pair(issue_server_cert(ca, [SERVER_NAME], serial=FIRST_SERIAL), tmp / "tls.crt", tmp / "tls.key")
    return {"dir": tmp, "ca": ca, "ca_file": tmp / "ca.crt", "cert": tmp / "tls.crt", "key": tmp / "tls.key"}


@pytest.fixture(scope="module")
def server(tiny_model, pki, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls-server")
    (tmp / "key").write_text(KEY)
    srv = TLSLiveServer(tiny_model, tmp / "server.log", pki["ca_file"], "--api-key-file", str(tmp / "key"),
                        "--tls-cert-file", str(pki["cert"]), "--tls-key-file", str(pki["key"]),
                        "--tls-ca-file", str(pki["ca_file"]), "--tls-server-name", SERVER_NAME, "--max-steps", "4")
    try:
        yield srv.wait_ready()
    finally:
        assert srv.stop() == 0, srv.log_text()


def handshake(port: int, context: ssl.SSLContext, server_name: str = SERVER_NAME) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return context.wrap_socket(sock, server_hostname=server_name)
    except BaseException:
        sock.close()
        raise


def peer_serial(tls_socket) -> int:
    return x509.load_der_x509_certificate(tls_socket.getpeercert(True)).serial_number


def legacy_client(max_version: ssl.TLSVersion, ciphers: str) -> ssl.SSLContext:
    """A client that really offers an old protocol or cipher (OpenSSL's default security level would not)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = max_version
    context.set_ciphers(ciphers + ":@SECLEVEL=0")
    return context


def permissive_server_accepts(client: ssl.SSLContext, pki) -> bool:
    """Control: the same client completes a handshake with a server that allows anything, so a refusal by ours
    is our policy and not the client failing to offer the protocol."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.set_ciphers("ALL:@SECLEVEL=0")
    server.load_cert_chain(pki["cert"], pki["key"])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve_one():
            conn, _ = listener.accept()
            try:
                server.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        try:
            handshake(listener.getsockname()[1], client).close()
            return True
        except (ssl.SSLError, OSError):
            return False
        finally:
            thread.join(5)


# -- handshakes ------------------------------------------------------------------------------------------------
def test_handshake_with_the_ca_and_server_name(server):
    with handshake(server.port, server.ca_context) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert peer_serial(tls) in (FIRST_SERIAL, SECOND_SERIAL)
    alpn = ssl.create_default_context(cafile=str(server.ca_file))
    alpn.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(server.port, alpn) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
    with server.client(headers=AUTH) as client:
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.extensions["http_version"] == b"HTTP/1.1"


def test_handshake_fails_without_the_ca_or_with_another_name(server):
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer|self.signed"):
        handshake(server.port, ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server.port, server.ca_context, server_name="other.example.com")
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", timeout=5)  # system trust store: the private CA is not in it


def test_plaintext_http_on_the_tls_port_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert not received.startswith(b"HTTP/"), received[:200]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    # The metrics port stays plain HTTP (in-cluster only).
    assert httpx.get(server.metrics_url + "/metrics", timeout=5).status_code == 200


def test_tls_1_1_and_weak_ciphers_are_refused(server, pki):
    tls11 = legacy_client(ssl.TLSVersion.TLSv1_1, "DEFAULT")
    assert permissive_server_accepts(tls11, pki)
    # asyncio's TLS closes the socket on a failed handshake, so the client may see an alert or a bare EOF.
    with pytest.raises(ssl.SSLError):
        handshake(server.port, tls11).close()
    # TLS 1.2 CBC suites (SHA-1 and SHA-256 MACs): not offered by the server, only AEAD ones.
    for weak in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256"):
        client = legacy_client(ssl.TLSVersion.TLSv1_2, weak)
        assert permissive_server_accepts(client, pki), weak
        with pytest.raises(ssl.SSLError):
            handshake(server.port, client).close()


# -- rotation --------------------------------------------------------------------------------------------------
def _connection_of(response: httpx.Response):
    stream = response.extensions["network_stream"]
    return stream.get_extra_info("client_addr"), peer_serial(stream.get_extra_info("ssl_object"))


def test_rotation_keeps_open_connections_and_new_ones_get_the_new_certificate(server, pki):
    with server.client(headers=AUTH, timeout=10) as keep_alive:
        first = keep_alive.get("/healthz")
        local_addr, serial = _connection_of(first)
        assert serial == FIRST_SERIAL

        # Half a rotation (a certificate whose key is not there yet) is not picked up: the old pair keeps serving.
        other_ca = make_ca("another CA")
        stray = issue_server_cert(other_ca, [SERVER_NAME], serial=0x3003)
        pki["cert"].write_bytes(stray.cert_pem())
        with handshake(server.port, ssl.create_default_context(cafile=str(pki["ca_file"]))) as tls:
            assert peer_serial(tls) == FIRST_SERIAL
        assert any(e.get("msg") == "tls certificate reload failed; serving the previous one" and
                   "does not match" in e.get("error", "") for e in server.log_entries())

        write_pair(issue_server_cert(pki["ca"], [SERVER_NAME], serial=SECOND_SERIAL), pki["cert"], pki["key"])
        fresh = server.client(headers=AUTH, timeout=10)
        with fresh:
            response = fresh.get("/healthz")
            assert response.status_code == 200
            assert _connection_of(response)[1] == SECOND_SERIAL

        # The connection opened before the rotation is still the same one and still answers.
        again = keep_alive.get("/healthz")
        assert again.status_code == 200
        assert _connection_of(again) == (local_addr, FIRST_SERIAL)
        generated = keep_alive.post("/generate", json={"prompt": "a lighthouse", "num_inference_steps": 1,
                                                      "width": 64, "height": 64})
        assert generated.status_code == 200 and _connection_of(generated) == (local_addr, FIRST_SERIAL)
    reloaded = [e for e in server.log_entries() if e.get("msg") == "tls certificate reloaded"]
    assert reloaded and reloaded[-1]["serial"] == format(SECOND_SERIAL, "x")


# -- clients -----------------------------------------------------------------------------------------------------
def test_openai_client_over_https(server):
    http_client = httpx.Client(transport=SNITransport(SERVER_NAME, verify=server.ca_context))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, http_client=http_client)
    result = client.images.generate(model="edge-diffusion", prompt="a red kite", size="64x64",
                                    response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == (64, 64)
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0).images.generate(prompt="x")


def test_websocket_stream_over_wss(server):
    from websockets.sync.client import connect

    frame = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(frame, format="JPEG")
    with connect(f"wss://127.0.0.1:{server.port}/v1/stream", ssl=server.ca_context, server_hostname=SERVER_NAME,
                 additional_headers=AUTH, open_timeout=10, close_timeout=5) as ws:
        ws.send(json.dumps({"prompt": "neon city", "strength": 0.5, "num_inference_steps": 2, "output_format": "png"}))
        ws.send(frame.getvalue())
        header = json.loads(ws.recv(timeout=30))
        assert header["type"] == "frame" and header["seq"] == 1, header
        assert Image.open(io.BytesIO(ws.recv(timeout=30))).size == (64, 64)
    # The browser subprotocol form of auth works over wss as well; the wrong CA does not connect.
    with connect(f"wss://127.0.0.1:{server.port}/v1/stream", ssl=server.ca_context, server_hostname=SERVER_NAME,
                 subprotocols=[f"bearer.{KEY}"], open_timeout=10, close_timeout=5) as ws:
        assert ws.subprotocol == f"bearer.{KEY}"
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(f"wss://127.0.0.1:{server.port}/v1/stream", ssl=ssl.create_default_context(),
                server_hostname=SERVER_NAME, additional_headers=AUTH, open_timeout=10)


def test_inventory_publishes_https_urls_server_name_and_ca_pin(pki, tmp_path):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.fleet.inventory import endpoints_from_objects
    from serving.runtime.server import build_state
    from serving.core.settings import Settings
    from serving.api.tls import ServerTLS

    node = {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "us-west-2-lax-1a"}},
            "status": {"addresses": [{"type": "ExternalIP", "address": "198.51.100.7"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}
    endpoint_slice = {"endpoints": [{"nodeName": "n1", "conditions": {"ready": True}}]}
    items = endpoints_from_objects([endpoint_slice], [node], 30443, scheme="https")
    assert items[0]["url"] == "https://198.51.100.7:30443"
    assert items[0]["stream_url"] == "wss://198.51.100.7:30443/v1/stream"
    # acme mode: publicly trusted names, one label per node under the wildcard's domain.
    node["metadata"]["name"] = "i-0123456789abcdef0.us-west-2.compute.internal"
    endpoint_slice["endpoints"][0]["nodeName"] = node["metadata"]["name"]
    [named] = endpoints_from_objects([endpoint_slice], [node], 30443, scheme="https", node_domain="nodes.example.com")
    host = "i-0123456789abcdef0-us-west-2-compute-internal.nodes.example.com"
    assert (named["url"], named["stream_url"], named["server_name"]) == (
        f"https://{host}:30443", f"wss://{host}:30443/v1/stream", host)

    for name in ("ca.crt", "tls.crt", "tls.key"):
        shutil.copy(pki["dir"] / name, tmp_path / name)
    tls = ServerTLS(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    assert tls.endpoint_fields() == {"server_name": SERVER_NAME, "ca_spki_sha256": spki_pin(pki["ca"].certificate)}

    # Through the route: every endpoint carries the name to verify and the pin.
    state = build_state(Settings(model="tiny", device="cpu", tls_cert_file=str(tmp_path / "tls.crt"),
                                 tls_key_file=str(tmp_path / "tls.key"), tls_ca_file=str(tmp_path / "ca.crt"),
                                 inventory_service="edge-diffusion", inventory_namespace="inference",
                                 inventory_node_port=30443))
    assert state.inventory.scheme == "https"

    async def list_endpoints():
        return items

    state.inventory.list_endpoints = list_endpoints
    state.tls = tls
    with TestClient(create_app(state)) as client:
        listed = client.get("/v1/endpoints").json()
    assert listed == [{**items[0], "server_name": SERVER_NAME, "ca_spki_sha256": spki_pin(pki["ca"].certificate)}]

    # A CA rotation republishes the pin.
    new_ca = make_ca("rotated CA")
    (tmp_path / "ca.crt").write_bytes(new_ca.cert_pem())
    assert tls.endpoint_fields()["ca_spki_sha256"] == spki_pin(new_ca.certificate)


# -- start-up errors -------------------------------------------------------------------------------------------
def _start(tiny_model, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving", "serve", "--model", str(tiny_model), "--device", "cpu",
                           "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_missing_or_mismatched_files_exit_2_with_a_clear_message(tiny_model, pki, tmp_path):
    other = issue_server_cert(make_ca(), [SERVER_NAME])
    write_pair(other, tmp_path / "other.crt", tmp_path / "other.key")
    (tmp_path / "garbage.crt").write_text("not a certificate\n")
    cases = [
        (("--tls-cert-file", str(tmp_path / "absent.crt"), "--tls-key-file", str(pki["key"])),
         f"--tls-cert-file: certificate file {tmp_path / 'absent.crt'} does not exist"),
        (("--tls-cert-file", str(pki["cert"]), "--tls-key-file", str(tmp_path / "other.key")),
         f"--tls-key-file: {tmp_path / 'other.key'} does not match the certificate in {pki['cert']}"),
        (("--tls-cert-file", str(tmp_path / "garbage.crt"), "--tls-key-file", str(pki["key"])),
         "holds no PEM certificate"),
        (("--tls-cert-file", str(pki["cert"])), "--tls-key-file (env SERVING_TLS_KEY_FILE): TLS needs both"),
        (("--tls-ca-file", str(pki["ca_file"])), "--tls-ca-file (env SERVING_TLS_CA_FILE): only applies with"),
    ]
    for args, message in cases:
        result = _start(tiny_model, *args)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert message in result.stderr, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr


# -- browser -----------------------------------------------------------------------------------------------------
def test_playground_in_chromium_over_https(server, pki, tmp_path):
    """Chromium trusts the private CA by its SPKI pin (what a managed device or kiosk profile would do)."""
    from tests.serving.test_playground_browser import CHROMIUM, CHROMIUM_ARGS

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    origin = f"https://{SERVER_NAME}:{server.port}"
    args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {SERVER_NAME} 127.0.0.1",
            f"--ignore-certificate-errors-spki-list={spki_pin(pki['ca'].certificate)}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, timeout=60_000)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            # The camera's WebSocket fallback is what this test checks (wss:// from an https page); without
            # RTCPeerConnection the page takes it, and no media leaves loopback.
            page.add_init_script("delete window.RTCPeerConnection;")
            page.goto(origin + "/")
            assert page.evaluate("window.isSecureContext") is True
            page.fill("#prompt", "a lighthouse over https")
            page.click("#auth summary")
            page.fill("#api-key", KEY)
            page.fill("#steps", "1")
            page.click("#generate-button")
            page.wait_for_function("() => document.getElementById('result-image').naturalWidth > 0")
            page.screenshot(path=str(tmp_path / "playground-https.png"))
            # The camera mode streams over wss:// from an https page (mixed content would be blocked).
            sockets = []
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.fill("#steps", "2")  # the stream's strength 0.5 needs steps x strength >= 1
            page.select_option("#camera-size", "256")
            page.click("#camera-start")
            page.wait_for_function("() => Number(document.getElementById('camera-frames').textContent) >= 3",
                                   timeout=90_000)
            page.click("#camera-stop")
            assert sockets == [f"wss://{SERVER_NAME}:{server.port}/v1/stream"]
        finally:
            browser.close()


def test_tls_name_settings_are_dns_names():
    from serving.core.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=r"--tls-server-name \(env SERVING_TLS_SERVER_NAME\): must be a DNS name"):
        Settings(model="m", tls_cert_file="c", tls_key_file="k", tls_server_name="Bad_Name")
    with pytest.raises(SettingsError, match=r"--inventory-node-domain \(env SERVING_INVENTORY_NODE_DOMAIN\)"):
        Settings(model="m", inventory_node_domain="nodes..example.com")
    assert Settings(model="m", tls_cert_file="c", tls_key_file="k", tls_server_name=SERVER_NAME).tls_server_name
