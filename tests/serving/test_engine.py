"""Admission control, timeouts, accelerator errors and draining, against a controllable backend."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.backends.base import Backend, GenerationParams
from serving.engine.scheduler import Engine
from serving.core.errors import GenerationCancelled, GenerationTimeout, InvalidRequest, QueueFull, Unavailable
from serving.model.config import ModelDefaults

DEFAULTS = ModelDefaults(width=64, height=64, steps=4, guidance_scale=0.0)


class DeviceFault(RuntimeError):
    """An accelerator error that is not out-of-memory (e.g. a lost device)."""


class StepBackend(Backend):
    """Runs `steps` ticks of `tick_s`, honouring cancel between ticks like the diffusers step callback."""

    name = "test"

    def __init__(self, tick_s: float = 0.01, fail: BaseException | None = None):
        super().__init__(DEFAULTS)
        self.tick_s = tick_s
        self.fail = fail
        self.running = 0
        self.max_running = 0
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self._lock = threading.Lock()

    def generate(self, params, cancel):
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.fail is not None:
                raise self.fail
            for _ in range(params.steps):
                if cancel.is_set():
                    self.cancelled.append(params.seed)
                    raise GenerationCancelled()
                time.sleep(self.tick_s)
            self.finished.append(params.seed)
            return [f"image-{params.seed}-{i}" for i in range(params.n)]
        finally:
            with self._lock:
                self.running -= 1

    def is_accelerator_error(self, exc):
        return isinstance(exc, DeviceFault)


def params(seed: int = 0, steps: int = 4, n: int = 1) -> GenerationParams:
    return GenerationParams(prompt="p", width=64, height=64, steps=steps, guidance_scale=0.0, seed=seed, n=n)


def run(coro):
    return asyncio.run(coro)


def test_generates_and_reports_timings():
    engine = Engine(StepBackend(), max_concurrency=1, max_queue=0, request_timeout=5)
    result = run(engine.generate(params(seed=7, n=2)))
    assert result.images == ["image-7-0", "image-7-1"]
    assert result.inference_ms > 0 and engine.images_generated == 2
    assert engine.load_snapshot() == {"in_flight": 0, "queue_depth": 0, "load": 0.0}


def test_queue_bound_rejects_with_retry_after_and_never_exceeds_concurrency():
    backend = StepBackend(tick_s=0.02)
    engine = Engine(backend, max_concurrency=2, max_queue=3, request_timeout=10)

    async def burst():
        tasks = [asyncio.create_task(engine.generate(params(seed=i))) for i in range(9)]
        await asyncio.sleep(0.01)
        snapshot = engine.load_snapshot()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return snapshot, results

    snapshot, results = run(burst())
    assert snapshot == {"in_flight": 2, "queue_depth": 3, "load": 2.5}
    rejected = [r for r in results if isinstance(r, QueueFull)]
    assert len(rejected) == 4
    assert all(int(r.headers["Retry-After"]) >= 1 for r in rejected)
    assert sorted(backend.finished) == [0, 1, 2, 3, 4]  # admitted ones run in FIFO order
    assert backend.max_running == 2
    assert engine.load_snapshot()["load"] == 0.0


def test_timeout_aborts_generation_and_frees_the_slot_only_when_it_stops():
    backend = StepBackend(tick_s=0.05)
    engine = Engine(backend, max_concurrency=1, max_queue=1, request_timeout=0.12)

    async def scenario():
        started = time.perf_counter()
        with pytest.raises(GenerationTimeout, match="--request-timeout"):
            await engine.generate(params(seed=1, steps=100))
        assert time.perf_counter() - started < 0.5  # answered at the deadline, not after 100 steps
        # The slot is still held until the worker notices the cancel at its next step.
        assert engine.running == 1
        for _ in range(50):
            if engine.running == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.running == 0
        return await engine.generate(params(seed=2, steps=1))

    result = run(scenario())
    assert backend.cancelled == [1] and result.images == ["image-2-0"]


def test_queued_request_times_out_without_running():
    backend = StepBackend(tick_s=0.05)
    engine = Engine(backend, max_concurrency=1, max_queue=1, request_timeout=0.15)

    async def scenario():
        first = asyncio.create_task(engine.generate(params(seed=1, steps=2)))
        await asyncio.sleep(0)
        second = asyncio.create_task(engine.generate(params(seed=2, steps=1)))
        return await asyncio.gather(first, second, return_exceptions=True)

    backend.tick_s = 0.1  # the first takes 0.2 s > timeout: both time out, the second never starts
    results = run(scenario())
    assert all(isinstance(r, GenerationTimeout) for r in results)
    assert 2 not in backend.finished + backend.cancelled


def test_accelerator_error_is_503_and_the_engine_keeps_working():
    backend = StepBackend(fail=DeviceFault("device fault"))
    engine = Engine(backend, max_concurrency=1, max_queue=0, request_timeout=5)
    with pytest.raises(Unavailable, match="accelerator failed"):
        run(engine.generate(params()))
    backend.fail = None
    assert run(engine.generate(params(seed=3))).images == ["image-3-0"]


def test_only_consecutive_accelerator_errors_mark_the_engine_failed():
    from serving.engine.scheduler import MAX_CONSECUTIVE_ACCELERATOR_ERRORS

    backend = StepBackend(fail=DeviceFault("device fault"))
    engine = Engine(backend, max_concurrency=1, max_queue=0, request_timeout=5)
    reasons = []
    engine.on_failed = reasons.append

    def fail(times):
        backend.fail = DeviceFault("device fault")
        for _ in range(times):
            with pytest.raises(Unavailable, match="accelerator failed"):
                run(engine.generate(params()))

    fail(MAX_CONSECUTIVE_ACCELERATOR_ERRORS - 1)
    backend.fail = None
    run(engine.generate(params()))  # a success resets the count
    fail(MAX_CONSECUTIVE_ACCELERATOR_ERRORS - 1)
    assert engine.failed is None and reasons == []
    fail(1)
    assert engine.failed and reasons == [engine.failed]
    backend.fail = None
    with pytest.raises(Unavailable, match="unusable"):
        run(engine.generate(params()))
    assert reasons == [engine.failed]  # reported once


def test_failed_recovery_marks_the_engine_failed_at_once():
    backend = StepBackend(fail=DeviceFault("device fault"))
    backend.recover = lambda: False
    engine = Engine(backend, max_concurrency=1, max_queue=0, request_timeout=5)
    with pytest.raises(Unavailable, match="accelerator failed"):
        run(engine.generate(params()))
    assert "probe failed" in engine.failed


class OutOfMemoryError(RuntimeError):
    """Named like torch.OutOfMemoryError, which the backends recognise by class name."""


@pytest.mark.parametrize("oom", [MemoryError("out of memory"), OutOfMemoryError("CUDA out of memory. Tried to allocate"),
                                 RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_out_of_memory_costs_only_its_request_and_never_marks_the_device_broken(oom):
    from serving.engine.scheduler import MAX_CONSECUTIVE_ACCELERATOR_ERRORS

    backend = StepBackend(fail=oom)
    engine = Engine(backend, max_concurrency=1, max_queue=0, request_timeout=5)
    for _ in range(MAX_CONSECUTIVE_ACCELERATOR_ERRORS * 3):
        with pytest.raises(Unavailable, match="out of memory"):
            run(engine.generate(params()))
    assert engine.failed is None
    backend.fail = None
    assert run(engine.generate(params(seed=4))).images == ["image-4-0"]
    # ...unless the device does not come back from it.
    backend.fail, backend.recover = oom, lambda: False
    with pytest.raises(Unavailable, match="out of memory"):
        run(engine.generate(params()))
    assert "probe failed" in engine.failed


def test_request_cost_over_the_limit_is_422_naming_the_limit_and_the_cost():
    from serving.engine.scheduler import request_cost

    engine = Engine(StepBackend(), max_concurrency=1, max_queue=0, request_timeout=5)
    engine.max_cost = 64 * 64 * 4 * 2
    guided = GenerationParams("p", 64, 64, 4, 7.5, 0, n=1)
    assert request_cost(guided) == engine.max_cost
    assert run(engine.generate(guided)).images == ["image-0-0"]  # exactly at the limit
    with pytest.raises(InvalidRequest) as err:
        run(engine.generate(GenerationParams("p", 64, 64, 4, 7.5, 0, n=2)))
    assert err.value.status == 422
    assert str(engine.max_cost) in err.value.message and str(2 * engine.max_cost) in err.value.message
    assert "--max-request-cost" in err.value.message
    # Without guidance (scale <= 1 runs one pass) the same two images fit.
    assert len(run(engine.generate(GenerationParams("p", 64, 64, 4, 1.0, 0, n=2))).images) == 2


def test_other_errors_propagate_as_bugs():
    engine = Engine(StepBackend(fail=ValueError("bug")), max_concurrency=1, max_queue=0, request_timeout=5)
    with pytest.raises(ValueError, match="bug"):
        run(engine.generate(params()))
    assert engine.running == 0


def test_not_loaded_and_draining_are_503():
    with pytest.raises(Unavailable, match="loading"):
        run(Engine(None, 1, 0, 5).generate(params()))
    engine = Engine(StepBackend(), 1, 0, 5)
    assert run(engine.drain(1)) is True
    with pytest.raises(Unavailable, match="shutting down"):
        run(engine.generate(params()))


def test_drain_waits_for_in_flight_work():
    backend = StepBackend(tick_s=0.05)
    engine = Engine(backend, max_concurrency=1, max_queue=2, request_timeout=5)

    async def scenario():
        tasks = [asyncio.create_task(engine.generate(params(seed=i))) for i in range(3)]
        await asyncio.sleep(0.01)
        drained = await engine.drain(5)
        return drained, await asyncio.gather(*tasks)

    drained, results = run(scenario())
    assert drained is True and len(results) == 3 and sorted(backend.finished) == [0, 1, 2]


def test_drain_timeout_cancels_running_generations():
    backend = StepBackend(tick_s=0.05)
    engine = Engine(backend, max_concurrency=1, max_queue=0, request_timeout=30)

    async def scenario():
        task = asyncio.create_task(engine.generate(params(seed=5, steps=1000)))
        await asyncio.sleep(0.05)
        drained = await engine.drain(0.1)
        with pytest.raises(Unavailable, match="shut down"):
            await task
        return drained

    assert run(scenario()) is False
    assert backend.cancelled == [5]


def test_drain_deadline_refuses_queued_requests_and_starts_nothing_after_it():
    backend = StepBackend(tick_s=0.02)
    engine = Engine(backend, max_concurrency=1, max_queue=4, request_timeout=30)

    async def scenario():
        tasks = [asyncio.create_task(engine.generate(params(seed=i, steps=1000))) for i in range(5)]
        await asyncio.sleep(0.05)
        drained = await engine.drain(0.1)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert await engine.wait_idle(1)
        return drained, results

    drained, results = run(scenario())
    assert drained is False
    assert all(isinstance(r, Unavailable) and r.headers["Retry-After"] for r in results)
    assert "before this generation finished" in results[0].message
    assert all("before this request started" in r.message for r in results[1:])
    assert backend.cancelled == [0] and backend.finished == []  # only the first ever ran
    assert engine.running == 0 and engine.waiting == 0


def test_cancelled_callers_leave_the_queue_and_abort_their_generation():
    backend = StepBackend(tick_s=0.02)
    engine = Engine(backend, max_concurrency=1, max_queue=4, request_timeout=30)

    async def scenario():
        tasks = [asyncio.create_task(engine.generate(params(seed=i, steps=1000))) for i in range(3)]
        await asyncio.sleep(0.05)
        assert (engine.running, engine.waiting) == (1, 2)
        for task in tasks:
            task.cancel()  # what the gateway does when the client disconnects
        await asyncio.gather(*tasks, return_exceptions=True)
        assert engine.waiting == 0
        assert await engine.wait_idle(1)  # the running one stops at its next step

    run(scenario())
    assert backend.cancelled == [0] and backend.finished == []


def test_fixed_shape_backends_reject_other_shapes_naming_the_field():
    backend = StepBackend()
    backend.fixed_shape, backend.fixed_images = (512, 512), 1
    engine = Engine(backend, 1, 0, 5)
    with pytest.raises(InvalidRequest) as err:
        run(engine.generate(GenerationParams("p", 512, 768, 1, 0.0, 0)))
    assert err.value.param == "height" and "512x512" in err.value.message and err.value.status == 422
    with pytest.raises(InvalidRequest) as err:
        run(engine.generate(GenerationParams("p", 512, 512, 1, 0.0, 0, n=2)))
    assert err.value.param == "n"


def test_each_failed_request_is_reported_by_kind_for_the_accelerator_alarm():
    backend = StepBackend(fail=MemoryError("out of memory"))
    engine = Engine(backend, max_concurrency=1, max_queue=0, request_timeout=5)
    kinds = []
    engine.on_accelerator_error = kinds.append
    with pytest.raises(Unavailable, match="out of memory"):
        run(engine.generate(params()))
    backend.fail = DeviceFault("device fault")
    with pytest.raises(Unavailable, match="accelerator failed"):
        run(engine.generate(params()))
    backend.fail = None
    run(engine.generate(params()))
    assert kinds == ["oom", "error"]
