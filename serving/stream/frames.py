"""Stream frames: image-to-image at one fixed shape, with everything that does not change per frame done once.

Per config (prepare): the prompt's embeddings, the noise for the seed, the scheduler's timesteps for
(steps, strength) and the add-noise and guidance coefficients. Per frame: VAE encode (deterministic: the latent
mode, so a still camera gives a still picture) -> noise to the first timestep -> UNet steps -> VAE decode. This is
diffusers' img2img without its per-call work (prompt encoding, image processor, schedule set-up), so a frame of a
1-step model costs one UNet and two (tiny) VAE passes.

On cuda a frame replays one CUDA graph per graph key: what changes the captured kernels (size, steps, the start
index of the timestep slice, CFG on/off). Everything else a config sets lives in device buffers the graph reads:
the prompt embeddings, the seed's noise and the coefficients (add-noise a and b, the guidance scale), so a new
prompt, seed or slider value is a buffer copy, not a recapture. Graphs are captured only in warm-up (`warm`, one
capture at a time in the process, serving.backends.cuda.cudagraphs.capture); a frame whose key was not warmed runs
eagerly and is counted (`on_eager`, the edge_diffusion_stream_frames_eager metric). Nothing captures at request time.
"""
from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable

from serving.core.errors import GenerationCancelled

# Frame graphs captured per runner in warm-up; each holds a private memory pool, so the set is small, and keys past
# it run eagerly. Captured graphs are never evicted: a dropped graph could only come back by a request-time capture.
MAX_GRAPHS = 8
# The guidance scale a CFG-on warm-up config uses when the model's default has guidance off (any value > 1 captures
# the same graph: the scale is a buffer).
WARMUP_CFG_SCALE = 2.0


@dataclass(frozen=True)
class FrameConfig:
    prompt: str
    strength: float
    steps: int
    guidance_scale: float
    seed: int
    output_format: str = "jpeg"
    negative_prompt: str | None = None


@dataclass
class Prepared:
    """What a config costs once: embeddings, noise, the timestep slice and the coefficients, on the device."""

    config: FrameConfig
    width: int
    height: int
    embeds: Any
    noise: Any
    scheduler: Any
    timesteps: list  # CPU scalars, for the scheduler's own indexing
    timesteps_device: list  # the same on the UNet's device: no host-to-device copy inside a graph
    start: int  # index of the first timestep in the scheduler's full schedule
    coeffs: Any  # float32 [a, b, guidance] on the device: noisy = a * latents + b * noise; eps mix by guidance
    cfg: bool

    @property
    def noise_coeffs(self) -> tuple[float, float]:
        a, b = self.coeffs[:2].tolist()
        return a, b

    @property
    def graph_key(self) -> tuple:
        """What changes the captured kernels: size, steps and start index (the timestep slice), CFG on/off."""
        return (self.width, self.height, self.config.steps, self.start, self.cfg)


def start_index(steps: int, strength: float, order: int = 1) -> int:
    """diffusers' img2img slice: int(steps x strength) denoising steps from the end of the schedule."""
    return max(steps - min(int(steps * strength), steps), 0) * order


def warmup_configs(steps: int, guidance_scale: float, max_graphs: int = MAX_GRAPHS) -> list[FrameConfig]:
    """The configs stream warm-up captures, most likely first, one per graph key, at most ``max_graphs``.

    First the stream's default (strength 0.5, the model's guidance), then every other start index with that CFG
    state (a strength slider reaches each of them), then the same with CFG toggled (a guidance slider crossing 1).
    """
    cfg_default = guidance_scale > 1.0
    guidance = {cfg_default: guidance_scale, not cfg_default: WARMUP_CFG_SCALE if not cfg_default else 0.0}
    default_start = start_index(steps, 0.5)
    starts = [default_start] + [s for s in range(steps) if s != default_start]
    configs = []
    for cfg in (cfg_default, not cfg_default):
        for start in starts:
            # The midpoint between two strengths' thresholds: int(steps x strength) == steps - start exactly.
            strength = 0.5 if start == default_start else min((steps - start + 0.5) / steps, 1.0)
            configs.append(FrameConfig(prompt="warm-up", strength=strength, steps=steps,
                                       guidance_scale=guidance[cfg], seed=0))
    return configs[:max_graphs]


