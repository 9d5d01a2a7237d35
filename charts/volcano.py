"""The Volcano Queue for batch jobs that opt in (typed from the vendored Volcano CRD)."""
from __future__ import annotations

import cdk8s
from constructs import Construct

from imports.volcano_queues.sh.volcano.scheduling import Queue, QueueSpec

INFERENCE_QUEUE = "inference"


class VolcanoQueueChart(cdk8s.Chart):
    """A reclaimable Queue: it lends idle capacity back.

    Inference pods stay on the default scheduler: Karpenter only provisions for pods that kube-scheduler marked
    Unschedulable (kubernetes-sigs/karpenter#742), and Volcano's gang plugin can leave pods Pending without that
    condition (volcano-sh/volcano#3976, #4030), so a Volcano-scheduled inference pod could wait forever.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        Queue(self, "queue", spec=QueueSpec(weight=1, reclaimable=True), metadata=cdk8s.ApiObjectMetadata(
            name=INFERENCE_QUEUE, labels={"app.kubernetes.io/part-of": "edge-diffusion"}))
