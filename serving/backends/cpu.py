"""CPU backend: float32, for development and tests."""
from __future__ import annotations

import gc
from typing import Any

from serving.backends.base import DiffusersBackend
from serving.model.config import ModelDefaults


class CpuBackend(DiffusersBackend):
    name = "cpu"

    @classmethod
    def load(cls, model: str, dtype: str, defaults: ModelDefaults, slots: int) -> "CpuBackend":
        from serving.model.loading import load_pipeline

        return cls(load_pipeline(model, "cpu", "float32" if dtype == "auto" else dtype), defaults, slots)

    def __init__(self, pipe: Any, defaults: ModelDefaults, slots: int = 1):
        super().__init__(pipe, defaults, slots)

    def recover(self) -> bool:
        # Host memory errors are transient: the tensors of the failed call may still sit in reference cycles
        # (exception frames), so collect them now. There is no device that can be lost, so always usable.
        gc.collect()
        return True
