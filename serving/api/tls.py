"""TLS on the public port: the server terminates it from mounted PEM files and follows their rotation.

cert-manager renews the serving certificate by rewriting the mounted Secret (the kubelet swaps a symlink), so
the files change under a running server. Every new handshake first checks the files' identity (two stat
calls); when they changed, a fresh SSLContext is loaded and validated, and the handshake is switched to it in
the SNI callback. Connections that are already open keep the context they were made with, so rotation never
drops them, and a half-written pair (certificate updated, key not yet) leaves the last good one in place.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("serving.tls")

# TLS 1.2 suites: forward secret AEADs only (Mozilla "intermediate"); TLS 1.3 suites are all AEAD already.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
# The server speaks HTTP/1.1 only (h11); WebSocket upgrades ride on it.
ALPN_PROTOCOLS = ["http/1.1"]


class TLSFileError(ValueError):
    """The certificate or key files cannot serve TLS; the message names the file and what is wrong with it."""


def spki_pin(cert: x509.Certificate) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): the pin format of OkHttp, Android, Chromium and HPKP."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def new_server_context() -> ssl.SSLContext:
    """A server context with this project's policy (no certificate yet)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _read(path: Path, what: str, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSFileError(f"{flag}: {what} file {path} does not exist") from None
    except OSError as exc:
        raise TLSFileError(f"{flag}: cannot read the {what} file {path}: {exc.strerror}") from None


