"""Load a diffusers pipeline (or a compiled Neuron pipeline) from a local directory onto a device."""
from __future__ import annotations

import glob
import logging

from serving.modelpath import ModelLoadError, check_model_dir, is_neuron_compiled

__all__ = ["ModelLoadError", "check_model_dir", "detect_device", "is_neuron_compiled", "load_pipeline", "resolve_device",
           "resolve_dtype"]

log = logging.getLogger("serving.loading")

NEURON_DEVICE_GLOB = "/dev/neuron*"


def neuron_available() -> bool:
    return bool(glob.glob(NEURON_DEVICE_GLOB))


def detect_device() -> str:
    """neuron if Neuron devices are present, else cuda if a GPU is usable, else cpu."""
    if neuron_available():
        return "neuron"
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except ImportError:  # pragma: no cover - torch is a hard dependency of the server image
        pass
    return "cpu"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    chosen = detect_device()
    log.info("device auto-detected", extra={"fields": {"device": chosen}})
    return chosen


def resolve_dtype(device: str, dtype: str) -> str:
    if dtype != "auto":
        return dtype
    return {"cuda": "float16", "neuron": "bfloat16"}.get(device, "float32")


def load_pipeline(model: str, device: str, dtype: str = "auto"):
    """Return the diffusers pipeline from local directory ``model`` on ``device`` (auto|cpu|cuda|neuron)."""
    path = check_model_dir(model)
    device = resolve_device(device)
    if device == "neuron":
        from serving.backends.neuron import load_neuron_pipeline

        return load_neuron_pipeline(path)
    if is_neuron_compiled(path):
        raise ModelLoadError(f"{path} holds Neuron-compiled artifacts; serve it with --device neuron")
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Progress bars are not JSON log lines; the server logs load timings itself.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    torch_dtype = getattr(torch, resolve_dtype(device, dtype))
    pipe = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    if not hasattr(pipe, "unet") or not hasattr(pipe, "vae"):
        raise ModelLoadError(f"{path} is a {type(pipe).__name__}; this server serves UNet text-to-image pipelines")
    pipe.set_progress_bar_config(disable=True)
    # from_pretrained already loads onto the CPU; moving again would only re-cast modules.
    return pipe if device == "cpu" else pipe.to(device)
