"""CUDA backend: fp16/bf16 weights; serving.optimize applies SDPA, channels_last, fused QKV and the opt-in modes."""
from __future__ import annotations

import logging
from typing import Any

from serving.backends.base import DiffusersBackend
from serving.modelconfig import ModelDefaults
from serving.settings import Settings

log = logging.getLogger("serving.backend")


def cuda_options(settings: Settings):
    # Imported lazily: CPU-only installs never need serving.optimize or its dependencies.
    from serving.optimize import CudaOptions

    dtype = "float16" if settings.dtype == "auto" else settings.dtype
    if dtype == "float32":
        raise ValueError("--dtype float32 is not supported on cuda; use float16 or bfloat16")
    return CudaOptions(
        dtype=dtype,
        channels_last=True,
        compile=settings.compile,
        compile_mode=settings.compile_mode,
        cuda_graphs=settings.cuda_graphs,
        tiny_vae=settings.tiny_vae,
        deepcache_interval=settings.deepcache_interval,
    )


class CudaBackend(DiffusersBackend):
    name = "cuda"

    @classmethod
    def load(cls, settings: Settings, defaults: ModelDefaults) -> "CudaBackend":
        import torch
        from serving.loading import load_pipeline
        from serving.optimize import configure_numerics, optimize_pipeline

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was requested but torch sees no usable CUDA device")
        options = cuda_options(settings)
        if options.graphs and settings.max_concurrency > 1:
            raise ValueError("--cuda-graphs (or --compile-mode reduce-overhead/max-autotune) replays captured graphs "
                             "one at a time, recorded per thread; use --max-concurrency 1 with it")
        log.info("numerics", extra={"fields": configure_numerics("cuda")})
        pipe = load_pipeline(settings.model, "cuda", options.dtype)
        pipe = optimize_pipeline(pipe, options)
        return cls(pipe, defaults, settings.max_concurrency)

    def __init__(self, pipe: Any, defaults: ModelDefaults, slots: int = 1):
        super().__init__(pipe, defaults, slots)

    def is_accelerator_error(self, exc: BaseException) -> bool:
        import torch

        accelerator_error = getattr(torch, "AcceleratorError", ())
        if isinstance(exc, (torch.cuda.OutOfMemoryError,) + ((accelerator_error,) if accelerator_error else ())):
            return True
        return isinstance(exc, RuntimeError) and ("CUDA" in str(exc) or "cuDNN" in str(exc) or "CUBLAS" in str(exc))

    def recover(self) -> bool:
        import torch

        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            # A sticky error (illegal address, Xid/ECC fault) poisons the CUDA context: the next kernel launch or
            # sync fails too. A one-element kernel plus a device-to-host copy proves the context still works.
            probe = torch.ones(1, device="cuda") + 1
            usable = probe.item() == 2.0
        except torch.cuda.OutOfMemoryError:
            # Memory is momentarily exhausted (e.g. by a concurrent generation), which is not a broken device;
            # if it persists, the engine's consecutive-error limit marks the server failed.
            return True
        except Exception:  # noqa: BLE001 - any failure here means the context is unusable
            log.exception("CUDA context is unusable after an error")
            return False
        if not usable:
            log.error("CUDA probe returned a wrong result; the device is unusable")
        return usable
