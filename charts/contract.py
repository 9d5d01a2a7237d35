"""The serving container's contract (shared with serving/ and the image) and the timings derived from the config."""
from __future__ import annotations

import math

from charts.nodepools import ACCELERATOR_LABEL as NODEPOOL_LABEL
from charts.nodepools import DEVICE_RESOURCES, TAINTS
from edge_config import WorkloadsConfig

HTTP_PORT = 8080
METRICS_PORT = 9090
HTTP_PORT_NAME = "http"
HTTPS_PORT_NAME = "https"
METRICS_PORT_NAME = "metrics"
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
LOAD_PATH = "/load"
# The server counts each open frame stream as one busy slot in this field (serving.stream.hub.StreamHub.load_snapshot),
# so a pod full of streams scales out like one full of requests.
LOAD_FIELD = "load"
RUN_AS_UID = 10001
SCRATCH_DIR = "/tmp"
HF_HOME = "/tmp/hf"
# The server's --compile-cache-dir: on the /tmp emptyDir, the only writable path of the read-only root filesystem
# (restricted Pod Security forbids a hostPath), so it lasts as long as the pod; the S3 prefix is what pods share.
COMPILE_CACHE_DIR = "/tmp/compile-cache"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

CONTAINER_NAME = "server"
# The edge NodePort Service; also the inventory's --inventory-service.
SERVICE_NAME = "edge-diffusion"
APP_NAME = "edge-diffusion"
COMPONENT = "inference"
# Pod label naming the accelerator: each Deployment's own selector adds it to the shared Service labels.
ACCELERATOR_LABEL = "edge-diffusion.aws/accelerator"
COMMON_LABELS = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/part-of": APP_NAME}
# The edge Service selects only these two labels, so every accelerator's pods back one endpoint.
SERVING_SELECTOR = {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/component": COMPONENT}

# Per accelerator: the extended resource the device plugin advertises and the taint its NodePool carries
# (both taken from the NodePools, so pods and pools cannot drift apart), the image flavor and the server's --device.
ACCELERATORS: dict[str, dict[str, str]] = {
    accelerator: {
        "resource": DEVICE_RESOURCES[accelerator],
        "taint": TAINTS[accelerator]["key"],
        "taint_effect": TAINTS[accelerator]["effect"],
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
# Seconds of the server's drain budget it spends closing sockets (serving.runtime.server.SHUTDOWN_MARGIN_S, rounded up).
SHUTDOWN_RESERVE_S = 2
# KEDA polls each ScaledObject at this interval; the HPA then applies the behaviour in charts/autoscaling.py.
KEDA_POLLING_INTERVAL_S = 15

def deployment_name(accelerator: str) -> str:
    return f"inference-{accelerator}"


def metrics_service_name(accelerator: str) -> str:
    return f"inference-{accelerator}-metrics"


def selector(accelerator: str) -> dict[str, str]:
    """The labels one accelerator's Deployment, PDB, metrics Service and ScaledObject select its pods by."""
    return {**SERVING_SELECTOR, ACCELERATOR_LABEL: accelerator}


def startup_failure_threshold(model_load_timeout_s: int) -> int:
    return math.ceil(model_load_timeout_s / STARTUP_PERIOD_S)


def startup_budget_s(workloads: WorkloadsConfig, accelerator: str) -> int:
    """Seconds a pod may take to turn ready: the model load, plus on nvidia with compile on a first pod's compile of
    every warmed shape (a pod that loads the artifacts from the cache needs little of it)."""
    extra = workloads.cuda.compile_budget_s if accelerator == "nvidia" else 0
    return workloads.model_load_timeout_s + extra


def scratch_gib(workloads: WorkloadsConfig, accelerator: str) -> int:
    """Size of the /tmp emptyDir (and the ephemeral-storage request): on nvidia with compile on, room for the
    inductor and Triton caches (HOME=/tmp in the image) and the saved artifacts on top."""
    extra = workloads.cuda.compile_scratch_gib if accelerator == "nvidia" and workloads.cuda.compile else 0
    return workloads.ephemeral_storage_gib + extra


def server_drain_timeout_s(workloads: WorkloadsConfig) -> int:
    """The server's --drain-timeout: it keeps SHUTDOWN_RESERVE_S of that budget for closing sockets, so the
    reserve is added on top; a request admitted just before SIGTERM still gets its whole request timeout."""
    return workloads.drain_timeout_s + SHUTDOWN_RESERVE_S


def termination_grace_seconds(workloads: WorkloadsConfig) -> int:
    """preStop sleep, then the server's own drain, then a margin: SIGKILL never cuts a drain short."""
    return workloads.prestop_sleep_s + server_drain_timeout_s(workloads) + GRACE_MARGIN_S


def serving_port_name(tls_enabled: bool) -> str:
    """The public port's name says what it speaks: the name is what tools and people read for the protocol."""
    return HTTPS_PORT_NAME if tls_enabled else HTTP_PORT_NAME
