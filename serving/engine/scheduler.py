"""Admission control and execution: a bounded FIFO in front of ``max_concurrency`` worker threads.

A request is admitted only while running + waiting < max_concurrency + max_queue (else 429) and its cost
(width x height x steps x images, x2 with guidance) is within ``max_cost`` (else 422). Its deadline covers
queueing and generation; past it the caller gets 504 at once and the generation is aborted at its next
denoising step. A caller that goes away (client disconnect: the awaiting task is cancelled) leaves the queue at
once or aborts its generation the same way. The slot is released only when the worker thread has really
stopped, so an abandoned request never lets a second generation onto a busy accelerator.

Drain: ``drain()`` refuses new work and waits; at its deadline ``close()`` answers every queued request 503
(it never starts) and aborts the running ones (503 at their next step); no slot is handed out afterwards.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from serving.backends.base import Backend, GenerationParams
from serving.core.errors import GenerationCancelled, GenerationTimeout, InvalidRequest, QueueFull, Unavailable

log = logging.getLogger("serving.engine")

# Accelerator errors in a row (no success in between) after which the device is presumed broken even though
# recover() said it was usable. Out-of-memory errors never count: they are the request's fault (its size), and
# counting them would let any key holder restart pods with three large requests.
MAX_CONSECUTIVE_ACCELERATOR_ERRORS = 3
RETRY_ELSEWHERE = {"Retry-After": "1"}


def request_cost(params: GenerationParams) -> int:
    """Work (and activation memory) of a request in pixel-steps; classifier-free guidance doubles the batch."""
    guidance = 2 if params.guidance_scale > 1.0 else 1  # diffusers runs the unconditional pass only above 1
    # Image-to-image denoises only the last strength x steps steps (diffusers' get_timesteps).
    steps = params.steps if params.strength is None else max(1, int(params.steps * params.strength))
    return params.width * params.height * steps * params.n * guidance


@dataclass(frozen=True)
class GenerationResult:
    images: list
    inference_ms: float
    queue_ms: float


class Engine:
    def __init__(self, backend: Backend | None, max_concurrency: int, max_queue: int, request_timeout: float):
        self.backend = backend
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.request_timeout = request_timeout
        self.running = 0
        self.waiting = 0
        self.draining = False
        self.closed = False
        # 0 = no limit; the server sets it once the model's defaults are known (--max-request-cost).
        self.max_cost = 0
        self.images_generated = 0
        self._free = max_concurrency
        self._waiters: deque[asyncio.Future] = deque()
        self._idle: asyncio.Event | None = None
        self._cancels: set[threading.Event] = set()
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="generate")
        # Rolling mean of generation time, for Retry-After hints.
        self._mean_s = 1.0
        # Accelerator health: once ``failed`` is set it stays set (only a restart fixes a broken device) and
        # ``on_failed`` tells the server, which turns /healthz and /readyz 503 so Kubernetes replaces the pod.
        self.failed: str | None = None
        self.on_failed: Callable[[str], None] | None = None
        # Called with the seconds a request waited for a slot (whether it then ran or left the queue).
        self.on_queue_wait: Callable[[float], None] | None = None
        # Called with "oom" or "error" for each request the accelerator failed (the operator's alarm counts them).
        self.on_accelerator_error: Callable[[str], None] | None = None
        self._accelerator_errors = 0
        self._health_lock = threading.Lock()

    # -- load signal ---------------------------------------------------------------------------------------
    @property
    def load(self) -> float:
        return (self.running + self.waiting) / self.max_concurrency

    def load_snapshot(self) -> dict:
        return {"in_flight": self.running, "queue_depth": self.waiting, "load": self.load}

    def retry_after_s(self) -> int:
        backlog = (self.running + self.waiting) / self.max_concurrency
        return max(1, math.ceil(backlog * self._mean_s))

    # -- slots ---------------------------------------------------------------------------------------------
    def _release(self) -> None:
        self.running -= 1
        while self._waiters and not self.closed:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.running += 1
                return
        self._free += 1
        self._notify_idle()

    def _notify_idle(self) -> None:
        if self._idle is not None and self.running == 0 and self.waiting == 0:
            self._idle.set()

    async def _acquire(self, timeout: float) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            self.running += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        try:
            await asyncio.wait_for(waiter, timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # the slot arrived just as we gave up: hand it on
            else:
                waiter.cancel()
            raise
        finally:
            self.waiting -= 1
            self._notify_idle()

    # -- requests ------------------------------------------------------------------------------------------
    async def generate(self, params: GenerationParams, work: Callable[[threading.Event], list] | None = None,
                       queue_exempt: bool = False) -> GenerationResult:
        """Admit, wait for a slot (FIFO), run ``work`` (default: the backend's generate) on a worker thread.

        ``queue_exempt`` is for stream frames: each stream holds at most one waiting frame, so --max-streams
        bounds them, and they queue in the same FIFO as REST requests (served in arrival order).
        """
        if self.draining:
            raise Unavailable("server is shutting down; retry on another endpoint", headers=RETRY_ELSEWHERE)
        if self.backend is None:
            raise Unavailable("model is still loading; retry shortly", headers={"Retry-After": "5"})
        if self.failed is not None:
            # Do not feed more work to a device known to be broken; this pod fails its probes and is replaced.
            raise Unavailable("the accelerator on this server is unusable; retry on another endpoint",
                              headers={"Retry-After": "1"})
        self.backend.check(params)
        cost = request_cost(params)
        if self.max_cost and cost > self.max_cost:
            raise InvalidRequest(
                f"request cost {cost} (width x height x num_inference_steps (x strength) x n, x2 with guidance_scale > 1) exceeds "
                f"this server's --max-request-cost {self.max_cost}; use fewer steps, images or pixels"
            )
        if not queue_exempt and self.running + self.waiting >= self.max_concurrency + self.max_queue:
            raise QueueFull(
                f"server is at capacity ({self.max_concurrency} running, {self.max_queue} queued); retry later",
                headers={"Retry-After": str(self.retry_after_s())},
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        enqueued = time.perf_counter()
        try:
            await self._acquire(self.request_timeout)
        except TimeoutError:
            raise self._timeout() from None
        finally:
            if self.on_queue_wait is not None:
                self.on_queue_wait(time.perf_counter() - enqueued)
        if self.closed:  # the slot came free in the same tick as the drain deadline: start nothing
            self._release()
            raise self._not_started()
        queue_ms = (time.perf_counter() - enqueued) * 1000
        cancel = threading.Event()
        self._cancels.add(cancel)
        future = loop.run_in_executor(self._executor, self._run, params, cancel, work)
        release_later = False
        try:
            images, seconds = await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
        except (TimeoutError, asyncio.CancelledError) as exc:
            # Timeout or client gone: stop the denoising loop; the slot frees when the thread returns.
            cancel.set()
            release_later = True
            future.add_done_callback(lambda f: self._finish_abandoned(f, cancel))
            if isinstance(exc, TimeoutError):
                raise self._timeout() from None
            raise
        except GenerationCancelled:
            # Only the drain deadline cancels a generation whose caller is still waiting.
            raise Unavailable("server shut down before this generation finished; retry on another endpoint",
                              headers=RETRY_ELSEWHERE) from None
        finally:
            if not release_later:
                self._cancels.discard(cancel)
                self._release()
        self.images_generated += len(images)
        self._mean_s = 0.8 * self._mean_s + 0.2 * seconds
        return GenerationResult(images=images, inference_ms=seconds * 1000, queue_ms=queue_ms)

    @staticmethod
    def _not_started() -> Unavailable:
        return Unavailable("server shut down before this request started; retry on another endpoint", headers=RETRY_ELSEWHERE)

    def _timeout(self) -> GenerationTimeout:
        return GenerationTimeout(f"generation did not finish within --request-timeout ({self.request_timeout:g} s)")

    def _finish_abandoned(self, future: asyncio.Future, cancel: threading.Event) -> None:
        self._cancels.discard(cancel)
        exc = None if future.cancelled() else future.exception()
        if exc is not None and not isinstance(exc, GenerationCancelled):
            log.warning("abandoned generation failed", extra={"fields": {"error": repr(exc)}})
        self._release()

    def _run(self, params: GenerationParams, cancel: threading.Event, work=None) -> tuple[list, float]:
        started = time.perf_counter()
        try:
            images = work(cancel) if work is not None else self.backend.generate(params, cancel)
        except GenerationCancelled:
            raise
        except Exception as exc:
            if self.backend.is_out_of_memory(exc):
                log.warning("out of memory", extra={"fields": {"error": repr(exc)[:300], "cost": request_cost(params)}})
                self._count_accelerator_error("oom")
                if not self._recover():
                    self._mark_failed("the accelerator is unusable after an out-of-memory error (recovery probe failed)", exc, 0)
                raise Unavailable(
                    "the accelerator ran out of memory for this request; retry with fewer pixels, steps or images",
                    headers=RETRY_ELSEWHERE,
                ) from exc
            if self.backend.is_accelerator_error(exc):
                log.error("accelerator error", extra={"fields": {"error": repr(exc)[:500]}})
                self._count_accelerator_error("error")
                self._accelerator_error(exc)
                raise Unavailable("the accelerator failed this request; retry on another endpoint",
                                  headers=RETRY_ELSEWHERE) from exc
            raise
        with self._health_lock:
            self._accelerator_errors = 0  # the device works: earlier accelerator errors were transient
        return images, time.perf_counter() - started

    def _count_accelerator_error(self, kind: str) -> None:
        if self.on_accelerator_error is not None:
            self.on_accelerator_error(kind)

    def _accelerator_error(self, exc: BaseException) -> None:
        """Recover after an accelerator error; mark the engine failed if the device is unusable or keeps failing."""
        usable = self._recover()
        with self._health_lock:
            self._accelerator_errors += 1
            count = self._accelerator_errors
            if self.failed is not None:
                return
            if not usable:
                reason = "the accelerator is unusable after an error (recovery probe failed)"
            elif count >= MAX_CONSECUTIVE_ACCELERATOR_ERRORS:
                reason = f"{count} consecutive accelerator errors"
            else:
                return
        self._mark_failed(reason, exc, count)

    def _recover(self) -> bool:
        try:
            return self.backend.recover()
        except Exception:  # noqa: BLE001 - a recover() that itself crashes proves the device unusable
            log.exception("accelerator recovery raised")
            return False

    def _mark_failed(self, reason: str, exc: BaseException, count: int) -> None:
        with self._health_lock:
            if self.failed is not None:
                return
            self.failed = reason
        # Logged once: later requests are refused before they reach the device.
        log.error("accelerator failed; marking the server unhealthy so it is restarted",
                  extra={"fields": {"reason": reason, "consecutive_errors": count, "error": repr(exc)[:500]}})
        if self.on_failed is not None:
            self.on_failed(reason)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def warm_up(self, warmup: Callable[[threading.Event], None]) -> None:
        """Run ``warmup(cancel)`` on the generation executor, the thread(s) requests run on: inductor's CUDA-graph
        trees are recorded per thread, so a warm-up on any other thread would leave requests to record again.
        close() and shutdown() set ``cancel``, which stops it at its next denoising step."""
        cancel = threading.Event()
        self._cancels.add(cancel)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, warmup, cancel)
        finally:
            self._cancels.discard(cancel)

    async def drain(self, timeout: float) -> bool:
        """Refuse new work and wait for admitted requests; at the deadline close(). True when all finished."""
        self.draining = True
        self._idle = asyncio.Event()
        self._notify_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            self.close()
            return False

    def close(self) -> None:
        """No generation starts from now on: queued requests get 503 now, running ones at their next step."""
        self.closed = True
        self.draining = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._not_started())
        for cancel in list(self._cancels):
            cancel.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is queued or running (aborted generations stop at their next step)."""
        if self._idle is None:
            self._idle = asyncio.Event()
        self._notify_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def shutdown(self) -> None:
        for cancel in list(self._cancels):  # a warm-up still running stops at its next step
            cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
