"""Neuron backend (Inferentia2 / Trainium): optimum-neuron's NeuronStableDiffusionPipeline on compiled artifacts.

The compiled graphs fix image size and batch, so other shapes are rejected with a 4xx before they reach the
device. The UNet (or the whole pipeline) is loaded on both NeuronCores of a device and each batch is split
across them (torch_neuronx.DataParallel inside optimum-neuron).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from serving.backends.base import Backend, GenerationParams, cancel_callback_kwargs, set_scheduler
from serving.core.errors import GenerationCancelled
from serving.model.config import ModelDefaults
from serving.model.path import check_model_dir

NEURON_FILE = "model.neuron"
DATA_PARALLEL_MODES = ("none", "unet", "all")


class NeuronModelError(ValueError):
    """The compiled Neuron directory is incomplete or inconsistent."""


def _neuron_section(path: Path, component: str) -> dict[str, Any]:
    config = path / component / "config.json"
    if not config.is_file():
        raise NeuronModelError(f"{config} is missing: compile the model with `optimum-cli export neuron` into {path}")
    data = json.loads(config.read_text())
    section = data.get("neuron")
    if not isinstance(section, dict):
        raise NeuronModelError(f"{config} has no 'neuron' section: it was not produced by optimum-neuron's exporter")
    return section


def compiled_shape(path: str | Path) -> tuple[tuple[int, int], int]:
    """((width, height), images per request) the artifacts were compiled for, from the exporter's configs."""
    path = Path(path)
    if not (path / "unet" / NEURON_FILE).is_file():
        raise NeuronModelError(f"{path}/unet/{NEURON_FILE} is missing: --model must be a compiled Neuron directory")
    unet = _neuron_section(path, "unet")
    decoder = _neuron_section(path, "vae_decoder")
    try:
        latent_h, latent_w = int(unet["static_height"]), int(unet["static_width"])
        unet_batch = int(unet["static_batch_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise NeuronModelError(f"{path}/unet/config.json: neuron section lacks {exc}; recompile with static shapes") from None
    vae_cfg = json.loads((path / "vae_decoder" / "config.json").read_text())
    scale = 2 ** (len(vae_cfg.get("block_out_channels", [0] * 4)) - 1)
    text_batch = int(_neuron_section(path, "text_encoder").get("static_batch_size", 1)) if (path / "text_encoder").is_dir() else 1
    del decoder  # read for its presence check: the pipeline cannot decode without it
    return (latent_w * scale, latent_h * scale), max(1, unet_batch // max(1, text_batch))


def load_neuron_pipeline(path: str | Path, data_parallel_mode: str | None = None) -> Any:
    path = Path(path)
    compiled_shape(path)  # fail early, with a clear message, on a non-compiled directory
    try:
        from optimum.neuron import NeuronStableDiffusionPipeline
    except ImportError as exc:
        raise RuntimeError(
            "--device neuron needs optimum-neuron and torch-neuronx (the neuron image installs them): " + str(exc)
        ) from exc
    mode = data_parallel_mode or "unet"
    if mode not in DATA_PARALLEL_MODES:
        raise NeuronModelError(f"neuron_data_parallel_mode must be one of {', '.join(DATA_PARALLEL_MODES)}, got {mode!r}")
    pipe = NeuronStableDiffusionPipeline.from_pretrained(str(path), data_parallel_mode=mode)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


class NeuronBackend(Backend):
    name = "neuron"

    @classmethod
    def load(cls, model: str, defaults: ModelDefaults) -> "NeuronBackend":
        path = check_model_dir(model)
        shape, images = compiled_shape(path)
        return cls(load_neuron_pipeline(path, defaults.neuron_data_parallel_mode), defaults, shape, images)

    def __init__(self, pipe: Any, defaults: ModelDefaults, shape: tuple[int, int], images: int):
        super().__init__(defaults, slots=1)
        set_scheduler(pipe, defaults.scheduler)
        self.pipe = pipe
        self.fixed_shape = shape
        self.fixed_images = images
        # The compiled models run one batch at a time; concurrency comes from the two cores within a batch.
        self._lock = threading.Lock()

    def generate(self, params: GenerationParams, cancel: threading.Event) -> list:
        import torch

        with self._lock:
            if cancel.is_set():
                raise GenerationCancelled()
            out = self.pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                generator=torch.Generator("cpu").manual_seed(params.seed),
                **cancel_callback_kwargs(self.pipe, cancel),
            )
            return list(out.images)

    def is_accelerator_error(self, exc: BaseException) -> bool:
        text = str(exc)
        return isinstance(exc, (RuntimeError, MemoryError)) and any(k in text for k in ("NRT", "nrt_", "Neuron", "NEURON"))

    def recover(self) -> bool:
        # The Neuron runtime has no cheap health probe from Python and a failed execution leaves the loaded
        # graphs in place, so claim usable and let the engine's consecutive-error limit catch a dead device.
        return True
