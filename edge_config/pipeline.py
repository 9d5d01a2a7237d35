"""ImagePipelineStack settings: what is built (targets, model, Neuron shapes), from where, and on which CodeBuild types."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edge_config.catalog import ARCHITECTURES, IMAGE_FLAVORS, Architecture, ImageFlavor
from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section, email_list

IMAGE_TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_OWNER_NAME_PATTERN = r"^[\w.-]+/[\w.-]+$"
# The pipeline's own tags: cache-<arch> and <revision>-<fingerprint>[-<arch>].
_PIPELINE_TAG_RE = re.compile(r"cache-.*|[A-Za-z0-9]{1,12}-[0-9a-f]{8}(-(amd64|arm64))?")


class BuildTarget(Section):
    """One (accelerator image flavor, CPU architecture) image the pipeline builds."""

    accelerator: Annotated[ImageFlavor, Hint(noun="image flavor")] = Field(
        description="Image flavor: `cuda`, `neuron` or `cpu`.")
    arch: Annotated[Architecture, Hint(noun="architecture")] = Field(description="CPU architecture of the image.")

    @model_validator(mode="after")
    def _neuron_is_x86(self) -> "BuildTarget":
        if self.accelerator == "neuron" and self.arch != "amd64":
            raise FieldProblem("Neuron (inf2) instances are x86 only", "use arch \"amd64\" for neuron", ("arch",))
        return self


class NeuronCompileConfig(Section):
    """Static shapes the Neuron graph is compiled for (Neuron needs them fixed at compile time)."""

    height: int = Field(512, ge=64, le=2048, description="Image height in pixels (a multiple of 8).")
    width: int = Field(512, ge=64, le=2048, description="Image width in pixels (a multiple of 8).")
    batch_size: int = Field(1, ge=1, le=8, description="Images per compiled batch.")
    dtype: Annotated[Literal["bf16", "fp32"], Hint(noun="dtype")] = Field("bf16", description="Compute dtype.")

    @field_validator("height", "width")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise FieldProblem(f"{value} is not a multiple of 8", "the VAE downsamples by 8; use e.g. 512 or 768")
        return value


# Only images a node can run: every NVIDIA family the config accepts is x86 (g5g's T4G has no kernels in the arm64
# torch build, see edge_config/network.py), so there is no cuda arm64 image. The cpu image keeps arm64 for local runs
# on arm64 machines (and Graviton test clusters); no NodePool schedules it.
_DEFAULT_TARGETS = tuple(BuildTarget(accelerator=acc, arch=arch) for acc, arch in (
    ("cuda", "amd64"), ("neuron", "amd64"), ("cpu", "amd64"), ("cpu", "arm64")))
# CodeBuild compute types that fit the image builds (LINUX_CONTAINER and ARM_CONTAINER both offer them).
BuildComputeType = Literal["BUILD_GENERAL1_LARGE", "BUILD_GENERAL1_XLARGE"]
# The Neuron compile runs on x86 only; the largest types have the memory a UNet compile needs.
NeuronComputeType = Literal["BUILD_GENERAL1_XLARGE", "BUILD_GENERAL1_2XLARGE"]


class PipelineConfig(Section):
    """ImagePipelineStack settings."""

    repository_prefix: Annotated[str, Hint("use lowercase letters, digits, '.', '_', '-' and '/' (ECR repository "
                                           "naming rules), at most 240 characters")] = Field(
        "edge-diffusion", max_length=240, pattern=r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$",
        description="ECR repositories are named `<prefix>-<flavor>`.")
    image_tag_moving: Annotated[str, Hint("use a Docker tag: letters, digits, '_', '.', '-' (max 128)")] = Field(
        "latest", pattern=IMAGE_TAG_PATTERN, description="Tag moved to each new build's index (besides its "
                                                         "immutable `<revision>-<fingerprint>` tag).")
    model_id: Annotated[str, Hint("give a Hugging Face model id like stabilityai/sd-turbo")] = Field(
        "stabilityai/sd-turbo", pattern=_OWNER_NAME_PATTERN, description="Hugging Face model baked into the images.")
    model_revision: str = Field("main", min_length=1, description="Model revision (branch, tag or commit).")
    targets: Annotated[tuple[BuildTarget, ...], Hint("list at least one {accelerator, arch} target")] = Field(
        _DEFAULT_TARGETS, min_length=1, description="Images to build, one per (flavor, architecture).")
    source: Annotated[Literal["s3", "codeconnections"], Hint(noun="source")] = Field(
        "s3", description="Where the pipeline takes the source: an S3 zip, or a CodeConnections repository.")
    connection_arn: Annotated[str | None, Hint("give the ARN of an AVAILABLE CodeConnections connection")] = Field(
        None, pattern=r"^arn:aws[a-z-]*:(codeconnections|codestar-connections):[a-z0-9-]+:\d{12}:connection/"
                      r"[0-9a-f-]{36}$", description="CodeConnections connection (required for that source).")
    repository: Annotated[str | None, Hint("write it as owner/name")] = Field(
        None, pattern=_OWNER_NAME_PATTERN, description="`owner/name` of the source repository (codeconnections).")
    branch: str = Field("main", min_length=1, description="Branch the pipeline follows (codeconnections).")
    neuron_compile: NeuronCompileConfig = Field(default_factory=NeuronCompileConfig,
                                                description="Static shapes of the Neuron compile.")
    notification_emails: tuple[str, ...] = Field((), description="Addresses notified of failed pipeline runs.")
    model_source: Annotated[Literal["hf", "s3"], Hint(noun="model source")] = Field(
        "hf", description="`hf` (Hugging Face Hub) or `s3` (a diffusers directory under `model_s3_uri`).")
    model_s3_uri: Annotated[str | None, Hint("write it as s3://bucket/prefix/ (a diffusers directory with "
                                             "model_index.json)")] = Field(
        None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+$",
        description="Diffusers directory for model_source `s3`.")
    hf_token_secret_name: Annotated[str | None, Hint("give the Secrets Manager secret name (not its value) holding "
                                                     "the Hugging Face token")] = Field(
        None, pattern=r"^[A-Za-z0-9/_+=.@-]{1,512}$",
        description="Secrets Manager secret holding a Hugging Face token, for gated models.")
    keep_images: int = Field(60, ge=3, le=1000, description="Image indexes kept per repository.")
    build_compute_type: Annotated[BuildComputeType, Hint(
        noun="build compute type", fix="use BUILD_GENERAL1_LARGE or BUILD_GENERAL1_XLARGE (smaller types lack the "
                                       "disk and memory for ~15 GB images)")] = Field(
        "BUILD_GENERAL1_LARGE", description="CodeBuild compute type of the image builds.")
    neuron_compute_type: Annotated[NeuronComputeType, Hint(
        noun="Neuron compute type", fix="use BUILD_GENERAL1_XLARGE or BUILD_GENERAL1_2XLARGE (the Neuron compile "
                                        "of a UNet needs tens of GB of memory)")] = Field(
        "BUILD_GENERAL1_2XLARGE", description="CodeBuild compute type of the Neuron compile.")

    @field_validator("image_tag_moving")
    @classmethod
    def _not_a_pipeline_tag(cls, tag: str) -> str:
        if _PIPELINE_TAG_RE.fullmatch(tag):
            raise FieldProblem(f"{tag!r} collides with the pipeline's cache-<arch> or <revision>-<fingerprint> tags",
                               "pick a name like \"latest\" or \"stable\"")
        return tag

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, targets: tuple[BuildTarget, ...]) -> tuple[BuildTarget, ...]:
        for i, target in enumerate(targets):
            if target in targets[:i]:
                raise FieldProblem(f"duplicate target {target.accelerator}/{target.arch}", "list each target once",
                                   (i,))
        return targets

    @field_validator("notification_emails")
    @classmethod
    def _emails(cls, emails: tuple[str, ...]) -> tuple[str, ...]:
        return email_list(emails)

    @model_validator(mode="after")
    def _sources_complete(self) -> "PipelineConfig":
        if self.source == "codeconnections":
            for key in ("connection_arn", "repository"):
                if getattr(self, key) is None:
                    raise FieldProblem("required when source is \"codeconnections\"", "set it, or use source \"s3\"",
                                       (key,))
        if self.model_source == "s3" and self.model_s3_uri is None:
            raise FieldProblem("required when model_source is \"s3\"",
                               "set it to s3://bucket/prefix/, or use model_source \"hf\"", ("model_s3_uri",))
        if self.model_source == "hf" and self.model_s3_uri is not None:
            raise FieldProblem("is set but model_source is \"hf\", so it would be ignored",
                               "set model_source to \"s3\" or remove model_s3_uri", ("model_s3_uri",))
        return self

    def repository_name(self, flavor: str) -> str:
        return f"{self.repository_prefix}-{flavor}"

    @property
    def flavors(self) -> tuple[str, ...]:
        """Image flavors with at least one target, in IMAGE_FLAVORS order."""
        return tuple(f for f in IMAGE_FLAVORS if any(t.accelerator == f for t in self.targets))

    def architectures(self, flavor: str) -> tuple[str, ...]:
        return tuple(a for a in ARCHITECTURES if any(t.accelerator == flavor and t.arch == a for t in self.targets))

    @property
    def build_fingerprint(self) -> str:
        """8 hex chars naming the model and compile settings baked into an image (part of every image tag)."""
        compile_ = self.neuron_compile
        settings = {
            "model_source": self.model_source,
            "model_id": self.model_id,
            "model_revision": self.model_revision,
            "model_s3_uri": self.model_s3_uri,
            "neuron_compile": [compile_.height, compile_.width, compile_.batch_size, compile_.dtype],
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
