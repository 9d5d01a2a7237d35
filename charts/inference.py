"""The inference workloads: namespace, one Deployment per accelerator, the NodePort edge Service, the
endpoint-inventory RBAC, a NetworkPolicy, and per Deployment a PDB, a metrics Service and a KEDA ScaledObject.

Objects are plain ``cdk8s.ApiObject``s built from dicts: every field is written out explicitly (no
library-injected defaults) and the tests validate each object against the strict Kubernetes 1.35 schema
and the vendored KEDA CRD, which is where typos are caught.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cdk8s
from constructs import Construct

from charts.nodepools import ACCELERATOR_LABEL as NODEPOOL_LABEL
from charts.nodepools import DEVICE_RESOURCES
from charts.nodepools import TAINTS as NODEPOOL_TAINTS
from edge_config import WorkloadsConfig

# The serving container contract (shared with serving/ and the image): ports, probes, user, scratch dir.
HTTP_PORT = 8080
METRICS_PORT = 9090
HTTP_PORT_NAME = "http"
METRICS_PORT_NAME = "metrics"
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
LOAD_PATH = "/load"
LOAD_FIELD = "load"
RUN_AS_UID = 10001
SCRATCH_DIR = "/tmp"
HF_HOME = "/tmp/hf"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

CONTAINER_NAME = "server"
# The edge NodePort Service; also the inventory's --inventory-service.
SERVICE_NAME = "edge-diffusion"
APP_NAME = "edge-diffusion"
COMPONENT = "inference"
# Pod label naming the accelerator: each Deployment's own selector adds it to the shared Service labels.
ACCELERATOR_LABEL = "edge-diffusion.aws/accelerator"

# Per accelerator: the extended resource the device plugin advertises and the taint its NodePool carries
# (both taken from the NodePools, so pods and pools cannot drift apart), the image flavor (contract 3)
# and the server's --device.
ACCELERATORS: dict[str, dict[str, str]] = {
    accelerator: {
        "resource": DEVICE_RESOURCES[accelerator],
        "taint": NODEPOOL_TAINTS[accelerator]["key"],
        "taint_effect": NODEPOOL_TAINTS[accelerator]["effect"],
        "flavor": flavor,
        "device": device,
    }
    for accelerator, flavor, device in (("nvidia", "cuda", "cuda"), ("neuron", "neuron", "neuron"))
}

# Probe cadence. The startup probe's failureThreshold is derived from the configured model-load time.
STARTUP_PERIOD_S = 10
READINESS_PERIOD_S = 5
LIVENESS_PERIOD_S = 10
# Generous: one slow generation must never look like a dead process.
LIVENESS_FAILURES = 6
PROBE_TIMEOUT_S = 5
# Extra time after preStop + drain before the kubelet sends SIGKILL (process exit, log flush).
GRACE_MARGIN_S = 10
# Seconds of the server's drain budget it spends closing sockets (serving.server.SHUTDOWN_MARGIN_S, rounded up).
SHUTDOWN_RESERVE_S = 2
# KEDA polls each ScaledObject at this interval; the HPA then applies the behaviour below.
KEDA_POLLING_INTERVAL_S = 15


def deployment_name(accelerator: str) -> str:
    return f"inference-{accelerator}"


def metrics_service_name(accelerator: str) -> str:
    return f"inference-{accelerator}-metrics"


def startup_failure_threshold(model_load_timeout_s: int) -> int:
    return math.ceil(model_load_timeout_s / STARTUP_PERIOD_S)


def server_drain_timeout_s(workloads: WorkloadsConfig) -> int:
    """The server's --drain-timeout: it keeps SHUTDOWN_RESERVE_S of that budget for closing sockets, so the
    reserve is added on top; a request admitted just before SIGTERM still gets its whole request timeout."""
    return workloads.drain_timeout_s + SHUTDOWN_RESERVE_S


def termination_grace_seconds(workloads: WorkloadsConfig) -> int:
    """preStop sleep, then the server's own drain, then a margin: SIGKILL never cuts a drain short."""
    return workloads.prestop_sleep_s + server_drain_timeout_s(workloads) + GRACE_MARGIN_S


