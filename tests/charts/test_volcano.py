"""charts/volcano.py: the opt-in Queue, schema-valid against the vendored Volcano CRD."""
from __future__ import annotations

import cdk8s

from charts.volcano import INFERENCE_QUEUE, VolcanoQueueChart
from tests.k8s_schema import validate_k8s_object


def test_one_reclaimable_queue_that_validates():
    (queue,) = VolcanoQueueChart(cdk8s.App(), "volcano-queue").to_json()
    validate_k8s_object(queue)
    assert (queue["apiVersion"], queue["kind"], queue["metadata"]["name"]) == (
        "scheduling.volcano.sh/v1beta1", "Queue", INFERENCE_QUEUE)
    assert queue["spec"] == {"weight": 1, "reclaimable": True}
