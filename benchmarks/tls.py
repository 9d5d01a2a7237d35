"""What TLS adds to a new connection on the device port, on CPU: full handshakes and resumed sessions.

    python -m benchmarks.tls [--connections 300]

Two real server processes on the tiny model (`python -m serving serve`), one plain and one with TLS (a CA and
certificate made here, ECDSA P-256 like cert-manager's). Each sample opens a new TCP connection, (for TLS) makes
the handshake, sends GET /healthz with `Connection: close` and reads the answer. Cases: plain HTTP; TLS 1.3 and
TLS 1.2, each with a full handshake and with the session of the previous connection resumed (TLS 1.3 tickets,
TLS 1.2 session ids). Reported per case: the handshake alone and the whole new-connection request, p50/p90 in
ms; "added" is a TLS case's request p50 minus the plain one. Client and server share this machine's cores, so
wall times swing with the machine's load; no network round trip is in them (add 1 RTT for a full TLS 1.3 or
resumed handshake, 2 for a full TLS 1.2 one, on a real path).

First, the CPU each side spends per handshake (time.process_time), with the server's own SSLContext driven
through in-memory BIOs: the figure that does not depend on how busy the machine is.

Writes benchmarks/results/tls-cpu.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.serverproc import ServerProcess
from serving.api.devcerts import issue_server_cert, make_ca, write_pair

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "tls-cpu.json"
SERVER_NAME = "inference.edge-diffusion.internal"
REQUEST = f"GET /healthz HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n".encode()
# Measured only once the model has loaded: a load in progress holds the GIL in bursts and would be timed too.
READY = REQUEST.replace(b"/healthz", b"/readyz")


def _request(port: int, context: ssl.SSLContext | None, session: ssl.SSLSession | None = None,
             request: bytes = REQUEST):
    """One new connection: (handshake seconds, total seconds, session, reused)."""
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    # As HTTP clients do (curl, OkHttp, URLSession): the request must not wait behind Nagle for the ACK of the
    # client's last handshake flight.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    shaken = time.perf_counter()
    reused = False
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=SERVER_NAME, session=session)
            reused = sock.session_reused
        shaken = time.perf_counter() - shaken
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        if not received.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {received[:80]!r}")
        # A TLS 1.3 ticket arrives after the handshake; it is there once the answer has been read.
        return shaken, time.perf_counter() - started, getattr(sock, "session", None), reused
    finally:
        sock.close()


def _wait_listening(port: int, context: ssl.SSLContext | None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _request(port, context, request=READY)
            return
        except (OSError, RuntimeError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _case(port: int, context: ssl.SSLContext | None, connections: int, resume: bool) -> dict:
    handshakes, totals, reused = [], [], 0
    session = None
    if resume:
        session = _request(port, context)[2]
    for _ in range(connections):
        shaken, total, new_session, was_reused = _request(port, context, session if resume else None)
        handshakes.append(shaken * 1000)
        totals.append(total * 1000)
        reused += was_reused
        if resume:
            session = new_session
    cuts = statistics.quantiles(totals, n=10)
    shake_cuts = statistics.quantiles(handshakes, n=10)
    return {"connections": connections, "resumed": reused,
            "handshake_ms": {"p50": round(statistics.median(handshakes), 3), "p90": round(shake_cuts[8], 3)},
            "request_ms": {"p50": round(statistics.median(totals), 3), "p90": round(cuts[8], 3)}}


def _cpu_handshake(server: ssl.SSLContext, client: ssl.SSLContext, session: ssl.SSLSession | None):
    """One handshake between in-memory endpoints: (server CPU s, client CPU s, session, reused). CPU time, not
    wall time, so a busy machine does not inflate it."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_end = client.wrap_bio(c_in, c_out, server_hostname=SERVER_NAME, session=session)
    server_end = server.wrap_bio(s_in, s_out, server_side=True)
    cpu = {"server": 0.0, "client": 0.0}

    def step(side: str, end: ssl.SSLObject) -> bool:
        started = time.process_time()
        try:
            end.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False
        finally:
            cpu[side] += time.process_time() - started

    client_done = server_done = False
    while not (client_done and server_done):
        client_done = step("client", client_end) or client_done
        s_in.write(c_out.read())
        server_done = step("server", server_end) or server_done
        c_in.write(s_out.read())
    # TLS 1.3 sends its tickets after the handshake: let the client read them (and one byte of data).
    server_end.write(b"x")
    c_in.write(s_out.read())
    client_end.read(1)
    return cpu["server"], cpu["client"], client_end.session, client_end.session_reused


