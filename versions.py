"""Every pinned third-party version of the app, in one place.

Bump deliberately, together with the pieces that depend on each other: the Kubernetes minor drives the
kubectl Lambda layer (`aws-cdk.lambda-layer-kubectl-v35`), `cdk8s-plus-35` and the EKS add-on builds below;
Karpenter's chart must match the vendored CRDs in `schemas/crds/`. Before a real deploy, confirm the add-on
builds are still offered: `aws eks describe-addon-versions --kubernetes-version 1.35 --addon-name <name>`.
"""
from __future__ import annotations

# The newest minor that aws_eks_v2, the kubectl layer, Karpenter 1.14 and cdk8s-plus all support.
KUBERNETES_VERSION = "1.35"

# Karpenter (OCI chart oci://public.ecr.aws/karpenter/karpenter; its CRDs are vendored at the same version).
KARPENTER_CHART_REPOSITORY = "oci://public.ecr.aws/karpenter/karpenter"
KARPENTER_VERSION = "1.14.1"
# EKS-optimized AL2023 release pinned by alias: Karpenter picks the standard, NVIDIA or Neuron variant of this
# exact release per instance type; "@latest" would roll every node on each weekly AMI release.
KARPENTER_AMI_ALIAS = "al2023@v20260709"

# EKS managed add-ons (builds offered for Kubernetes 1.35).
ADDON_VERSIONS: dict[str, str] = {
    "vpc-cni": "v1.22.4-eksbuild.3",
    "coredns": "v1.13.2-eksbuild.21",
    "kube-proxy": "v1.35.3-eksbuild.18",
    "eks-pod-identity-agent": "v1.3.10-eksbuild.3",
    "amazon-cloudwatch-observability": "v4.6.0-eksbuild.1",
}

# Helm charts: (repository, chart, version).
METRICS_SERVER_CHART = ("https://kubernetes-sigs.github.io/metrics-server/", "metrics-server", "3.13.0")
NVIDIA_DEVICE_PLUGIN_CHART = ("https://nvidia.github.io/k8s-device-plugin", "nvidia-device-plugin", "0.18.0")
NEURON_CHART = ("oci://public.ecr.aws/neuron/neuron-helm-chart", "neuron-helm-chart", "1.5.0")
VOLCANO_CHART = ("https://volcano-sh.github.io/helm-charts", "volcano", "1.15.1")
KEDA_CHART = ("https://kedacore.github.io/charts", "keda", "2.20.2")
# Spegel: the in-zone peer-to-peer image mirror (edge_constructs/peer_image_mirror.py, docs/cold-start.md). The
# release publishes the chart as 0.7.4 (app v0.7.4); default values and template keys are vendored in
# schemas/helm-values/spegel-0.7.4/. For an OCI chart the handler pulls `repository` and installs `chart`.
SPEGEL_CHART = ("oci://ghcr.io/spegel-org/helm-charts/spegel", "spegel", "0.7.4")
# cert-manager issues the device port's certificates (edge.tls). Upstream spells the chart version with a "v";
# its CRDs (installed by the chart) and default values/schema are vendored at this tag (schemas/crds/,
# schemas/helm-values/cert-manager-v1.21.1/).
CERT_MANAGER_CHART = ("https://charts.jetstack.io", "cert-manager", "v1.21.1")
# external-dns publishes per-node names for edge.tls.mode "acme". It runs as one plain Deployment (a single
# container configured by flags, no CRDs), so the whole object set is rendered and schema-checked here.
EXTERNAL_DNS_IMAGE = "registry.k8s.io/external-dns/external-dns:v0.20.0"
# The serving-metrics collector (charts/metrics_collector.py): the upstream contrib distribution, which carries the
# prometheus receiver, the transform processor and the awsemf exporter together (the ADOT distribution lacks the
# transform processor), from GitHub's registry so system nodes never meet Docker Hub's anonymous pull limit.
OTEL_COLLECTOR_IMAGE = "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib:0.148.0"

# Vendored CRD schemas (schemas/crds/) and the upstream release each came from.
CRD_SOURCES: dict[str, tuple[str, str]] = {
    "karpenter.sh_nodepools.yaml": ("aws/karpenter-provider-aws", "v1.14.1"),
    "karpenter.k8s.aws_ec2nodeclasses.yaml": ("aws/karpenter-provider-aws", "v1.14.1"),
    "keda.sh_scaledobjects.yaml": ("kedacore/keda", "v2.20.2"),
    "keda.sh_triggerauthentications.yaml": ("kedacore/keda", "v2.20.2"),
    "batch.volcano.sh_jobs.yaml": ("volcano-sh/volcano", "v1.15.1"),
    "scheduling.volcano.sh_queues.yaml": ("volcano-sh/volcano", "v1.15.1"),
    "scheduling.volcano.sh_podgroups.yaml": ("volcano-sh/volcano", "v1.15.1"),
    "cert-manager.io_certificates.yaml": ("cert-manager/cert-manager", "v1.21.1"),
    "cert-manager.io_clusterissuers.yaml": ("cert-manager/cert-manager", "v1.21.1"),
}

