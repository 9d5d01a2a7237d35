"""The cuda path's options as the server builds them: compile modes, CUDA graphs and the numerics switches."""
from __future__ import annotations

import pytest
import torch

from serving.backends.cuda.backend import cuda_options
from serving.backends.cuda.optimize import CudaOptions, compile_plan, configure_numerics
from serving.core.settings import Settings

pytestmark = pytest.mark.server_set_only


@pytest.fixture()
def restore_numerics():
    legacy = torch.get_float32_matmul_precision()
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision,
             torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.benchmark)
    yield
    # The legacy setter first: it writes the per-backend values too, which are then put back one by one.
    torch.set_float32_matmul_precision(legacy)
    (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision,
     torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.benchmark) = saved


def test_numerics_are_set_on_cuda_only_and_reported(restore_numerics):
    before = configure_numerics("cpu")
    assert before["cudnn_benchmark"] is False and before["device_type"] == "cpu"
    assert configure_numerics("cpu") == before  # nothing changes off cuda
    after = configure_numerics("cuda")
    assert after == {"device_type": "cuda", "float32_matmul_precision": "high", "matmul_fp32_precision": "tf32", "cudnn_conv_fp32_precision": "tf32",
                     "cudnn_benchmark": True}
    assert torch.backends.cudnn.benchmark is True


def test_tf32_keeps_the_legacy_precision_getter_working_for_inductor_autotuning(restore_numerics):
    """Inductor's autotune cache keys its results by torch.get_float32_matmul_precision(); with only the per-backend
    API set to tf32 that getter raises ("mix of the legacy and new APIs"), failing every max-autotune compile."""
    from torch._inductor.codecache import PersistentCache

    configure_numerics("cuda")
    assert torch.get_float32_matmul_precision() == "high"
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"  # CPU matmuls as they were
    assert PersistentCache().lookup([], "mm", "inputs", None) == {}


@pytest.mark.parametrize(
    ("kwargs", "mode", "graphs"),
    [
        ({"compile": True}, "max-autotune-no-cudagraphs", False),
        ({"compile": True, "cuda_graphs": True}, "max-autotune", True),
        ({"compile": True, "compile_mode": "default"}, "default", False),
        ({"compile": True, "compile_mode": "reduce-overhead"}, "reduce-overhead", True),
        ({"compile": True, "cuda_graphs": True, "compile_mode": "reduce-overhead"}, "reduce-overhead", True),
        ({"cuda_graphs": True}, None, True),
        ({}, None, False),
    ],
)
def test_compile_mode_and_graphs(kwargs, mode, graphs):
    options = CudaOptions(**kwargs)
    assert (options.mode, options.graphs) == (mode, graphs)
    if mode is not None:
        assert compile_plan(options, "cuda")["mode"] == mode
        # No CUDA graphs off cuda: the graph modes fall back to their graph-free twins.
        assert compile_plan(options, "cpu")["mode"] in ("default", "max-autotune-no-cudagraphs")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compile_mode": "default"}, "compile_mode: 'default' only applies with compile on"),
        ({"compile": True, "compile_mode": "turbo"}, "compile_mode: 'turbo' is not one of"),
        ({"compile": True, "cuda_graphs": True, "compile_mode": "default"}, "captures no CUDA graphs"),
        ({"compile": True, "compile_mode": "reduce-overhead", "deepcache_interval": 2}, "cannot be combined"),
    ],
)
def test_bad_compile_options_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CudaOptions(**kwargs)


def test_server_settings_reach_the_options():
    settings = Settings(model="m", device="cuda", compile=True, compile_mode="reduce-overhead")
    assert cuda_options(settings).mode == "reduce-overhead"
    assert cuda_options(Settings(model="m", device="cuda", compile=True)).mode == "max-autotune-no-cudagraphs"


def test_the_cuda_backend_starts_the_schedule_without_a_device_lookup(tiny_model, monkeypatch):
    """diffusers' Euler schedulers find the first step by searching the timestep on the device
    (index_for_timestep: nonzero() + item(), a host sync) unless a begin index is set; the cuda backend sets it to 0
    after every set_timesteps, as diffusers' PixArt pipeline does. img2img still sets its own start index."""
    import threading

    import numpy as np

    from serving.backends.base import GenerationParams
    from serving.backends.cuda.backend import CudaBackend
    from serving.model.config import ModelDefaults
    from serving.model.loading import load_pipeline

    params = GenerationParams(prompt="a red cube", width=64, height=64, steps=3, guidance_scale=0.0, seed=5)
    plain = CudaBackend(load_pipeline(str(tiny_model), "cpu", "float32"), ModelDefaults(width=64, height=64, steps=2, guidance_scale=0.0),
                        slots=2)
    expected = np.asarray(plain.generate(params, threading.Event())[0])
    scheduler_cls = next(c for c in type(plain.pipe.scheduler).__mro__ if "index_for_timestep" in vars(c))
    lookups = []
    real_lookup = scheduler_cls.index_for_timestep
    monkeypatch.setattr(scheduler_cls, "index_for_timestep",
                        lambda self, *a, **k: lookups.append(1) or real_lookup(self, *a, **k))
    for _ in range(2):  # both slots' pipelines
        assert np.array_equal(np.asarray(plain.generate(params, threading.Event())[0]), expected)
    assert lookups == []
    image = plain.generate(params, threading.Event())[0]
    edited = plain.generate(GenerationParams(prompt="x", width=64, height=64, steps=4, guidance_scale=0.0, seed=5,
                                             image=image, strength=0.5), threading.Event())
    assert edited[0].size == (64, 64) and lookups == []
