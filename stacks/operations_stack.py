"""OperationsStack: the cluster's dashboard and alarms, over the serving metrics and the image pipeline's runs."""
from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_events as events
from constructs import Construct

from edge_config import EdgeConfig
from edge_constructs.metrics_collection import MetricsCollection
from edge_constructs.serving_alarms import ServingAlarms
from edge_constructs.serving_dashboard import ServingDashboard

PIPELINE_STATES = ("SUCCEEDED", "FAILED")


class OperationsStack(cdk.Stack):
    """One per cluster: deployed after EdgeClusterStack (whose collector publishes the metrics) and
    ImagePipelineStack (whose pipeline's runs it counts); neither of those depends on it.

    ``dashboard`` (ServingDashboard), ``alarms`` (ServingAlarms, with its SNS ``topic``).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: EdgeConfig, metrics: MetricsCollection,
                 pipeline: codepipeline.IPipeline, **kwargs: Any) -> None:
        kwargs.setdefault("description", f"edge-diffusion operations: dashboard and alarms of {config.cluster_name}")
        super().__init__(scope, construct_id, **kwargs)
        # EventBridge counts each rule's matches (AWS/Events TriggeredRules by RuleName): the pipeline's last runs.
        rules = {
            state.lower(): events.Rule(
                self, f"Pipeline{state.capitalize()}",
                description=f"{config.cluster_name}: image pipeline executions that ended {state}",
                event_pattern=events.EventPattern(
                    source=["aws.codepipeline"], detail_type=["CodePipeline Pipeline Execution State Change"],
                    resources=[pipeline.pipeline_arn], detail={"state": [state]}))
            for state in PIPELINE_STATES
        }
        self.alarms = ServingAlarms(self, "Alarms", config=config, scrape_interval_s=metrics.scrape_interval_s,
                                    pipeline_failed=rules["failed"])
        self.dashboard = ServingDashboard(self, "Dashboard", config=config,
                                          scrape_interval_s=metrics.scrape_interval_s, pipeline_rules=rules,
                                          alarms=self.alarms.alarms)
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.alarms.topic.topic_arn,
                      description="SNS topic of the serving alarms (subscribe pagers or chat here)")
        cdk.CfnOutput(self, "DashboardName", value=self.dashboard.dashboard.dashboard_name)
