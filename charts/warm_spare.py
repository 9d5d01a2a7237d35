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

import cdk8s
import cdk8s_plus_35 as kplus
from cdk8s import Duration, JsonPatch, Size
from cdk8s_plus_35 import k8s
from constructs import Construct

from charts.contract import ACCELERATORS, APP_NAME, RUN_AS_UID
from charts.nodepools import ACCELERATOR_LABEL as NODEPOOL_LABEL
from charts.nodepools import ZONE_TYPE_LABEL
from charts.security import restricted_container
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
_TAINT_EFFECTS = {"NoSchedule": kplus.TaintEffect.NO_SCHEDULE}


def deployment_name(accelerator: str) -> str:
    return f"{APP_NAME}-{COMPONENT}-{accelerator}"


def _checkov_skips(w: WorkloadsConfig) -> dict[str, str]:
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
    return annotations


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
        # cdk8s-plus has no PriorityClass construct; the typed Kubernetes class is the next best.
        k8s.KubePriorityClass(
            self, "priority-class", metadata=k8s.ObjectMeta(name=PRIORITY_CLASS_NAME, labels=self.spare_labels),
            value=PRIORITY_VALUE, global_default=False,
            # A placeholder waits for room; it never evicts anything to get it.
            preemption_policy="Never",
            description="Placeholder pods that keep warm GPU nodes; preempted by any inference pod.")
        # The placeholders talk to nobody and nobody talks to them.
        kplus.NetworkPolicy(
            self, "network-policy",
            metadata=cdk8s.ApiObjectMetadata(name=f"{COMPONENT}-isolated", namespace=workloads.namespace,
                                             labels=self.spare_labels),
            selector=kplus.Pods.select(self, "spare-pods", labels=self.spare_labels),
            ingress=kplus.NetworkPolicyTraffic(default=kplus.NetworkPolicyTrafficDefault.DENY),
            egress=kplus.NetworkPolicyTraffic(default=kplus.NetworkPolicyTrafficDefault.DENY))
        for accelerator in accelerators:
            self._deployment(accelerator, images[accelerator])

    def _deployment(self, accelerator: str, image: str) -> None:
        w = self.workloads
        spec = ACCELERATORS[accelerator]
        selector = {**self.spare_labels, "edge-diffusion.aws/accelerator": accelerator}
        deployment = kplus.Deployment(
            self, f"deployment-{accelerator}",
            metadata=cdk8s.ApiObjectMetadata(name=deployment_name(accelerator), namespace=w.namespace,
                                             labels=selector, annotations=_checkov_skips(w)),
            pod_metadata=cdk8s.ApiObjectMetadata(labels=selector, annotations={DO_NOT_DISRUPT: "true"}),
            select=False, replicas=w.warm_spare_nodes, revision_history_limit=3,
            strategy=kplus.DeploymentStrategy.rolling_update(
                max_surge=kplus.PercentOrAbsolute.absolute(1), max_unavailable=kplus.PercentOrAbsolute.absolute(0)),
            automount_service_account_token=False, enable_service_links=False,
            termination_grace_period=Duration.seconds(PLACEHOLDER_GRACE_S),
            security_context=kplus.PodSecurityContextProps(ensure_non_root=True, user=RUN_AS_UID, group=RUN_AS_UID),
        )
        deployment.select(kplus.LabelSelector.of(labels=selector))
        deployment.scheduling.attract(kplus.Node.labeled(
            kplus.NodeLabelQuery.is_(NODEPOOL_LABEL, accelerator),
            kplus.NodeLabelQuery.is_(ZONE_TYPE_LABEL, "local-zone"),
            kplus.NodeLabelQuery.is_("kubernetes.io/os", "linux")))
        deployment.scheduling.tolerate(kplus.Node.tainted(
            kplus.NodeTaintQuery.exists(spec["taint"], effect=_TAINT_EFFECTS[spec["taint_effect"]])))
        # One spare per node: N placeholders keep N nodes.
        deployment.scheduling.separate(kplus.Pods.select(self, f"spares-{accelerator}", labels=selector),
                                       topology=kplus.Topology.HOSTNAME)
        # The inference pod's own requests, so a spare node is exactly the node an inference pod lands on.
        cpu, memory = kplus.Cpu.units(w.cpu_cores), Size.gibibytes(w.memory_gib)
        deployment.add_container(
            name="placeholder", image=image, command=PLACEHOLDER_COMMAND,
            image_pull_policy=kplus.ImagePullPolicy.IF_NOT_PRESENT if w.image_reference_is_digest
            else kplus.ImagePullPolicy.ALWAYS,
            resources=kplus.ContainerResources(cpu=kplus.CpuResources(request=cpu, limit=cpu),
                                               memory=kplus.MemoryResources(request=memory, limit=memory)),
            security_context=restricted_container(),
        )
        # Fields cdk8s-plus-35 has no API for (see charts/inference_deployment.py); values are typed k8s structs.
        pod, container = "/spec/template/spec", "/spec/template/spec/containers/0"
        resource = spec["resource"].replace("/", "~1")
        for patch in (
            JsonPatch.add(f"{container}/resources/requests/{resource}", k8s.Quantity.from_string("1")),
            JsonPatch.add(f"{container}/resources/limits/{resource}", k8s.Quantity.from_string("1")),
            JsonPatch.add(f"{container}/terminationMessagePolicy", "FallbackToLogsOnError"),
            JsonPatch.add(f"{pod}/securityContext/seccompProfile", k8s.SeccompProfile(type="RuntimeDefault")),
            JsonPatch.add(f"{pod}/priorityClassName", PRIORITY_CLASS_NAME),
        ):
            cdk8s.ApiObject.of(deployment).add_json_patch(patch)