class FrameRunner:
    """Runs frames on one pipeline's modules (shared with the REST pipelines: no second copy of the weights)."""

    def __init__(self, pipe: Any, vae: Any | None = None, cuda_graphs: bool = True,
                 capture: Callable[[Callable[[], Any]], tuple[Any, Any]] | None = None, codec: Any = None):
        self.pipe = pipe
        self.unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
        self.vae = vae if vae is not None else getattr(pipe.vae, "_orig_mod", pipe.vae)
        # The classes' own methods, not the instances': the GPU path may replace unet.forward / vae.decode with
        # torch.compile'd or graph-replaying wrappers for the REST shapes, and a frame of a shape they were not
        # warmed for must never compile at request time. Frames get their own capture (below) instead.
        self._unet_forward = functools.partial(type(self.unet).forward, self.unet)
        self._vae_encode = functools.partial(type(self.vae).encode, self.vae)
        self._vae_decode = functools.partial(type(self.vae).decode, self.vae)
        self.device = self.unet.device
        self.dtype = self.unet.dtype
        self.vae_dtype = next(self.vae.parameters()).dtype
        self.scaling = float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)
        self.latent_channels = self.unet.config.in_channels
        # ``capture`` replaces the CUDA capture (tests drive the graph path on CPU with a stand-in that replays by
        # re-running the captured work).
        self.cuda_graphs = cuda_graphs and (self.device.type == "cuda" or capture is not None)
        self._capture = capture
        self.captures = 0
        # Called once per frame that ran eagerly although graphs are on (its graph key was not warmed).
        self.on_eager: Callable[[], None] | None = None
        self._graphs: dict[tuple, _CudaGraphFrame] = {}
        self._graphs_lock = threading.Lock()
        if codec is None:
            from serving.stream.codec import FrameCodec

            codec = FrameCodec(self.device)
        self.codec = codec

    # -- per config ----------------------------------------------------------------------------------------
    def prepare(self, config: FrameConfig, width: int, height: int) -> Prepared:
        import torch

        cfg = config.guidance_scale > 1.0
        with torch.inference_mode():
            cond, uncond = self.pipe.encode_prompt(config.prompt, self.device, 1, cfg, config.negative_prompt)
            embeds = torch.cat([uncond, cond]) if cfg else cond
            shape = (1, self.latent_channels, height // 8, width // 8)
            # CPU generator: the same seed gives the same noise on every device.
            noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(config.seed)).to(self.device, self.dtype)
        scheduler = copy.deepcopy(self.pipe.scheduler)
        scheduler.set_timesteps(config.steps)
        start = start_index(config.steps, config.strength, getattr(scheduler, "order", 1))
        timesteps = list(scheduler.timesteps[start:])
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        first = torch.stack([timesteps[0]])
        a = float(scheduler.add_noise(torch.ones(1), torch.zeros(1), first))
        b = float(scheduler.add_noise(torch.zeros(1), torch.ones(1), first))
        coeffs = torch.tensor([a, b, config.guidance_scale], dtype=torch.float32, device=self.device)
        device_ts = [t.to(self.device) for t in timesteps]
        return Prepared(config, width, height, embeds, noise, scheduler, timesteps, device_ts, start, coeffs, cfg)

    def warm(self, prepared: Prepared) -> bool:
        """Warm-up only: capture the graph of ``prepared``'s key (or run one eager frame without graphs).

        False when the key was already captured or the graph budget is spent (that key will run eagerly)."""
        import torch

        if not self.cuda_graphs:
            x = torch.zeros((1, 3, prepared.height, prepared.width), device=self.device, dtype=self.vae_dtype)
            with torch.inference_mode():
                self.frame(prepared, x)
            return False
        with self._graphs_lock:
            if prepared.graph_key in self._graphs or len(self._graphs) >= MAX_GRAPHS:
                return False
            self._graphs[prepared.graph_key] = _CudaGraphFrame(self, prepared, self._capture)
            self.captures += 1
        return True

    @property
    def graph_keys(self) -> list[tuple]:
        return list(self._graphs)

    # -- per frame -----------------------------------------------------------------------------------------
    def decode(self, data: bytes, min_size: int, max_size: int, stage: bool = False) -> tuple[Any, tuple[int, int]]:
        """(frame, (width, height)) for a frame's bytes, checked as a REST image is (serving.core.img2img): JPEG
        stays bytes for the device decoder when the codec has one (header checks only), anything else is decoded
        to an RGB PIL image here; with ``stage``, also decoded and uploaded now (`stage`)."""
        from serving.core.img2img import decode_image, open_image
        from serving.stream.codec import is_jpeg

        if self.codec.on_device and is_jpeg(data):
            frame, size = data, open_image(data, "frame", min_size, max_size).size
        else:
            frame = decode_image(data, "frame", min_size, max_size)
            size = frame.size
        return (self.stage(frame) if stage else frame), size

    def stage(self, frame: Any) -> Any:
        """Decode and upload a frame (JPEG bytes or an RGB PIL image) ahead of `run`: safe on another thread, and
        on cuda it runs on the codec's copy stream, beside the frame being denoised (serving.stream.codec)."""
        return self.codec.stage(frame)

    def run(self, prepared: Prepared, image: Any, cancel: threading.Event, media: str | None = None):
        """One frame of the prepared size: an RGB PIL image, JPEG bytes or a `stage`d frame in; the PIL output, or
        with ``media`` the output encoded as that type (JPEG on the device where the codec can)."""
        import torch

        from serving.stream.codec import Staged

        if cancel.is_set():
            raise GenerationCancelled()
        staged = image if isinstance(image, Staged) else self.stage(image)
        with torch.inference_mode():
            x = staged.ready().to(self.vae_dtype).div_(127.5).sub_(1.0)
            graph = self._graphs.get(prepared.graph_key) if self.cuda_graphs else None
            if graph is not None:
                out = graph(x, prepared)
            else:
                if self.cuda_graphs and self.on_eager is not None:
                    self.on_eager()
                out = self.frame(prepared, x, cancel)
            rgb = out[0].add(1.0).mul_(127.5).clamp_(0, 255).round_().to(torch.uint8)
            if media is not None:
                return self.codec.encode(rgb, media)
            rgb = rgb.permute(1, 2, 0).cpu().numpy()
        from PIL import Image

        return Image.fromarray(rgb)

    def frame(self, p: Prepared, x: Any, cancel: threading.Event | None = None,
              embeds: Any = None, noise: Any = None, coeffs: Any = None) -> Any:
        """Pixels in [-1, 1] (1x3xHxW) -> pixels in [-1, 1]. Pure tensor work: capturable as a CUDA graph."""
        import torch

        encoded = self._vae_encode(x)
        latents = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()
        latents = latents.to(self.dtype) * self.scaling
        coeffs = p.coeffs if coeffs is None else coeffs
        latents = latents * coeffs[0] + (p.noise if noise is None else noise) * coeffs[1]
        embeds = p.embeds if embeds is None else embeds
        scheduler = p.scheduler
        if hasattr(scheduler, "_step_index"):
            scheduler._step_index = None  # restart at begin_index; the scheduler has no public reset
        for t, t_device in zip(p.timesteps, p.timesteps_device):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled()
            model_in = torch.cat([latents, latents]) if p.cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            eps = self._unet_forward(model_in, t_device, encoder_hidden_states=embeds, return_dict=False)[0]
            if p.cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + coeffs[2] * (cond - uncond)
            latents = scheduler.step(eps, t, latents, return_dict=False)[0].to(self.dtype)
        return self._vae_decode((latents / self.scaling).to(self.vae_dtype), return_dict=False)[0]


