"""CUDA backend: fp16/bf16 weights; serving.backends.cuda.optimize applies SDPA, channels_last, fused QKV and the opt-in modes.

With --compile or --cuda-graphs the shapes served fast are exactly the warmed ones (serving.backends.cuda.shapes): warm-up runs
every --warmup-sizes x guidance off/on x 1..--max-images combination on the engine's worker thread, then seals the
policy. A request outside that set runs eagerly (edge_diffusion_eager_fallback_total{reason="shape"}); nothing
compiles or captures at request time.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from serving.backends.base import DiffusersBackend, GenerationParams
from serving.model.config import ModelDefaults
from serving.core.settings import Settings

log = logging.getLogger("serving.backend")

# Denoising steps per warm-up generation: every UNet call of a generation has the same shapes, and two calls let
# DeepCache take both its paths. With CUDA graphs each combination runs twice (inductor records on a function's
# second call), so requests only ever replay.
WARMUP_STEPS = 2
WARMUP_GUIDANCE = 7.5


def cuda_options(settings: Settings):
    # Imported lazily: CPU-only installs never need serving.backends.cuda.optimize or its dependencies.
    from serving.backends.cuda.optimize import CudaOptions

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
        from serving.model.loading import load_pipeline
        from serving.backends.cuda.optimize import configure_numerics, optimize_pipeline
        from serving.backends.cuda.shapes import EAGER

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was requested but torch sees no usable CUDA device")
        options = cuda_options(settings)
        if options.graphs and settings.max_concurrency > 1:
            raise ValueError("--cuda-graphs (or --compile-mode reduce-overhead/max-autotune) replays captured graphs "
                             "one at a time, recorded per thread; use --max-concurrency 1 with it")
        log.info("numerics", extra={"fields": configure_numerics("cuda")})
        pipe = load_pipeline(settings.model, "cuda", options.dtype)
        # Eager by default: only warm-up (record) and warmed requests (fast) may reach compiled code.
        pipe = optimize_pipeline(pipe, options, default_mode=EAGER)
        backend = cls(pipe, defaults, settings.max_concurrency, max_images=settings.max_images)
        if options.compile:
            backend.compile_cache = compile_cache(settings, options, pipe, backend.warmup_sizes(settings.warmup_shapes))
            backend.compile_cache.precompiled = precompile(backend.policy, options, "cuda")
            backend.compile_cache.load()
        return backend

    def __init__(self, pipe: Any, defaults: ModelDefaults, slots: int = 1, max_images: int = 1):
        super().__init__(pipe, defaults, slots)
        from serving.backends.cuda.optimize import shape_policy

        self.policy = shape_policy(pipe)
        from serving.backends.cuda.optimize import begin_at_first_timestep

        for slot in list(self._pool.queue):  # the pipelines of every slot, each with its own scheduler
            begin_at_first_timestep(slot.scheduler)
        self.max_images = max_images
        self.fast_keys: frozenset = frozenset()
        self.compile_cache = None
        self.warmup_seconds: dict[str, float] = {}

    def warmup_sizes(self, sizes: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
        return list(sizes) if sizes else [(self.defaults.width, self.defaults.height)]

    def warmup(self, sizes: list[tuple[int, int]] | None = None, cancel: threading.Event | None = None,
               keys: list[tuple[int, int, bool, int]] | None = None) -> None:
        """Without a shape policy, the default warm-up; with one, every fast shape, then seal and save the cache.

        ``keys`` (request keys, serving.backends.cuda.shapes.request_key) warms exactly those instead of the
        server's set, for a benchmark that serves fewer shapes; the compile cache is then not saved, because its
        key names the server's set. The seconds each key took land in ``warmup_seconds``."""
        if self.policy is None:
            return super().warmup(sizes, cancel)
        from serving.backends.cuda.shapes import RECORD, key_label, warmed_keys

        server_keys = warmed_keys(self.warmup_sizes(sizes), self.max_images)
        keys = server_keys if keys is None else list(keys)
        _raise_recompile_limit(len(keys))
        runs = 2 if self._graphs else 1
        cancel = cancel or threading.Event()
        with self.policy.using(RECORD):
            for width, height, guidance, n in keys:
                params = GenerationParams(prompt="warm-up", width=width, height=height, steps=WARMUP_STEPS,
                                          guidance_scale=WARMUP_GUIDANCE if guidance else 0.0, seed=0, n=n)
                started = time.perf_counter()
                for _ in range(runs):
                    DiffusersBackend.generate(self, params, cancel)
                self.warmup_seconds[key_label((width, height, guidance, n))] = round(time.perf_counter() - started, 3)
        self.fast_keys = frozenset(keys)
        self.policy.seal()
        log.info("fast shapes warmed", extra={"fields": {"requests": len(keys), "signatures": self.policy.signatures,
                                                          "runs_per_shape": runs, "seconds": self.warmup_seconds}})
        if self.compile_cache is not None and set(keys) == set(server_keys):
            self.compile_cache.save()

    @property
    def _graphs(self) -> bool:
        return any(getattr(g, "graphs", False) for g in self.policy.gates) or \
            type(getattr(self.pipe.unet, "forward", None)).__name__ == "CudaGraphRunner"

    def generate(self, params: GenerationParams, cancel: threading.Event) -> list:
        if self.policy is None:
            return super().generate(params, cancel)
        from serving.backends.cuda.shapes import EAGER, FAST, request_key

        fast = request_key(params.width, params.height, params.guidance_scale, params.n) in self.fast_keys
        with self.policy.using(FAST if fast else EAGER) as missed:
            images = super().generate(params, cancel)
        reason = None if fast and not missed else ("signature" if fast else "shape")
        if reason is not None:
            if missed:
                log.warning("compiled call ran eagerly: its signature was not warmed",
                            extra={"fields": {"calls": missed, "width": params.width, "height": params.height,
                                              "n": params.n}})
            if self.on_eager_fallback is not None:
                self.on_eager_fallback(reason)
        return images

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


def compile_cache(settings: Settings, options: Any, pipe: Any, sizes: list[tuple[int, int]]):
    """The CompileCache for this GPU, release, compile settings, UNet architecture and warmed shape set."""
    import torch
    from serving.backends.cuda.compilecache import CompileCache, key_fields
    from serving.backends.cuda.shapes import warmed_keys

    device = pipe.unet.device
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    fields = key_fields(gpu, options.mode, warmed_keys(sizes, settings.max_images), dict(options.__dict__),
                        dict(pipe.unet.config))
    return CompileCache(fields, settings.compile_cache_dir, settings.compile_cache_s3)


def precompile(policy: Any, options: Any, device_type: str):
    """Ahead-of-time compiled functions for the policy's gates (serving.backends.cuda.precompiled), so a warm start
    loads code instead of tracing; None with CUDA graphs, which only the just-in-time path captures."""
    from serving.backends.cuda.optimize import compile_plan
    from serving.backends.cuda.precompiled import Precompiled

    plan = compile_plan(options, device_type)
    if policy is None or plan is None or options.graphs:
        return None
    policy.precompiled = Precompiled(plan["mode"])
    return policy.precompiled


def _raise_recompile_limit(shapes: int) -> None:
    """Dynamo's per-code-object limit (8) must cover every warmed shape: the UNet's blocks of one class share a code
    object, so regional compilation needs a few entries per shape. Past warm-up nothing compiles anyway."""
    import torch._dynamo.config as dynamo

    needed = max(8, shapes * 4 + 8)
    dynamo.recompile_limit = max(dynamo.recompile_limit, needed)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, needed * 8)
