"""What the metrics collector takes from each serving pod and how it lands in CloudWatch (docs/operations.md).

One table ties the three sides together: the Prometheus series the server exports, the CloudWatch metric each
becomes, and the dimension sets it is published under. The collector config, the NetworkPolicy, the dashboard and
the alarms are all built from it, and tests check it against a live server's /metrics.

Why the renames: the collector (OpenTelemetry Collector, prometheus receiver -> awsemf exporter) publishes a
classic Prometheus histogram only as a CloudWatch statistic set (count, sum, min, max), which has no percentiles
(opentelemetry-collector-contrib exporter/awsemfexporter/datapoint.go). Each `_bucket` series is therefore renamed
before the receiver groups it into a histogram family; a series whose name matches no family's metadata arrives as
an untyped gauge, which the transform processor turns back into a cumulative sum, and the exporter sends deltas.
The dashboard computes p50/p99 from the per-bucket counts; the latency alarm asks how many requests exceeded the
SLO bound. Counters get CloudWatch names too, so the published names never depend on the receiver's suffix
handling.
"""
from __future__ import annotations

from dataclasses import dataclass

from charts import contract as c

#: CloudWatch namespace of the serving metrics.
NAMESPACE = "EdgeDiffusion"
#: The collector's own namespace and labels (the inference NetworkPolicy admits exactly these pods).
COLLECTOR_NAMESPACE = "edge-metrics"
COLLECTOR_NAME = "metrics-collector"
COLLECTOR_LABELS = {"app.kubernetes.io/name": COLLECTOR_NAME, "app.kubernetes.io/part-of": c.APP_NAME}
COLLECTOR_SERVICE_ACCOUNT = COLLECTOR_NAME
SCRAPE_JOB = "edge-diffusion-serving"
KARPENTER_JOB = "karpenter"

# Dimensions the collector attaches to every series (from the scrape target) ...
CLUSTER = "ClusterName"
ZONE = "Zone"
ACCELERATOR = "Accelerator"
POD = "PodName"
TARGET_DIMENSIONS = (CLUSTER, ZONE, ACCELERATOR, POD)
# ... and the server's own labels that become dimensions.
ROUTE, STATUS, REASON, LE, KIND = "route", "status", "reason", "le", "kind"
NODEPOOL = "nodepool"
KARPENTER_NAMESPACE = "kube-system"
KARPENTER_SELECTOR = {"app.kubernetes.io/name": "karpenter"}
KARPENTER_METRICS_PORT_NAME = "http-metrics"

#: Route labels (serving.api.gateway.route_label) of what users call; probes, the playground page, static files and
#: unknown paths are dropped at the collector so they neither cost money nor dilute rates and 5xx shares.
USER_ROUTES = ("generate", "openai", "edits", "endpoints")
DROPPED_ROUTES = ("healthz", "readyz", "playground", "static", "openapi", "other")
#: The 5xx statuses the server answers with (serving.core.errors and the gateway): 500, 503 and 504.
SERVER_ERROR_STATUSES = ("500", "503", "504")
#: Statuses shown as refusals on the dashboard: auth, body limit, queue full, not ready/draining.
REFUSAL_STATUSES = ("401", "413", "429", "503")

PER_POD = (CLUSTER, ZONE, ACCELERATOR, POD)
PER_ZONE = (CLUSTER, ZONE)


@dataclass(frozen=True)
class Metric:
    """One CloudWatch metric: its name, the Prometheus series it comes from, and its dimension sets."""

    name: str
    series: str
    counter: bool
    labels: tuple[str, ...]
    dimension_sets: tuple[tuple[str, ...], ...]
    unit: str = "None"
    #: "serving" (the inference pods) or "karpenter" (its controller's metrics port).
    source: str = "serving"


