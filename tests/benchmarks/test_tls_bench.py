"""benchmarks/tls.py's in-memory handshakes: full ones resume nothing, resumed ones resume every session."""
from __future__ import annotations

import ssl

from benchmarks.tls import SERVER_NAME, _client, _cpu_case
from serving.api.devcerts import issue_server_cert, make_ca, write_pair
from serving.api.tls import ServerTLS


def test_cpu_cases_measure_what_they_name(tmp_path):
    ca = make_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    write_pair(issue_server_cert(ca, [SERVER_NAME]), tmp_path / "tls.crt", tmp_path / "tls.key")
    front = ServerTLS(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt").front
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        client = _client(tmp_path / "ca.crt", version)
        full, resumed = _cpu_case(front, client, 3, False), _cpu_case(front, client, 3, True)
        assert (full["resumed"], resumed["resumed"]) == (0, 3), version
        assert full["server_cpu_ms_p50"] > 0 and full["client_cpu_ms_p50"] > 0