def _cpu_case(server: ssl.SSLContext, client: ssl.SSLContext, handshakes: int, resume: bool) -> dict:
    session = _cpu_handshake(server, client, None)[2] if resume else None
    server_ms, client_ms, reused = [], [], 0
    for _ in range(handshakes):
        server_s, client_s, new_session, was_reused = _cpu_handshake(server, client, session)
        server_ms.append(server_s * 1000)
        client_ms.append(client_s * 1000)
        reused += was_reused
        if resume:
            session = new_session
    return {"handshakes": handshakes, "resumed": reused, "server_cpu_ms_p50": round(statistics.median(server_ms), 3),
            "client_cpu_ms_p50": round(statistics.median(client_ms), 3)}


def _client(ca_file: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = context.maximum_version = version
    return context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300, help="new connections per case")
    args = parser.parse_args(argv)
    from serving.model.tiny import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        work = Path(tmp)
        model = write_tiny_model(work / "tiny")
        ca = make_ca()
        (work / "ca.crt").write_bytes(ca.cert_pem())
        write_pair(issue_server_cert(ca, [SERVER_NAME]), work / "tls.crt", work / "tls.key")
        from serving.api.tls import ServerTLS

        # The server's own context (policy, SNI callback with its file checks), driven in memory.
        front = ServerTLS(work / "tls.crt", work / "tls.key", work / "ca.crt").front
        cpu = {}
        for name, version in (("tls1.3", ssl.TLSVersion.TLSv1_3), ("tls1.2", ssl.TLSVersion.TLSv1_2)):
            for resume in (False, True):
                cpu[f"{name} {'resumed' if resume else 'full'}"] = _cpu_case(
                    front, _client(work / "ca.crt", version), args.connections, resume)
        common = ["--skip-warmup", "--max-concurrency", "1"]
        plain = ServerProcess(model, extra_args=common).start()
        secure = ServerProcess(model, extra_args=[*common, "--tls-cert-file", str(work / "tls.crt"), "--tls-key-file",
                                                  str(work / "tls.key"), "--tls-ca-file", str(work / "ca.crt")]).start()
        try:
            tls13, tls12 = (_client(work / "ca.crt", v) for v in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2))
            _wait_listening(plain.port, None)
            _wait_listening(secure.port, tls13)
            cases = {"plain http": _case(plain.port, None, args.connections, False)}
            for name, context in (("tls1.3", tls13), ("tls1.2", tls12)):
                cases[f"{name} full"] = _case(secure.port, context, args.connections, False)
                cases[f"{name} resumed"] = _case(secure.port, context, args.connections, True)
        finally:
            plain.stop()
            secure.stop()
    base = cases["plain http"]["request_ms"]["p50"]
    for name, case in cases.items():
        case["added_ms_p50"] = round(case["request_ms"]["p50"] - base, 3)
    result = {"command": "python -m benchmarks.tls --connections " + str(args.connections),
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {ssl.OPENSSL_VERSION}",
              "load_average_1m": round(os.getloadavg()[0], 2),
              "certificate": "ECDSA P-256 leaf + CA in the served chain", "cpu_per_handshake": cpu,
              "end_to_end": cases}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"CPU per handshake (ms, p50)  {'server':>8} {'client':>8} resumed")
    for name, case in cpu.items():
        print(f"{name:<28} {case['server_cpu_ms_p50']:>8.3f} {case['client_cpu_ms_p50']:>8.3f} "
              f"{case['resumed']}/{case['handshakes']}")
    print(f"\nEnd to end through the server processes, wall ms (load average {result['load_average_1m']})")
    print(f"{'case':<16} {'handshake p50':>14} {'p90':>8} {'request p50':>12} {'p90':>8} {'added p50':>10} resumed")
    for name, case in cases.items():
        print(f"{name:<16} {case['handshake_ms']['p50']:>14.2f} {case['handshake_ms']['p90']:>8.2f} "
              f"{case['request_ms']['p50']:>12.2f} {case['request_ms']['p90']:>8.2f} {case['added_ms_p50']:>10.2f} "
              f"{case['resumed']}/{case['connections']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