METRICS: tuple[Metric, ...] = (
    Metric("RequestCount", "edge_diffusion_requests_total", True, (ROUTE, STATUS),
           ((CLUSTER, ZONE, ROUTE), (CLUSTER, ZONE, STATUS), PER_ZONE, (CLUSTER, ZONE, ACCELERATOR))),
    Metric("LatencyBucket", "edge_diffusion_request_duration_seconds_bucket", True, (ROUTE, STATUS, LE),
           ((CLUSTER, ZONE, ROUTE, LE), (CLUSTER, ZONE, LE))),
    Metric("QueueWaitBucket", "edge_diffusion_queue_wait_seconds_bucket", True, (LE,), ((CLUSTER, ZONE, LE),)),
    Metric("QueueDepth", "edge_diffusion_queue_depth", False, (), (PER_ZONE, PER_POD)),
    Metric("InFlight", "edge_diffusion_in_flight", False, (), (PER_ZONE, PER_POD)),
    Metric("Load", "edge_diffusion_load", False, (), (PER_POD,)),
    Metric("Ready", "edge_diffusion_ready", False, (), (PER_ZONE, PER_POD)),
    Metric("StreamsActive", "edge_diffusion_streams_active", False, (), (PER_ZONE, PER_POD)),
    Metric("StreamFrames", "edge_diffusion_stream_frames_processed_total", True, (), (PER_ZONE,)),
    Metric("StreamFramesDropped", "edge_diffusion_stream_frames_dropped_total", True, (), (PER_ZONE,)),
    Metric("StreamRefused", "edge_diffusion_stream_refused_total", True, (REASON,), ((CLUSTER, ZONE, REASON),)),
    Metric("EagerFallback", "edge_diffusion_eager_fallback_total", True, (REASON,), ((CLUSTER, ZONE, REASON),)),
    Metric("AcceleratorErrors", "edge_diffusion_accelerator_errors_total", True, (KIND,),
           ((CLUSTER, ZONE, KIND), PER_ZONE)),
    Metric("CertificateExpirySeconds", "edge_diffusion_tls_certificate_expiry_seconds", False, (),
           (PER_ZONE, PER_POD), "Seconds"),
    Metric("ResidentMemoryBytes", "process_resident_memory_bytes", False, (), (PER_POD,), "Bytes"),
    # NodePool status.resources counts its nodes; both Karpenter replicas may report it, so read it as a maximum.
    Metric("PoolNodes", "karpenter_nodepools_usage", False, (NODEPOOL,), ((CLUSTER, NODEPOOL),), source="karpenter"),
)
BY_NAME = {m.name: m for m in METRICS}


def metric(name: str) -> Metric:
    return BY_NAME[name]


def dimension_sets() -> set[tuple[str, frozenset[str]]]:
    """(metric name, dimension names) of every CloudWatch metric the collection publishes."""
    return {(m.name, frozenset(dims)) for m in METRICS for dims in m.dimension_sets}


def log_group_name(cluster_name: str) -> str:
    return f"/aws/edge-diffusion/{cluster_name}/metrics"


