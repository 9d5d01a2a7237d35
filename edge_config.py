"""Typed, validated configuration for the edge-diffusion CDK app.

`cdk.json` holds the whole default config under the context key ``edge``. Any context key
``edge.<dotted.path>`` overrides one field (``-c edge.workloads.node_port=30090``,
``-c edge.local_zones.0.name=us-west-2-den-1a``); values are JSON-parsed when they parse, otherwise
taken as strings. Every error names the full field path and says how to fix it, so a bad config fails
at synth instead of half-way through a CloudFormation deploy.
"""
from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import versions

CONTEXT_KEY = "edge"

ACCELERATORS = ("nvidia", "neuron")
# Instance families each accelerator can schedule on; a Local Zone may list any of them.
ACCELERATOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "nvidia": ("g4dn", "g5", "g5g", "g6", "g6e", "gr6"),
    "neuron": ("inf2",),
}
FAMILY_ACCELERATOR = {fam: acc for acc, fams in ACCELERATOR_FAMILIES.items() for fam in fams}
ARM64_FAMILIES = frozenset({"g5g"})
IMAGE_FLAVORS = ("cuda", "neuron", "cpu")
ARCHITECTURES = ("amd64", "arm64")

_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_IAM_PRINCIPAL_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
_CONNECTION_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:(codeconnections|codestar-connections):[a-z0-9-]+:\d{12}:connection/[0-9a-f-]{36}$"
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_REPO_PREFIX_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CLUSTER_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field path and the fix."""


# ---------------------------------------------------------------- parsing helpers


def _fail(path: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {problem}. Fix: {fix}")


def _mapping(data: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected a JSON object, got {type(data).__name__} {data!r}", "give an object {...}")
    return data


def _check_keys(data: Mapping[str, Any], path: str, allowed: Sequence[str], required: Sequence[str] = ()) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _fail(
            f"{path}.{unknown[0]}",
            "unknown field (typo?)",
            f"remove it or use one of: {', '.join(sorted(allowed))}",
        )
    for key in required:
        if key not in data:
            raise _fail(f"{path}.{key}", "required field is missing", "add it to the config")


def _str(data: Mapping[str, Any], key: str, path: str, default: Any = ..., *, pattern: re.Pattern | None = None,
         hint: str = "") -> Any:
    p = f"{path}.{key}"
    if key not in data:
        if default is ...:
            raise _fail(p, "required field is missing", "add it to the config")
        return default
    value = data[key]
    if value is None and default is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(p, f"expected a non-empty string, got {value!r}", hint or "give a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise _fail(p, f"{value!r} is not valid", hint or f"match {pattern.pattern}")
    return value


def _int(data: Mapping[str, Any], key: str, path: str, default: int, *, minimum: int, maximum: int) -> int:
    p = f"{path}.{key}"
    value = data.get(key, default)
    if isinstance(value, _NumberText):
        value = value.number
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(p, f"expected an integer, got {value!r}", f"give a whole number between {minimum} and {maximum}")
    if not minimum <= value <= maximum:
        raise _fail(p, f"{value} is out of range", f"give a whole number between {minimum} and {maximum}")
    return value


def _bool(data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise _fail(f"{path}.{key}", f"expected true or false, got {value!r}", "give a JSON boolean (true/false)")
    return value


def _list(data: Mapping[str, Any], key: str, path: str, default: Any) -> list:
    value = data.get(key, default)
    if not isinstance(value, list):
        raise _fail(f"{path}.{key}", f"expected a JSON list, got {value!r}", "give a list [...]")
    return value


def _str_list(data: Mapping[str, Any], key: str, path: str, default: Any, *, allow_empty: bool = False,
              check: Callable[[str, str], Any] | None = None) -> tuple[str, ...]:
    items = _list(data, key, path, default)
    if not items and not allow_empty:
        raise _fail(f"{path}.{key}", "must not be empty", "list at least one value")
    seen: set[str] = set()
    for i, item in enumerate(items):
        p = f"{path}.{key}[{i}]"
        if not isinstance(item, str) or not item:
            raise _fail(p, f"expected a non-empty string, got {item!r}", "give a string")
        if item in seen:
            raise _fail(p, f"duplicate value {item!r}", "list each value once")
        seen.add(item)
        if check:
            check(item, p)
    return tuple(items)


def _network(value: Any, path: str) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise _fail(path, f"expected an IPv4 CIDR string, got {value!r}", "write it like \"203.0.113.0/24\"")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise _fail(path, f"{value!r} is not a valid CIDR ({exc})",
                    "write the network address with its prefix, e.g. \"203.0.113.0/24\"") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise _fail(path, f"{value!r} is IPv6; the cluster is IPv4-only", "give an IPv4 CIDR")
    return net


def _no_overlaps(named: Sequence[tuple[str, ipaddress.IPv4Network]]) -> None:
    for i, (path_a, net_a) in enumerate(named):
        for path_b, net_b in named[i + 1:]:
            if net_a.overlaps(net_b):
                raise _fail(path_b, f"{net_b} overlaps {net_a} ({path_a})",
                            "choose non-overlapping CIDR blocks")


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class LocalZoneConfig:
    """One AWS Local Zone: its public subnet and the accelerator families it offers."""

    name: str
    subnet_cidr: str
    instance_families: tuple[str, ...]
    # Most Local Zones only offer gp2; nodes there get gp2 root volumes unless this is set.
    gp3_available: bool = False
    # Optional private subnet whose egress goes through the parent-region NAT (for components that must not
    # have public IPs); Karpenter never uses it, since devices reach inference nodes on their public IPs.
    private_subnet_cidr: str | None = None

    @property
    def accelerators(self) -> tuple[str, ...]:
        return tuple(a for a in ACCELERATORS if any(FAMILY_ACCELERATOR[f] == a for f in self.instance_families))

    def families_for(self, accelerator: str) -> tuple[str, ...]:
        return tuple(f for f in self.instance_families if FAMILY_ACCELERATOR[f] == accelerator)

    @classmethod
    def from_dict(cls, data: Any, path: str, region: str) -> "LocalZoneConfig":
        data = _mapping(data, path)
        _check_keys(data, path, ("name", "subnet_cidr", "private_subnet_cidr", "instance_families", "gp3_available"),
                    ("name", "subnet_cidr", "instance_families"))
        name = _str(data, "name", path)
        lz_re = re.compile(rf"^{re.escape(region)}-[a-z]+-\d+[a-z]$")
        if not lz_re.match(name):
            raise _fail(
                f"{path}.name",
                f"{name!r} is not a Local Zone of region {region}",
                f"use a Local Zone id of {region} like \"{region}-lax-1a\" (see `aws ec2 describe-availability-zones "
                f"--region {region} --all-availability-zones --filters Name=zone-type,Values=local-zone`), "
                "or change edge.region",
            )

        def family(item: str, p: str) -> None:
            if item not in FAMILY_ACCELERATOR:
                raise _fail(p, f"unknown accelerator instance family {item!r}",
                            f"use one of: {', '.join(sorted(FAMILY_ACCELERATOR))}")

        families = _str_list(data, "instance_families", path, ..., check=family)
        _network(data["subnet_cidr"], f"{path}.subnet_cidr")
        private = data.get("private_subnet_cidr")
        if private is not None:
            _network(private, f"{path}.private_subnet_cidr")
        return cls(
            name=name,
            subnet_cidr=data["subnet_cidr"],
            instance_families=families,
            gp3_available=_bool(data, "gp3_available", path, False),
            private_subnet_cidr=private,
        )


@dataclass(frozen=True)
class NodePoolLimits:
    """Upper bound Karpenter may provision for one accelerator's pools."""

    cpu: int
    memory_gib: int
    devices: int

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "NodePoolLimits":
        data = _mapping(data, path)
        _check_keys(data, path, ("cpu", "memory_gib", "devices"))
        return cls(
            cpu=_int(data, "cpu", path, 192, minimum=4, maximum=100_000),
            memory_gib=_int(data, "memory_gib", path, 768, minimum=16, maximum=1_000_000),
            devices=_int(data, "devices", path, 8, minimum=1, maximum=10_000),
        )


