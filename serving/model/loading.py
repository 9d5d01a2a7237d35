"""Load a diffusers pipeline (or a compiled Neuron pipeline) from a local directory onto a device."""
from __future__ import annotations

import glob
import logging
import time

from serving.model.deviceinit import wait_device
from serving.model.path import ModelLoadError, check_model_dir, is_neuron_compiled

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
        # Compiled Neuron graphs fix the shapes and need the backend's data-parallel setting; NeuronBackend.load
        # reads both, so it alone loads them.
        raise ModelLoadError("Neuron pipelines load through serving.backends.neuron.NeuronBackend.load, not load_pipeline")
    if is_neuron_compiled(path):
        raise ModelLoadError(f"{path} holds Neuron-compiled artifacts; serve it with --device neuron")
    started = time.perf_counter()
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    imported = time.perf_counter()
    from serving.core.logconfig import adopt_library_logging

    # Progress bars are not JSON log lines; the server logs load timings itself.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    adopt_library_logging()
    torch_dtype = getattr(torch, resolve_dtype(device, dtype))
    device_init_s = wait_device(device)
    waited = time.perf_counter()
    # device_map names one device: safetensors places each tensor there as it is read, so the weights take no
    # detour through host memory and no second copy (pipe.to) follows. A device name is not a sharding map, so
    # pipe.to() keeps working afterwards.
    pipe = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True, device_map=device)
    if not hasattr(pipe, "unet") or not hasattr(pipe, "vae"):
        raise ModelLoadError(f"{path} is a {type(pipe).__name__}; this server serves UNet text-to-image pipelines")
    pipe.set_progress_bar_config(disable=True)
    built = time.perf_counter()
    # The import and build phases of a cold start: benchmarks.coldstart reads them from this line.
    log.info("pipeline loaded", extra={"fields": {
        "device": device,
        "imports_s": round(imported - started, 3),
        "device_init_wait_s": round(waited - imported, 3),
        "device_init_s": None if device_init_s is None else round(device_init_s, 3),
        "build_s": round(built - waited, 3),
    }})
    return pipe
