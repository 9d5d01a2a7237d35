"""The accelerator runtime starting on its own thread, beside the imports, and its failures reaching the loader."""
from __future__ import annotations

import threading

import pytest

from serving.model import deviceinit
from serving.backends import create_backend
from serving.core.settings import Settings


@pytest.fixture
def fresh_inits(monkeypatch):
    """A process without any runtime start-up begun (the registry is per process)."""
    monkeypatch.setattr(deviceinit, "_started", {})


def test_device_init_runs_beside_the_caller():
    caller_went_on = threading.Event()
    seen = {}

    def init():
        # Finishes only once the caller has moved past start(): start() must not block on the runtime.
        seen["thread"] = threading.current_thread().name
        assert caller_went_on.wait(timeout=10)

    handle = deviceinit.DeviceInit("cuda", init=init).start()
    caller_went_on.set()
    handle.wait()
    assert seen["thread"] == "cuda-init" and handle.error is None and handle.elapsed_s is not None


def test_device_init_failure_reaches_the_loader():
    def init():
        raise RuntimeError("driver gone")

    handle = deviceinit.DeviceInit("cuda", init=init).start()
    with pytest.raises(RuntimeError, match="driver gone"):
        handle.wait()


def test_cpu_needs_no_runtime_start(fresh_inits):
    assert deviceinit.start_device_init("cpu") is None
    assert deviceinit.wait_device("cpu") is None


def test_cuda_without_a_gpu_fails_with_the_flag_named(fresh_inits):
    # The real _init_cuda on this CPU-only torch: the error names the flag instead of a CUDA stack trace.
    first = deviceinit.start_device_init("cuda")
    assert deviceinit.start_device_init("cuda") is first  # one start-up per process
    with pytest.raises(RuntimeError, match="--device cuda was requested but torch sees no usable CUDA device"):
        deviceinit.wait_device("cuda")


def test_create_backend_starts_the_runtime_before_loading(fresh_inits, tiny_model, monkeypatch):
    started = []
    monkeypatch.setattr(deviceinit, "start_device_init", lambda device: started.append(device))
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        create_backend(Settings(model=str(tiny_model), device="cuda"))
    assert started == ["cuda"]

