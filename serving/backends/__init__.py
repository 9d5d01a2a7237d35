"""Backend selection: --device auto picks neuron, then cuda, then cpu."""
from __future__ import annotations

import logging

from serving.backends.base import Backend, GenerationParams
from serving.modelconfig import ModelDefaults, model_defaults
from serving.modelpath import check_model_dir
from serving.settings import Settings

__all__ = ["Backend", "GenerationParams", "create_backend"]

log = logging.getLogger("serving.backend")


def create_backend(settings: Settings) -> Backend:
    """Resolve the device, read the model's defaults and load the pipeline onto the device."""
    from serving.deviceinit import start_device_init
    from serving.loading import resolve_device

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
        from serving.backends.cuda import CudaBackend

        return CudaBackend.load(settings, defaults)
    from serving.backends.cpu import CpuBackend

    return CpuBackend.load(settings.model, settings.dtype, defaults, settings.max_concurrency)
