"""Per Deployment: a KEDA ScaledObject on the server's per-pod load signal (typed from the vendored KEDA CRD)."""
from __future__ import annotations

import cdk8s
from constructs import Construct

from charts import contract as c
from edge_config import WorkloadsConfig
from imports.keda_scaledobjects.sh import keda

_Behavior = keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehavior
_ScaleUp = keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleUp
_ScaleUpPolicy = keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleUpPolicies
_ScaleDown = keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleDown
_ScaleDownPolicy = keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleDownPolicies


def load_scaler(scope: Construct, accelerator: str, *, namespace: str, workloads: WorkloadsConfig) -> keda.ScaledObject:
    w = workloads
    name = c.deployment_name(accelerator)
    url = f"http://{c.metrics_service_name(accelerator)}.{namespace}.svc.cluster.local:{c.METRICS_PORT}{c.LOAD_PATH}"
    return keda.ScaledObject(
        scope, f"scaled-object-{accelerator}",
        metadata=cdk8s.ApiObjectMetadata(name=name, namespace=namespace,
                                         labels={**c.COMMON_LABELS, **c.selector(accelerator)}),
        spec=keda.ScaledObjectSpec(
            scale_target_ref=keda.ScaledObjectSpecScaleTargetRef(api_version="apps/v1", kind="Deployment", name=name),
            polling_interval=c.KEDA_POLLING_INTERVAL_S,
            min_replica_count=w.min_replicas,
            max_replica_count=w.max_replicas,
            triggers=[keda.ScaledObjectSpecTriggers(
                # The metrics Service answers from one random ready pod per poll: an unbiased sample of the per-pod
                # load. "Value" makes the HPA treat it as the per-pod average (desired = ceil(replicas * load /
                # target)).
                type="metrics-api", name="per-pod-load", metric_type="Value",
                metadata={"url": url, "format": "json", "valueLocation": c.LOAD_FIELD,
                          "targetValue": f"{w.target_load:g}"},
            )],
            advanced=keda.ScaledObjectSpecAdvanced(
                horizontal_pod_autoscaler_config=keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfig(
                    behavior=_Behavior(
                        # Scale up fast: a new accelerator node takes minutes to arrive.
                        scale_up=_ScaleUp(stabilization_window_seconds=0, select_policy="Max", policies=[
                            _ScaleUpPolicy(type="Pods", value=2, period_seconds=60),
                            _ScaleUpPolicy(type="Percent", value=100, period_seconds=60)]),
                        # Scale down slowly, one pod per grace period: each removed pod finishes its in-flight and
                        # queued work before the next one goes.
                        scale_down=_ScaleDown(
                            stabilization_window_seconds=w.scale_down_stabilization_s, select_policy="Min",
                            policies=[_ScaleDownPolicy(type="Pods", value=1,
                                                       period_seconds=max(60, c.termination_grace_seconds(w)))]),
                    ),
                ),
            ),
        ),
    )
