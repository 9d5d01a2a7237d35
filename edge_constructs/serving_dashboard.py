"""The cluster's CloudWatch dashboard: what users feel per Local Zone, and what the cluster does about it.

Every serving panel reads the metrics charts/observability.py publishes. Percentiles come from the per-bucket
request counts (CloudWatch has no percentiles of a Prometheus histogram): the bucket where the cumulative count
crosses q times the total, linearly interpolated, as Prometheus' histogram_quantile does.
"""
from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from constructs import Construct

from charts import observability as obs
from edge_config import LATENCY_BUCKET_BOUNDS, EdgeConfig

QUEUE_WAIT_BOUNDS = (0.001,) + LATENCY_BUCKET_BOUNDS  # serving's queue-wait histogram
WIDTH = 24  # CloudWatch dashboards are 24 columns wide


def fmt(bound: float) -> str:
    """A bucket bound as the server's `le` label spells it (prometheus_client floatToGoString)."""
    return repr(float(bound))


def sm(name: str, dims: dict[str, str], period: cdk.Duration, statistic: str = "Sum", label: str | None = None,
       ) -> cw.Metric:
    assert frozenset(dims) in {d for n, d in obs.dimension_sets() if n == name}, (name, sorted(dims))
    return cw.Metric(namespace=obs.NAMESPACE, metric_name=name, dimensions_map=dims, statistic=statistic,
                     period=period, label=label)


def search(name: str, dims: Sequence[str], cluster: str, statistic: str, period: cdk.Duration,
           per_second: bool = False, label: str = "", extra: str = "") -> cw.MathExpression:
    """All series of one published dimension set (so new zones, routes and pods appear by themselves)."""
    assert frozenset(dims) in {d for n, d in obs.dimension_sets() if n == name}, (name, dims)
    schema = ",".join([obs.NAMESPACE, *dims])
    query = f"SEARCH('{{{schema}}} MetricName=\"{name}\" {obs.CLUSTER}=\"{cluster}\"{extra}', '{statistic}', " \
            f"{int(period.to_seconds())})"
    return cw.MathExpression(expression=f"{query}/{int(period.to_seconds())}" if per_second else query,
                             label=label, period=period)


def quantile(q: float, buckets: dict[str, cw.Metric], bounds: Sequence[float], prefix: str,
             label: str, period: cdk.Duration) -> cw.MathExpression:
    """histogram_quantile over per-period bucket counts: ``buckets`` maps `le` label -> metric (with "+Inf")."""
    ids = {le: f"{prefix}b{i}" for i, le in enumerate([*(fmt(b) for b in bounds), "+Inf"])}
    total = ids["+Inf"]
    target = f"{q}*{total}"
    terms, lower, below = [], 0.0, None
    for bound in bounds:
        cur = ids[fmt(bound)]
        prev = below or "0"
        terms.append(f"IF({prev}<{target} AND {cur}>={target},{lower:g}+{bound - lower:g}*({target}-{prev})/"
                     f"({cur}-{prev}),0)")
        lower, below = bound, cur
    # Beyond the last finite bound the estimate is that bound (histogram_quantile does the same).
    terms.append(f"IF({below}<{target},{bounds[-1]:g},0)")
    expression = f"IF({total}>0,{'+'.join(terms)})"
    return cw.MathExpression(expression=expression, using_metrics={ids[le]: m for le, m in buckets.items()},
                             label=label, period=period)


