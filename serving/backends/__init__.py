"""The backends that run a pipeline: the interface and the shared diffusers code (base.py), cpu, neuron and the cuda
fast path (cuda/), and the prompt-embedding cache (embeddings.py). create_backend picks one: --device auto
tries neuron, then cuda, then cpu. May import serving.model and serving.core."""
from __future__ import annotations

import logging

from serving.backends.base import Backend, GenerationParams
from serving.model.config import ModelDefaults, model_defaults
from serving.model.path import check_model_dir
from serving.core.settings import Settings

__all__ = ["Backend", "GenerationParams", "create_backend"]

log = logging.getLogger("serving.backend")


def create_backend(settings: Settings) -> Backend:
    """Resolve the device, read the model's defaults and load the pipeline onto the device."""
    from serving.model.deviceinit import start_device_init
    from serving.model.loading import resolve_device

    path = check_model_dir(settings.model)
    device = resolve_device(settings.device)
    # Before diffusers and transformers import (seconds of CPU), so the runtime's start-up overlaps them.
    start_device_init(device)
    log.info("loading model", extra={"fields": {"device": device, "model": str(path)}})
    if device == "neuron":
        from serving.backends.neuron import NeuronBackend, compiled_shape

        shape, _ = compiled_shape(path)
        return NeuronBackend.load(settings.model, model_defaults(path, settings, fixed_shape=shape))
    defaults: ModelDefaults = model_defaults(path, settings)
    if device == "cuda":
        from serving.backends.cuda.backend import CudaBackend

        return CudaBackend.load(settings, defaults)
    from serving.backends.cpu import CpuBackend

    return CpuBackend.load(settings.model, settings.dtype, defaults, settings.max_concurrency)
