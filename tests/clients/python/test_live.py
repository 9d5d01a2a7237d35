"""The client against real server processes on loopback standing in for two zones: TLS with the CA pinned, an
--inventory-file listing both, the bearer refreshed through the provider, generate/edit, a two-frame window, and
a SIGTERM mid-stream that the stream survives on the other server."""
from __future__ import annotations

import io
import json
import signal

import pytest
from PIL import Image

from edge_diffusion_client import EdgeClient, PinMismatchError
from tests.serving.conftest import LiveServer

pytestmark = pytest.mark.slow

KEY = "client-test-key-2323"
SERVER_NAME = "inference.edge-diffusion.internal"


def jpeg(color=(30, 120, 200), size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from serving.api.devcerts import issue_server_cert, make_ca, write_pair
    from serving.api.tls import spki_pin
    from serving.model.tiny import write_tiny_model, write_tiny_taesd
    from cryptography import x509

    tmp = tmp_path_factory.mktemp("fleet")
    model, taesd = write_tiny_model(tmp / "tiny"), write_tiny_taesd(tmp / "taesd")
    # The certificate names only the server name, not 127.0.0.1: the client must verify the name it was told.
    ca = make_ca()
    (tmp / "pki").mkdir()
    pki = {"ca": tmp / "pki" / "ca.crt", "cert": tmp / "pki" / "tls.crt", "key": tmp / "pki" / "tls.key"}
    pki["ca"].write_bytes(ca.cert_pem())
    write_pair(issue_server_cert(ca, [SERVER_NAME]), pki["cert"], pki["key"])
    (tmp / "key").write_text(KEY)
    inventory = tmp / "endpoints.json"
    inventory.write_text("[]")
    servers = [LiveServer(model, tmp / f"server-{zone}.log", "--api-key-file", str(tmp / "key"),
                          "--tls-cert-file", str(pki["cert"]), "--tls-key-file", str(pki["key"]),
                          "--tls-ca-file", str(pki["ca"]), "--inventory-file", str(inventory),
                          "--stream-vae", str(taesd), "--stream-warmup-size", "64x64", "--max-concurrency", "1",
                          "--drain-timeout", "5", "--max-image-size", "128", "--log-level", "warning")
               for zone in ("a", "b")]
    # Written after both ports are known; the servers re-read the file when it changes.
    inventory.write_text(json.dumps([{"url": f"https://127.0.0.1:{s.port}", "zone": f"loopback-{z}",
                                      "accelerator": "cpu"} for s, z in zip(servers, "ab")]))
    for server in servers:
        server.url = f"https://127.0.0.1:{server.port}"
    try:
        for server in servers:
            _wait_ready(server, pki["ca"])
        pin = spki_pin(x509.load_pem_x509_certificate(pki["ca"].read_bytes()))
        yield {"servers": servers, "pin": pin, "ca": pki["ca"]}
    finally:
        for server in servers:
            server.stop()


def _wait_ready(server: LiveServer, ca) -> None:
    import ssl
    import time

    import httpx

    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # readiness only; the client's own checks are what the tests are about
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log_text()
        try:
            if httpx.get(server.url + "/readyz", verify=context, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(server.log_text())


def client_for(fleet, **kwargs) -> EdgeClient:
    kwargs.setdefault("credential", KEY)
    return EdgeClient(fleet["servers"][0].url, pins=[fleet["pin"]], server_name=SERVER_NAME, refresh_interval=0,
                      **kwargs)


def test_discovers_both_zones_and_chooses_a_ready_one_by_round_trip(fleet):
    with client_for(fleet) as client:
        urls = {s.url for s in fleet["servers"]}
        assert {e.url for e in client.discovery.endpoints} == urls
        assert all(e.ready and e.ca_spki_sha256 == fleet["pin"] and e.server_name == SERVER_NAME
                   for e in client.discovery.endpoints)
        assert all(0 < rtt < 1 for rtt in client.discovery.rtt.values())
        assert client.endpoint.url == min(urls, key=client.discovery.rtt.get)


def test_a_wrong_pin_is_refused_before_any_request(fleet):
    client = EdgeClient(fleet["servers"][0].url, KEY, pins=["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="],
                        server_name=SERVER_NAME, refresh_interval=0)
    with pytest.raises(PinMismatchError, match="pinned CA key"):
        client.start()


def test_generate_and_edit_with_a_token_refreshed_after_401(fleet):
    asked = []

    def provider(refresh: bool) -> str:
        asked.append(refresh)
        return KEY if refresh else "expired-token"

    events = []
    with client_for(fleet, credential=provider, on_event=events.append) as client:
        png = client.generate("a lighthouse", width=64, height=64, num_inference_steps=2)
        assert Image.open(io.BytesIO(png)).size == (64, 64)
        edited = client.edit(jpeg(), "as a watercolour", output_format="jpeg", strength=0.5,
                             num_inference_steps=2, filename="in.jpg")
        assert Image.open(io.BytesIO(edited)).format == "JPEG"
    # Discovery's /v1/endpoints met the 401 first: one refresh, and the fresh token served every call after it.
    assert asked == [False, True]
    assert [e.kind for e in events] == ["credential_refreshed"]


def test_stream_keeps_two_frames_in_flight_and_the_newest_frame_wins(fleet):
    with client_for(fleet) as client, client.stream({"prompt": "a watercolour", "num_inference_steps": 2}) as session:
        offered = [jpeg((shade * 40, 80, 80)) for shade in range(5)]
        for frame in offered:  # five frames at once: two go out, the rest replace each other
            session.submit(frame)
        assert session.in_flight == 2 and session.replaced == 2
        frames = [session.get(timeout=30) for _ in range(3)]
        assert [f.seq for f in frames] == [1, 2, 3]
        assert all(f.dropped == 0 and f.endpoint == client.endpoint.url for f in frames)
        assert Image.open(io.BytesIO(frames[0].image)).size == (64, 64)


def test_sigterm_mid_stream_moves_the_stream_to_the_other_zone(fleet):
    events = []
    with client_for(fleet) as client, client.stream({"prompt": "a watercolour", "num_inference_steps": 2},
                                                     on_event=events.append) as session:
        first = client.endpoint.url
        victim = next(s for s in fleet["servers"] if s.url == first)
        for _ in range(2):
            session.submit(jpeg())
        outputs = []
        while len(outputs) < 8:
            outputs.append(session.get(timeout=30))
            if len(outputs) == 3:
                victim.proc.send_signal(signal.SIGTERM)
            session.submit(jpeg((len(outputs) * 20, 0, 0)))
        assert victim.proc.wait(timeout=30) == 0
    survivors = {f.endpoint for f in outputs[3:]} - {first}
    assert len(survivors) == 1 and outputs[-1].endpoint != first
    failover = next(e for e in events if e.kind == "failover")
    assert (failover.from_url, failover.code, failover.reason) == (first, 1001, "close 1001")
    resumed = next(e for e in events if e.kind == "resumed")
    assert resumed.to_url == failover.to_url == outputs[-1].endpoint and 0 < resumed.gap_s < 10


def test_a_rest_call_on_an_endpoint_that_died_moves_to_the_next(fleet):
    """Runs after the SIGTERM above: one server is gone, though the static inventory still lists it."""
    dead = next(s for s in fleet["servers"] if s.proc.poll() is not None)
    alive = next(s for s in fleet["servers"] if s.proc.poll() is None)
    events = []
    client = EdgeClient(alive.url, KEY, pins=[fleet["pin"]], server_name=SERVER_NAME, refresh_interval=0,
                        on_event=events.append)
    with client:
        assert client.endpoint.url == alive.url  # the dead one failed its probes
        # As if it had been chosen before it died.
        client.discovery.current = next(e for e in client.discovery.endpoints if e.url == dead.url)
        png = client.generate("a lighthouse", width=64, height=64, num_inference_steps=2)
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    (failover,) = [e for e in events if e.kind == "failover"]
    assert (failover.from_url, failover.to_url) == (dead.url, alive.url) and failover.reason.startswith("reset")
