"""TLS objects (cert-manager issuers and certificates, external-dns) and the serving pods' TLS wiring, rendered
standalone and validated against the vendored CRDs and strict core schemas."""
from __future__ import annotations

import copy
import json
import re

import cdk8s
import pytest

from charts.node_dns import NodeDnsChart, external_dns_args, fqdn_template
from charts.tls import CA_SECRET, SERVING_SECRET, TLS_DIR, TlsIssuersChart
from serving.fleet.objects import node_dns_name
from serving.core.settings import settings_from
from tests.charts.test_inference import _config, _container, _env, _render
from tests.k8s_schema import validate_k8s_object

ACME = {"tls": {"mode": "acme", "acme": {"hosted_zone_id": "Z0123456789ABCDEFGHIJ", "hosted_zone_name": "example.com",
                                         "email": "ops@example.com"}}}
PLAIN = {"tls": {"mode": "off", "allow_plaintext_nodeport": True}}


def _issuers(cfg) -> list[dict]:
    return TlsIssuersChart(cdk8s.App(), "tls", tls=cfg.tls, cert_manager_namespace="cert-manager",
                           region="us-west-2").to_json()


def _node_dns(cfg) -> list[dict]:
    return NodeDnsChart(cdk8s.App(), "dns", acme=cfg.tls.acme, local_zones=["us-west-2-lax-1a"], owner_id="edge",
                        region="us-west-2", node_selector={"role": "system"}).to_json()


def _deployments(objects):
    return [o for o in objects if o["kind"] == "Deployment"]


@pytest.mark.parametrize("overrides", [{}, ACME], ids=["private-ca", "acme"])
def test_every_tls_object_validates_strictly(overrides):
    cfg = _config(**overrides)
    objects = _issuers(cfg) + [o for o in _render(cfg) if o["apiVersion"].startswith("cert-manager.io/")]
    if overrides:
        objects += _node_dns(cfg)
    assert {o["kind"] for o in objects} >= {"ClusterIssuer", "Certificate"}
    for obj in objects:
        validate_k8s_object(obj)
    # A misspelt field fails against the CRD instead of being pruned by the API server.
    certificate = copy.deepcopy(next(o for o in objects if o["kind"] == "Certificate"))
    certificate["spec"]["dnsName"] = ["typo.example.com"]
    with pytest.raises(AssertionError, match="'dnsName' was unexpected"):
        validate_k8s_object(certificate)


