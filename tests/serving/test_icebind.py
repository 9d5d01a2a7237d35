"""serving.stream.icebind: host candidates within --webrtc-ports, the public address in the answer, and the node
ExternalIP lookup behind --webrtc-public-host node. Loopback only."""
from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from aioice import Connection

from serving.core.settings import Settings, SettingsError
from serving.fleet.inventory import InventoryError, KubernetesInventory
from serving.stream import icebind
from tests.serving.test_inventory import make_node


def _free_range(count: int) -> tuple[int, int]:
    for low in range(47000, 60000, 97):
        socks = []
        try:
            for port in range(low, low + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return low, low + count - 1
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free UDP range")


@pytest.fixture
def restore_ice():
    yield
    icebind.configure(None, None)


def test_host_candidates_bind_within_the_range_until_it_is_full(restore_ice):
    low, high = _free_range(2)
    icebind.configure((low, high), ["127.0.0.1"])

    async def scenario():
        connections = [Connection(ice_controlling=False) for _ in range(3)]
        try:
            ports = []
            for connection in connections[:2]:
                await connection.gather_candidates()
                (candidate,) = connection.local_candidates
                assert candidate.host == "127.0.0.1" and candidate.type == "host"
                ports.append(candidate.port)
            with pytest.raises(icebind.NoFreePort, match=f"--webrtc-ports {low}-{high}"):
                await connections[2].gather_candidates()
            return ports
        finally:
            for connection in connections:
                await connection.close()

    assert sorted(asyncio.run(scenario())) == [low, high]


def test_the_answer_advertises_the_public_address_with_the_bound_ports():
    sdp = ("v=0\r\nc=IN IP4 10.0.64.11\r\n"
           "a=candidate:1 1 udp 2130706431 10.0.64.11 40003 typ host\r\n"
           "a=candidate:2 1 udp 1694498815 192.0.2.1 40003 typ srflx raddr 10.0.64.11 rport 40003\r\n")
    out = icebind.advertise(sdp, "198.51.100.10")
    assert "a=candidate:1 1 udp 2130706431 198.51.100.10 40003 typ host" in out
    assert "192.0.2.1 40003 typ srflx" in out  # only host candidates are rewritten
    assert "c=IN IP4 198.51.100.10" in out
    assert icebind.advertise(sdp, None) == sdp


@pytest.mark.parametrize("value", ["40000", "40010-40000", "80-90", "a-b", "40000-70000"])
def test_webrtc_ports_setting_names_the_flag(value):
    with pytest.raises(SettingsError, match="--webrtc-ports"):
        Settings(model="m", webrtc_ports=value)


def test_node_address_reads_the_nodes_external_ip_once(tmp_path):
    (tmp_path / "token").write_text("t")
    node = make_node("ip-10-0-64-11.x", zone="z", zone_id="zid", instance_type="g5.xlarge", internal_ip="10.0.64.11",
                     external_ip="198.51.100.10", nodepool="nvidia", gpu_manufacturer="nvidia")
    private = make_node("ip-10-0-64-12.x", zone="z", zone_id="zid", instance_type="g5.xlarge",
                        internal_ip="10.0.64.12", external_ip=None, nodepool="nvidia", gpu_manufacturer="nvidia")
    calls = []

    def api(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        name = request.url.path.rsplit("/", 1)[1]
        found = {n["metadata"]["name"]: n for n in (node, private)}.get(name)
        return httpx.Response(200, json=found) if found else httpx.Response(404, json={"message": "not found"})

    async def scenario():
        inv = KubernetesInventory("svc", "ns", 30080, service_account_dir=tmp_path, transport=httpx.MockTransport(api))
        try:
            first = await inv.node_address("ip-10-0-64-11.x")
            again = await inv.node_address("ip-10-0-64-11.x")
            with pytest.raises(InventoryError, match="no ExternalIP"):
                await inv.node_address("ip-10-0-64-12.x")
            return first, again
        finally:
            await inv.aclose()

    assert asyncio.run(scenario()) == ("198.51.100.10", "198.51.100.10")
    assert calls.count("/api/v1/nodes/ip-10-0-64-11.x") == 1