class _CudaGraphFrame:
    """One captured frame per graph key: static input, embeddings, noise and coefficient buffers."""

    def __init__(self, runner: FrameRunner, template: Prepared, capture: Callable | None = None):
        import torch

        if capture is None:
            from serving.backends.cuda.cudagraphs import capture
        self.lock = threading.Lock()  # a graph's static buffers serve one replay at a time
        self.static_in = torch.zeros((1, 3, template.height, template.width), device=runner.device,
                                     dtype=runner.vae_dtype)
        self.embeds = template.embeds.clone()
        self.noise = template.noise.clone()
        self.coeffs = template.coeffs.clone()
        # The scheduler's Python-side state advances during capture only; replays reuse the captured kernels, and
        # the template keeps the captured timestep tensors alive.
        self._template = template

        def run():
            with torch.inference_mode():
                return runner.frame(template, self.static_in, embeds=self.embeds, noise=self.noise,
                                    coeffs=self.coeffs)

        self.graph, self.static_out = capture(run)

    def __call__(self, x: Any, prepared: Prepared) -> Any:
        with self.lock:
            self.static_in.copy_(x)
            self.embeds.copy_(prepared.embeds)
            self.noise.copy_(prepared.noise)
            self.coeffs.copy_(prepared.coeffs)
            self.graph.replay()
            return self.static_out.clone()


def load_stream_vae(path: str, pipe: Any) -> Any:
    """An AutoencoderTiny (TAESD layout) from a local directory, on the pipeline's device and dtype."""
    from pathlib import Path

    from diffusers import AutoencoderTiny

    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ValueError(f"--stream-vae: {path!r} is not a local AutoencoderTiny directory (no config.json there)")
    vae = AutoencoderTiny.from_pretrained(str(directory), local_files_only=True)
    expected = pipe.unet.config.in_channels
    if vae.config.latent_channels != expected:
        raise ValueError(f"--stream-vae: {path!r} has {vae.config.latent_channels} latent channels but the UNet "
                         f"expects {expected}; use the TAESD that matches the model family")
    import torch

    # channels_last like the REST VAE (serving.backends.cuda.optimize): cuDNN's NHWC convolution kernels on tensor
    # cores; the frame input is NHWC already (an HWC camera frame permuted to NCHW is channels_last-strided).
    return vae.to(pipe.unet.device, pipe.unet.dtype).to(memory_format=torch.channels_last).eval()
