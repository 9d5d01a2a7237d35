"""TLS on the device port, issued by cert-manager (typed from its vendored CRDs).

private-ca: a self-signed ClusterIssuer signs one CA Certificate, whose key stays in cert-manager's namespace;
a CA ClusterIssuer then signs the serving Certificate (one fixed server name) in the inference namespace.
acme: an ACME ClusterIssuer answers DNS-01 in one Route 53 zone and issues one wildcard certificate for the
per-node names external-dns publishes (charts/node_dns.py). Either way the pods mount the serving Secret and the
server follows its rotation (serving/api/tls.py).
"""
from __future__ import annotations

import cdk8s
from constructs import Construct

from edge_config import TLSConfig
from imports.cert_manager_certificates.io.cert_manager import (
    Certificate,
    CertificateSpec,
    CertificateSpecIssuerRef,
    CertificateSpecPrivateKey,
    CertificateSpecPrivateKeyAlgorithm,
    CertificateSpecPrivateKeyRotationPolicy,
    CertificateSpecSubject,
    CertificateSpecUsages,
)
from imports.cert_manager_clusterissuers.io.cert_manager import (
    ClusterIssuer,
    ClusterIssuerSpec,
    ClusterIssuerSpecAcme,
    ClusterIssuerSpecAcmePrivateKeySecretRef,
    ClusterIssuerSpecAcmeSolvers,
    ClusterIssuerSpecAcmeSolversDns01,
    ClusterIssuerSpecAcmeSolversDns01Route53,
    ClusterIssuerSpecAcmeSolversSelector,
    ClusterIssuerSpecCa,
    ClusterIssuerSpecSelfSigned,
)

LABELS = {"app.kubernetes.io/part-of": "edge-diffusion", "app.kubernetes.io/component": "tls"}
SELF_SIGNED_ISSUER = "edge-diffusion-selfsigned"
CA_ISSUER = "edge-diffusion-ca"
CA_CERTIFICATE = "edge-diffusion-ca"
CA_SECRET = "edge-diffusion-ca"
ACME_ISSUER = "edge-diffusion-acme"
ACME_ACCOUNT_SECRET = "edge-diffusion-acme-account"
# The serving Secret (tls.crt, tls.key, and ca.crt from a CA issuer) in the inference namespace.
SERVING_SECRET = "inference-tls"
SERVING_CERTIFICATE = "inference-tls"
# Where the pods mount it. A whole-directory Secret volume (no subPath), so the kubelet swaps in renewals.
TLS_DIR = "/etc/edge-diffusion/tls"


def _hours(days: int) -> str:
    return f"{days * 24}h"


def _ecdsa_key() -> CertificateSpecPrivateKey:
    # P-256: the cheapest handshake for phones; a fresh key on every renewal.
    return CertificateSpecPrivateKey(algorithm=CertificateSpecPrivateKeyAlgorithm.ECDSA, size=256,
                                     rotation_policy=CertificateSpecPrivateKeyRotationPolicy.ALWAYS)


