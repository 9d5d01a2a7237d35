"""Speed options for the cuda backend (and their device-agnostic parts, which also run on CPU).

`optimize_pipeline(pipe, CudaOptions(...))` mutates a loaded diffusers Stable Diffusion pipeline in place and
returns it. The server's cuda backend and `benchmarks.gpu` both call it, so the benchmark measures the exact code
path the server runs.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serving.backends.cuda.cudagraphs import MAX_CUDA_GRAPHS, CudaGraphRunner
from serving.backends.cuda.deepcache import DeepCache, enable_deepcache
from serving.backends.cuda.shapes import RECORD, ShapePolicy, gate_module

__all__ = ["COMPILE_MODES", "DTYPES", "MAX_CUDA_GRAPHS", "CudaGraphRunner", "CudaOptions", "DeepCache",
           "ShapePolicy", "begin_at_first_timestep", "compile_plan", "configure_numerics", "enable_deepcache", "optimize_pipeline",
           "shape_policy", "uses_manual_cuda_graphs"]

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}

# torch.compile modes the server accepts (--compile-mode). Two of them make inductor capture CUDA graphs itself.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
# The same mode without CUDA graphs, for devices that have none (CPU).
_WITHOUT_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
# The mode when none is given. Autotuning costs minutes per shape, but the compile cache (serving.backends.cuda.compilecache) pays
# that once per GPU model, torch/triton release and shape set; every later pod loads the tuned kernels. With
# --cuda-graphs the autotuned mode that also captures graphs.
COMPILE_MODE_WITH_GRAPHS = "max-autotune"
COMPILE_MODE_NO_GRAPHS = "max-autotune-no-cudagraphs"


def configure_numerics(device_type: str) -> dict[str, Any]:
    """Set the process-wide numerics switches once (server and benchmark alike) and return their values.

    cuda: TF32 for float32 matmuls and convolutions (the served weights are float16/bfloat16, so only stray float32
    work is affected, and cuDNN convolutions already default to TF32), and cudnn.benchmark on, because the fast path
    serves a fixed, warmed shape set: the per-shape algorithm search runs during warm-up, and an off-path shape pays
    it once. Other devices are left as they are.

    TF32 matmuls go through the legacy ``torch.set_float32_matmul_precision("high")``, which sets the per-backend
    value (cuda matmul "tf32") and the legacy one together. Setting only ``torch.backends.cuda.matmul.fp32_precision``
    leaves the legacy value at "highest", and ``torch.get_float32_matmul_precision()`` then raises (ATen's
    Context::float32MatmulPrecision refuses cuda-tf32 with legacy-highest), but inductor's autotune cache calls it
    on every lookup (torch/_inductor/codecache.py, PersistentCache.lookup): every max-autotune compile would fail.
    The same call also sets oneDNN's CPU matmuls to tf32; they are put back, as CPU work is not this switch's subject.
    """
    if device_type == "cuda":
        cpu_matmul = torch.backends.mkldnn.matmul.fp32_precision
        torch.set_float32_matmul_precision("high")
        torch.backends.mkldnn.matmul.fp32_precision = cpu_matmul
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        torch.backends.cudnn.benchmark = True
    return {
        "device_type": device_type,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        "cudnn_conv_fp32_precision": torch.backends.cudnn.conv.fp32_precision,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }


def begin_at_first_timestep(scheduler: Any) -> Any:
    """Make ``set_timesteps`` also set the begin index to 0, so the first step needs no search on the device.

    diffusers' schedulers with ``set_begin_index`` (the Euler, DPM-Solver, UniPC... families) reset it in
    ``set_timesteps`` and, with none set, find the first step by searching the timestep in the schedule
    (``index_for_timestep``: ``nonzero()`` then ``item()`` on the device, a host sync before the first UNet call;
    diffusers 0.42 schedulers/scheduling_euler_discrete.py ``_init_step_index``). Text-to-image always starts at 0,
    and diffusers' own PixArt pipeline sets exactly that (pipelines/pixart_alpha/pipeline_pixart_alpha.py);
    image-to-image pipelines call ``set_begin_index(t_start * order)`` after ``set_timesteps`` and so still win.
    The scheduler's class is swapped for a subclass, so copies (one per slot) keep it. Schedulers without
    ``set_begin_index`` (DDIM, PNDM) index by timestep value and are left alone.
    """
    cls = type(scheduler)
    if hasattr(scheduler, "set_begin_index") and not getattr(cls, "_begins_at_first_timestep", False):
        scheduler.__class__ = _begin_at_first(cls)
    return scheduler


@functools.lru_cache(maxsize=None)
def _begin_at_first(cls: type) -> type:
    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        cls.set_timesteps(self, *args, **kwargs)
        self.set_begin_index(0)

    return type(cls.__name__, (cls,), {"set_timesteps": set_timesteps, "_begins_at_first_timestep": True,
                                       "__module__": cls.__module__, "__qualname__": cls.__qualname__})


@dataclass(frozen=True)
class CudaOptions:
    """What `optimize_pipeline` applies; defaults are the settings the cuda backend serves with."""

    dtype: str = "float16"
    channels_last: bool = True
    fuse_qkv: bool = True
    compile: bool = False
    cuda_graphs: bool = False
    tiny_vae: str | None = None
    deepcache_interval: int = 0
    # None: max-autotune with cuda_graphs, else max-autotune-no-cudagraphs (COMPILE_MODE_*).
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(
                f"dtype: {self.dtype!r} is not supported; use one of {', '.join(DTYPES)} "
                "(float16 or bfloat16 on a GPU)"
            )
        for name in ("channels_last", "fuse_qkv", "compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.tiny_vae is not None and (not isinstance(self.tiny_vae, str) or not self.tiny_vae.strip()):
            raise ValueError(
                f"tiny_vae: {self.tiny_vae!r} is not a path; pass the local AutoencoderTiny directory or leave it unset"
            )
        interval = self.deepcache_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0 or interval == 1:
            raise ValueError(
                f"deepcache_interval: {interval!r} is invalid; use 0 to disable DeepCache or an integer >= 2 "
                "(a full UNet pass every N steps, cached deep features in between)"
            )
        if self.compile_mode is not None:
            if self.compile_mode not in COMPILE_MODES:
                raise ValueError(f"compile_mode: {self.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}")
            if not self.compile:
                raise ValueError(f"compile_mode: {self.compile_mode!r} only applies with compile on")
            if self.cuda_graphs and self.compile_mode not in GRAPH_MODES:
                raise ValueError(
                    f"compile_mode: {self.compile_mode!r} captures no CUDA graphs, but cuda_graphs is on; use "
                    "reduce-overhead or max-autotune, or turn cuda_graphs off"
                )
        if self.deepcache_interval and self.graphs:
            raise ValueError(
                "deepcache_interval and cuda_graphs cannot be combined (nor compile_mode reduce-overhead or "
                "max-autotune, which capture graphs): DeepCache alternates two UNet paths with Python-side state "
                "that a single captured graph cannot replay; pick one"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def mode(self) -> str | None:
        """The torch.compile mode on a CUDA device, or None when compile is off."""
        if not self.compile:
            return None
        if self.compile_mode is not None:
            return self.compile_mode
        return COMPILE_MODE_WITH_GRAPHS if self.cuda_graphs else COMPILE_MODE_NO_GRAPHS

    @property
    def graphs(self) -> bool:
        """Whether CUDA graphs are captured on a CUDA device: ours without compile, inductor's with a graph mode."""
        return self.cuda_graphs or self.mode in GRAPH_MODES