class ServingDashboard(Construct):
    """One dashboard per cluster (name ``<cluster>-serving``); ``alarms`` get a status panel at the top."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, scrape_interval_s: int,
                 pipeline_rules: dict[str, events.IRule], alarms: Sequence[cw.IAlarm] = ()) -> None:
        super().__init__(scope, construct_id)
        self.cluster = cluster = config.cluster_name
        self.zones = zones = [lz.name for lz in config.local_zones]
        period = cdk.Duration.seconds(scrape_interval_s)
        self.period = period
        z = {obs.CLUSTER: cluster}
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{cluster}-serving",
                                      default_interval=cdk.Duration.hours(3),
                                      period_override=cw.PeriodOverride.INHERIT)
        d = self.dashboard
        d.add_widgets(cw.TextWidget(
            markdown=f"# {cluster}: serving\nLocal Zones: {', '.join(zones)}. Per-minute values from the serving "
                     f"pods' Prometheus metrics (namespace `{obs.NAMESPACE}`); GPU and Neuron panels from Container "
                     "Insights. What each panel means and what to do when an alarm fires: docs/operations.md.",
            width=WIDTH, height=2))
        if alarms:
            d.add_widgets(cw.AlarmStatusWidget(alarms=list(alarms), title="Alarms", width=WIDTH, height=3))

        # -- what users feel -----------------------------------------------------------------------------------
        d.add_widgets(
            cw.GraphWidget(title="Requests/s by route and zone", width=12, height=6, left=[search(
                "RequestCount", (obs.CLUSTER, obs.ZONE, obs.ROUTE), cluster, "Sum", period, per_second=True)]),
            cw.GraphWidget(title="Answers/s by status and zone (4xx, 5xx)", width=12, height=6, left=[search(
                "RequestCount", (obs.CLUSTER, obs.ZONE, obs.STATUS), cluster, "Sum", period, per_second=True)]),
        )
        latency = []
        for zi, zone in enumerate(zones):
            lines = []
            for ri, route in enumerate(obs.USER_ROUTES):
                buckets = {le: sm("LatencyBucket", {**z, obs.ZONE: zone, obs.ROUTE: route, obs.LE: le}, period)
                           for le in [*(fmt(b) for b in LATENCY_BUCKET_BOUNDS), "+Inf"]}
                for q, tag in ((0.5, "p50"), (0.99, "p99")):
                    # Both quantiles read the same bucket metrics (same ids), so each is queried once.
                    lines.append(quantile(q, buckets, LATENCY_BUCKET_BOUNDS, f"z{zi}r{ri}",
                                          f"{route} {tag}", period))
            latency.append(cw.GraphWidget(title=f"Latency p50/p99 by route (s): {zone}", width=12, height=6,
                                          left=lines, left_y_axis=cw.YAxisProps(min=0, label="seconds",
                                                                                show_units=False)))
        d.add_widgets(*latency)

        # -- streams -------------------------------------------------------------------------------------------
        d.add_widgets(
            cw.GraphWidget(title="Stream frames/s and dropped frames/s by zone (WebSocket)", width=12, height=6,
                           left=[search("StreamFrames", obs.PER_ZONE, cluster, "Sum", period, per_second=True,
                                        label="frames/s")],
                           right=[search("StreamFramesDropped", obs.PER_ZONE, cluster, "Sum", period,
                                         per_second=True, label="dropped/s")]),
            cw.GraphWidget(title="Active streams by zone (WebSocket)", width=12, height=6,
                           left=[search("StreamsActive", obs.PER_ZONE, cluster, "Sum", period)]),
        )
        # -- queueing ------------------------------------------------------------------------------------------
        waits = []
        for zi, zone in enumerate(zones):
            buckets = {le: sm("QueueWaitBucket", {**z, obs.ZONE: zone, obs.LE: le}, period)
                       for le in [*(fmt(b) for b in QUEUE_WAIT_BOUNDS), "+Inf"]}
            waits.append(quantile(0.99, buckets, QUEUE_WAIT_BOUNDS, f"q{zi}", f"{zone} p99", period))
        d.add_widgets(
            cw.GraphWidget(title="Queue wait p99 by zone (s)", width=8, height=6, left=waits),
            cw.GraphWidget(title="Queue depth and generations in flight by zone", width=8, height=6,
                           left=[search("QueueDepth", obs.PER_ZONE, cluster, "Sum", period, label="queued")],
                           right=[search("InFlight", obs.PER_ZONE, cluster, "Sum", period, label="in flight")]),
            cw.GraphWidget(title="Ready endpoints (pods) by zone", width=8, height=6,
                           left=[search("Ready", obs.PER_ZONE, cluster, "Sum", period)]),
        )
        # -- refusals and fallbacks ------------------------------------------------------------------------------
        refusals = " OR ".join(f'"{s}"' for s in obs.REFUSAL_STATUSES)
        d.add_widgets(
            cw.GraphWidget(title="Refusals: HTTP by status, streams by reason", width=12, height=6, left=[
                search("RequestCount", (obs.CLUSTER, obs.ZONE, obs.STATUS), cluster, "Sum", period,
                       extra=f" {obs.STATUS}=({refusals})"),
                search("StreamRefused", (obs.CLUSTER, obs.ZONE, obs.REASON), cluster, "Sum", period)]),
            cw.GraphWidget(title="Compile fallbacks (eager) and accelerator errors", width=12, height=6, left=[
                search("EagerFallback", (obs.CLUSTER, obs.ZONE, obs.REASON), cluster, "Sum", period)], right=[
                search("AcceleratorErrors", (obs.CLUSTER, obs.ZONE, obs.KIND), cluster, "Sum", period)]),
        )
        # -- capacity --------------------------------------------------------------------------------------------
        ci = cdk.Duration.minutes(1)
        d.add_widgets(
            cw.GraphWidget(title="Nodes per NodePool (Karpenter)", width=8, height=6,
                           left=[search("PoolNodes", (obs.CLUSTER, obs.NODEPOOL), cluster, "Maximum", period)]),
            cw.GraphWidget(title="GPU utilisation and memory % (Container Insights)", width=8, height=6,
                           left=[_insights("node_gpu_utilization", cluster, ci)],
                           right=[_insights("node_gpu_memory_utilization", cluster, ci)]),
            cw.GraphWidget(title="NeuronCore utilisation % and memory bytes (Container Insights)", width=8,
                           height=6, left=[_insights("node_neuroncore_utilization", cluster, ci)],
                           right=[_insights("node_neuroncore_memory_usage_total", cluster, ci)]),
        )
        # -- certificates, memory, images ----------------------------------------------------------------------
        day = cdk.Duration.days(1)
        expiry = search("CertificateExpirySeconds", obs.PER_ZONE, cluster, "Minimum", period).expression
        d.add_widgets(
            cw.GraphWidget(title="Serving certificate: days to expiry (soonest pod per zone)", width=8, height=6,
                           left=[cw.MathExpression(expression=f"{expiry}/86400", label="days", period=period)]),
            cw.GraphWidget(title="Server resident memory per pod (bytes)", width=8, height=6,
                           left=[search("ResidentMemoryBytes", obs.PER_POD, cluster, "Maximum", period)]),
            cw.SingleValueWidget(title="Image pipeline runs, last 24 h", width=8, height=6,
                                 metrics=[rule_matches(rule, day, outcome) for outcome, rule in pipeline_rules.items()],
                                 set_period_to_time_range=True),
        )


def rule_matches(rule: events.IRule, period: cdk.Duration, label: str | None = None) -> cw.Metric:
    """How many events an EventBridge rule matched (AWS/Events TriggeredRules, dimension RuleName)."""
    return cw.Metric(namespace="AWS/Events", metric_name="TriggeredRules", dimensions_map={"RuleName": rule.rule_name},
                     statistic="Sum", period=period, label=label)


def _insights(metric_name: str, cluster: str, period: cdk.Duration) -> cw.MathExpression:
    """A Container Insights (enhanced observability) accelerator metric of this cluster, one line per node."""
    return cw.MathExpression(
        expression=f"SEARCH('{{ContainerInsights,ClusterName,InstanceId,NodeName}} MetricName=\"{metric_name}\" "
                   f"ClusterName=\"{cluster}\"', 'Average', {int(period.to_seconds())})",
        label="", period=period)