def _relabel_target(cluster_name: str, namespace: str, port_name: str, *, serving: bool) -> list[dict]:
    """Keep the pods' metrics port; name a serving target by cluster, Local Zone, accelerator and pod."""
    accelerator_label = "__meta_kubernetes_pod_label_" + _sanitize(c.ACCELERATOR_LABEL)
    rules = [
        {"source_labels": ["__meta_kubernetes_namespace"], "regex": namespace, "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port_name, "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
        {"target_label": CLUSTER, "replacement": cluster_name, "action": "replace"},
    ]
    if not serving:
        return rules
    return rules + [
        # The node's zone label: the Local Zone name for Local Zone nodes (attach_metadata.node below).
        {"source_labels": ["__meta_kubernetes_node_label_topology_kubernetes_io_zone"], "target_label": ZONE,
         "action": "replace"},
        {"source_labels": [accelerator_label], "target_label": ACCELERATOR, "action": "replace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": POD, "action": "replace"},
    ]


def _relabel_series(source: str) -> list[dict]:
    """Drop the routes nobody calls and every series not in METRICS, then give each kept series its CloudWatch
    name. Relabel regexes are anchored by Prometheus; no `$` appears, so the collector's own ${} expansion is moot."""
    metrics = [m for m in METRICS if m.source == source]
    rules: list[dict] = [{"source_labels": ["__name__"], "regex": "|".join(m.series for m in metrics),
                          "action": "keep"}]
    if source == "serving":
        routed = "|".join(m.series for m in metrics if ROUTE in m.labels)
        rules.append({"source_labels": ["__name__", ROUTE], "regex": f"({routed});({'|'.join(DROPPED_ROUTES)})",
                      "action": "drop"})
    else:
        rules.append({"source_labels": ["__name__", "resource_type"], "regex": "karpenter_nodepools_usage;nodes",
                      "action": "keep"})
    rules += [{"source_labels": ["__name__"], "regex": m.series, "target_label": "__name__",
               "replacement": m.name, "action": "replace"} for m in metrics]
    return rules


def _sanitize(label: str) -> str:
    """Prometheus' service-discovery spelling of a Kubernetes label name."""
    return "".join(ch if ch.isalnum() else "_" for ch in label)


def _scrape_job(name: str, namespace: str, selector: dict[str, str], port_name: str, cluster_name: str,
                source: str) -> dict:
    serving = source == "serving"
    discovery: dict = {"role": "pod", "namespaces": {"names": [namespace]},
                       "selectors": [{"role": "pod", "label": ",".join(f"{k}={v}" for k, v in selector.items())}]}
    if serving:
        # Adds the node's labels (topology.kubernetes.io/zone) to each pod target.
        discovery["attach_metadata"] = {"node": True}
    return {
        "job_name": name,
        "scheme": "http",
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [discovery],
        "relabel_configs": _relabel_target(cluster_name, namespace, port_name, serving=serving),
        "metric_relabel_configs": _relabel_series(source),
    }


def collector_config(*, cluster_name: str, region: str, namespace: str, scrape_interval_s: int) -> dict:
    """The OpenTelemetry Collector configuration (opentelemetry-collector-contrib, pinned in versions.py)."""
    # Selectors are Go regexps anchored with \z rather than $: the collector expands ${...} in its config.
    counters = " or ".join(f'metric.name == "{m.name}"' for m in METRICS if m.counter)
    declarations = [{"dimensions": [list(d) for d in m.dimension_sets],
                     "metric_name_selectors": [rf"^{m.name}\z"]} for m in METRICS]
    return {
        "extensions": {"health_check": {"endpoint": f"0.0.0.0:{COLLECTOR_HEALTH_PORT}"}},
        "receivers": {"prometheus": {"config": {
            "global": {"scrape_interval": f"{scrape_interval_s}s", "scrape_timeout": "10s"},
            "scrape_configs": [
                _scrape_job(SCRAPE_JOB, namespace, c.SERVING_SELECTOR, c.METRICS_PORT_NAME, cluster_name, "serving"),
                _scrape_job(KARPENTER_JOB, KARPENTER_NAMESPACE, KARPENTER_SELECTOR, KARPENTER_METRICS_PORT_NAME,
                            cluster_name, "karpenter"),
            ],
        }}},
        "processors": {
            "memory_limiter": {"check_interval": "5s", "limit_percentage": 80, "spike_limit_percentage": 20},
            # Renamed counters arrive untyped (gauges); as cumulative sums the exporter sends per-scrape deltas.
            "transform/counters": {"metric_statements": [{
                "context": "metric", "statements": [f'convert_gauge_to_sum("cumulative", true) where {counters}']}]},
            "batch": {"timeout": "30s"},
        },
        "exporters": {"awsemf": {
            "region": region,
            "namespace": NAMESPACE,
            "log_group_name": log_group_name(cluster_name),
            "log_stream_name": COLLECTOR_NAME,
            "dimension_rollup_option": "NoDimensionRollup",
            "metric_declarations": declarations,
            "metric_descriptors": [{"metric_name": m.name, "unit": m.unit} for m in METRICS if m.unit != "None"],
        }},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {"metrics": {"receivers": ["prometheus"],
                                      "processors": ["memory_limiter", "transform/counters", "batch"],
                                      "exporters": ["awsemf"]}},
            "telemetry": {"logs": {"level": "info", "encoding": "json"}},
        },
    }


COLLECTOR_HEALTH_PORT = 13133
