"""TLS trust for endpoints: the private CA by its SPKI pin, a CA file, or the system's store (publicly trusted
certificates).

A pin names the CA's key, not a certificate, so the client learns the CA certificate itself from the first
endpoint that presents it: one handshake without verification, whose presented chain (the server appends its CA,
docs/tls.md) must hold a certificate with a pinned SPKI hash. That certificate then becomes the only trust anchor
of an ordinary verifying context (chain signatures, validity, the server name checked by OpenSSL), so every
connection after it is verified in full; the unverified handshake carries no request and is closed at once.
"""
from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge_diffusion_client.endpoints import Endpoint
from edge_diffusion_client.errors import PinMismatchError


def spki_pin(der: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a DER certificate: the format /v1/endpoints publishes."""
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _presented_chain(sock: ssl.SSLSocket) -> list[bytes]:
    # Public from Python 3.13; 3.10-3.12 have the same call on the underlying object.
    getter = getattr(sock, "get_unverified_chain", None) or sock._sslobj.get_unverified_chain  # noqa: SLF001
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # noqa: SLF001


def fetch_chain(host: str, port: int, server_name: str | None, timeout: float) -> list[bytes]:
    """The DER certificates an endpoint presents, from a handshake that verifies nothing and sends nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name or host) as sock:
            return _presented_chain(sock)


class Trust:
    """Which certificates to accept. ``pins``: CA SPKI pins shipped with the app (and, when ``learn_pins``, those
    /v1/endpoints publishes over an already verified connection, so a re-issued CA is picked up); ``ca_file``: a
    PEM CA bundle; neither: the system trust store."""

    def __init__(self, pins: tuple[str, ...] | list[str] = (), ca_file: str | None = None, learn_pins: bool = True,
                 timeout: float = 3.0) -> None:
        self.pins = set(pins)
        self.ca_file = ca_file
        self.learn_pins = learn_pins
        self.timeout = timeout
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def learn(self, endpoint: Endpoint) -> None:
        if self.learn_pins and endpoint.ca_spki_sha256:
            self.pins.add(endpoint.ca_spki_sha256)

    def context(self, endpoint: Endpoint) -> ssl.SSLContext | None:
        """The verifying context for an https endpoint (None for http)."""
        if not endpoint.tls:
            return None
        if not self.pins:
            return self._plain()
        with self._lock:
            # The CA the inventory says this endpoint uses first: during a CA rotation endpoints differ.
            wanted = [endpoint.ca_spki_sha256] if endpoint.ca_spki_sha256 in self.pins else sorted(self.pins)
            for pin in wanted:
                if pin in self._contexts:
                    return self._contexts[pin]
            chain = fetch_chain(endpoint.host, endpoint.port, endpoint.server_name, self.timeout)
            for der in chain:
                pin = spki_pin(der)
                if pin in self.pins:
                    self._contexts[pin] = context = _verifying(cadata=ssl.DER_cert_to_PEM_cert(der))
                    return context
        raise PinMismatchError(f"{endpoint.url}: none of the {len(chain)} certificates it presented has a pinned CA "
                               f"key (pins {sorted(self.pins)}); a different CA or an interceptor answered",
                               url=endpoint.url)

    def _plain(self) -> ssl.SSLContext:
        with self._lock:
            if "" not in self._contexts:
                self._contexts[""] = _verifying(cafile=self.ca_file)
            return self._contexts[""]


def _verifying(cafile: str | None = None, cadata: str | None = None) -> ssl.SSLContext:
    if cafile or cadata:
        context = ssl.create_default_context(cafile=cafile, cadata=cadata)
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The server speaks HTTP/1.1 only (WebSocket upgrades included).
    context.set_alpn_protocols(["http/1.1"])
    return context
