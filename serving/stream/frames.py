"""Stream frames: image-to-image at one fixed shape, with everything that does not change per frame done once.

Per config (prepare): the prompt's embeddings, the noise for the seed, the scheduler's timesteps for
(steps, strength) and the add-noise coefficients. Per frame: VAE encode (deterministic: the latent mode, so a
still camera gives a still picture) -> noise to the first timestep -> UNet steps -> VAE decode. This is diffusers'
img2img without its per-call work (prompt encoding, image processor, schedule set-up), so a frame of a 1-step
model costs one UNet and two (tiny) VAE passes.

On cuda every (shape, steps, strength, guidance) is captured as one CUDA graph: a frame is then a copy into the
graph's static input, one replay and a copy out. Prompt embeddings and noise live in the graph's static buffers,
so a new prompt or seed is a buffer copy, not a recapture.
"""
from __future__ import annotations

import copy
import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from serving.core.errors import GenerationCancelled

# Graphs kept per runner; each holds a private memory pool, so the set is small and least-recently-used goes.
MAX_GRAPHS = 4


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
    """What a config costs once: embeddings, noise, the timestep slice and the add-noise coefficients."""

    config: FrameConfig
    width: int
    height: int
    embeds: Any
    noise: Any
    scheduler: Any
    timesteps: list  # CPU scalars, for the scheduler's own indexing
    timesteps_device: list  # the same on the UNet's device: no host-to-device copy inside a graph
    noise_coeffs: tuple[float, float]  # noisy = a * latents + b * noise at the first timestep
    cfg: bool

    @property
    def graph_key(self) -> tuple:
        c = self.config
        return (self.width, self.height, c.steps, c.strength, c.guidance_scale if self.cfg else 0.0)


class FrameRunner:
    """Runs frames on one pipeline's modules (shared with the REST pipelines: no second copy of the weights)."""

    def __init__(self, pipe: Any, vae: Any | None = None, cuda_graphs: bool = True):
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
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: OrderedDict[tuple, _CudaGraphFrame] = OrderedDict()
        self._graphs_lock = threading.Lock()

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
        order = getattr(scheduler, "order", 1)
        start = max(config.steps - min(int(config.steps * config.strength), config.steps), 0) * order
        timesteps = list(scheduler.timesteps[start:])
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        first = torch.stack([timesteps[0]])
        a = float(scheduler.add_noise(torch.ones(1), torch.zeros(1), first))
        b = float(scheduler.add_noise(torch.zeros(1), torch.ones(1), first))
        device_ts = [t.to(self.device) for t in timesteps]
        return Prepared(config, width, height, embeds, noise, scheduler, timesteps, device_ts, (a, b), cfg)

    # -- per frame -----------------------------------------------------------------------------------------
    def run(self, prepared: Prepared, image: Any, cancel: threading.Event):
        """The output PIL image for one RGB PIL frame of the prepared size."""
        import numpy as np
        import torch

        if cancel.is_set():
            raise GenerationCancelled()
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        with torch.inference_mode():
            x = pixels.to(self.device).permute(2, 0, 1).unsqueeze(0).to(self.vae_dtype).div_(127.5).sub_(1.0)
            if self.cuda_graphs:
                out = self._graph(prepared)(x, prepared)
            else:
                out = self.frame(prepared, x, cancel)
            rgb = out[0].add(1.0).mul_(127.5).clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        from PIL import Image

        return Image.fromarray(rgb)

    def frame(self, p: Prepared, x: Any, cancel: threading.Event | None = None,
              embeds: Any = None, noise: Any = None) -> Any:
        """Pixels in [-1, 1] (1x3xHxW) -> pixels in [-1, 1]. Pure tensor work: capturable as a CUDA graph."""
        import torch

        encoded = self._vae_encode(x)
        latents = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()
        latents = latents.to(self.dtype) * self.scaling
        a, b = p.noise_coeffs
        latents = latents * a + (p.noise if noise is None else noise) * b
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
                eps = uncond + p.config.guidance_scale * (cond - uncond)
            latents = scheduler.step(eps, t, latents, return_dict=False)[0].to(self.dtype)
        return self._vae_decode((latents / self.scaling).to(self.vae_dtype), return_dict=False)[0]

    def _graph(self, prepared: Prepared) -> "_CudaGraphFrame":
        key = prepared.graph_key
        with self._graphs_lock:
            graph = self._graphs.get(key)
            if graph is None:
                graph = _CudaGraphFrame(self, prepared)
                self._graphs[key] = graph
                while len(self._graphs) > MAX_GRAPHS:
                    self._graphs.popitem(last=False)
            self._graphs.move_to_end(key)
        return graph


class _CudaGraphFrame:
    """One captured frame for a (shape, steps, strength, guidance): static input, embeddings and noise buffers."""

    def __init__(self, runner: FrameRunner, template: Prepared):
        import torch

        self.lock = threading.Lock()  # a graph's static buffers serve one replay at a time
        self.static_in = torch.zeros((1, 3, template.height, template.width), device=runner.device,
                                     dtype=runner.vae_dtype)
        self.embeds = template.embeds.clone()
        self.noise = template.noise.clone()
        # The scheduler's Python-side state advances during capture only; replays reuse the captured kernels.
        self._template = template
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):  # cuDNN/cuBLAS pick their algorithms and allocate workspaces outside the capture
                runner.frame(template, self.static_in, embeds=self.embeds, noise=self.noise)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_out = runner.frame(template, self.static_in, embeds=self.embeds, noise=self.noise)

    def __call__(self, x: Any, prepared: Prepared) -> Any:
        with self.lock:
            self.static_in.copy_(x)
            self.embeds.copy_(prepared.embeds)
            self.noise.copy_(prepared.noise)
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
    return vae.to(pipe.unet.device, pipe.unet.dtype).eval()