@dataclass(frozen=True)
class SystemNodesConfig:
    """The small Graviton managed node group that runs Karpenter and cluster add-ons."""

    instance_types: tuple[str, ...] = ("m7g.large",)
    min_size: int = 2
    desired_size: int = 2
    max_size: int = 3

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "SystemNodesConfig":
        data = _mapping(data, path)
        _check_keys(data, path, ("instance_types", "min_size", "desired_size", "max_size"))

        def graviton(item: str, p: str) -> None:
            if not _INSTANCE_TYPE_RE.match(item):
                raise _fail(p, f"{item!r} is not an EC2 instance type", "write it like \"m7g.large\"")
            family = item.split(".")[0]
            # Graviton families carry a 'g' right after the generation digit (m7g, c8g, t4g, r7gd).
            if not re.match(r"^[a-z]+\d+g[a-z]*$", family):
                raise _fail(p, f"{item!r} is not a Graviton (arm64) instance type",
                            "the system node group is arm64-only; use e.g. m7g.large or c7g.xlarge")

        types = _str_list(data, "instance_types", path, list(cls.instance_types), check=graviton)
        min_size = _int(data, "min_size", path, cls.min_size, minimum=1, maximum=20)
        desired = _int(data, "desired_size", path, cls.desired_size, minimum=1, maximum=20)
        max_size = _int(data, "max_size", path, cls.max_size, minimum=1, maximum=20)
        if min_size < 2:
            # Karpenter runs two replicas that must land on different system nodes, and the deploy waits for both.
            raise _fail(f"{path}.min_size", f"{min_size} system node cannot host Karpenter's two replicas "
                        "(required anti-affinity), so the deploy would time out", "use min_size >= 2")
        if not min_size <= desired <= max_size:
            raise _fail(f"{path}.desired_size", f"need min_size <= desired_size <= max_size, got "
                        f"{min_size} <= {desired} <= {max_size}", "adjust the three sizes")
        return cls(instance_types=types, min_size=min_size, desired_size=desired, max_size=max_size)


@dataclass(frozen=True)
class BuildTarget:
    """One (accelerator image flavor, CPU architecture) image the pipeline builds."""

    accelerator: str
    arch: str


