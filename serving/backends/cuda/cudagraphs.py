"""Our own CUDA-graph capture of the UNet forward (--cuda-graphs without --compile), under the shape policy."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import torch

from serving.backends.cuda.shapes import EAGER, FAST, RECORD, ShapePolicy

log = logging.getLogger("serving.optimize")

# Each captured CUDA graph pins its own static buffers; beyond this many request shapes the extra shapes run eagerly
# instead of growing GPU memory without bound.
MAX_CUDA_GRAPHS = 8

# One capture at a time in the whole process (REST UNet graphs and stream frame graphs alike). Each capture also runs
# in "thread_local" error mode: the default ("global") makes unsafe calls such as cudaMalloc on *any* thread an
# error during the capture, so eager work on another worker thread would fail it (torch/cuda/graphs.py, class
# graph, capture_error_mode; CUDA's cudaStreamCaptureModeThreadLocal).
CAPTURE_LOCK = threading.Lock()


def capture(run: Callable[[], Any], pool: Any = None, warmup_runs: int = 2) -> tuple[Any, Any]:
    """(graph, output): ``run`` called ``warmup_runs`` times on a side stream, so lazy initialisation (cuBLAS
    handles, cuDNN algorithm search, workspaces) stays out of the graph, then captured once. Callers capture only
    during warm-up; the graph replays whatever ``run`` read from its static input buffers at capture time."""
    with CAPTURE_LOCK:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_runs):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            output = run()
    return graph, output


class CudaGraphRunner:
    """Replays a captured CUDA graph of the UNet forward per input shape (the fixed-shape, few-step case).

    Launch overhead dominates a 1-4 step generation at 512x512 on a fast GPU; replaying one graph removes the
    ~1,000 kernel launches per UNet call. Calls with extra conditioning (ControlNet residuals, masks...) run eagerly.
    Captures happen only in the policy's record mode (warm-up); in fast mode an uncaptured shape runs eagerly.
    """

    def __init__(self, forward: Callable[..., Any], max_graphs: int = MAX_CUDA_GRAPHS,
                 policy: ShapePolicy | None = None) -> None:
        self._forward = forward
        self._max_graphs = max_graphs
        self._policy = policy if policy is not None else ShapePolicy()
        self._graphs: dict[tuple, _CapturedGraph] = {}
        self._lock = threading.Lock()
        self._pool = None

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor,
                 *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        extras = args or any(value is not None for value in kwargs.values())
        mode = self._policy.mode
        if extras or not sample.is_cuda or mode == EAGER:
            return self._forward(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        timestep = torch.as_tensor(timestep, device=sample.device)
        key = (
            tuple(sample.shape), sample.dtype, tuple(encoder_hidden_states.shape), encoder_hidden_states.dtype,
            tuple(timestep.shape), timestep.dtype,
        )
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                if mode == FAST:
                    self._policy.note_miss("unet")
                if mode != RECORD or len(self._graphs) >= self._max_graphs:
                    return self._forward(sample, timestep, encoder_hidden_states, return_dict=return_dict)
                graph = self._capture(sample, timestep, encoder_hidden_states)
                self._graphs[key] = graph
            out = graph.run(sample, timestep, encoder_hidden_states)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)

    @property
    def captured_shapes(self) -> list[tuple]:
        return list(self._graphs)

    def _capture(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor):
        static = (sample.clone(), timestep.clone(), encoder_hidden_states.clone())
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph, output = capture(lambda: self._forward(*static, return_dict=False)[0], pool=self._pool)
        log.info("captured CUDA graph", extra={"fields": {"shape": list(sample.shape), "dtype": str(sample.dtype)}})
        return _CapturedGraph(graph, static, output)


class _CapturedGraph:
    def __init__(self, graph: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.graph = graph
        self.inputs = inputs
        self.output = output

    def run(self, *values: torch.Tensor) -> torch.Tensor:
        for static, value in zip(self.inputs, values):
            static.copy_(value)
        self.graph.replay()
        # The next replay overwrites the static output; callers may still hold this step's result.
        return self.output.clone()


