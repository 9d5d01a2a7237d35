"""A throwaway CA and serving certificate for local TLS (`make serve TLS=1`) and the tests.

The cluster issues real certificates with cert-manager; this only mirrors their shape (ECDSA P-256, the server
name as a DNS SAN, serverAuth) so a local server and its clients behave as they will against a node.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVER_NAME = "inference.edge-diffusion.internal"


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)


def make_ca(common_name: str = "edge-diffusion local CA", days: int = 30) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_server_cert(ca: Issued, dns_names: list[str], ip_addresses: list[str] = (), days: int = 7,
                      serial: int | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca.certificate.subject).public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def write_pair(issued: Issued, cert_path: Path, key_path: Path, chain: Issued | None = None) -> None:
    """Write the certificate (plus ``chain`` after it) and key, each replaced atomically like a Secret mount."""
    for path, data, mode in ((key_path, issued.key_pem(), 0o600),
                             (cert_path, issued.cert_pem() + (chain.cert_pem() if chain else b""), 0o644)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(path)


def write_local_pki(out_dir: str | Path, server_name: str = DEFAULT_SERVER_NAME) -> dict[str, Path]:
    """ca.crt, tls.crt and tls.key (the names of a cert-manager Secret) for a server on 127.0.0.1/localhost."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    server = issue_server_cert(ca, [server_name, "localhost"], ["127.0.0.1", "::1"])
    paths = {"ca": out / "ca.crt", "cert": out / "tls.crt", "key": out / "tls.key"}
    paths["ca"].write_bytes(ca.cert_pem())
    write_pair(server, paths["cert"], paths["key"])
    return paths