@dataclass(frozen=True)
class NeuronCompileConfig:
    """Static shapes the Neuron graph is compiled for (Neuron needs them fixed at compile time)."""

    height: int = 512
    width: int = 512
    batch_size: int = 1
    dtype: str = "bf16"

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "NeuronCompileConfig":
        data = _mapping(data, path)
        _check_keys(data, path, ("height", "width", "batch_size", "dtype"))
        height = _int(data, "height", path, cls.height, minimum=64, maximum=2048)
        width = _int(data, "width", path, cls.width, minimum=64, maximum=2048)
        for key, value in (("height", height), ("width", width)):
            if value % 8:
                raise _fail(f"{path}.{key}", f"{value} is not a multiple of 8",
                            "the VAE downsamples by 8; use e.g. 512 or 768")
        dtype = _str(data, "dtype", path, cls.dtype)
        if dtype not in ("bf16", "fp32"):
            raise _fail(f"{path}.dtype", f"unsupported dtype {dtype!r}", "use \"bf16\" or \"fp32\"")
        return cls(height=height, width=width,
                   batch_size=_int(data, "batch_size", path, cls.batch_size, minimum=1, maximum=8), dtype=dtype)


_S3_URI_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+$")
_SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
# CodeBuild compute types that fit the image builds (LINUX_CONTAINER and ARM_CONTAINER both offer them).
_BUILD_COMPUTE_TYPES = ("BUILD_GENERAL1_LARGE", "BUILD_GENERAL1_XLARGE")
# The Neuron compile runs on x86 only; the largest types have the memory a UNet compile needs.
_NEURON_COMPUTE_TYPES = ("BUILD_GENERAL1_XLARGE", "BUILD_GENERAL1_2XLARGE")

_DEFAULT_TARGETS = (
    {"accelerator": "cuda", "arch": "amd64"},
    {"accelerator": "cuda", "arch": "arm64"},
    {"accelerator": "neuron", "arch": "amd64"},
    {"accelerator": "cpu", "arch": "amd64"},
    {"accelerator": "cpu", "arch": "arm64"},
)


