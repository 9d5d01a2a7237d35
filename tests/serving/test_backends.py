"""Device selection, pipeline loading, abort-by-callback, and the Neuron backend with Neuron faked at the import boundary."""
from __future__ import annotations

import json
import sys
import threading
import types

import pytest

from serving.model import loading
from serving.backends import create_backend
from serving.backends.base import GenerationParams, cancel_callback_kwargs
from serving.backends.neuron import NeuronBackend, NeuronModelError, compiled_shape
from serving.core.errors import GenerationCancelled, InvalidRequest
from serving.core.settings import Settings


def test_auto_prefers_neuron_then_cuda_then_cpu(monkeypatch, caplog):
    import torch

    monkeypatch.setattr(loading.glob, "glob", lambda pattern: ["/dev/neuron0"] if pattern == "/dev/neuron*" else [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loading.detect_device() == "neuron"
    monkeypatch.setattr(loading.glob, "glob", lambda pattern: [])
    assert loading.detect_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("INFO", logger="serving.loading"):
        assert loading.resolve_device("auto") == "cpu"
    assert any(getattr(r, "fields", {}).get("device") == "cpu" for r in caplog.records)  # the choice is logged
    assert loading.resolve_device("cuda") == "cuda"


def test_load_pipeline_errors_are_clear(tmp_path):
    with pytest.raises(loading.ModelLoadError, match="does not exist.*tiny-model"):
        loading.load_pipeline(str(tmp_path / "missing"), "cpu")
    with pytest.raises(loading.ModelLoadError, match="no model_index.json"):
        loading.load_pipeline(str(tmp_path), "cpu")


def test_load_pipeline_cpu_float32(tiny_model):
    import torch

    pipe = loading.load_pipeline(str(tiny_model), "cpu")
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"


def test_step_callback_aborts_the_denoising_loop(cpu_backend):
    cancel = threading.Event()
    steps_seen = []
    pipe = cpu_backend.pipe
    kwargs = cancel_callback_kwargs(pipe, cancel)
    inner = kwargs["callback_on_step_end"]

    def counting(p, step, t, cb_kwargs):
        steps_seen.append(step)
        if step == 1:
            cancel.set()
        return inner(p, step, t, cb_kwargs)

    kwargs["callback_on_step_end"] = counting
    with pytest.raises(GenerationCancelled):
        pipe(prompt="x", width=64, height=64, num_inference_steps=50, guidance_scale=0.0, **kwargs)
    assert steps_seen == [0, 1]


def test_concurrent_slots_share_weights_but_not_scheduler(cpu_backend):
    pipes = [cpu_backend._pool.get() for _ in range(cpu_backend.slots)]
    try:
        assert len(pipes) == 2 and pipes[0].unet is pipes[1].unet
        assert pipes[0].scheduler is not pipes[1].scheduler
    finally:
        for p in pipes:
            cpu_backend._pool.put(p)


def test_scheduler_override(tiny_model):
    backend = create_backend(Settings(model=str(tiny_model), device="cpu", scheduler="EulerAncestralDiscreteScheduler"))
    assert type(backend.pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    with pytest.raises(ValueError, match="not a diffusers scheduler"):
        create_backend(Settings(model=str(tiny_model), device="cpu", scheduler="os"))


def test_cuda_backend_refuses_without_a_gpu(tiny_model, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        create_backend(Settings(model=str(tiny_model), device="cuda"))


def test_cuda_recover_reports_an_unusable_context(monkeypatch):
    import torch

    from serving.backends.cuda.backend import CudaBackend

    backend = CudaBackend.__new__(CudaBackend)  # recover() needs no pipeline

    def sticky():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", sticky)
    assert backend.recover() is False

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch.cuda, "synchronize", oom)
    assert backend.recover() is True  # memory pressure is not a broken device


def test_cuda_options_follow_flags():
    from serving.backends.cuda.backend import cuda_options

    opts = cuda_options(Settings(model="m", dtype="bfloat16", compile=True, deepcache_interval=3, tiny_vae="/opt/taesd"))
    assert (opts.dtype, opts.compile, opts.deepcache_interval, opts.tiny_vae, opts.channels_last) == (
        "bfloat16", True, 3, "/opt/taesd", True)
    assert cuda_options(Settings(model="m")).dtype == "float16"
    with pytest.raises(ValueError, match="float32 is not supported on cuda"):
        cuda_options(Settings(model="m", dtype="float32"))


# -- neuron --------------------------------------------------------------------------------------------------
def write_compiled(path, latent=64, unet_batch=1, text_batch=1):
    """The file layout `optimum-cli export neuron` writes (configs only; the .neuron graphs are opaque)."""
    (path).mkdir(parents=True, exist_ok=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    for component, section in (
        ("unet", {"static_batch_size": unet_batch, "static_height": latent, "static_width": latent}),
        ("vae_decoder", {"static_batch_size": 1, "static_height": latent, "static_width": latent}),
        ("text_encoder", {"static_batch_size": text_batch, "static_sequence_length": 77}),
    ):
        (path / component).mkdir(exist_ok=True)
        config = {"neuron": section}
        if component == "vae_decoder":
            config["block_out_channels"] = [128, 256, 512, 512]
        if component == "unet":
            config["sample_size"] = latent
        (path / component / "config.json").write_text(json.dumps(config))
        (path / component / "model.neuron").write_bytes(b"\0")
    return path


@pytest.fixture
def fake_optimum(monkeypatch):
    """optimum.neuron faked in sys.modules: records how the pipeline is loaded and called."""
    calls = {}

    class FakeOutput:
        def __init__(self, images):
            self.images = images

    class FakeNeuronPipeline:
        def __init__(self):
            self.scheduler = types.SimpleNamespace(config={})

        @classmethod
        def from_pretrained(cls, path, **kwargs):
            calls["from_pretrained"] = (path, kwargs)
            return cls()

        def __call__(self, prompt, negative_prompt=None, num_inference_steps=25, guidance_scale=7.5, generator=None,
                     callback_on_step_end=None, callback_on_step_end_tensor_inputs=None):
            calls["call"] = dict(prompt=prompt, steps=num_inference_steps, guidance=guidance_scale,
                                 seed=generator.initial_seed())
            for step in range(num_inference_steps):
                callback_on_step_end(self, step, 999 - step, {})
            return FakeOutput(["neuron-image"])

    optimum = types.ModuleType("optimum")
    neuron = types.ModuleType("optimum.neuron")
    neuron.NeuronStableDiffusionPipeline = FakeNeuronPipeline
    optimum.neuron = neuron
    monkeypatch.setitem(sys.modules, "optimum", optimum)
    monkeypatch.setitem(sys.modules, "optimum.neuron", neuron)
    return calls


def test_compiled_shape_from_exporter_configs(tmp_path):
    assert compiled_shape(write_compiled(tmp_path / "a", latent=64)) == ((512, 512), 1)
    assert compiled_shape(write_compiled(tmp_path / "b", latent=96, unet_batch=4, text_batch=2)) == ((768, 768), 2)


def test_non_compiled_dir_is_rejected_for_neuron(tiny_model, fake_optimum):
    with pytest.raises(NeuronModelError, match="compiled Neuron directory"):
        create_backend(Settings(model=str(tiny_model), device="neuron"))


def test_compiled_dir_is_rejected_for_cpu(tmp_path):
    with pytest.raises(loading.ModelLoadError, match="--device neuron"):
        loading.load_pipeline(str(write_compiled(tmp_path / "c")), "cpu")


def test_neuron_backend_loads_data_parallel_and_enforces_compiled_shape(tmp_path, fake_optimum, monkeypatch):
    model = write_compiled(tmp_path / "sd-neuron", latent=64)
    monkeypatch.setattr(loading.glob, "glob", lambda pattern: ["/dev/neuron0"])
    backend = create_backend(Settings(model=str(model), device="auto"))
    assert isinstance(backend, NeuronBackend)
    path, kwargs = fake_optimum["from_pretrained"]
    assert path == str(model) and kwargs == {"data_parallel_mode": "unet"}
    assert backend.fixed_shape == (512, 512)
    assert (backend.defaults.width, backend.defaults.height) == (512, 512)  # defaults follow the compiled shape

    images = backend.generate(GenerationParams("a fox", 512, 512, 3, 7.5, seed=11), threading.Event())
    assert images == ["neuron-image"]
    assert fake_optimum["call"] == {"prompt": "a fox", "steps": 3, "guidance": 7.5, "seed": 11}
    with pytest.raises(InvalidRequest, match="compiled for 512x512") as err:
        backend.check(GenerationParams("a fox", 768, 512, 3, 7.5, seed=1))
    assert err.value.param == "width"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        backend.generate(GenerationParams("a fox", 512, 512, 3, 7.5, seed=1), cancel)
    assert backend.is_accelerator_error(RuntimeError("nrt_execute failed: NRT_EXEC_OOM"))
    assert not backend.is_accelerator_error(ValueError("bad"))


def test_neuron_data_parallel_mode_from_serving_json(tmp_path, fake_optimum):
    model = write_compiled(tmp_path / "turbo-neuron", latent=64)
    (model / "serving.json").write_text(json.dumps({"neuron_data_parallel_mode": "all", "default_steps": 1,
                                                    "default_guidance_scale": 0.0}))
    backend = create_backend(Settings(model=str(model), device="neuron"))
    assert fake_optimum["from_pretrained"][1] == {"data_parallel_mode": "all"}
    assert (backend.defaults.steps, backend.defaults.guidance_scale) == (1, 0.0)


def test_neuron_without_optimum_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optimum.neuron", None)
    with pytest.raises(RuntimeError, match="optimum-neuron and torch-neuronx"):
        create_backend(Settings(model=str(write_compiled(tmp_path / "d")), device="neuron"))


def test_warmup_covers_configured_sizes_or_the_default():
    from serving.backends.base import Backend
    from serving.model.config import ModelDefaults

    class Recording(Backend):
        def __init__(self):
            super().__init__(ModelDefaults(width=512, height=512, steps=4, guidance_scale=7.5))
            self.seen = []

        def generate(self, params, cancel):
            self.seen.append((params.width, params.height, params.steps, params.guidance_scale))
            return []

    backend = Recording()
    backend.warmup([(512, 512), (768, 768)])
    backend.warmup([])
    assert backend.seen == [(512, 512, 4, 7.5), (768, 768, 4, 7.5), (512, 512, 4, 7.5)]
    backend.seen.clear()
    backend.fixed_shape = (768, 768)  # compiled models warm up at their one shape
    backend.warmup([(512, 512)])
    assert backend.seen == [(768, 768, 4, 7.5)]


def test_images_leave_the_device_as_uint8_and_match_diffusers_pil_output(cpu_backend):
    """The backend asks diffusers for tensors and converts to uint8 on the device (a quarter of the bytes to copy
    back, no float work on the host); the images are exactly what diffusers' own "pil" output gives."""
    import numpy as np
    import torch

    from serving.backends.base import to_pil

    params = GenerationParams(prompt="a red cube", width=64, height=64, steps=2, guidance_scale=0.0, seed=7, n=2)
    ours = cpu_backend.generate(params, threading.Event())
    pipe = cpu_backend.pipe
    with torch.inference_mode():
        reference = pipe(prompt="a red cube", width=64, height=64, num_inference_steps=2, guidance_scale=0.0,
                         num_images_per_prompt=2, generator=torch.Generator("cpu").manual_seed(7),
                         output_type="pil").images
    assert [im.size for im in ours] == [(64, 64)] * 2 and all(im.mode == "RGB" for im in ours)
    for a, b in zip(ours, reference):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    grey = to_pil(torch.full((1, 1, 8, 8), 0.5))
    assert grey[0].mode == "L" and np.asarray(grey[0]).max() == 128  # round half to even: 127.5 -> 128
