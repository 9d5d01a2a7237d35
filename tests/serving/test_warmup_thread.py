"""Warm-up runs on the engine's executor (the thread requests run on), and readiness follows it."""
from __future__ import annotations

import asyncio
import threading

import pytest

from serving.backends.base import Backend
from serving.engine.scheduler import Engine
from serving.model.config import ModelDefaults
from serving.runtime.server import build_state, load_model
from serving.core.settings import Settings


class ThreadRecording(Backend):
    name = "recording"

    def __init__(self):
        super().__init__(ModelDefaults(width=64, height=64, steps=2, guidance_scale=0.0))
        self.warmup_threads = []
        self.generate_threads = []
        self.phase_during_warmup = []

    def warmup(self, sizes=None, cancel=None):
        self.warmup_threads.append(threading.current_thread())
        self.phase_during_warmup.append(self.state.phase)
        super().warmup(sizes, cancel)

    def generate(self, params, cancel):
        self.generate_threads.append(threading.current_thread())
        return []


def test_warmup_runs_on_the_request_thread_and_ready_comes_after():
    from serving.backends.base import GenerationParams

    settings = Settings(model="tiny", device="cpu", max_streams=0)
    state = build_state(settings)
    backend = ThreadRecording()
    backend.state = state

    async def scenario():
        await load_model(state, create_backend=lambda _settings: backend)
        assert state.phase == "ready"
        await state.engine.generate(GenerationParams(prompt="x", width=64, height=64, steps=2, guidance_scale=0.0,
                                                     seed=0))

    asyncio.run(scenario())
    state.engine.shutdown()
    warm, request = backend.warmup_threads[0], backend.generate_threads[-1]
    assert backend.phase_during_warmup == ["warming up"]
    # One worker (--max-concurrency 1): the very thread that warmed up serves the request.
    assert warm is request and warm.name.startswith("generate")
    assert backend.generate_threads[0] is warm  # the warm-up generation itself ran there too
    # The server wires the backend's off-fast-path signal to its Prometheus counter.
    backend.on_eager_fallback("shape")
    assert state.metrics.registry.get_sample_value("edge_diffusion_eager_fallback_total", {"reason": "shape"}) == 1


def test_shutdown_cancels_a_running_warmup():
    from serving.core.errors import GenerationCancelled

    engine = Engine(None, 1, 0, 5.0)
    started = threading.Event()
    outcome = []

    def warmup(cancel):
        started.set()
        if not cancel.wait(5):
            outcome.append("not cancelled")
            return
        outcome.append("cancelled")
        raise GenerationCancelled()

    async def scenario():
        task = asyncio.ensure_future(engine.warm_up(warmup))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        engine.shutdown()
        with pytest.raises(GenerationCancelled):
            await task

    asyncio.run(scenario())
    assert outcome == ["cancelled"]


def test_a_failed_load_reaches_the_awaiting_coroutine():
    """The loader thread's exception is the load's result; it must not be lost (the server would stay 503 forever
    instead of exiting 1)."""
    state = build_state(Settings(model="tiny", device="cpu", max_streams=0))

    def fails(_settings):
        raise PermissionError(13, "Permission denied", "/opt/model/vae/diffusion_pytorch_model.safetensors")

    async def scenario():
        with pytest.raises(PermissionError, match="Permission denied"):
            await asyncio.wait_for(load_model(state, create_backend=fails), timeout=10)

    asyncio.run(scenario())
    state.engine.shutdown()