@dataclass(frozen=True)
class PipelineConfig:
    """ImagePipelineStack settings (owned by the pipeline helper)."""

    repository_prefix: str = "edge-diffusion"
    image_tag_moving: str = "latest"
    model_id: str = "stabilityai/sd-turbo"
    model_revision: str = "main"
    targets: tuple[BuildTarget, ...] = tuple(BuildTarget(**t) for t in _DEFAULT_TARGETS)
    source: str = "s3"
    connection_arn: str | None = None
    repository: str | None = None
    branch: str = "main"
    neuron_compile: NeuronCompileConfig = field(default_factory=NeuronCompileConfig)
    notification_emails: tuple[str, ...] = ()
    model_source: str = "hf"
    model_s3_uri: str | None = None
    hf_token_secret_name: str | None = None
    keep_images: int = 60
    build_compute_type: str = "BUILD_GENERAL1_LARGE"
    neuron_compute_type: str = "BUILD_GENERAL1_2XLARGE"

    def repository_name(self, flavor: str) -> str:
        return f"{self.repository_prefix}-{flavor}"

    @property
    def flavors(self) -> tuple[str, ...]:
        """Image flavors with at least one target, in IMAGE_FLAVORS order."""
        return tuple(f for f in IMAGE_FLAVORS if any(t.accelerator == f for t in self.targets))

    def architectures(self, flavor: str) -> tuple[str, ...]:
        return tuple(a for a in ARCHITECTURES if BuildTarget(accelerator=flavor, arch=a) in self.targets)

    @property
    def build_fingerprint(self) -> str:
        """8 hex chars naming the model and compile settings baked into an image (part of every image tag)."""
        settings = {
            "model_source": self.model_source,
            "model_id": self.model_id,
            "model_revision": self.model_revision,
            "model_s3_uri": self.model_s3_uri,
            "neuron_compile": [self.neuron_compile.height, self.neuron_compile.width,
                               self.neuron_compile.batch_size, self.neuron_compile.dtype],
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "PipelineConfig":
        data = _mapping(data, path)
        _check_keys(data, path, ("repository_prefix", "image_tag_moving", "model_id", "model_revision", "targets",
                                 "source", "connection_arn", "repository", "branch", "neuron_compile",
                                 "notification_emails", "model_source", "model_s3_uri", "hf_token_secret_name",
                                 "keep_images", "build_compute_type", "neuron_compute_type"))
        prefix = _str(data, "repository_prefix", path, cls.repository_prefix, pattern=_REPO_PREFIX_RE,
                      hint="use lowercase letters, digits, '.', '_', '-' and '/' (ECR repository naming rules)")
        if len(prefix) > 240:
            raise _fail(f"{path}.repository_prefix", "too long", "keep ECR names under 256 characters")
        tag = _str(data, "image_tag_moving", path, cls.image_tag_moving, pattern=_IMAGE_TAG_RE,
                   hint="use a Docker tag: letters, digits, '_', '.', '-' (max 128)")
        if tag.startswith("cache-") or re.fullmatch(r"[A-Za-z0-9]{1,12}-[0-9a-f]{8}(-(amd64|arm64))?", tag):
            raise _fail(f"{path}.image_tag_moving", f"{tag!r} collides with the pipeline's cache-<arch> or "
                        "<revision>-<fingerprint> tags", "pick a name like \"latest\" or \"stable\"")
        targets_raw = _list(data, "targets", path, list(_DEFAULT_TARGETS))
        if not targets_raw:
            raise _fail(f"{path}.targets", "must not be empty", "list at least one {accelerator, arch} target")
        targets: list[BuildTarget] = []
        for i, item in enumerate(targets_raw):
            p = f"{path}.targets[{i}]"
            item = _mapping(item, p)
            _check_keys(item, p, ("accelerator", "arch"), ("accelerator", "arch"))
            acc, arch = item["accelerator"], item["arch"]
            if acc not in IMAGE_FLAVORS:
                raise _fail(f"{p}.accelerator", f"unknown image flavor {acc!r}", f"use one of: {', '.join(IMAGE_FLAVORS)}")
            if arch not in ARCHITECTURES:
                raise _fail(f"{p}.arch", f"unknown architecture {arch!r}", f"use one of: {', '.join(ARCHITECTURES)}")
            if acc == "neuron" and arch != "amd64":
                raise _fail(f"{p}.arch", "Neuron (inf2) instances are x86 only", "use arch \"amd64\" for neuron")
            target = BuildTarget(accelerator=acc, arch=arch)
            if target in targets:
                raise _fail(p, f"duplicate target {acc}/{arch}", "list each target once")
            targets.append(target)
        source = _str(data, "source", path, cls.source)
        if source not in ("s3", "codeconnections"):
            raise _fail(f"{path}.source", f"unknown source {source!r}", "use \"s3\" or \"codeconnections\"")
        connection_arn = _str(data, "connection_arn", path, None, pattern=_CONNECTION_ARN_RE,
                              hint="give the ARN of an AVAILABLE CodeConnections connection")
        repository = _str(data, "repository", path, None, pattern=re.compile(r"^[\w.-]+/[\w.-]+$"),
                          hint="write it as owner/name")
        if source == "codeconnections":
            for key, value in (("connection_arn", connection_arn), ("repository", repository)):
                if value is None:
                    raise _fail(f"{path}.{key}", "required when source is \"codeconnections\"",
                                "set it, or use source \"s3\"")
        def email(item: str, p: str) -> None:
            if not _EMAIL_RE.match(item):
                raise _fail(p, f"{item!r} is not an e-mail address", "give an address like ops@example.com")

        emails = _str_list(data, "notification_emails", path, [], allow_empty=True, check=email)
        model_source = _str(data, "model_source", path, cls.model_source)
        if model_source not in ("hf", "s3"):
            raise _fail(f"{path}.model_source", f"unknown model source {model_source!r}",
                        "use \"hf\" (Hugging Face Hub) or \"s3\" (a diffusers directory under model_s3_uri)")
        model_s3_uri = _str(data, "model_s3_uri", path, None, pattern=_S3_URI_RE,
                            hint="write it as s3://bucket/prefix/ (a diffusers directory with model_index.json)")
        if model_source == "s3" and model_s3_uri is None:
            raise _fail(f"{path}.model_s3_uri", "required when model_source is \"s3\"",
                        "set it to s3://bucket/prefix/, or use model_source \"hf\"")
        if model_source == "hf" and model_s3_uri is not None:
            raise _fail(f"{path}.model_s3_uri", "is set but model_source is \"hf\", so it would be ignored",
                        "set model_source to \"s3\" or remove model_s3_uri")
        build_compute = _str(data, "build_compute_type", path, cls.build_compute_type)
        if build_compute not in _BUILD_COMPUTE_TYPES:
            raise _fail(f"{path}.build_compute_type", f"{build_compute!r} is not allowed",
                        f"use one of {', '.join(_BUILD_COMPUTE_TYPES)} (smaller types lack the disk and memory "
                        "for ~15 GB images)")
        neuron_compute = _str(data, "neuron_compute_type", path, cls.neuron_compute_type)
        if neuron_compute not in _NEURON_COMPUTE_TYPES:
            raise _fail(f"{path}.neuron_compute_type", f"{neuron_compute!r} is not allowed",
                        f"use one of {', '.join(_NEURON_COMPUTE_TYPES)} (the Neuron compile of a UNet needs "
                        "tens of GB of memory)")
        return cls(
            model_source=model_source,
            model_s3_uri=model_s3_uri,
            hf_token_secret_name=_str(data, "hf_token_secret_name", path, None, pattern=_SECRET_NAME_RE,
                                      hint="give the Secrets Manager secret name (not its value) holding the "
                                           "Hugging Face token"),
            keep_images=_int(data, "keep_images", path, cls.keep_images, minimum=3, maximum=1000),
            build_compute_type=build_compute,
            neuron_compute_type=neuron_compute,
            repository_prefix=prefix,
            image_tag_moving=tag,
            model_id=_str(data, "model_id", path, cls.model_id, pattern=re.compile(r"^[\w.-]+/[\w.-]+$"),
                          hint="give a Hugging Face model id like stabilityai/sd-turbo"),
            model_revision=_str(data, "model_revision", path, cls.model_revision),
            targets=tuple(targets),
            source=source,
            connection_arn=connection_arn,
            repository=repository,
            branch=_str(data, "branch", path, cls.branch),
            neuron_compile=NeuronCompileConfig.from_dict(data.get("neuron_compile", {}), f"{path}.neuron_compile"),
            notification_emails=emails,
        )


_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Kubernetes resource quantities as written in manifests: "3", "2500m", "12Gi", "4G".
_CPU_RE = re.compile(r"^(\d+m|\d+(\.\d{1,3})?)$")
_BYTES_RE = re.compile(r"^\d+(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_BYTES_FACTOR = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _bytes(quantity: str) -> int:
    number = re.match(r"^\d+", quantity).group(0)  # type: ignore[union-attr]
    return int(number) * _BYTES_FACTOR[quantity[len(number):]]


@dataclass(frozen=True)
class WorkloadsConfig:
    """Inference workload settings (owned by the workloads helper).

    Timing invariants that keep scale-down and node drains from cutting off work: every accepted request
    ends (200 or 504) within ``request_timeout_s``, so a drain of ``drain_timeout_s >= request_timeout_s``
    finishes it; the pod's grace period is derived from ``prestop_sleep_s + drain_timeout_s`` plus a margin.
    """

    image_tag: str = "latest"
    node_port: int = 30080
    namespace: str = "edge-diffusion"
    min_replicas: int = 1
    max_replicas: int = 4
    target_load: float = 1.0
    scale_down_stabilization_s: int = 300
    model_load_timeout_s: int = 600
    prestop_sleep_s: int = 5
    drain_timeout_s: int = 30
    request_timeout_s: int = 30
    max_queue: int = 8
    max_concurrency: int = 1
    cpu: str = "3"
    memory: str = "12Gi"
    ephemeral_storage: str = "4Gi"

    @property
    def image_reference_is_digest(self) -> bool:
        return self.image_tag.startswith("sha256:")

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "WorkloadsConfig":
        data = _mapping(data, path)
        _check_keys(data, path, ("image_tag", "node_port", "namespace", "min_replicas", "max_replicas",
                                 "target_load", "scale_down_stabilization_s", "model_load_timeout_s",
                                 "prestop_sleep_s", "drain_timeout_s", "request_timeout_s", "max_queue",
                                 "max_concurrency", "cpu", "memory", "ephemeral_storage"))
        tag = _str(data, "image_tag", path, cls.image_tag)
        if not (_IMAGE_TAG_RE.match(tag) or _DIGEST_RE.match(tag)):
            raise _fail(f"{path}.image_tag", f"{tag!r} is neither a Docker tag nor a sha256 digest",
                        "give a tag like \"latest\" or a digest like \"sha256:<64 hex>\"")
        namespace = _str(data, "namespace", path, cls.namespace, pattern=_DNS_LABEL_RE,
                         hint="use a DNS label: lowercase letters, digits and '-', at most 63 characters")
        if namespace.startswith("kube-") or namespace == "default":
            raise _fail(f"{path}.namespace", f"{namespace!r} is a system namespace",
                        "use a dedicated namespace such as \"edge-diffusion\"")
        # Zero replicas would mean minutes of node launch plus model load on the first request, and the
        # load scaler samples running pods, so it could never wake the Deployment up again.
        min_r = _int(data, "min_replicas", path, cls.min_replicas, minimum=1, maximum=100)
        max_r = _int(data, "max_replicas", path, cls.max_replicas, minimum=1, maximum=100)
        if min_r > max_r:
            raise _fail(f"{path}.min_replicas", f"{min_r} is greater than max_replicas {max_r}",
                        "make min_replicas <= max_replicas")
        target = data.get("target_load", cls.target_load)
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.1 <= target <= 64:
            raise _fail(f"{path}.target_load", f"expected a number between 0.1 and 64, got {target!r}",
                        "give the per-pod load ((in_flight + queued) / max_concurrency) to scale at, e.g. 1.0")
        request_timeout = _int(data, "request_timeout_s", path, cls.request_timeout_s, minimum=1, maximum=600)
        drain_timeout = _int(data, "drain_timeout_s", path, cls.drain_timeout_s, minimum=1, maximum=600)
        if drain_timeout < request_timeout:
            raise _fail(f"{path}.drain_timeout_s",
                        f"{drain_timeout}s is shorter than request_timeout_s {request_timeout}s, so a scale-down "
                        "could cut off a request that is still within its timeout",
                        "make drain_timeout_s >= request_timeout_s")
        cpu = _str(data, "cpu", path, cls.cpu, pattern=_CPU_RE,
                   hint="give a CPU quantity like \"3\" or \"3500m\" (requests = limits, per pod)")
        if (float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)) < 1:
            raise _fail(f"{path}.cpu", f"{cpu} is less than one CPU", "give at least \"1\": decoding and "
                        "image encoding run on the CPU")
        memory = _str(data, "memory", path, cls.memory, pattern=_BYTES_RE,
                      hint="give a memory quantity like \"12Gi\" (requests = limits, per pod)")
        if _bytes(memory) < 4 * 2**30:
            raise _fail(f"{path}.memory", f"{memory} is below 4Gi", "give at least \"4Gi\": the SD 2.x weights "
                        "alone take several GiB while loading")
        storage = _str(data, "ephemeral_storage", path, cls.ephemeral_storage, pattern=_BYTES_RE,
                       hint="give a storage quantity like \"4Gi\" (the /tmp emptyDir size)")
        if _bytes(storage) < 2**30:
            raise _fail(f"{path}.ephemeral_storage", f"{storage} is below 1Gi",
                        "give at least \"1Gi\" for /tmp (Hugging Face and compiler caches)")
        return cls(
            image_tag=tag,
            node_port=_int(data, "node_port", path, cls.node_port, minimum=30000, maximum=32767),
            namespace=namespace,
            min_replicas=min_r,
            max_replicas=max_r,
            target_load=float(target),
            scale_down_stabilization_s=_int(data, "scale_down_stabilization_s", path,
                                            cls.scale_down_stabilization_s, minimum=0, maximum=3600),
            model_load_timeout_s=_int(data, "model_load_timeout_s", path, cls.model_load_timeout_s,
                                      minimum=10, maximum=3600),
            prestop_sleep_s=_int(data, "prestop_sleep_s", path, cls.prestop_sleep_s, minimum=1, maximum=60),
            drain_timeout_s=drain_timeout,
            request_timeout_s=request_timeout,
            max_queue=_int(data, "max_queue", path, cls.max_queue, minimum=0, maximum=1000),
            max_concurrency=_int(data, "max_concurrency", path, cls.max_concurrency, minimum=1, maximum=64),
            cpu=cpu,
            memory=memory,
            ephemeral_storage=storage,
        )

# Region subnet masks; the layout is simulated below so Local Zone CIDRs can be checked before synth.
REGION_PUBLIC_SUBNET_MASK = 22
REGION_PRIVATE_SUBNET_MASK = 20


def region_subnet_cidrs(vpc_cidr: str, az_count: int) -> dict[str, list[str]]:
    """The CIDRs ec2.Vpc allocates to region subnets: groups in declaration order, each block aligned."""
    net = ipaddress.ip_network(vpc_cidr)
    next_ip = int(net.network_address)
    out: dict[str, list[str]] = {"public": [], "private": []}
    for group, mask in (("public", REGION_PUBLIC_SUBNET_MASK), ("private", REGION_PRIVATE_SUBNET_MASK)):
        size = 2 ** (32 - mask)
        for _ in range(az_count):
            start = -(-next_ip // size) * size
            block = ipaddress.ip_network(f"{ipaddress.ip_address(start)}/{mask}")
            if not block.subnet_of(net):
                raise _fail(f"{CONTEXT_KEY}.vpc_cidr", f"{vpc_cidr} is too small for {az_count} AZs of /"
                            f"{REGION_PUBLIC_SUBNET_MASK} public and /{REGION_PRIVATE_SUBNET_MASK} private subnets",
                            "use a /16")
            out[group].append(str(block))
            next_ip = start + size
    return out


@dataclass(frozen=True)
class EdgeConfig:
    """The whole app config (`cdk.json` context key ``edge``)."""

    account: str | None
    region: str
    region_azs: tuple[str, ...]
    vpc_cidr: str
    local_zones: tuple[LocalZoneConfig, ...]
    allowed_client_cidrs: tuple[str, ...]
    allow_public_nodeport: bool
    cluster_endpoint_cidrs: tuple[str, ...]
    cluster_name: str
    kubernetes_version: str
    accelerators: tuple[str, ...]
    nodepool_limits: Mapping[str, NodePoolLimits]
    capacity_types: tuple[str, ...]
    system_nodes: SystemNodesConfig
    admin_principal_arn: str | None
    pipeline: PipelineConfig
    workloads: WorkloadsConfig

    @property
    def region_subnets(self) -> dict[str, list[str]]:
        return region_subnet_cidrs(self.vpc_cidr, len(self.region_azs))

    def local_zones_offering(self, accelerator: str) -> tuple[LocalZoneConfig, ...]:
        return tuple(lz for lz in self.local_zones if accelerator in lz.accelerators)

    def image_repository_name(self, flavor: str) -> str:
        return self.pipeline.repository_name(flavor)

    @classmethod
    def from_dict(cls, data: Any, path: str = CONTEXT_KEY) -> "EdgeConfig":
        data = _mapping(data, path)
        allowed = ("account", "region", "region_azs", "vpc_cidr", "local_zones", "allowed_client_cidrs",
                   "allow_public_nodeport", "cluster_endpoint_cidrs", "cluster_name", "kubernetes_version",
                   "accelerators", "nodepool_limits", "capacity_types", "system_nodes", "admin_principal_arn",
                   "pipeline", "workloads")
        _check_keys(data, path, allowed, ("region", "region_azs", "local_zones", "allowed_client_cidrs"))

        account = _str(data, "account", path, None, pattern=_ACCOUNT_RE,
                       hint="give the 12-digit AWS account id, or null to use the CLI's credentials")
        region = _str(data, "region", path, pattern=_REGION_RE, hint="give a region code like \"us-west-2\"")

        az_re = re.compile(rf"^{re.escape(region)}[a-z]$")

        def parent_az(item: str, p: str) -> None:
            if not az_re.match(item):
                raise _fail(p, f"{item!r} is not an Availability Zone of region {region}",
                            f"use parent-region AZ names like \"{region}a\" (Local Zones go in edge.local_zones)")

        azs = _str_list(data, "region_azs", path, ..., check=parent_az)
        if len(azs) < 2:
            raise _fail(f"{path}.region_azs", f"EKS needs subnets in at least 2 AZs, got {len(azs)}",
                        f"list two or more AZs of {region}")

        vpc_cidr = data.get("vpc_cidr", "10.40.0.0/16")
        vpc_net = _network(vpc_cidr, f"{path}.vpc_cidr")
        if not vpc_net.is_private:
            raise _fail(f"{path}.vpc_cidr", f"{vpc_cidr} is not an RFC 1918 private range",
                        "use e.g. 10.40.0.0/16")
        if not 16 <= vpc_net.prefixlen <= 18:
            raise _fail(f"{path}.vpc_cidr", f"/{vpc_net.prefixlen} is outside /16-/18",
                        "use a /16 to /18 block (region subnets take /20 each)")
        region_blocks = region_subnet_cidrs(vpc_cidr, len(azs))

        lz_raw = _list(data, "local_zones", path, ...)
        if not lz_raw:
            raise _fail(f"{path}.local_zones", "must list at least one Local Zone",
                        f"add e.g. {{\"name\": \"{region}-lax-1a\", \"subnet_cidr\": \"10.40.128.0/22\", "
                        "\"instance_families\": [\"g4dn\", \"g5\"]}")
        local_zones = tuple(LocalZoneConfig.from_dict(item, f"{path}.local_zones[{i}]", region)
                            for i, item in enumerate(lz_raw))
        names = [lz.name for lz in local_zones]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _fail(f"{path}.local_zones[{i}].name", f"duplicate Local Zone {name!r}", "list each zone once")

        # Every subnet of the VPC must be disjoint: region subnets (as ec2.Vpc will allocate them) and each Local
        # Zone subnet, which must also sit inside the VPC CIDR.
        subnets: list[tuple[str, ipaddress.IPv4Network]] = []
        for group, blocks in region_blocks.items():
            for az, block in zip(azs, blocks):
                subnets.append((f"region {group} subnet in {az}", ipaddress.ip_network(block)))
        last_region = max(ipaddress.ip_network(b) for blocks in region_blocks.values() for b in blocks)
        for i, lz in enumerate(local_zones):
            for key, cidr in (("subnet_cidr", lz.subnet_cidr), ("private_subnet_cidr", lz.private_subnet_cidr)):
                if cidr is None:
                    continue
                p = f"{path}.local_zones[{i}].{key}"
                net = ipaddress.ip_network(cidr)
                if not net.subnet_of(vpc_net):
                    raise _fail(p, f"{net} is outside the VPC CIDR {vpc_net}", f"pick a block inside {vpc_net}")
                if not 20 <= net.prefixlen <= 26:
                    raise _fail(p, f"/{net.prefixlen} is outside /20-/26", "use e.g. a /22")
                for other_path, other in subnets:
                    if net.overlaps(other):
                        raise _fail(p, f"{net} overlaps {other} ({other_path})", "choose a block that overlaps "
                                    f"nothing else, above {last_region.broadcast_address}")
                subnets.append((p, net))

        def cidr_list(key: str, default: Any) -> tuple[str, ...]:
            values = _str_list(data, key, path, default, check=lambda v, p: _network(v, p))
            _no_overlaps([(f"{path}.{key}[{i}]", ipaddress.ip_network(v)) for i, v in enumerate(values)])
            return values

        if "allowed_client_cidrs" in data and data["allowed_client_cidrs"] == []:
            raise _fail(f"{path}.allowed_client_cidrs", "is empty, so no device could reach the endpoint",
                        "list the client networks allowed to call the inference NodePort, e.g. [\"203.0.113.0/24\"]")
        client_cidrs = cidr_list("allowed_client_cidrs", ...)
        allow_public = _bool(data, "allow_public_nodeport", path, False)
        for i, cidr in enumerate(client_cidrs):
            if ipaddress.ip_network(cidr).prefixlen == 0 and not allow_public:
                raise _fail(f"{path}.allowed_client_cidrs[{i}]",
                            f"{cidr} opens the inference NodePort to the whole internet",
                            "list your client networks instead, or set edge.allow_public_nodeport to true to "
                            "accept a public endpoint (it is still API-key protected)")
        endpoint_cidrs = cidr_list("cluster_endpoint_cidrs", ["203.0.113.0/24"])
        for i, cidr in enumerate(endpoint_cidrs):
            if ipaddress.ip_network(cidr).prefixlen == 0:
                raise _fail(f"{path}.cluster_endpoint_cidrs[{i}]", "the Kubernetes API must not be open to 0.0.0.0/0",
                            "list the networks your administrators use")

        version = str(data.get("kubernetes_version", versions.KUBERNETES_VERSION))
        if version != versions.KUBERNETES_VERSION:
            raise _fail(f"{path}.kubernetes_version", f"{version!r} is not supported by this app",
                        f"use \"{versions.KUBERNETES_VERSION}\": the kubectl layer, cdk8s-plus and Karpenter pins in "
                        "versions.py are built for it; bump them together")

        def accelerator(item: str, p: str) -> None:
            if item not in ACCELERATORS:
                raise _fail(p, f"unknown accelerator {item!r}", f"use one or more of: {', '.join(ACCELERATORS)}")

        accelerators = _str_list(data, "accelerators", path, list(ACCELERATORS), check=accelerator)
        for i, lz in enumerate(local_zones):
            if not any(acc in accelerators for acc in lz.accelerators):
                raise _fail(f"{path}.local_zones[{i}].instance_families",
                            f"{lz.name} offers none of the enabled accelerators {list(accelerators)}",
                            "list an instance family the zone offers for an enabled accelerator, or enable it")

        limits_raw = _mapping(data.get("nodepool_limits", {}), f"{path}.nodepool_limits")
        _check_keys(limits_raw, f"{path}.nodepool_limits", ACCELERATORS)
        limits = MappingProxyType({acc: NodePoolLimits.from_dict(limits_raw.get(acc, {}), f"{path}.nodepool_limits.{acc}")
                  for acc in accelerators})

        def capacity(item: str, p: str) -> None:
            if item not in ("on-demand", "spot"):
                raise _fail(p, f"unknown capacity type {item!r}", "use \"on-demand\" and/or \"spot\"")

        capacity_types = _str_list(data, "capacity_types", path, ["on-demand"], check=capacity)

        return cls(
            account=account,
            region=region,
            region_azs=azs,
            vpc_cidr=vpc_cidr,
            local_zones=local_zones,
            allowed_client_cidrs=client_cidrs,
            allow_public_nodeport=allow_public,
            cluster_endpoint_cidrs=endpoint_cidrs,
            cluster_name=_str(data, "cluster_name", path, "edge-diffusion", pattern=_CLUSTER_NAME_RE,
                              hint="start with a letter; letters, digits and '-' only (max 100)"),
            kubernetes_version=version,
            accelerators=accelerators,
            nodepool_limits=limits,
            capacity_types=capacity_types,
            system_nodes=SystemNodesConfig.from_dict(data.get("system_nodes", {}), f"{path}.system_nodes"),
            admin_principal_arn=_str(data, "admin_principal_arn", path, None, pattern=_IAM_PRINCIPAL_RE,
                                     hint="give an IAM role or user ARN like arn:aws:iam::123456789012:role/Admin, "
                                          "or null"),
            pipeline=PipelineConfig.from_dict(data.get("pipeline", {}), f"{path}.pipeline"),
            workloads=WorkloadsConfig.from_dict(data.get("workloads", {}), f"{path}.workloads"),
        )


# ---------------------------------------------------------------- context loading


class _NumberText(str):
    """A `-c` value that parses as a JSON number but may be meant as text (image tag "1.10", account id)."""

    number: int | float

    def __new__(cls, text: str, number: int | float) -> "_NumberText":
        obj = super().__new__(cls, text)
        obj.number = number
        return obj


def _parse_value(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            # Integer fields read .number; string fields keep the exact text the user typed.
            return _NumberText(raw.strip(), parsed)
        return parsed
    return raw


def _apply_override(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = tree
    walked = CONTEXT_KEY
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if not part:
            raise _fail(f"{CONTEXT_KEY}.{dotted}", "empty path segment in context key", "write edge.a.b, not edge.a..b")
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise _fail(f"{walked}.{part}", f"list index out of range (the list has {len(node)} items)",
                            f"use an index 0..{len(node) - 1}, or override the whole list with -c {walked}='[...]'")
            key: Any = int(part)
            walked = f"{walked}[{part}]"
        elif isinstance(node, dict):
            key = part
            walked = f"{walked}.{part}"
        else:
            raise _fail(walked, "is not an object or list, so it has no sub-fields",
                        f"override {walked} itself")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def merge_context(context: Mapping[str, Any]) -> dict:
    """Build the raw config tree: the ``edge`` object, then each ``edge.<path>`` override (shortest path first)."""
    if CONTEXT_KEY not in context:
        raise _fail(CONTEXT_KEY, "no config found in the CDK context", "run from the repository root (cdk.json holds "
                    "the default config under \"edge\")")
    base = _parse_value(context[CONTEXT_KEY])
    tree = copy.deepcopy(dict(_mapping(base, CONTEXT_KEY)))
    prefix = CONTEXT_KEY + "."
    overrides = sorted((k for k in context if k.startswith(prefix)), key=lambda k: (k.count("."), k))
    for key in overrides:
        _apply_override(tree, key[len(prefix):], _parse_value(context[key]))
    return tree


def load_config(context: Mapping[str, Any]) -> EdgeConfig:
    """Validate the CDK context mapping into an `EdgeConfig` (raises `ConfigError`)."""
    return EdgeConfig.from_dict(merge_context(context))
