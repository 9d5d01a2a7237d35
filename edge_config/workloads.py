"""Inference workload settings: image, NodePort, replicas and autoscaling, timeouts and pod resources."""
from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section
from edge_config.pipeline import IMAGE_TAG_PATTERN

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Kubernetes resource quantities as written in manifests: "3", "2500m", "12Gi", "4G".
_BYTES_FACTOR = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _bytes(quantity: str) -> int:
    number = re.match(r"^\d+", quantity).group(0)  # type: ignore[union-attr]
    return int(number) * _BYTES_FACTOR[quantity[len(number):]]


class WorkloadsConfig(Section):
    """Inference workload settings.

    Timing invariants that keep scale-down and node drains from cutting off work: every accepted request
    ends (200 or 504) within ``request_timeout_s``, so a drain of ``drain_timeout_s >= request_timeout_s``
    finishes it; the pod's grace period is derived from ``prestop_sleep_s + drain_timeout_s`` plus a margin.
    """

    image_tag: str = Field("latest", description="Image tag the Deployment runs, or a `sha256:` digest to pin it.")
    node_port: int = Field(30080, ge=30000, le=32767, description="NodePort devices call on the nodes' public IPs.")
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
    cpu: Annotated[str, Hint("give a CPU quantity like \"3\" or \"3500m\" (requests = limits, per pod)")] = Field(
        "3", pattern=r"^(\d+m|\d+(\.\d{1,3})?)$", description="CPU per pod as a Kubernetes quantity in cores or "
                                                               "millicores (`3`, `3500m`); requests = limits.")
    memory: Annotated[str, Hint("give a memory quantity like \"12Gi\" (requests = limits, per pod)")] = Field(
        "12Gi", pattern=r"^\d+(Ki|Mi|Gi|Ti|k|M|G|T)?$", description="Memory per pod as a Kubernetes quantity "
                                                                    "with its unit (`12Gi`); requests = limits.")
    ephemeral_storage: Annotated[str, Hint("give a storage quantity like \"4Gi\" (the /tmp emptyDir size)")] = (
        Field("4Gi", pattern=r"^\d+(Ki|Mi|Gi|Ti|k|M|G|T)?$",
              description="Size of the /tmp emptyDir as a Kubernetes quantity with its unit (`4Gi`)."))
    # Spares trade idle GPU hours for scale-outs that skip node launch and image pull (docs/cold-start.md).
    warm_spare_nodes: int = Field(0, ge=0, le=20, description="Nodes per Local Zone accelerator kept booted with "
                                  "the image pulled by placeholder pods that any inference pod preempts (0: off).")

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

    @field_validator("cpu")
    @classmethod
    def _one_cpu(cls, cpu: str) -> str:
        if (float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)) < 1:
            raise FieldProblem(f"{cpu} is less than one CPU",
                               "give at least \"1\": decoding and image encoding run on the CPU")
        return cpu

    @field_validator("memory")
    @classmethod
    def _enough_memory(cls, memory: str) -> str:
        if _bytes(memory) < 4 * 2**30:
            raise FieldProblem(f"{memory} is below 4Gi",
                               "give at least \"4Gi\": the SD 2.x weights alone take several GiB while loading")
        return memory

    @field_validator("ephemeral_storage")
    @classmethod
    def _enough_storage(cls, storage: str) -> str:
        if _bytes(storage) < 2**30:
            raise FieldProblem(f"{storage} is below 1Gi", "give at least \"1Gi\" for /tmp (Hugging Face and "
                                                          "compiler caches)")
        return storage

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
        return self

    @property
    def image_reference_is_digest(self) -> bool:
        return self.image_tag.startswith("sha256:")