# ---------------------------------------------------------------- image pipeline (ImagePipelineStack)
# The pinned inputs of serving/Dockerfile. The Dockerfile's ARG defaults are what a build uses (also a local
# `docker buildx bake`); this copy makes them reviewable next to the other pins, and
# tests/buildspecs/test_dockerfile.py fails when the two drift. The Neuron DLC (SDK 2.26.1: torch-neuronx
# 2.8, neuronx-cc 2.21) and optimum-neuron 0.4.5 are a matched pair: bump them together.
IMAGE_BUILD_VERSIONS: dict[str, str] = {
    "PYTHON_IMAGE": "public.ecr.aws/docker/library/python:3.11.14-slim-bookworm",
    "NEURON_IMAGE": "public.ecr.aws/neuron/pytorch-inference-neuronx:2.8.0-neuronx-py311-sdk2.26.1-ubuntu22.04",
    "TORCH_VERSION": "2.13.0",
    "TORCHVISION_VERSION": "0.28.0",  # cuda image only (stream frames' nvJPEG codec); requires torch==2.13.0
    "TORCH_CUDA_INDEX": "https://download.pytorch.org/whl/cu130",
    "TORCH_CPU_INDEX": "https://download.pytorch.org/whl/cpu",
    "OPTIMUM_NEURON_VERSION": "0.4.5",
    "HUGGINGFACE_HUB_VERSION": "2.4.0",
    "AWSCLI_VERSION": "1.46.2",
}
# CUDA compute capabilities the pinned torch cu130 wheels carry kernels for, per CPU architecture. Source:
# pytorch/pytorch `.ci/manywheel/build_cuda.sh`, the script that builds the published wheels: case 13.0 sets
# TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;9.0;10.0;$(aarch64: "11.0;")12.0+PTX", then `filter_aarch64_archs` removes
# everything below 8.0 and 8.6 on aarch64. Re-read it at the tag of every TORCH_VERSION bump.
TORCH_CUDA_ARCHS: dict[str, tuple[str, ...]] = {
    "amd64": ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0+PTX"),
    "arm64": ("8.0", "9.0", "10.0", "11.0", "12.0+PTX"),
}
# The NVIDIA GPU of each instance family the config can name, with its compute capability (AWS accelerated
# computing instance pages; NVIDIA's CUDA GPU compute capability table).
NVIDIA_FAMILY_GPUS: dict[str, tuple[str, str]] = {
    "g4dn": ("T4", "7.5"),
    "g5": ("A10G", "8.6"),
    "g5g": ("T4G", "7.5"),
    "g6": ("L4", "8.9"),
    "g6e": ("L40S", "8.9"),
    "gr6": ("L4", "8.9"),
}


def torch_cuda_drives(capability: str, arch: str) -> bool:
    """Whether the pinned torch build for `arch` runs kernels on a GPU of compute capability `capability`.

    CUDA binary compatibility: SASS built for sm_XY runs on sm_XZ with Z >= Y (same major); PTX ("+PTX") is
    JIT-compiled for any newer capability.
    """
    major, minor = (int(p) for p in capability.split("."))
    for entry in TORCH_CUDA_ARCHS[arch]:
        built = entry.removesuffix("+PTX")
        b_major, b_minor = (int(p) for p in built.split("."))
        if b_major == major and b_minor <= minor:
            return True
        if entry.endswith("+PTX") and (major, minor) >= (b_major, b_minor):
            return True
    return False


# BuildKit daemon of the docker-container builder the buildspecs create (needed for the registry cache), from
# the ECR Public mirror of Docker Hub's moby/buildkit (the `vend` namespace), so CodeBuild's shared IPs never hit
# Docker Hub's anonymous pull limit. Its built-in Dockerfile frontend parses serving/Dockerfile (no `# syntax=`).
BUILDKIT_IMAGE = "public.ecr.aws/vend/moby/buildkit:v0.25.1"
# CodeBuild images: Docker with the buildx plugin, native per architecture.
CODEBUILD_IMAGE_AMD64 = "aws/codebuild/amazonlinux-x86_64-standard:6.0"
CODEBUILD_IMAGE_ARM64 = "aws/codebuild/amazonlinux-aarch64-standard:4.0"
