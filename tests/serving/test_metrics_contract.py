"""The serving metrics the collector, dashboard and alarms rely on (charts/observability.py), read from a live
server's /metrics, and what the collector's relabelling makes of them."""
from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from charts import contract as c
from charts import observability as obs
from edge_config import LATENCY_BUCKET_BOUNDS
from edge_constructs.serving_dashboard import QUEUE_WAIT_BOUNDS, fmt
from serving.api.devcerts import issue_server_cert, make_ca, write_pair
from tests.serving.test_tls import SERVER_NAME, TLSLiveServer

SERVING = [m for m in obs.METRICS if m.source == "serving"]
# What Kubernetes service discovery reports for a serving pod on a Local Zone node.
TARGET = {"__meta_kubernetes_namespace": "inference", "__meta_kubernetes_pod_container_port_name": c.METRICS_PORT_NAME,
          "__meta_kubernetes_pod_phase": "Running",
          "__meta_kubernetes_node_label_topology_kubernetes_io_zone": "us-west-2-lax-1a",
          "__meta_kubernetes_pod_label_edge_diffusion_aws_accelerator": "nvidia",
          "__meta_kubernetes_pod_name": "inference-nvidia-abc"}


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """A TLS server (so the certificate gauge exists) and the CA that signed its leaf."""
    tmp = tmp_path_factory.mktemp("metrics-contract")
    ca = make_ca()
    (tmp / "ca.crt").write_bytes(ca.cert_pem())
    write_pair(issue_server_cert(ca, [SERVER_NAME]), tmp / "tls.crt", tmp / "tls.key")
    srv = TLSLiveServer(tiny_model, tmp / "server.log", tmp / "ca.crt", "--tls-cert-file", str(tmp / "tls.crt"),
                        "--tls-key-file", str(tmp / "tls.key"), "--max-steps", "4")
    try:
        yield srv.wait_ready(), ca, tmp
    finally:
        assert srv.stop() == 0, srv.log_text()


@pytest.fixture(scope="module")
def exposition(server) -> str:
    """/metrics after a generation, a probe and a 404."""
    srv, _, _ = server
    with srv.client(timeout=60) as client:
        assert client.post("/v1/images/generations", json={"prompt": "a", "size": "64x64",
                                                           "response_format": "b64_json"}).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/no-such-path").status_code == 404
    return httpx.get(srv.metrics_url + "/metrics", timeout=10).text


@pytest.fixture(scope="module")
def samples(exposition) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(exposition) for s in f.samples]


def declared_series(exposition: str) -> set[str]:
    """Every series name a family declares, samples or not (a labelled counter has none until first used)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {f.name + s for f in text_string_to_metric_families(exposition) for s in suffixes.get(f.type, ("",))}


def test_every_metric_the_collection_publishes_is_exported(exposition):
    missing = [m.series for m in SERVING if m.series not in declared_series(exposition)]
    assert not missing, f"the dashboard/alarms read metrics this server does not export: {missing}"


def test_labels_the_dimensions_come_from_are_on_the_series(samples):
    for m in SERVING:
        seen = [labels for name, labels, _ in samples if name == m.series]
        for labels in seen:
            assert set(m.labels) <= set(labels), (m.series, labels)


def test_histogram_bounds_are_the_ones_the_dashboard_and_alarm_name(samples):
    def bounds(series: str) -> set[str]:
        return {labels["le"] for name, labels, _ in samples if name == series}

    assert bounds("edge_diffusion_request_duration_seconds_bucket") == {fmt(b) for b in LATENCY_BUCKET_BOUNDS} | {
        "+Inf"}
    assert bounds("edge_diffusion_queue_wait_seconds_bucket") == {fmt(b) for b in QUEUE_WAIT_BOUNDS} | {"+Inf"}


def test_route_labels_are_split_into_user_and_dropped_routes(samples):
    from serving.api.app import create_app
    from serving.runtime.server import build_state
    from serving.core.settings import Settings

    app = create_app(build_state(Settings(model="tiny", device="cpu")))
    http_routes = {r.name for r in app.router.routes if getattr(r, "methods", None) or r.name == "static"}
    assert http_routes | {"other"} == set(obs.USER_ROUTES) | set(obs.DROPPED_ROUTES)
    seen = {labels["route"] for name, labels, _ in samples if name == "edge_diffusion_requests_total"}
    assert {"openai", "healthz", "other"} <= seen


def test_certificate_expiry_is_the_leafs_remaining_lifetime(samples):
    (value,) = [v for name, _, v in samples if name == "edge_diffusion_tls_certificate_expiry_seconds"]
    assert 7 * 86400 - 600 < value <= 7 * 86400  # issue_server_cert: 7 days from now


# ---------------------------------------------------------------- the collector's relabelling, applied here


def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus relabelling (keep, drop, replace; anchored regex; ';'-joined sources; default $1)."""
    labels = dict(labels)
    for rule in rules:
        value = ";".join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            result = match.expand(rule.get("replacement", "$1").replace("$1", r"\g<1>"))
            if result:
                labels[rule["target_label"]] = result
            else:
                labels.pop(rule["target_label"], None)
    return labels


def collected(samples) -> list[dict[str, str]]:
    config = obs.collector_config(cluster_name="edge", region="us-west-2", namespace="inference",
                                  scrape_interval_s=60)
    (job,) = [j for j in config["receivers"]["prometheus"]["config"]["scrape_configs"]
              if j["job_name"] == obs.SCRAPE_JOB]
    target = relabel(TARGET, job["relabel_configs"])
    assert target is not None
    target = {k: v for k, v in target.items() if not k.startswith("__")}
    out = []
    for name, labels, _ in samples:
        series = relabel({**labels, **target, "__name__": name}, job["metric_relabel_configs"])
        if series is not None:
            out.append(series)
    return out


def test_the_collector_publishes_every_dimension_set_from_a_live_server(samples):
    series = collected(samples)
    by_name: dict[str, list[dict]] = {}
    for s in series:
        by_name.setdefault(s["__name__"], []).append(s)
    assert set(by_name) <= {m.name for m in SERVING}
    # Those the requests above produced (stream refusals and compile fallbacks have no sample yet).
    produced = {"RequestCount", "LatencyBucket", "QueueWaitBucket", "QueueDepth", "InFlight", "Load", "Ready",
                "StreamsActive", "StreamFrames", "StreamFramesDropped", "CertificateExpirySeconds",
                "ResidentMemoryBytes", "AcceleratorErrors"}
    assert produced <= set(by_name), produced - set(by_name)
    for name in produced:
        for dims in obs.BY_NAME[name].dimension_sets:
            assert all(set(dims) <= set(s) for s in by_name[name]), (name, dims)
    assert by_name["Ready"][0][obs.ZONE] == "us-west-2-lax-1a"
    assert by_name["Ready"][0][obs.ACCELERATOR] == "nvidia"
    # Probes and unknown paths never reach CloudWatch.
    assert {s[obs.ROUTE] for s in by_name["RequestCount"]} == {"openai"}


def test_certificate_expiry_follows_a_renewed_certificate(server, exposition):
    """cert-manager rewrites the mounted files; the next scrape reports the new leaf, before any handshake."""
    srv, ca, tmp = server
    write_pair(issue_server_cert(ca, [SERVER_NAME], days=30), tmp / "tls.crt", tmp / "tls.key")
    text = httpx.get(srv.metrics_url + "/metrics", timeout=10).text
    (value,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "edge_diffusion_tls_certificate_expiry_seconds"]
    assert 30 * 86400 - 600 < value <= 30 * 86400
    assert "tls certificate reloaded" in srv.log_text()
