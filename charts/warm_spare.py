"""Warm spare capacity: placeholder pods that keep GPU nodes booted in the Local Zone with the image pulled.

Each placeholder asks for exactly what one inference pod asks for (CPU, memory, one accelerator) from the
same Local Zone pools, runs the same image (so the node pulls it), and does nothing. Its PriorityClass is
below the inference pods' priority and never preempts, so the scheduler evicts a placeholder the moment an
inference pod needs its room; the inference pod then starts on a booted node with a pulled image (only the
model load remains), and the placeholder, pending again, makes Karpenter launch the next spare behind it.

Karpenter keeps a spare node: a node with a placeholder is not empty, so the pools' WhenEmpty consolidation
leaves it, and `karpenter.sh/do-not-disrupt` keeps it out of consolidation under any policy. Drift still
rolls spare nodes, because the NodePools set a terminationGracePeriod (Karpenter v1 semantics).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cdk8s
from constructs import Construct

from charts.inference import ACCELERATORS, APP_NAME, RUN_AS_UID
from charts.nodepools import ACCELERATOR_LABEL as NODEPOOL_LABEL
from charts.nodepools import ZONE_TYPE_LABEL
from edge_config import WorkloadsConfig

COMPONENT = "warm-spare"
PRIORITY_CLASS_NAME = "edge-diffusion-warm-spare"
# Below the inference pods (no PriorityClass: priority 0) and above nothing else the project runs.
PRIORITY_VALUE = -10
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
# The image's interpreter, told to sleep until SIGTERM: nothing is served, nothing is loaded.
PLACEHOLDER_COMMAND = [
    "python", "-c",
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()",
]
# Preemption waits for the victim's grace period: a placeholder holds nothing worth waiting for.
PLACEHOLDER_GRACE_S = 1


def deployment_name(accelerator: str) -> str:
    return f"{APP_NAME}-{COMPONENT}-{accelerator}"


class WarmSpareChart(cdk8s.Chart):
    """The PriorityClass and, per accelerator a Local Zone offers, a placeholder Deployment of ``nodes`` pods.

    ``images`` maps accelerator -> the inference image URI (a CDK token string is fine); the namespace is the
    inference chart's and must exist first.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        workloads: WorkloadsConfig,
        accelerators: Sequence[str],
        images: Mapping[str, str],
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        if workloads.warm_spare_nodes < 1:
            raise ValueError("WarmSpareChart needs edge.workloads.warm_spare_nodes >= 1")
        for accelerator in accelerators:
            if accelerator not in images:
                raise ValueError(f"images has no image URI for warm spare accelerator {accelerator!r}")
        self.workloads = workloads
        self.spare_labels = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/part-of": APP_NAME,
                       "app.kubernetes.io/component": COMPONENT}
        self._priority_class()
        self._network_policy()
        for accelerator in accelerators:
            self._deployment(accelerator, images[accelerator])

    def _object(self, construct_id: str, api_version: str, kind: str, name: str, body: Mapping[str, Any], *,
                namespaced: bool = True, labels: Mapping[str, str] | None = None,
                annotations: Mapping[str, str] | None = None) -> cdk8s.ApiObject:
        obj = cdk8s.ApiObject(
            self, construct_id, api_version=api_version, kind=kind,
            metadata=cdk8s.ApiObjectMetadata(name=name,
                                             namespace=self.workloads.namespace if namespaced else None,
                                             labels={**self.spare_labels, **(labels or {})},
                                             annotations=dict(annotations) if annotations else None),
        )
        for key, value in body.items():
            obj.add_json_patch(cdk8s.JsonPatch.add(f"/{key}", value))
        return obj

    def _priority_class(self) -> None:
        self._object("priority-class", "scheduling.k8s.io/v1", "PriorityClass", PRIORITY_CLASS_NAME, {
            "value": PRIORITY_VALUE,
            "globalDefault": False,
            # A placeholder waits for room; it never evicts anything to get it.
            "preemptionPolicy": "Never",
            "description": "Placeholder pods that keep warm GPU nodes; preempted by any inference pod.",
        }, namespaced=False)

    def _network_policy(self) -> None:
        # The placeholders talk to nobody and nobody talks to them.
        self._object("network-policy", "networking.k8s.io/v1", "NetworkPolicy", f"{COMPONENT}-isolated", {
            "spec": {"podSelector": {"matchLabels": dict(self.spare_labels)}, "policyTypes": ["Ingress", "Egress"]},
        })

    def _deployment(self, accelerator: str, image: str) -> None:
        w = self.workloads
        spec = ACCELERATORS[accelerator]
        selector = {**self.spare_labels, "edge-diffusion.aws/accelerator": accelerator}
        # The inference pod's own requests, so a spare node is exactly the node an inference pod lands on.
        resources = {"cpu": w.cpu, "memory": w.memory, spec["resource"]: "1"}
        container = {
            "name": "placeholder",
            "image": image,
            "imagePullPolicy": "IfNotPresent" if w.image_reference_is_digest else "Always",
            "command": PLACEHOLDER_COMMAND,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_UID,
                "runAsGroup": RUN_AS_UID,
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
        pod_spec = {
            "priorityClassName": PRIORITY_CLASS_NAME,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": PLACEHOLDER_GRACE_S,
            "nodeSelector": {NODEPOOL_LABEL: accelerator, ZONE_TYPE_LABEL: "local-zone",
                             "kubernetes.io/os": "linux"},
            "tolerations": [{"key": spec["taint"], "operator": "Exists", "effect": spec["taint_effect"]}],
            # One spare per node: N placeholders keep N nodes.
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": dict(selector)}, "topologyKey": "kubernetes.io/hostname"},
            ]}},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_UID,
                "runAsGroup": RUN_AS_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
        }
        annotations = {
            "checkov.io/skip1": "CKV_K8S_8=a placeholder serves nothing: there is no liveness to probe",
            "checkov.io/skip2": "CKV_K8S_9=a placeholder serves nothing: it is never a Service endpoint",
        }
        if not w.image_reference_is_digest:
            annotations["checkov.io/skip3"] = (
                "CKV_K8S_43=the inference Deployment's image reference (edge.workloads.image_tag), so the spare "
                "node pulls what it will run")
            if w.image_tag == "latest":
                annotations["checkov.io/skip4"] = "CKV_K8S_14=the inference Deployment's tag (edge.workloads.image_tag)"
        self._object(f"deployment-{accelerator}", "apps/v1", "Deployment", deployment_name(accelerator), {
            "spec": {
                "replicas": w.warm_spare_nodes,
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": dict(selector)},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": dict(selector), "annotations": {DO_NOT_DISRUPT: "true"}},
                    "spec": pod_spec,
                },
            },
        }, labels=selector, annotations=annotations)