def compile_plan(options: CudaOptions, device_type: str) -> dict[str, Any] | None:
    """torch.compile settings for these options on this device type, or None when compile is off.

    Regional compilation (each UNet block separately) is used with DeepCache, because its step-dependent branch
    lives in eager Python between the blocks; otherwise the whole UNet is one full graph.
    """
    mode = options.mode
    if mode is None:
        return None
    return {
        "mode": mode if device_type == "cuda" else _WITHOUT_GRAPHS.get(mode, mode),
        "fullgraph": True,
        # One static graph per request shape (size, CFG batch): dynamic-shape kernels are slower, and the server
        # sees only a handful of shapes.
        "dynamic": False,
        "regional": bool(options.deepcache_interval),
        # With compile on, inductor captures the graphs itself; a manual capture around it would double-capture.
        "manual_cuda_graphs": False,
    }


def uses_manual_cuda_graphs(options: CudaOptions, device_type: str) -> bool:
    """Whether `optimize_pipeline` wraps the UNet in our own CUDA-graph capture (cuda_graphs without compile)."""
    return options.cuda_graphs and not options.compile and device_type == "cuda"


def shape_policy(pipe: Any) -> ShapePolicy | None:
    """The policy gating the pipeline's compiled or captured calls (serving.backends.cuda.shapes); None when nothing is."""
    return getattr(pipe, "_shape_policy", None)


