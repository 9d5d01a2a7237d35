"""Server settings: every `serve` flag also reads SERVING_<UPPER_SNAKE> from the environment (flag wins)."""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from serving.core.flag_help import HELP

DEVICES = ("auto", "cpu", "cuda", "neuron")
DTYPES = ("auto", "float32", "float16", "bfloat16")
# torch.compile modes (serving.backends.cuda.optimize.COMPILE_MODES; repeated here so settings never import torch).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_S3_URL = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?")
_DNS_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the flag and its environment variable."""


@dataclass(frozen=True)
class Settings:
    model: str
    device: str = "auto"
    host: str = "0.0.0.0"
    port: int = 8080
    metrics_host: str | None = None
    metrics_port: int = 9090
    api_key_file: str | None = None
    api_key_secret_arn: str | None = None
    max_queue: int = 8
    max_concurrency: int = 1
    request_timeout: float = 30.0
    drain_timeout: float = 30.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_connections: int = 1024
    max_request_cost: int = 0
    skip_warmup: bool = False
    log_prompts: bool = False
    dtype: str = "auto"
    compile: bool = False
    compile_mode: str | None = None
    compile_cache_dir: str | None = None
    compile_cache_s3: str | None = None
    cuda_graphs: bool = False
    tiny_vae: str | None = None
    deepcache_interval: int = 0
    inventory_service: str | None = None
    inventory_namespace: str | None = None
    inventory_node_port: int | None = None
    inventory_node_domain: str | None = None
    inventory_file: str | None = None
    # TLS on the public port (serving/api/tls.py); the metrics port always stays plain and in-cluster.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    # Request bounds (documented in docs/serving.md; the OpenAPI schema is generated from them).
    min_image_size: int = 64
    max_image_size: int = 1024
    max_steps: int = 50
    max_images: int = 4
    max_prompt_length: int = 1000
    # Overrides for the model's own defaults (serving.json next to model_index.json, then built-ins).
    default_steps: int | None = None
    default_guidance_scale: float | None = None
    default_width: int | None = None
    default_height: int | None = None
    scheduler: str | None = None
    warmup_sizes: str | None = None
    log_level: str = "info"
    # The WebSocket frame stream (serving.stream.websocket).
    max_streams: int = 4
    stream_idle_timeout: float = 30.0
    max_frame_bytes: int = 2 * 1024 * 1024
    stream_vae: str | None = None
    stream_warmup_size: str | None = None
    stream_eager: bool = False
    # WebRTC media (serving.stream.webrtc): the UDP ports ICE binds, what it advertises, and the bind address.
    webrtc_ports: str | None = None
    webrtc_public_host: str | None = None
    webrtc_bind_host: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def max_in_system(self) -> int:
        return self.max_concurrency + self.max_queue

    @property
    def stream_warmup_shape(self) -> tuple[int, int] | None:
        return _parse_sizes(self.stream_warmup_size, "stream_warmup_size")[0] if self.stream_warmup_size else None

    @property
    def webrtc_port_range(self) -> tuple[int, int] | None:
        if not self.webrtc_ports:
            return None
        low, _, high = self.webrtc_ports.partition("-")
        return int(low), int(high or low)

    @property
    def warmup_shapes(self) -> list[tuple[int, int]]:
        """Parsed --warmup-sizes ("512x512,768x768"); empty means the model's default size."""
        return _parse_sizes(self.warmup_sizes) if self.warmup_sizes else []


def _parse_sizes(text: str, name: str = "warmup_sizes") -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        width, sep, height = item.strip().lower().partition("x")
        if not sep or not width.isdigit() or not height.isdigit():
            raise SettingsError(f"{_where(name)}: {item.strip()!r} is not WIDTHxHEIGHT (e.g. 512x512,768x768)")
        shapes.append((int(width), int(height)))
    return shapes


def env_name(field_name: str) -> str:
    return "SERVING_" + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _where(name: str) -> str:
    return f"{flag_name(name)} (env {env_name(name)})"