def test_private_ca_chain_keeps_the_ca_key_in_cert_managers_namespace():
    cfg = _config()
    issuers = {(o["kind"], o["metadata"]["name"]): o for o in _issuers(cfg)}
    ca = issuers[("Certificate", "edge-diffusion-ca")]
    assert ca["metadata"]["namespace"] == "cert-manager"
    assert ca["spec"]["isCA"] is True and ca["spec"]["secretName"] == CA_SECRET
    # Devices pin the CA's key: a renewal must keep it.
    assert ca["spec"]["privateKey"]["rotationPolicy"] == "Never"
    assert ca["spec"]["issuerRef"] == {"name": "edge-diffusion-selfsigned", "kind": "ClusterIssuer",
                                       "group": "cert-manager.io"}
    assert issuers[("ClusterIssuer", "edge-diffusion-selfsigned")]["spec"] == {"selfSigned": {}}
    assert issuers[("ClusterIssuer", "edge-diffusion-ca")]["spec"] == {"ca": {"secretName": CA_SECRET}}

    [serving] = [o for o in _render(cfg) if o["kind"] == "Certificate"]
    assert serving["metadata"]["namespace"] == cfg.workloads.namespace
    assert serving["spec"]["dnsNames"] == [cfg.tls.server_name]
    assert serving["spec"]["issuerRef"]["name"] == "edge-diffusion-ca"
    assert serving["spec"]["secretName"] == SERVING_SECRET
    assert (serving["spec"]["duration"], serving["spec"]["renewBefore"]) == ("2160h", "720h")
    assert serving["spec"]["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
    assert serving["spec"]["usages"] == ["server auth", "digital signature"]


def test_pods_mount_the_serving_secret_and_probe_over_https():
    cfg = _config()
    for deployment in _deployments(_render(cfg)):
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        [volume] = [v for v in pod["volumes"] if v.get("secret")]
        assert volume["secret"] == {"secretName": SERVING_SECRET, "defaultMode": 0o440}
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        # A subPath mount would never see a renewal.
        assert mount == {"name": volume["name"], "mountPath": TLS_DIR, "readOnly": True}
        assert pod["securityContext"]["fsGroup"] == container["securityContext"]["runAsUser"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        settings = settings_from({}, environ={**_env(deployment), "SERVING_MODEL": "/opt/model"})
        assert (settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file) == (
            f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key", f"{TLS_DIR}/ca.crt")
        assert settings.tls_server_name == cfg.tls.server_name
    # The metrics port stays plain and in-cluster: the autoscaler still reads it over http.
    scaled = [o for o in _render(cfg) if o["kind"] == "ScaledObject"]
    assert scaled and all(t["metadata"]["url"].startswith("http://") for o in scaled for t in o["spec"]["triggers"])


def test_plaintext_mode_has_no_tls_objects_or_settings():
    objects = _render(_config(**PLAIN))
    assert not [o for o in objects if o["apiVersion"].startswith("cert-manager.io/")]
    for deployment in _deployments(objects):
        container = _container(deployment)
        assert not [k for k in _env(deployment) if "TLS" in k]
        assert all(container[p]["httpGet"]["scheme"] == "HTTP" for p in ("startupProbe", "readinessProbe"))
        assert not [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v.get("secret")]
        tcp = [p["name"] for p in container["ports"] if p["protocol"] == "TCP"]
        assert tcp == ["http", "metrics"]  # plain HTTP: the name says http
    (service,) = [o for o in objects if o["kind"] == "Service" and o["spec"].get("type") == "NodePort"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    with pytest.raises(ValueError, match="nothing to issue"):
        _issuers(_config(**PLAIN))


def test_acme_issues_one_wildcard_for_the_per_node_names():
    cfg = _config(**ACME)
    [issuer] = _issuers(cfg)
    acme = issuer["spec"]["acme"]
    assert acme["server"] == "https://acme-v02.api.letsencrypt.org/directory" and acme["email"] == "ops@example.com"
    [solver] = acme["solvers"]
    assert solver["selector"] == {"dnsZones": ["example.com"]}
    # No access keys in the object: the controller's Pod Identity role answers the challenge.
    assert solver["dns01"] == {"route53": {"region": "us-west-2", "hostedZoneID": "Z0123456789ABCDEFGHIJ"}}
    objects = _render(cfg)
    [serving] = [o for o in objects if o["kind"] == "Certificate"]
    assert serving["spec"]["dnsNames"] == ["*.nodes.example.com"]
    assert serving["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    for deployment in _deployments(objects):
        settings = settings_from({}, environ={**_env(deployment), "SERVING_MODEL": "/opt/model"})
        assert settings.inventory_node_domain == "nodes.example.com"
        assert settings.tls_ca_file is None and settings.tls_server_name is None


def test_external_dns_names_match_what_the_inventory_lists():
    cfg = _config(**ACME)
    args = external_dns_args(cfg.tls.acme, local_zones=["us-west-2-lax-1a"], owner_id="edge")
    assert "--source=node" in args and "--zone-id-filter=Z0123456789ABCDEFGHIJ" in args
    assert "--label-filter=edge-diffusion.aws/accelerator,topology.kubernetes.io/zone in (us-west-2-lax-1a)" in args
    template = fqdn_template("nodes.example.com")
    # The template's one pipeline, applied the way sprig's `replace OLD NEW` does.
    match = re.fullmatch(r'\{\{ \.Name \| replace "(.)" "(.)" \}\}\.(.+)', template)
    assert match
    for node in ("i-0123456789abcdef0.us-west-2.compute.internal", "ip-10-40-128-7.us-west-2.compute.internal"):
        rendered = node.replace(match.group(1), match.group(2)) + "." + match.group(3)
        assert rendered == node_dns_name(node, "nodes.example.com")
        assert len(rendered.split(".")[0]) <= 63
    [deployment] = _deployments(_node_dns(cfg))
    container = _container(deployment)
    assert container["args"] == external_dns_args(cfg.tls.acme, local_zones=["us-west-2-lax-1a"], owner_id="edge")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"} and deployment["spec"]["replicas"] == 1
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert json.dumps(container).count("AWS_SECRET") == 0