def optimize_pipeline(pipe: Any, options: CudaOptions, default_mode: str = RECORD) -> Any:
    """Apply `options` to a Stable Diffusion pipeline in place and return it.

    Compiled and CUDA-graph calls go through a `ShapePolicy` (``shape_policy(pipe)``) whose ``default_mode``
    applies outside an explicit mode: record (compile on demand, the library behaviour) or eager (the server).
    """
    if not isinstance(options, CudaOptions):
        raise TypeError(f"options must be a CudaOptions, got {type(options).__name__}")
    for component in ("unet", "vae"):
        if getattr(pipe, component, None) is None:
            raise ValueError(f"the pipeline has no {component}; optimize_pipeline needs a Stable Diffusion pipeline")
    device = torch.device(pipe.device)
    if options.cuda_graphs and device.type != "cuda":
        raise ValueError(
            f"cuda_graphs: needs the pipeline on a CUDA device, but it is on {device.type}; "
            "drop --cuda-graphs or run with --device cuda"
        )

    if options.tiny_vae is not None:
        pipe.vae = _load_tiny_vae(options.tiny_vae, pipe, device)

    pipe.to(dtype=options.torch_dtype)
    _use_sdpa(pipe)
    if options.fuse_qkv:
        _fuse_qkv(pipe)
    if options.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if options.deepcache_interval:
        enable_deepcache(pipe, options.deepcache_interval)

    plan = compile_plan(options, device.type)
    if plan is not None:
        pipe._shape_policy = ShapePolicy(default_mode)
        _compile(pipe, plan, pipe._shape_policy, graphs=options.graphs and device.type == "cuda")
    elif uses_manual_cuda_graphs(options, device.type):
        pipe._shape_policy = ShapePolicy(default_mode)
        pipe.unet.forward = CudaGraphRunner(pipe.unet.forward, policy=pipe._shape_policy)

    log.info("optimized pipeline", extra={"fields": {"device": str(device), "options": dict(options.__dict__),
                                                     "compile": plan}})
    return pipe


def _load_tiny_vae(path: str, pipe: Any, device: torch.device) -> Any:
    from diffusers import AutoencoderTiny

    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"tiny_vae: {path!r} is not a local AutoencoderTiny directory (no config.json there); "
            "bake the tiny VAE into the image (e.g. madebyollin/taesd for SD 2.x) and pass its path"
        )
    vae = AutoencoderTiny.from_pretrained(str(directory), local_files_only=True)
    expected = pipe.unet.config.in_channels
    if vae.config.latent_channels != expected:
        raise ValueError(
            f"tiny_vae: {path!r} has {vae.config.latent_channels} latent channels but the UNet expects {expected}; "
            "use the tiny VAE trained for this model family"
        )
    return vae.to(device)


def _use_sdpa(pipe: Any) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    for component in (pipe.unet, pipe.vae):
        if hasattr(component, "set_attn_processor") and getattr(component, "attn_processors", None):
            component.set_attn_processor(AttnProcessor2_0())


def _fuse_qkv(pipe: Any) -> None:
    from diffusers import AutoencoderKL

    # The tiny VAE has no attention, and diffusers refuses to fuse anything but AutoencoderKL.
    pipe.fuse_qkv_projections(unet=True, vae=isinstance(pipe.vae, AutoencoderKL))


def _compile(pipe: Any, plan: dict[str, Any], policy: ShapePolicy, graphs: bool) -> None:
    """Compile lazily (at the first call per shape) and put every compiled call behind the shape policy."""
    kwargs = {"mode": plan["mode"], "fullgraph": plan["fullgraph"], "dynamic": plan["dynamic"]}
    unet = pipe.unet
    if plan["regional"]:
        blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
        for index, block in enumerate(blocks):
            block.compile(**kwargs)
            gate_module(policy, f"unet.block{index}", block, graphs)
    else:
        unet.compile(**kwargs)
        gate_module(policy, "unet", unet, graphs)
    eager_decode = pipe.vae.decode
    pipe.vae.decode = policy.gate("vae.decode", torch.compile(eager_decode, **kwargs), eager_decode, graphs)
