"""ICE host candidates on a known UDP port range, on chosen addresses, advertised under a public address.

aioice 0.13 binds every host candidate to an ephemeral port (``Connection.get_component_candidates`` calls
``create_datagram_endpoint(local_addr=(address, 0))``, aioice@0.13.0:src/aioice/ice.py) and takes its addresses
from ``get_host_addresses``, which skips 127.0.0.1; neither aioice nor aiortc (``RTCConfiguration`` has only
iceServers and bundlePolicy) has an option for either. A pod's media must arrive on ports a hostPort exposes, so
the host-candidate part of that one method is replaced here: the same candidate, bound to the first free port of
the range. The rest (TURN relay candidates) still runs in aioice's own code. The narrowed
``net.ipv4.ip_local_port_range`` pod sysctl would also confine the ports, but for every ephemeral bind of the pod
(its TCP connections to the Kubernetes API too), at random, with no error naming the cause when the range is full.

The public address: a pod binds its own (private) address and the node forwards the hostPort to it, so the
answer's candidates carry the node's public address instead, with the same port (a 1:1 NAT, as EC2 public IPs
are). The client's checks arrive at the bound socket; aioice learns the client as a peer-reflexive candidate.
"""
from __future__ import annotations

import asyncio
import errno
import random
import socket

from aioice import ice, turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

_original = ice.Connection.get_component_candidates
_config: dict = {"ports": None, "hosts": None}


class NoFreePort(OSError):
    """Every port of --webrtc-ports is bound: more sessions (or transports per session) than the range holds."""


def configure(ports: tuple[int, int] | None, hosts: list[str] | None) -> None:
    """Bind ICE host candidates within ``ports`` (inclusive; None: ephemeral) on ``hosts`` (None: aioice's choice:
    every non-loopback interface address). Applies to every aioice Connection of the process."""
    _config["ports"], _config["hosts"] = ports, list(hosts) if hosts else None
    ice.Connection.get_component_candidates = _get_component_candidates


async def _get_component_candidates(self, component: int, addresses: list[str], timeout: int = 5) -> list:
    # An empty list means the relay-only policy: no host candidates at all.
    if addresses and _config["hosts"] is not None:
        addresses = _config["hosts"]
    if _config["ports"] is None or not addresses:
        return await _original(self, component, addresses, timeout)
    candidates = []
    for address in addresses:
        protocol = await _bind_in_range(self, address, _config["ports"])
        host, port = protocol.transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
            priority=candidate_priority(component, "host"), host=host, port=port, type="host")
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    # Server-reflexive candidates need a STUN server, which the server is never given; TURN still works.
    return candidates + await _original(self, component, [], timeout)


async def _bind_in_range(connection, address: str, ports: tuple[int, int]):
    loop = asyncio.get_running_loop()
    low, high = ports
    count = high - low + 1
    start = random.randrange(count)  # spreads sessions over the range; a busy port costs one failed bind
    for i in range(count):
        port = low + (start + i) % count
        try:
            transport, protocol = await loop.create_datagram_endpoint(lambda: ice.StunProtocol(connection),
                                                                      local_addr=(address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, turn.UDP_SOCKET_BUFFER_SIZE)
        return protocol
    raise NoFreePort(errno.EADDRINUSE, f"every UDP port of --webrtc-ports {low}-{high} on {address} is in use")


def advertise(sdp: str, public_host: str | None) -> str:
    """The SDP with its host candidates' (and c= lines') addresses replaced by ``public_host``, ports kept."""
    if not public_host:
        return sdp
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            if len(parts) > 7 and parts[7] == "host":
                parts[4] = public_host
            line = " ".join(parts)
        elif line.startswith("c=IN IP4 ") or line.startswith("c=IN IP6 "):
            line = f"c=IN IP{6 if ':' in public_host else 4} {public_host}"
        lines.append(line)
    return "\r\n".join(lines)
