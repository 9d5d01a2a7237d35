"""edge.tls: TLS is on by default, plaintext needs two explicit fields, acme needs its hosted zone."""
from __future__ import annotations

import pytest

from edge_config import load_config
from tests.test_edge_config import DEFAULT_CONTEXT, ctx, error_for


def test_private_ca_is_the_default():
    tls = load_config(DEFAULT_CONTEXT).tls
    assert (tls.mode, tls.server_name, tls.enabled) == ("private-ca", "inference.edge-diffusion.internal", True)
    assert tls.allow_plaintext_nodeport is False


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"tls__mode": "tls13"}, "edge.tls.mode: unknown TLS mode 'tls13'. Fix: use one of: private-ca, acme, off"),
    ({"tls__mode": "off"}, "edge.tls.mode: \"off\" serves the NodePort as plain HTTP"),
    ({"tls__mode": "acme"}, "edge.tls.acme.hosted_zone_id: is required with mode \"acme\""),
    ({"tls__mode": "acme", "tls__acme__hosted_zone_id": "Z0123456789ABCDEFGHIJ"},
     "edge.tls.acme.hosted_zone_name: is required with mode \"acme\""),
    ({"tls__acme__hosted_zone_id": "zone-1"}, "edge.tls.acme.hosted_zone_id: 'zone-1' is not valid"),
    ({"tls__server_name": "Inference_Server"}, "edge.tls.server_name: 'Inference_Server' is not valid"),
    ({"tls__renew_before_days": "90"}, "edge.tls.renew_before_days: 90 days is not shorter than"),
    ({"tls__alow_plaintext_nodeport": "true"}, "edge.tls.alow_plaintext_nodeport: unknown field (typo?)"),
    ({"tls__mode": "acme", "tls__acme__hosted_zone_id": "Z0123456789ABCDEFGHIJ",
      "tls__acme__hosted_zone_name": "example.com", "tls__acme__directory_url": "https://acme.zerossl.com/v2/DV90"},
     "edge.tls.acme.caa_issuer: is Let's Encrypt's CAA domain, but directory_url names another CA"),
    ({"tls__acme__account_uri": "https://ca.example/acct/1; accounturi=https://evil.example/acct/2"},
     "edge.tls.acme.account_uri: "),
])
def test_errors_name_the_field(overrides, expected):
    assert error_for(**overrides).startswith(expected)


def test_plaintext_needs_the_explicit_flag_too():
    tls = load_config(ctx(tls__mode="off", tls__allow_plaintext_nodeport="true")).tls
    assert (tls.mode, tls.enabled) == ("off", False)


def test_acme_with_its_zone():
    tls = load_config(ctx(tls__mode="acme", tls__acme__hosted_zone_id="Z0123456789ABCDEFGHIJ",
                          tls__acme__hosted_zone_name="example.com")).tls
    assert tls.acme.node_domain == "nodes.example.com"
