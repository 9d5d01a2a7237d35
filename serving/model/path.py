"""Checks on a model directory, shared by the loader and the backends (a leaf module: it imports no backend)."""
from __future__ import annotations

import os
from pathlib import Path


class ModelLoadError(ValueError):
    """The model path is missing or is not a pipeline this server can load."""


def check_model_dir(model: str | os.PathLike) -> Path:
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(
            f"model path {str(path)!r} does not exist: --model (SERVING_MODEL) must be a local diffusers directory; "
            "create a test model with `python -m serving tiny-model DIR`"
        )
    if not (path / "model_index.json").is_file():
        raise ModelLoadError(
            f"model path {str(path)!r} has no model_index.json: --model must point at a diffusers pipeline directory"
        )
    return path


def is_neuron_compiled(path: Path) -> bool:
    return (path / "unet" / "model.neuron").is_file()