def _validate(s: Settings) -> None:
    def fail(name: str, problem: str) -> None:
        raise SettingsError(f"{_where(name)}: {problem}")

    if not s.model:
        fail("model", "is required: pass a local diffusers directory (or compiled Neuron directory)")
    if s.device not in DEVICES:
        fail("device", f"must be one of {', '.join(DEVICES)}, got {s.device!r}")
    if s.dtype not in DTYPES:
        fail("dtype", f"must be one of {', '.join(DTYPES)}, got {s.dtype!r}")
    for name in ("port", "metrics_port"):
        if not 0 <= getattr(s, name) <= 65535:
            fail(name, f"must be a TCP port 0..65535, got {getattr(s, name)}")
    if s.port == s.metrics_port and s.port != 0:
        fail("metrics_port", "must differ from --port so /metrics never shares the public port")
    if s.max_queue < 0:
        fail("max_queue", f"must be >= 0, got {s.max_queue}")
    if s.max_concurrency < 1:
        fail("max_concurrency", f"must be >= 1, got {s.max_concurrency}")
    for name in ("request_timeout", "drain_timeout", "header_timeout", "keepalive_timeout"):
        if not getattr(s, name) > 0:
            fail(name, f"must be a positive number of seconds, got {getattr(s, name)}")
    if s.max_connections < 1:
        fail("max_connections", f"must be >= 1, got {s.max_connections}")
    if s.max_request_cost < 0:
        fail("max_request_cost", f"must be >= 0 (0 = the cost of the largest default-size request), got {s.max_request_cost}")
    if s.metrics_host is not None and not s.metrics_host.strip():
        fail("metrics_host", "must be an address to bind (e.g. 127.0.0.1 or 0.0.0.0), or unset to use --host")
    if s.compile_mode is not None:
        if s.compile_mode not in COMPILE_MODES:
            fail("compile_mode", f"must be one of {', '.join(COMPILE_MODES)}, got {s.compile_mode!r}")
        if not s.compile:
            fail("compile_mode", "only applies with --compile")
    if s.compile_cache_dir is not None and not s.compile_cache_dir.strip():
        fail("compile_cache_dir", "must be a directory path, or unset")
    if s.compile_cache_s3 is not None and not _S3_URL.fullmatch(s.compile_cache_s3):
        fail("compile_cache_s3", f"must be an S3 URL such as s3://bucket/prefix/, got {s.compile_cache_s3!r}")
    if s.deepcache_interval < 0:
        fail("deepcache_interval", f"must be >= 0 (0 disables it), got {s.deepcache_interval}")
    if s.api_key_file and s.api_key_secret_arn:
        fail("api_key_secret_arn", "set either --api-key-file or --api-key-secret-arn, not both")
    if s.api_key_secret_arn and not s.api_key_secret_arn.startswith("arn:"):
        fail("api_key_secret_arn", f"must be a Secrets Manager ARN (arn:aws:secretsmanager:...), got {s.api_key_secret_arn!r}")
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        fail("tls_key_file" if s.tls_cert_file else "tls_cert_file", "TLS needs both --tls-cert-file and --tls-key-file")
    for name in ("tls_ca_file", "tls_server_name"):
        if getattr(s, name) and not s.tls_cert_file:
            fail(name, "only applies with --tls-cert-file and --tls-key-file")
    if s.tls_server_name and not _DNS_NAME.fullmatch(s.tls_server_name):
        fail("tls_server_name", f"must be a DNS name such as inference.edge-diffusion.internal, got {s.tls_server_name!r}")
    if s.inventory_node_domain and not _DNS_NAME.fullmatch(s.inventory_node_domain):
        fail("inventory_node_domain", f"must be a DNS name such as nodes.example.com, got {s.inventory_node_domain!r}")
    if s.inventory_node_port is not None and not 1 <= s.inventory_node_port <= 65535:
        fail("inventory_node_port", f"must be a port 1..65535 (or unset to read it from the Service), got {s.inventory_node_port}")
    if s.inventory_file and s.inventory_service:
        fail("inventory_file", "set either --inventory-file or --inventory-service, not both")
    if s.min_image_size < 8 or s.min_image_size % 8:
        fail("min_image_size", f"must be a positive multiple of 8, got {s.min_image_size}")
    if s.max_image_size < s.min_image_size or s.max_image_size % 8:
        fail("max_image_size", f"must be a multiple of 8 >= --min-image-size, got {s.max_image_size}")
    for name in ("max_steps", "max_images", "max_prompt_length"):
        if getattr(s, name) < 1:
            fail(name, f"must be >= 1, got {getattr(s, name)}")
    if s.default_steps is not None and not 1 <= s.default_steps <= s.max_steps:
        fail("default_steps", f"must be within 1..--max-steps ({s.max_steps}), got {s.default_steps}")
    if s.default_guidance_scale is not None and not 0 <= s.default_guidance_scale <= 20:
        fail("default_guidance_scale", f"must be within 0..20, got {s.default_guidance_scale}")
    for name in ("default_width", "default_height"):
        value = getattr(s, name)
        if value is not None and (value % 8 or not s.min_image_size <= value <= s.max_image_size):
            fail(name, f"must be a multiple of 8 within {s.min_image_size}..{s.max_image_size}, got {value}")
    for width, height in s.warmup_shapes:
        for value in (width, height):
            if value % 8 or not s.min_image_size <= value <= s.max_image_size:
                fail("warmup_sizes", f"{width}x{height}: sides must be multiples of 8 within {s.min_image_size}..{s.max_image_size}")
    if s.max_streams < 0:
        fail("max_streams", f"must be >= 0 (0 disables the stream), got {s.max_streams}")
    if not s.stream_idle_timeout > 0:
        fail("stream_idle_timeout", f"must be a positive number of seconds, got {s.stream_idle_timeout}")
    if s.max_frame_bytes < 1024:
        fail("max_frame_bytes", f"must be >= 1024, got {s.max_frame_bytes}")
    if s.stream_warmup_size:
        shapes = _parse_sizes(s.stream_warmup_size, "stream_warmup_size")
        if len(shapes) != 1:
            fail("stream_warmup_size", f"takes one WIDTHxHEIGHT, got {s.stream_warmup_size!r}")
        for value in shapes[0]:
            if value % 8 or not s.min_image_size <= value <= s.max_image_size:
                fail("stream_warmup_size", f"sides must be multiples of 8 within {s.min_image_size}..{s.max_image_size}")
    if s.webrtc_ports:
        low, sep, high = s.webrtc_ports.partition("-")
        if not (low.isdigit() and high.isdigit() and sep) or not 1024 <= int(low) <= int(high) <= 65535:
            fail("webrtc_ports", f"must be LOW-HIGH within 1024..65535, e.g. 40000-40015, got {s.webrtc_ports!r}")
    if s.log_level not in ("debug", "info", "warning", "error"):
        fail("log_level", f"must be debug, info, warning or error, got {s.log_level!r}")


