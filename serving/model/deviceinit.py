"""The accelerator runtime's start-up (CUDA driver and context) on its own thread, beside the imports.

Creating a CUDA context takes from under a second to several seconds per process and needs nothing from
diffusers or transformers, whose imports take seconds of CPU. The backend starts it before those imports and
the loader waits for it only before it places weights on the device.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


def _init_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch sees no usable CUDA device")
    torch.cuda.init()
    # The primary context is created on first use, not by init(); one tiny allocation makes it exist now.
    torch.empty(1, device="cuda")


class DeviceInit:
    """One runtime start-up on a daemon thread; its failure is re-raised in whoever waits for it."""

    def __init__(self, device: str, init: Callable[[], None] | None = None) -> None:
        self.device = device
        self.error: BaseException | None = None
        self.elapsed_s: float | None = None
        self._init = init or _init_cuda
        self._thread = threading.Thread(target=self._run, name=f"{device}-init", daemon=True)

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._init()
        except BaseException as exc:  # noqa: BLE001 - handed to the loader thread in wait()
            self.error = exc
        finally:
            self.elapsed_s = time.perf_counter() - started

    def start(self) -> "DeviceInit":
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the runtime is up; re-raise its failure in the caller's thread."""
        self._thread.join()
        if self.error is not None:
            raise self.error


_started: dict[str, DeviceInit] = {}


def start_device_init(device: str) -> DeviceInit | None:
    """Begin the runtime start-up of ``device`` in the background (once per process); None for the CPU."""
    if device != "cuda":
        return None
    if device not in _started:
        _started[device] = DeviceInit(device).start()
    return _started[device]


def wait_device(device: str) -> float | None:
    """Wait for a start-up begun by start_device_init; its seconds, or None when none was started."""
    init = _started.get(device)
    if init is None:
        return None
    init.wait()
    return init.elapsed_s
