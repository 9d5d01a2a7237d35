"""Inference workload settings: image, NodePort, replicas and autoscaling, timeouts and pod resources."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from edge_config.cuda_path import CudaPathConfig
from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section
from edge_config.pipeline import IMAGE_TAG_PATTERN

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Longest startup probe budget accepted (model load plus a first pod's compile): beyond it a pod that hangs at start
# holds a GPU node for hours before it is restarted.
MAX_STARTUP_BUDGET_S = 4 * 3600


class WorkloadsConfig(Section):
    """Inference workload settings.

    Timing invariants that keep scale-down and node drains from cutting off work: every accepted request
    ends (200 or 504) within ``request_timeout_s``, so a drain of ``drain_timeout_s >= request_timeout_s``
    finishes it; the pod's grace period is derived from ``prestop_sleep_s + drain_timeout_s`` plus a margin.
    """

    image_tag: str = Field("latest", description="Image tag the Deployment runs, or a `sha256:` digest to pin it.")
    node_port: int = Field(30080, ge=30000, le=32767, description="NodePort devices call on the nodes' public IPs.")
    webrtc_first_port: int = Field(
        40000, ge=1024, le=65000,
        description="First UDP port of the WebRTC media range (nvidia pods: hostPorts, node security group).")
    webrtc_port_count: int = Field(
        16, ge=0, le=64,
        description="UDP ports per node for WebRTC media (one per open WebRTC stream); 0 turns WebRTC's UDP path off.")
    namespace: Annotated[str, Hint("use a DNS label: lowercase letters, digits and '-', at most 63 characters")] = (
        Field("edge-diffusion", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
              description="Namespace of the inference objects."))
    # Zero replicas would mean minutes of node launch plus model load on the first request, and the load scaler
    # samples running pods, so it could never wake the Deployment up again.
    min_replicas: int = Field(1, ge=1, le=100, description="Replicas kept at the lowest load (at least one).")
    max_replicas: int = Field(4, ge=1, le=100, description="Upper bound of the autoscaler.")
    target_load: Annotated[float, Hint("give the per-pod load ((in_flight + queued) / max_concurrency) to scale "
                                       "at, e.g. 1.0")] = Field(
        1.0, ge=0.1, le=64, description="Per-pod load ((in_flight + queued) / max_concurrency) KEDA scales at.")
    scale_down_stabilization_s: int = Field(300, ge=0, le=3600,
                                            description="Seconds the load must stay low before a scale-down.")
    model_load_timeout_s: int = Field(600, ge=10, le=3600,
                                      description="Seconds the startup probe allows for the model to load.")
    prestop_sleep_s: int = Field(5, ge=1, le=60, description="Seconds a stopping pod keeps serving while "
                                                             "endpoints and kube-proxy drop it.")
    drain_timeout_s: int = Field(30, ge=1, le=600, description="Seconds a stopping server lets accepted requests "
                                                               "finish (>= request_timeout_s).")
    request_timeout_s: int = Field(30, ge=1, le=600, description="Seconds after which a request gets a 504.")
    max_queue: int = Field(8, ge=0, le=1000, description="Requests waiting per pod beyond max_concurrency; "
                                                         "more get a 429.")
    max_concurrency: int = Field(1, ge=1, le=64, description="Requests one pod runs at once.")
    # Requests equal limits (Guaranteed QoS); the defaults fit a 4 vCPU / 16 GiB g4dn, g5 or inf2 .xlarge beside the
    # node daemons. Decoding and image encoding run on the CPU, and the SD 2.x weights take several GiB to load.
    cpu_cores: float = Field(3.0, ge=1, le=192, multiple_of=0.001, description="CPU cores per pod (`3.5` is "
                                                                                 "3500 millicores).")
    memory_gib: int = Field(12, ge=4, le=2048, description="Memory per pod in GiB.")
    ephemeral_storage_gib: int = Field(4, ge=1, le=1024, description="Size of the /tmp emptyDir in GiB (Hugging "
                                                                     "Face and compiler caches).")
    # Spares trade idle GPU hours for scale-outs that skip node launch and image pull (docs/cold-start.md).
    warm_spare_nodes: int = Field(0, ge=0, le=20, description="Nodes per Local Zone accelerator kept booted with "
                                  "the image pulled by placeholder pods that any inference pod preempts (0: off).")
    cuda: CudaPathConfig = Field(default_factory=CudaPathConfig, description="The nvidia pods' GPU fast path: "
                                 "compiled shapes and the compile cache (docs/workloads.md).")

    @field_validator("image_tag")
    @classmethod
    def _tag_or_digest(cls, tag: str) -> str:
        if not (re.match(IMAGE_TAG_PATTERN, tag) or _DIGEST_RE.match(tag)):
            raise FieldProblem(f"{tag!r} is neither a Docker tag nor a sha256 digest",
                               "give a tag like \"latest\" or a digest like \"sha256:<64 hex>\"")
        return tag

    @field_validator("namespace")
    @classmethod
    def _not_a_system_namespace(cls, namespace: str) -> str:
        if namespace.startswith("kube-") or namespace == "default":
            raise FieldProblem(f"{namespace!r} is a system namespace",
                               "use a dedicated namespace such as \"edge-diffusion\"")
        return namespace

    @model_validator(mode="after")
    def _consistent(self) -> "WorkloadsConfig":
        if self.min_replicas > self.max_replicas:
            raise FieldProblem(f"{self.min_replicas} is greater than max_replicas {self.max_replicas}",
                               "make min_replicas <= max_replicas", ("min_replicas",))
        if self.drain_timeout_s < self.request_timeout_s:
            raise FieldProblem(f"{self.drain_timeout_s}s is shorter than request_timeout_s "
                               f"{self.request_timeout_s}s, so a scale-down could cut off a request that is still "
                               "within its timeout", "make drain_timeout_s >= request_timeout_s",
                               ("drain_timeout_s",))
        if self.cuda.captures_graphs and self.max_concurrency > 1:
            field = "cuda_graphs" if self.cuda.cuda_graphs else "compile_mode"
            raise FieldProblem(f"CUDA graphs (cuda_graphs, or compile_mode {self.cuda.effective_compile_mode!r}) "
                               f"replay one request at a time, but max_concurrency is {self.max_concurrency}",
                               "set edge.workloads.max_concurrency to 1, or turn the graphs off", ("cuda", field))
        budget = self.model_load_timeout_s + self.cuda.compile_budget_s
        if budget > MAX_STARTUP_BUDGET_S:
            raise FieldProblem(f"{self.cuda.warmed_shapes} warmed shapes x {self.cuda.compile_budget_per_shape_s}s "
                               f"plus model_load_timeout_s {self.model_load_timeout_s}s give the nvidia pods a "
                               f"{budget}s startup budget, more than {MAX_STARTUP_BUDGET_S}s",
                               "warm fewer sizes, lower max_images or compile_budget_per_shape_s",
                               ("cuda", "warmup_sizes"))
        return self

    @property
    def webrtc_ports(self) -> tuple[int, int] | None:
        """The WebRTC media range (first, last), inclusive; None when off."""
        if not self.webrtc_port_count:
            return None
        return self.webrtc_first_port, self.webrtc_first_port + self.webrtc_port_count - 1

    @property
    def image_reference_is_digest(self) -> bool:
        return self.image_tag.startswith("sha256:")
