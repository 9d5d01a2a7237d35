"""Alarms on what users feel, per Local Zone, all notifying one encrypted SNS topic (docs/operations.md)."""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from charts import observability as obs
from edge_config import EdgeConfig
from edge_constructs.serving_dashboard import fmt, rule_matches, sm


class ServingAlarms(Construct):
    """``alarms`` in the order docs/operations.md explains them; ``topic`` gets every state change to ALARM and
    back to OK."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, scrape_interval_s: int,
                 pipeline_failed: events.IRule) -> None:
        super().__init__(scope, construct_id)
        settings = config.observability
        cluster = config.cluster_name
        key = kms.Key(self, "TopicKey", enable_key_rotation=True, removal_policy=cdk.RemovalPolicy.DESTROY,
                      description=f"Encrypts the {cluster} serving alarm topic")
        # CloudWatch alarms publish to an encrypted topic only if they may use its key.
        key.grant_encrypt_decrypt(iam.ServicePrincipal("cloudwatch.amazonaws.com"))
        self.topic = sns.Topic(self, "Topic", display_name=f"{cluster} serving alarms", master_key=key,
                               enforce_ssl=True)
        for email in settings.alarm_emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        period = cdk.Duration.seconds(scrape_interval_s)
        five = cdk.Duration.minutes(5)
        self.alarms: list[cw.Alarm] = []
        for zi, lz in enumerate(config.local_zones):
            zone = {obs.CLUSTER: cluster, obs.ZONE: lz.name}
            slo = settings.slo_for(lz.name)
            # p99 > SLO  <=>  more than 1% of the requests took longer than the SLO bound.
            slow = cw.MathExpression(
                expression="IF(total>0,(total-fast)/total,0)",
                using_metrics={"total": sm("LatencyBucket", {**zone, obs.LE: "+Inf"}, period),
                               "fast": sm("LatencyBucket", {**zone, obs.LE: fmt(slo)}, period)},
                label=f"share of requests slower than {slo:g} s", period=period)
            self._alarm(f"LatencyP99-{zi}", slow, f"{cluster} {lz.name}: p99 latency above {slo:g} s",
                        threshold=0.01, periods=5, breaching=3, comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                        what=f"More than 1% of requests in {lz.name} took longer than {slo:g} s in 3 of the last 5 "
                             "minutes (edge.observability.p99_latency_slo_s).")
            errors = cw.MathExpression(
                expression="IF(total>0,100*(FILL(s500,0)+FILL(s503,0)+FILL(s504,0))/total,0)",
                using_metrics={"total": sm("RequestCount", zone, five),
                               **{f"s{s}": sm("RequestCount", {**zone, obs.STATUS: s}, five)
                                  for s in obs.SERVER_ERROR_STATUSES}},
                label="5xx %", period=five)
            self._alarm(f"ServerErrors-{zi}", errors, f"{cluster} {lz.name}: 5xx above "
                        f"{settings.error_rate_percent:g}%", threshold=settings.error_rate_percent, periods=1,
                        breaching=1, what=f"Over {settings.error_rate_percent:g}% of the answers in {lz.name} were "
                                          "500/503/504 in the last 5 minutes (probes excluded).")
            ready = sm("Ready", zone, period, statistic="Maximum")
            self._alarm(f"NoReadyEndpoint-{zi}", ready, f"{cluster} {lz.name}: no ready endpoint",
                        # 3 of 5: one late or jittered scrape (a minute without a sample) must not page.
                        threshold=1, comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD, periods=5, breaching=3,
                        missing=cw.TreatMissingData.BREACHING,
                        what=f"No pod in {lz.name} reported ready in 3 of the last 5 minutes (or none reported at "
                             "all): devices there are served from farther away, or not at all.")
            failures = sm("AcceleratorErrors", zone, cdk.Duration.minutes(15))
            self._alarm(f"AcceleratorErrors-{zi}", failures, f"{cluster} {lz.name}: repeated accelerator errors",
                        threshold=settings.accelerator_errors, periods=1, breaching=1,
                        what=f"{settings.accelerator_errors} or more accelerator errors or out-of-memory answers "
                             f"in {lz.name} within 15 minutes.")
            if config.tls.enabled:
                expiry = sm("CertificateExpirySeconds", zone, period, statistic="Minimum")
                self._alarm(f"CertificateExpiry-{zi}", expiry, f"{cluster} {lz.name}: serving certificate "
                            f"expires within {settings.certificate_expiry_days} days",
                            threshold=settings.certificate_expiry_days * 86400,
                            comparison=cw.ComparisonOperator.LESS_THAN_THRESHOLD, periods=3, breaching=3,
                            what="A pod serves a certificate that expires soon: cert-manager is not renewing it, "
                                 "or the pod does not pick the renewed files up.")
        self._alarm("PipelineFailed", rule_matches(pipeline_failed, five),
                    f"{cluster}: image pipeline run failed", threshold=1, periods=1, breaching=1,
                    what="An image pipeline execution ended FAILED: no new serving image was published.")

    def _alarm(self, construct_id: str, metric: cw.IMetric, name: str, *, threshold: float, periods: int,
               breaching: int, what: str,
               comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
               missing: cw.TreatMissingData = cw.TreatMissingData.NOT_BREACHING) -> None:
        alarm = cw.Alarm(self, construct_id, metric=metric, alarm_name=name, threshold=threshold,
                         comparison_operator=comparison, evaluation_periods=periods, datapoints_to_alarm=breaching,
                         treat_missing_data=missing, alarm_description=f"{what} See docs/operations.md.")
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)