class InferenceChart(cdk8s.Chart):
    """All Kubernetes objects of the inference service.

    Inputs are typed values; nothing here reads CDK context. ``images`` maps accelerator -> image URI
    (a CDK token string is fine); ``service_account_name`` is the Pod Identity-bound account that reads
    the API-key secret ``api_key_secret_arn`` in ``region``; ``autoscaler_namespace`` is where the KEDA
    operator runs, the only client allowed on the metrics port.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        workloads: WorkloadsConfig,
        accelerators: Sequence[str],
        images: Mapping[str, str],
        service_account_name: str,
        api_key_secret_arn: str,
        region: str,
        autoscaler_namespace: str,
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        if not accelerators:
            raise ValueError("accelerators must name at least one of nvidia, neuron (edge.accelerators)")
        for accelerator in accelerators:
            if accelerator not in ACCELERATORS:
                raise ValueError(
                    f"accelerator {accelerator!r} has no inference Deployment; use one of {sorted(ACCELERATORS)}"
                )
            if accelerator not in images:
                raise ValueError(f"images has no image URI for enabled accelerator {accelerator!r}")
        self.workloads = workloads
        self.namespace_name = workloads.namespace
        self.service_account_name = service_account_name
        self.common_labels = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/part-of": APP_NAME}
        # The edge Service selects only these two labels, so every accelerator's pods back one endpoint.
        self.serving_selector = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/component": COMPONENT}

        self.namespace_object = self._namespace()
        self._service_account()
        self._inventory_rbac()
        self._edge_service()
        self._network_policy(autoscaler_namespace)
        for accelerator in accelerators:
            self._deployment(accelerator, images[accelerator], api_key_secret_arn, region)
            self._disruption_budget(accelerator)
            self._metrics_service(accelerator)
            self._scaled_object(accelerator)

    # -- helpers -----------------------------------------------------------------------------------

    def _object(
        self,
        construct_id: str,
        api_version: str,
        kind: str,
        name: str,
        body: Mapping[str, Any],
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        namespaced: bool = True,
    ) -> cdk8s.ApiObject:
        obj = cdk8s.ApiObject(
            self,
            construct_id,
            api_version=api_version,
            kind=kind,
            metadata=cdk8s.ApiObjectMetadata(
                name=name,
                namespace=self.namespace_name if namespaced else None,
                labels={**self.common_labels, **(labels or {})},
                annotations=dict(annotations) if annotations else None,
            ),
        )
        for key, value in body.items():
            obj.add_json_patch(cdk8s.JsonPatch.add(f"/{key}", value))
        return obj

    def _selector(self, accelerator: str) -> dict[str, str]:
        return {**self.serving_selector, ACCELERATOR_LABEL: accelerator}

    # -- objects -----------------------------------------------------------------------------------

    def _namespace(self) -> cdk8s.ApiObject:
        pss = {
            f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")
        }
        pss.update({f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "audit", "warn")})
        return self._object("namespace", "v1", "Namespace", self.namespace_name, {}, labels=pss, namespaced=False)

    def _service_account(self) -> None:
        # No automatic token: only the serving container gets one, through an explicit projected volume.
        self._object(
            "service-account",
            "v1",
            "ServiceAccount",
            self.service_account_name,
            {"automountServiceAccountToken": False},
        )

    def _inventory_rbac(self) -> None:
        subject = {"kind": "ServiceAccount", "name": self.service_account_name, "namespace": self.namespace_name}
        edge_service = SERVICE_NAME
        role_name = f"{edge_service}-inventory"
        self._object(
            "inventory-role",
            "rbac.authorization.k8s.io/v1",
            "Role",
            role_name,
            {
                "rules": [
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["get", "list", "watch"],
                    },
                ]
            },
        )
        self._object(
            "inventory-role-binding",
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            role_name,
            {
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
                "subjects": [subject],
            },
        )
        # Nodes are cluster-scoped: the public IP, zone and accelerator of a node come only from here.
        cluster_role_name = f"{self.namespace_name}-inventory-nodes"
        self._object(
            "inventory-cluster-role",
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            cluster_role_name,
            {"rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]},
            namespaced=False,
        )
        self._object(
            "inventory-cluster-role-binding",
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            cluster_role_name,
            {
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role_name},
                "subjects": [subject],
            },
            namespaced=False,
        )

    def _edge_service(self) -> None:
        self._object(
            "edge-service",
            "v1",
            "Service",
            SERVICE_NAME,
            {
                "spec": {
                    "type": "NodePort",
                    # Only nodes with a local ready pod answer: no second hop, and the client IP is kept.
                    "externalTrafficPolicy": "Local",
                    "selector": dict(self.serving_selector),
                    # The public port only; the metrics port stays on the ClusterIP metrics Services.
                    "ports": [
                        {
                            "name": HTTP_PORT_NAME,
                            "protocol": "TCP",
                            "port": HTTP_PORT,
                            "targetPort": HTTP_PORT_NAME,
                            "nodePort": self.workloads.node_port,
                        }
                    ],
                }
            },
            labels={"app.kubernetes.io/component": COMPONENT},
        )

    def _network_policy(self, autoscaler_namespace: str) -> None:
        # Enforced once the VPC CNI network-policy agent is on; the intent is explicit either way. Egress stays
        # open: the server calls Secrets Manager, the Pod Identity agent and the Kubernetes API.
        self._object(
            "network-policy",
            "networking.k8s.io/v1",
            "NetworkPolicy",
            f"{COMPONENT}-ingress",
            {
                "spec": {
                    "podSelector": {"matchLabels": dict(self.serving_selector)},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        # Devices arrive through the NodePort with their own source IP (externalTrafficPolicy
                        # Local); who may connect at all is decided by the node security group.
                        {"ports": [{"protocol": "TCP", "port": HTTP_PORT}]},
                        # The load signal and Prometheus metrics: only the KEDA operator reads them.
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchLabels": {"kubernetes.io/metadata.name": autoscaler_namespace}
                                    }
                                }
                            ],
                            "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
                        },
                    ],
                }
            },
        )

    def _metrics_service(self, accelerator: str) -> None:
        # Cluster-internal, per Deployment: KEDA samples the load of that Deployment's ready pods only.
        self._object(
            f"metrics-service-{accelerator}",
            "v1",
            "Service",
            metrics_service_name(accelerator),
            {
                "spec": {
                    "type": "ClusterIP",
                    "selector": self._selector(accelerator),
                    "ports": [
                        {
                            "name": METRICS_PORT_NAME,
                            "protocol": "TCP",
                            "port": METRICS_PORT,
                            "targetPort": METRICS_PORT_NAME,
                        }
                    ],
                }
            },
            labels={"app.kubernetes.io/component": f"{COMPONENT}-metrics", ACCELERATOR_LABEL: accelerator},
        )

    def _container(self, accelerator: str, image: str, api_key_secret_arn: str, region: str) -> dict[str, Any]:
        def http_get(path: str) -> dict[str, Any]:
            return {"path": path, "port": HTTP_PORT_NAME, "scheme": "HTTP"}

        w = self.workloads
        spec = ACCELERATORS[accelerator]
        env = {
            "SERVING_DEVICE": spec["device"],
            "SERVING_PORT": str(HTTP_PORT),
            "SERVING_METRICS_PORT": str(METRICS_PORT),
            "SERVING_DRAIN_TIMEOUT": str(server_drain_timeout_s(w)),
            "SERVING_REQUEST_TIMEOUT": str(w.request_timeout_s),
            "SERVING_MAX_QUEUE": str(w.max_queue),
            "SERVING_MAX_CONCURRENCY": str(w.max_concurrency),
            "SERVING_API_KEY_SECRET_ARN": api_key_secret_arn,
            "SERVING_INVENTORY_SERVICE": SERVICE_NAME,
            "SERVING_INVENTORY_NAMESPACE": self.namespace_name,
            # Given, not looked up: the inventory then needs no read access to Services.
            "SERVING_INVENTORY_NODE_PORT": str(w.node_port),
            # Pods cannot reach IMDS (the node classes set hop limit 1), so the AWS SDK takes its region from here.
            "AWS_REGION": region,
            "HF_HOME": HF_HOME,
        }
        resources = {
            "cpu": w.cpu,
            "memory": w.memory,
            "ephemeral-storage": w.ephemeral_storage,
            spec["resource"]: "1",
        }
        return {
            "name": CONTAINER_NAME,
            "image": image,
            # A tag may be re-pushed by the pipeline; a digest never changes.
            "imagePullPolicy": "IfNotPresent" if w.image_reference_is_digest else "Always",
            # No command/args: the image's ENTRYPOINT is already `python -m serving serve`, configured by env.
            "env": [{"name": key, "value": value} for key, value in env.items()],
            "ports": [
                {"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"},
                {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
            ],
            # Guaranteed QoS: requests == limits, so the kubelet evicts these pods last under pressure.
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            # /readyz turns 200 only after the model is loaded and warmed up; until then liveness is off.
            "startupProbe": {
                "httpGet": http_get(READINESS_PATH),
                "periodSeconds": STARTUP_PERIOD_S,
                "timeoutSeconds": PROBE_TIMEOUT_S,
                "failureThreshold": startup_failure_threshold(w.model_load_timeout_s),
            },
            "readinessProbe": {
                "httpGet": http_get(READINESS_PATH),
                "periodSeconds": READINESS_PERIOD_S,
                "timeoutSeconds": PROBE_TIMEOUT_S,
                # Two misses: one slow answer while encoding a large image must not flap the endpoint. A drain
                # needs no probe at all: a terminating pod leaves the EndpointSlices at once.
                "failureThreshold": 2,
                "successThreshold": 1,
            },
            "livenessProbe": {
                "httpGet": http_get(LIVENESS_PATH),
                "periodSeconds": LIVENESS_PERIOD_S,
                "timeoutSeconds": PROBE_TIMEOUT_S,
                "failureThreshold": LIVENESS_FAILURES,
            },
            # Keeps serving while the endpoint removal reaches every node's kube-proxy; the server then
            # gets SIGTERM, turns not-ready and drains. The kubelet's own sleep needs no binary in the image.
            "lifecycle": {"preStop": {"sleep": {"seconds": w.prestop_sleep_s}}},
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
            "volumeMounts": [
                {"name": "scratch", "mountPath": SCRATCH_DIR},
                {"name": "kube-api-access", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
            ],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }

    def _deployment(self, accelerator: str, image: str, api_key_secret_arn: str, region: str) -> None:
        w = self.workloads
        spec = ACCELERATORS[accelerator]
        selector = self._selector(accelerator)
        spread = [
            # One replica per node first: a node loss takes down one replica, never several.
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": dict(selector)},
                "matchLabelKeys": ["pod-template-hash"],
            },
            # Zones only as a preference: a Local Zone is one zone, and forcing spread would push replicas
            # into the parent region, away from the devices.
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(selector)},
                "matchLabelKeys": ["pod-template-hash"],
            },
        ]
        pod_spec = {
            "serviceAccountName": self.service_account_name,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": termination_grace_seconds(w),
            "nodeSelector": {NODEPOOL_LABEL: accelerator, "kubernetes.io/os": "linux"},
            "tolerations": [{"key": spec["taint"], "operator": "Exists", "effect": spec["taint_effect"]}],
            "topologySpreadConstraints": spread,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_UID,
                "runAsGroup": RUN_AS_UID,
                "fsGroup": RUN_AS_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [self._container(accelerator, image, api_key_secret_arn, region)],
            "volumes": [
                {"name": "scratch", "emptyDir": {"sizeLimit": w.ephemeral_storage}},
                # Only this pod's server calls the Kubernetes API (the endpoint inventory), so it gets the
                # standard token/CA/namespace files explicitly, with a short-lived rotating token.
                {
                    "name": "kube-api-access",
                    "projected": {
                        "defaultMode": 0o444,
                        "sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {
                                "downwardAPI": {
                                    "items": [
                                        {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                                    ]
                                }
                            },
                        ],
                    },
                },
            ],
        }
        annotations = {}
        if not w.image_reference_is_digest:
            annotations["checkov.io/skip1"] = (
                "CKV_K8S_43=the image follows the tag in edge.workloads.image_tag (set a sha256: digest there "
                "to pin it); imagePullPolicy Always re-resolves the tag on every pod start"
            )
            if w.image_tag == "latest":
                annotations["checkov.io/skip2"] = (
                    "CKV_K8S_14=the default tracks the pipeline's moving tag so a first deploy needs no digest; "
                    "production sets edge.workloads.image_tag to a release tag or sha256 digest"
                )
        self._object(
            f"deployment-{accelerator}",
            "apps/v1",
            "Deployment",
            deployment_name(accelerator),
            {
                "spec": {
                    # No "replicas": KEDA's HPA owns the count, and every `cdk deploy` re-applies this manifest,
                    # which would otherwise reset a scaled-out Deployment and drain busy pods.
                    "revisionHistoryLimit": 3,
                    "selector": {"matchLabels": dict(selector)},
                    # Surge first: capacity never drops below the current replicas during a rollout.
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "progressDeadlineSeconds": w.model_load_timeout_s + 300,
                    "template": {
                        "metadata": {"labels": {**self.common_labels, **selector}},
                        "spec": pod_spec,
                    },
                }
            },
            labels=selector,
            annotations=annotations,
        )

    def _disruption_budget(self, accelerator: str) -> None:
        # One voluntary eviction at a time (node drains, Karpenter drift/expiry); each evicted pod drains.
        self._object(
            f"pdb-{accelerator}",
            "policy/v1",
            "PodDisruptionBudget",
            deployment_name(accelerator),
            {
                "spec": {
                    "maxUnavailable": 1,
                    "selector": {"matchLabels": self._selector(accelerator)},
                    # A pod that never got ready serves nothing; it must not block a node drain.
                    "unhealthyPodEvictionPolicy": "AlwaysAllow",
                }
            },
            labels=self._selector(accelerator),
        )

    def _scaled_object(self, accelerator: str) -> None:
        w = self.workloads
        url = (
            f"http://{metrics_service_name(accelerator)}.{self.namespace_name}.svc.cluster.local:"
            f"{METRICS_PORT}{LOAD_PATH}"
        )
        self._object(
            f"scaled-object-{accelerator}",
            "keda.sh/v1alpha1",
            "ScaledObject",
            deployment_name(accelerator),
            {
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(accelerator)},
                    "pollingInterval": KEDA_POLLING_INTERVAL_S,
                    "minReplicaCount": w.min_replicas,
                    "maxReplicaCount": w.max_replicas,
                    "triggers": [
                        {
                            # The metrics Service answers from one random ready pod per poll: an unbiased
                            # sample of the per-pod load. "Value" makes the HPA treat it as the per-pod
                            # average (desired = ceil(replicas * load / target)).
                            "type": "metrics-api",
                            "name": "per-pod-load",
                            "metricType": "Value",
                            "metadata": {
                                "url": url,
                                "format": "json",
                                "valueLocation": LOAD_FIELD,
                                "targetValue": f"{w.target_load:g}",
                            },
                        }
                    ],
                    "advanced": {
                        "horizontalPodAutoscalerConfig": {
                            "behavior": {
                                # Scale up fast: a new accelerator node takes minutes to arrive.
                                "scaleUp": {
                                    "stabilizationWindowSeconds": 0,
                                    "selectPolicy": "Max",
                                    "policies": [
                                        {"type": "Pods", "value": 2, "periodSeconds": 60},
                                        {"type": "Percent", "value": 100, "periodSeconds": 60},
                                    ],
                                },
                                # Scale down slowly, one pod per grace period: each removed pod finishes
                                # its in-flight and queued work before the next one goes.
                                "scaleDown": {
                                    "stabilizationWindowSeconds": w.scale_down_stabilization_s,
                                    "selectPolicy": "Min",
                                    "policies": [
                                        {
                                            "type": "Pods",
                                            "value": 1,
                                            "periodSeconds": max(60, termination_grace_seconds(w)),
                                        }
                                    ],
                                },
                            }
                        }
                    },
                }
            },
            labels=self._selector(accelerator),
        )