_CHOICES = {"device": DEVICES, "dtype": DTYPES, "compile_mode": COMPILE_MODES}


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{env_name(name)}: expected true/false (or 1/0), got {raw!r}")


def _field_type(f) -> type:
    text = str(f.type)
    if text.startswith("bool"):
        return bool
    if text.startswith("int"):
        return int
    if text.startswith("float"):
        return float
    return str


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per Settings field; defaults stay None so env and dataclass defaults can apply."""
    for f in fields(Settings):
        kind = _field_type(f)
        help_text = f"{HELP[f.name]} [env {env_name(f.name)}]"
        if kind is bool:
            parser.add_argument(flag_name(f.name), dest=f.name, action="store_const", const=True, default=None, help=help_text)
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, type=kind, default=None, choices=_CHOICES.get(f.name), help=help_text)


def settings_from(args: Mapping[str, Any] | argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from parsed flags, falling back to SERVING_* variables, then the defaults."""
    environ = os.environ if environ is None else environ
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if given.get(f.name) is not None:
            values[f.name] = given[f.name]
            continue
        raw = environ.get(env_name(f.name))
        if raw is None or (raw == "" and f.name != "model"):
            continue
        kind = _field_type(f)
        try:
            values[f.name] = _parse_bool(f.name, raw) if kind is bool else kind(raw)
        except ValueError as exc:
            if isinstance(exc, SettingsError):
                raise
            raise SettingsError(f"{env_name(f.name)}: expected {kind.__name__}, got {raw!r}") from None
    if "model" not in values:
        raise SettingsError(f"{_where('model')}: is required: pass a local diffusers directory")
    return Settings(**values)