class TlsIssuersChart(cdk8s.Chart):
    """The cluster-scoped issuers (and, for private-ca, the CA itself). Applied after the cert-manager chart."""

    def __init__(self, scope: Construct, construct_id: str, *, tls: TLSConfig, cert_manager_namespace: str,
                 region: str) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        if not tls.enabled:
            raise ValueError("edge.tls.mode is \"off\": there is nothing to issue")
        if tls.mode == "private-ca":
            ClusterIssuer(self, "selfsigned", metadata=cdk8s.ApiObjectMetadata(name=SELF_SIGNED_ISSUER, labels=LABELS),
                          spec=ClusterIssuerSpec(self_signed=ClusterIssuerSpecSelfSigned()))
            Certificate(
                self, "ca",
                metadata=cdk8s.ApiObjectMetadata(name=CA_CERTIFICATE, namespace=cert_manager_namespace, labels=LABELS),
                spec=CertificateSpec(
                    is_ca=True, common_name="edge-diffusion device CA", secret_name=CA_SECRET,
                    subject=CertificateSpecSubject(organizations=["edge-diffusion"]),
                    duration=_hours(tls.ca_duration_days), renew_before=_hours(tls.ca_duration_days // 10),
                    # The CA key is kept across renewals: devices pin its SPKI, which must not change with them.
                    private_key=CertificateSpecPrivateKey(
                        algorithm=CertificateSpecPrivateKeyAlgorithm.ECDSA, size=256,
                        rotation_policy=CertificateSpecPrivateKeyRotationPolicy.NEVER),
                    issuer_ref=CertificateSpecIssuerRef(name=SELF_SIGNED_ISSUER, kind="ClusterIssuer",
                                                        group="cert-manager.io"),
                ),
            )
            # A ClusterIssuer reads its CA Secret from cert-manager's cluster resource namespace, so the CA key
            # never has to exist in the workload namespace.
            ClusterIssuer(self, "ca-issuer", metadata=cdk8s.ApiObjectMetadata(name=CA_ISSUER, labels=LABELS),
                          spec=ClusterIssuerSpec(ca=ClusterIssuerSpecCa(secret_name=CA_SECRET)))
        else:
            acme = tls.acme
            ClusterIssuer(
                self, "acme-issuer", metadata=cdk8s.ApiObjectMetadata(name=ACME_ISSUER, labels=LABELS),
                spec=ClusterIssuerSpec(acme=ClusterIssuerSpecAcme(
                    server=acme.directory_url, email=acme.email,
                    private_key_secret_ref=ClusterIssuerSpecAcmePrivateKeySecretRef(name=ACME_ACCOUNT_SECRET),
                    solvers=[ClusterIssuerSpecAcmeSolvers(
                        selector=ClusterIssuerSpecAcmeSolversSelector(dns_zones=[acme.hosted_zone_name]),
                        # No keys: the controller's Pod Identity role (edge_constructs/cert_manager.py), which may
                        # only write the challenge TXT record in this zone.
                        dns01=ClusterIssuerSpecAcmeSolversDns01(route53=ClusterIssuerSpecAcmeSolversDns01Route53(
                            region=region, hosted_zone_id=acme.hosted_zone_id)),
                    )],
                )),
            )


def serving_certificate(scope: Construct, *, namespace: str, tls: TLSConfig) -> Certificate:
    """The serving Certificate in the inference namespace (part of the inference chart, after its Namespace)."""
    if tls.mode == "private-ca":
        names, issuer = [tls.server_name], CA_ISSUER
        duration, renew_before = _hours(tls.certificate_duration_days), _hours(tls.renew_before_days)
    else:
        # ACME CAs fix the lifetime themselves (Let's Encrypt: 90 days); cert-manager renews at 2/3 of it.
        names, issuer = [f"*.{tls.acme.node_domain}"], ACME_ISSUER
        duration = renew_before = None
    return Certificate(
        scope, "serving-certificate",
        metadata=cdk8s.ApiObjectMetadata(name=SERVING_CERTIFICATE, namespace=namespace, labels=LABELS),
        spec=CertificateSpec(
            secret_name=SERVING_SECRET, dns_names=names, duration=duration, renew_before=renew_before,
            private_key=_ecdsa_key(),
            usages=[CertificateSpecUsages.SERVER_AUTH, CertificateSpecUsages.DIGITAL_SIGNATURE],
            issuer_ref=CertificateSpecIssuerRef(name=issuer, kind="ClusterIssuer", group="cert-manager.io"),
        ),
    )


def server_tls_env(tls: TLSConfig) -> dict[str, str]:
    """The serving container's TLS settings (serving/core/settings.py), empty for plain HTTP."""
    if not tls.enabled:
        return {}
    env = {"SERVING_TLS_CERT_FILE": f"{TLS_DIR}/tls.crt", "SERVING_TLS_KEY_FILE": f"{TLS_DIR}/tls.key"}
    if tls.mode == "private-ca":
        env.update({"SERVING_TLS_CA_FILE": f"{TLS_DIR}/ca.crt", "SERVING_TLS_SERVER_NAME": tls.server_name})
    else:
        env["SERVING_INVENTORY_NODE_DOMAIN"] = tls.acme.node_domain
    return env
