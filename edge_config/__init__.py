"""Typed, validated configuration for the edge-diffusion CDK app (pydantic models, frozen, unknown keys rejected).

`cdk.json` holds the whole default config under the context key ``edge``. Any context key
``edge.<dotted.path>`` overrides one field (``-c edge.workloads.node_port=30090``,
``-c edge.local_zones.0.name=us-west-2-den-1a``); values are JSON-parsed when they parse, otherwise
taken as strings. Every error names the full field path and says how to fix it, so a bad config fails
at synth instead of half-way through a CloudFormation deploy. The field reference in docs/cluster.md and
schemas/edge-config.schema.json are generated from these models (`make schema`).
"""
from edge_config.app_config import EdgeConfig
from edge_config.catalog import (
    ACCELERATOR_FAMILIES,
    ACCELERATORS,
    ARCHITECTURES,
    ARM64_FAMILIES,
    FAMILY_ACCELERATOR,
    IMAGE_FLAVORS,
)
from edge_config.context import load_config, merge_context
from edge_config.cuda_path import CompileCacheConfig, CudaPathConfig
from edge_config.errors import CONTEXT_KEY, ConfigError
from edge_config.image_cache import NodeImageCacheConfig
from edge_config.network import (
    REGION_PRIVATE_SUBNET_MASK,
    REGION_PUBLIC_SUBNET_MASK,
    LocalZoneConfig,
    NodePoolLimits,
    SystemNodesConfig,
    region_subnet_cidrs,
)
from edge_config.observability import LATENCY_BUCKET_BOUNDS, ObservabilityConfig
from edge_config.pipeline import BuildTarget, NeuronCompileConfig, PipelineConfig
from edge_config.tls import AcmeConfig, TLSConfig
from edge_config.workloads import WorkloadsConfig

__all__ = [
    "ACCELERATORS", "ACCELERATOR_FAMILIES", "ARCHITECTURES", "ARM64_FAMILIES", "CONTEXT_KEY", "FAMILY_ACCELERATOR",
    "IMAGE_FLAVORS", "AcmeConfig", "TLSConfig", "REGION_PRIVATE_SUBNET_MASK", "REGION_PUBLIC_SUBNET_MASK", "BuildTarget", "CompileCacheConfig", "ConfigError", "CudaPathConfig",
    "EdgeConfig", "LocalZoneConfig", "NeuronCompileConfig", "NodeImageCacheConfig", "NodePoolLimits", "ObservabilityConfig", "LATENCY_BUCKET_BOUNDS", "PipelineConfig",
    "SystemNodesConfig",
    "WorkloadsConfig", "load_config", "merge_context", "region_subnet_cidrs",
]