def parse_certificates(data: bytes, path: Path, flag: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TLSFileError(f"{flag}: {path} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')")
    return certs


@dataclass(frozen=True)
class LoadedPair:
    """One validated certificate/key pair (and the CA it chains to, if given), ready to serve."""

    context: ssl.SSLContext
    certificate: x509.Certificate
    identity: tuple
    ca_pin: str | None = None

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    def dns_names(self) -> list[str]:
        try:
            san = self.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return san.get_values_for_type(x509.DNSName)

    def describe(self) -> dict:
        return {"serial": self.serial, "not_after": self.certificate.not_valid_after_utc.isoformat(),
                "dns_names": self.dns_names(), "ca_spki_sha256": self.ca_pin}


def _identity(*paths: Path | None) -> tuple:
    """What changes when a file is replaced or rewritten (the kubelet's symlink swap gives new inodes)."""
    result = []
    for path in paths:
        try:
            st = path.stat() if path else None
        except OSError:
            st = None
        result.append(st and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(result)


def _load_key(key_bytes: bytes, key_path: Path):
    try:
        return serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError:
        raise TLSFileError(f"--tls-key-file: {key_path} is encrypted; mount an unencrypted PEM key") from None
    except ValueError:
        raise TLSFileError(f"--tls-key-file: {key_path} holds no PEM private key "
                           "(expected '-----BEGIN PRIVATE KEY-----' or an RSA/EC key block)") from None


def load_pair(cert_file: str | Path, key_file: str | Path, ca_file: str | Path | None = None) -> LoadedPair:
    """Read, check and load a PEM certificate chain and its key, or raise TLSFileError saying why.

    With ``ca_file`` the served chain ends with that CA, unless it already does: cert-manager leaves a
    self-signed root out of tls.crt, and a browser told to trust the CA by its SPKI pin
    (--ignore-certificate-errors-spki-list) only matches certificates the server presents.
    """
    cert_path, key_path = Path(cert_file), Path(key_file)
    ca_path = Path(ca_file) if ca_file else None
    identity = _identity(cert_path, key_path, ca_path)
    cert_bytes = _read(cert_path, "certificate", "--tls-cert-file")
    key_bytes = _read(key_path, "private key", "--tls-key-file")
    chain = parse_certificates(cert_bytes, cert_path, "--tls-cert-file")
    key = _load_key(key_bytes, key_path)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != chain[0].public_key().public_bytes(
            serialization.Encoding.DER, public):
        raise TLSFileError(f"--tls-key-file: {key_path} does not match the certificate in {cert_path} "
                           "(its public key differs from the first certificate's)")
    ca_pin = None
    if ca_path:
        ca = parse_certificates(_read(ca_path, "CA certificate", "--tls-ca-file"), ca_path, "--tls-ca-file")[-1]
        ca_pin = spki_pin(ca)
        if chain[-1] != ca:
            chain.append(ca)
    chain_pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
    context = new_server_context()
    # OpenSSL loads a chain only from a path; the chain is public, so a temporary copy of it is harmless, and
    # the private key is read from its own file.
    with tempfile.NamedTemporaryFile(prefix="tls-chain-", suffix=".pem") as chain_file:
        chain_file.write(chain_pem)
        chain_file.flush()
        try:
            context.load_cert_chain(chain_file.name, key_path)
        except (ssl.SSLError, OSError) as exc:
            raise TLSFileError(f"--tls-cert-file/--tls-key-file: OpenSSL refused {cert_path} with {key_path}: "
                               f"{exc}") from None
    # OpenSSL read the key file again: a rotation in between must not pair the checked certificate with a
    # newer key (a change is retried on the next handshake).
    if _read(key_path, "private key", "--tls-key-file") != key_bytes:
        raise TLSFileError(f"--tls-key-file: {key_path} changed while loading")
    return LoadedPair(context=context, certificate=chain[0], identity=identity, ca_pin=ca_pin)


class ReloadingTLS:
    """The public port's TLS: one front context whose SNI callback hands each handshake the newest pair."""

    def __init__(self, cert_file: str | Path, key_file: str | Path, ca_file: str | Path | None = None) -> None:
        self.cert_file, self.key_file = Path(cert_file), Path(key_file)
        self.ca_file = Path(ca_file) if ca_file else None
        self.current = load_pair(self.cert_file, self.key_file, self.ca_file)
        self._failed_identity: tuple | None = None
        # Every connection starts in the first context, which keeps the session cache and ticket keys, so
        # resumption keeps working across rotations; the callback only swaps the certificate in.
        self.front = self.current.context
        self.front.sni_callback = self._on_client_hello
        log.info("tls certificate loaded",
                 extra={"fields": {"cert_file": str(self.cert_file), **self.current.describe()}})

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since the last attempt; True when a new pair is now served."""
        identity = _identity(self.cert_file, self.key_file, self.ca_file)
        if identity in (self.current.identity, self._failed_identity):
            return False
        try:
            pair = load_pair(self.cert_file, self.key_file, self.ca_file)
        except TLSFileError as exc:
            # Mid-rotation or broken files: keep serving the last good pair and retry when the files change.
            self._failed_identity = identity
            log.warning("tls certificate reload failed; serving the previous one",
                        extra={"fields": {"error": str(exc), "serial": self.current.serial}})
            return False
        self.current, self._failed_identity = pair, None
        log.info("tls certificate reloaded", extra={"fields": {"cert_file": str(self.cert_file), **pair.describe()}})
        return True

    def _on_client_hello(self, ssl_object, _server_name, _context) -> None:
        # OpenSSL calls this for every ClientHello (server_name is None without SNI, e.g. a bare IP).
        try:
            self.reload_if_changed()
            ssl_object.context = self.current.context
        except Exception:  # noqa: BLE001 - an exception here would abort the handshake with an opaque alert
            log.exception("tls certificate selection failed; serving the previous one")
        return None


class ServerTLS(ReloadingTLS):
    """ReloadingTLS plus what /v1/endpoints tells devices: the name to verify and, with a private CA, its pin."""

    def __init__(self, cert_file: str | Path, key_file: str | Path, ca_file: str | Path | None = None,
                 server_name: str | None = None) -> None:
        super().__init__(cert_file, key_file, ca_file)
        self.server_name = server_name

    def endpoint_fields(self) -> dict:
        # Requests on kept-alive connections make no handshake, so a CA rotation is looked for here too.
        self.reload_if_changed()
        names = self.current.dns_names()
        fields = {"server_name": self.server_name or (names[0] if names else None)}
        if self.ca_file:
            fields["ca_spki_sha256"] = self.current.ca_pin
        return fields


def server_tls_from(settings) -> ServerTLS | None:
    """The public port's TLS from the settings, or None for plain HTTP; raises TLSFileError (exit 2)."""
    if not settings.tls_cert_file:
        return None
    return ServerTLS(settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file, settings.tls_server_name)
