"""The serving metrics' way into CloudWatch: the collector's log group, its Pod Identity and its chart."""
from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_logs as logs
from constructs import Construct, IDependable

from charts import observability as obs
from charts.metrics_collector import MetricsCollectorChart
from edge_config import EdgeConfig
from edge_constructs.pod_identity_role import PodIdentityRole


class MetricsCollection(Construct):
    """The collector Deployment (charts/metrics_collector.py) writing embedded-metric-format logs to one log group;
    CloudWatch extracts the metrics of charts/observability.py from them (namespace ``namespace``)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, cluster: eks.Cluster,
                 node_selector: dict[str, str], depends_on: Sequence[IDependable] = ()) -> None:
        super().__init__(scope, construct_id)
        settings = config.observability
        self.cluster_name = config.cluster_name
        self.namespace = obs.NAMESPACE
        self.scrape_interval_s = settings.scrape_interval_s
        self.log_group = logs.LogGroup(
            self, "LogGroup", log_group_name=obs.log_group_name(config.cluster_name),
            retention=getattr(logs.RetentionDays, _RETENTION[settings.log_retention_days]),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.identity = PodIdentityRole(
            self, "Collector", cluster=cluster, namespace=obs.COLLECTOR_NAMESPACE,
            service_account=obs.COLLECTOR_SERVICE_ACCOUNT,
            description=f"edge-diffusion metrics collector: writes {obs.log_group_name(config.cluster_name)} only",
        )
        # CreateLogStream and PutLogEvents on this group: the metrics come from the logs, no PutMetricData needed.
        self.log_group.grant_write(self.identity.role)
        self.log_group.grant(self.identity.role, "logs:DescribeLogStreams")
        self.chart = MetricsCollectorChart(
            cdk8s.App(), "metrics-collector", cluster_name=config.cluster_name, region=cdk.Stack.of(self).region,
            inference_namespace=config.workloads.namespace, scrape_interval_s=settings.scrape_interval_s,
            node_selector=node_selector)
        self.manifest = cluster.add_cdk8s_chart("MetricsCollectorChart", self.chart)
        # Credentials before the first scrape's first write; the log group before the collector could create it.
        self.manifest.node.add_dependency(self.identity.association, self.log_group, *depends_on)


_RETENTION = {1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
              60: "TWO_MONTHS", 90: "THREE_MONTHS"}
