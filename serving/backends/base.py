"""Backend interface plus the diffusers implementation shared by the cpu and cuda backends."""
from __future__ import annotations

import abc
import copy
import functools
import inspect
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from serving.core.errors import GenerationCancelled, InvalidRequest
from serving.model.config import ModelDefaults

log = logging.getLogger("serving.backend")


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    n: int = 1
    negative_prompt: str | None = None
    # Image-to-image: an RGB PIL image already at width x height, and how much of it to repaint (0 < s <= 1).
    image: Any = None
    strength: float | None = None


class Backend(abc.ABC):
    """Runs generations. ``generate`` is called from worker threads, at most ``slots`` at a time."""

    name = "base"
    fixed_shape: tuple[int, int] | None = None
    fixed_images: int | None = None
    supports_img2img = False

    def __init__(self, defaults: ModelDefaults, slots: int = 1):
        self.defaults = defaults
        self.slots = slots
        # Called with a reason when a request runs off the compiled fast path (the server counts it).
        self.on_eager_fallback: Callable[[str], None] | None = None

    def check(self, params: GenerationParams) -> None:
        """Reject parameters this backend cannot run (compiled shapes); field bounds are checked by the API."""
        if self.fixed_shape and (params.width, params.height) != self.fixed_shape:
            w, h = self.fixed_shape
            param = "width" if params.width != w else "height"
            raise InvalidRequest(
                f"this endpoint runs a model compiled for {w}x{h} images only; request width={w} and height={h}",
                param=param,
            )
        if self.fixed_images and params.n != self.fixed_images:
            raise InvalidRequest(f"this endpoint's compiled model makes exactly {self.fixed_images} image(s) per request", param="n")
        if params.image is not None and not self.supports_img2img:
            raise InvalidRequest(f"image-to-image is not available on this endpoint's {self.name} backend", param="image")

    @abc.abstractmethod
    def generate(self, params: GenerationParams, cancel: threading.Event) -> list:
        """Run one request and return its PIL images; raise GenerationCancelled once ``cancel`` is set."""

    def is_accelerator_error(self, exc: BaseException) -> bool:
        return False

    def is_out_of_memory(self, exc: BaseException) -> bool:
        """Out of memory is the request's fault (too large), never evidence that the device is broken."""
        # By class name: torch.OutOfMemoryError (= torch.cuda.OutOfMemoryError) without importing torch here.
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            return True
        text = str(exc).lower()
        return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)

    def recover(self) -> bool:
        """Release what a failed generation left on the accelerator; False when the device is no longer usable.

        The engine marks the server failed (liveness and readiness 503) on False. Backends that cannot probe
        their device return True and rely on the engine's consecutive-error limit.
        """
        return True

    def warmup(self, sizes: list[tuple[int, int]] | None = None, cancel: threading.Event | None = None) -> None:
        """One generation per size (default: the model's), so compilation and autotuning happen before ready.

        ``cancel`` (set by the engine at shutdown) stops it at the next denoising step."""
        d = self.defaults
        shapes = [self.fixed_shape] if self.fixed_shape else (sizes or [(d.width, d.height)])
        for width, height in shapes:
            params = GenerationParams(prompt="warm-up", width=width, height=height, steps=d.steps,
                                      guidance_scale=d.guidance_scale, seed=0, n=self.fixed_images or 1)
            self.generate(params, cancel or threading.Event())


@functools.lru_cache(maxsize=16)
def _call_parameters(pipe_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(pipe_type.__call__).parameters)


def cancel_callback_kwargs(pipe: Any, cancel: threading.Event) -> dict[str, Any]:
    """Step-callback kwargs that abort the denoising loop once ``cancel`` is set (frees the accelerator early)."""
    params = _call_parameters(type(pipe))

    if "callback_on_step_end" in params:

        def on_step_end(_pipe, _step, _timestep, callback_kwargs):
            if cancel.is_set():
                raise GenerationCancelled()
            return {}

        return {"callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": []}
    if "callback" in params:  # older pipeline signatures (some optimum-neuron releases)

        def on_step(_step, _timestep, _latents):
            if cancel.is_set():
                raise GenerationCancelled()

        return {"callback": on_step, "callback_steps": 1}
    return {}


def set_scheduler(pipe: Any, name: str | None) -> None:
    if not name:
        return
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not name.endswith("Scheduler"):
        raise ValueError(f"scheduler {name!r} is not a diffusers scheduler class (e.g. EulerDiscreteScheduler)")
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def to_pil(images: Any) -> list:
    """PIL images from diffusers' ``output_type="pt"`` result (NCHW in [0, 1], on the pipeline's device).

    The float-to-uint8 step runs where the images are, so only uint8 crosses to the host (a quarter of the float32
    bytes diffusers' "pil" output copies back, diffusers 0.42 image_processor.py pt_to_numpy), and the host does no
    float work. Same arithmetic as diffusers' numpy_to_pil: float32, x 255, round half to even; identical images.
    """
    import torch
    from PIL import Image

    pixels = images.float().mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if pixels.shape[-1] == 1:
        return [Image.fromarray(p[:, :, 0], mode="L") for p in pixels]
    return [Image.fromarray(p) for p in pixels]


class DiffusersBackend(Backend):
    """One pipeline object per concurrency slot: they share weights, each has its own scheduler state."""

    name = "diffusers"
    supports_img2img = True

    def __init__(self, pipe: Any, defaults: ModelDefaults, slots: int = 1):
        super().__init__(defaults, slots)
        set_scheduler(pipe, defaults.scheduler)
        self.pipe = pipe
        from serving.backends.embeddings import PromptEmbeddings

        self.embeddings = PromptEmbeddings(str(pipe.config.get("_name_or_path", "")))
        self._pool: queue.Queue = queue.Queue()
        self._pool.put(pipe)
        for _ in range(slots - 1):
            self._pool.put(self._clone(pipe))

    @staticmethod
    def _clone(pipe: Any) -> Any:
        # Schedulers keep per-call state (timesteps, step index); modules are shared read-only.
        return type(pipe).from_pipe(pipe, scheduler=copy.deepcopy(pipe.scheduler))

    def is_accelerator_error(self, exc: BaseException) -> bool:
        import torch

        # Out of memory on any device fails only this request; the weights stay loaded.
        return isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or (
            isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
        )

    def _generator(self, seed: int):
        import torch

        # A CPU generator gives the same noise for a seed on every device type.
        return torch.Generator("cpu").manual_seed(seed)

    def generate(self, params: GenerationParams, cancel: threading.Event) -> list:
        import torch

        pipe = self._pool.get()
        try:
            if cancel.is_set():
                raise GenerationCancelled()
            if params.image is not None:
                from serving.core.img2img import img2img_twin

                # One init image per output: diffusers deprecates broadcasting a single image over a batch.
                call, mode_args = img2img_twin(pipe), {"image": [params.image] * params.n, "strength": params.strength}
            else:
                call, mode_args = pipe, {"width": params.width, "height": params.height}
            with torch.inference_mode():
                prompts = self.embeddings.pipeline_kwargs(call, params.prompt, params.negative_prompt,
                                                          params.guidance_scale > 1.0)
                out = call(
                    **prompts,
                    **mode_args,
                    num_inference_steps=params.steps,
                    guidance_scale=params.guidance_scale,
                    num_images_per_prompt=params.n,
                    generator=self._generator(params.seed),
                    # Tensors, not PIL: the [0, 1] images stay on the device until they are uint8 (to_pil).
                    output_type="pt",
                    **cancel_callback_kwargs(call, cancel),
                )
                return to_pil(out.images)
        finally:
            self._pool.put(pipe)
