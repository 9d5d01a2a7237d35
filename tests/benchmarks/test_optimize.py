"""serving.backends.cuda.optimize on CPU with the tiny SD 2.x layout: every option's validation and its device-agnostic path."""
from __future__ import annotations

import inspect
import threading

import pytest
import torch

from benchmarks import sd21
from serving.backends.cuda import optimize
from serving.backends.cuda.optimize import CudaOptions, enable_deepcache, optimize_pipeline


def _generate(pipe, steps=2, cfg=0.0, seed=0):
    with torch.inference_mode():
        return pipe("a red cube", width=64, height=64, num_inference_steps=steps, guidance_scale=cfg,
                    generator=torch.Generator().manual_seed(seed), output_type="np").images


def _unet_inputs(batch=2, latent=8):
    torch.manual_seed(1)
    return torch.randn(batch, 4, latent, latent), torch.tensor(500), torch.randn(batch, 77, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float8"}, "dtype: 'float8'"),
        ({"channels_last": "yes"}, "channels_last: must be true or false"),
        ({"fuse_qkv": 1}, "fuse_qkv: must be true or false"),
        ({"compile": None}, "compile: must be true or false"),
        ({"cuda_graphs": "on"}, "cuda_graphs: must be true or false"),
        ({"tiny_vae": ""}, "tiny_vae: '' is not a path"),
        ({"deepcache_interval": 1}, "deepcache_interval: 1 is invalid"),
        ({"deepcache_interval": -2}, "deepcache_interval: -2 is invalid"),
        ({"deepcache_interval": True}, "deepcache_interval: True is invalid"),
        ({"deepcache_interval": 3, "cuda_graphs": True}, "cannot be combined"),
    ],
)
def test_invalid_options_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CudaOptions(**kwargs)


def test_defaults_are_the_contract():
    options = CudaOptions()
    assert (options.dtype, options.channels_last, options.fuse_qkv, options.compile, options.cuda_graphs,
            options.tiny_vae, options.deepcache_interval) == ("float16", True, True, False, False, None, 0)
    assert options.torch_dtype is torch.float16
    with pytest.raises(Exception):
        options.dtype = "bfloat16"  # frozen


def test_compile_plan_picks_the_mode_per_device_and_option():
    assert optimize.compile_plan(CudaOptions(), "cuda") is None
    plain = optimize.compile_plan(CudaOptions(compile=True), "cuda")
    assert plain["mode"] == "max-autotune-no-cudagraphs" and plain["fullgraph"] and not plain["regional"]
    assert plain["dynamic"] is False
    graphs = optimize.compile_plan(CudaOptions(compile=True, cuda_graphs=True), "cuda")
    assert graphs["mode"] == "max-autotune" and graphs["manual_cuda_graphs"] is False
    # CUDA graphs do not exist on CPU, so the CPU plan never asks inductor for them.
    assert optimize.compile_plan(CudaOptions(compile=True, cuda_graphs=True), "cpu")["mode"] == \
        "max-autotune-no-cudagraphs"
    assert optimize.compile_plan(CudaOptions(compile=True, deepcache_interval=3), "cuda")["regional"] is True


def test_manual_cuda_graphs_only_without_compile_on_cuda():
    assert optimize.uses_manual_cuda_graphs(CudaOptions(cuda_graphs=True), "cuda")
    assert not optimize.uses_manual_cuda_graphs(CudaOptions(cuda_graphs=True, compile=True), "cuda")
    assert not optimize.uses_manual_cuda_graphs(CudaOptions(cuda_graphs=True), "cpu")
    assert not optimize.uses_manual_cuda_graphs(CudaOptions(), "cuda")


def test_cuda_graphs_on_a_cpu_pipeline_is_a_clear_error(tiny_pipe):
    with pytest.raises(ValueError, match="cuda_graphs: needs the pipeline on a CUDA device, but it is on cpu"):
        optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", cuda_graphs=True))


def test_options_must_be_cuda_options(tiny_pipe):
    with pytest.raises(TypeError, match="CudaOptions"):
        optimize_pipeline(tiny_pipe, {"dtype": "float16"})


def test_sdpa_fused_qkv_channels_last_keep_the_image(tiny_pipe):
    reference = _generate(sd21.build_pipeline("tiny", seed=0))
    optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32"))
    processors = {type(p).__name__ for p in tiny_pipe.unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor2_0"}
    attention = [m for m in tiny_pipe.unet.modules() if type(m).__name__ == "Attention"]
    assert attention and all(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in attention)
    assert tiny_pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert tiny_pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert abs(_generate(tiny_pipe) - reference).max() < 1e-4


def test_without_fusion_or_channels_last_the_plain_sdpa_processor_is_used(tiny_pipe):
    optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", fuse_qkv=False, channels_last=False))
    assert {type(p).__name__ for p in tiny_pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert not tiny_pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_bfloat16_casts_every_component_and_still_generates(tiny_pipe):
    optimize_pipeline(tiny_pipe, CudaOptions(dtype="bfloat16"))
    for component in (tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder):
        assert {p.dtype for p in component.parameters()} == {torch.bfloat16}
    image = _generate(tiny_pipe)
    assert image.shape == (1, 64, 64, 3) and float(image.std()) > 0


def test_tiny_vae_replaces_the_decoder(tiny_pipe, tmp_path):
    directory = sd21.write_tiny_vae("tiny", tmp_path / "taesd")
    optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", tiny_vae=str(directory)))
    assert type(tiny_pipe.vae).__name__ == "AutoencoderTiny"
    assert _generate(tiny_pipe).shape == (1, 64, 64, 3)


def test_tiny_vae_errors_name_the_path(tiny_pipe, tmp_path):
    with pytest.raises(ValueError, match=r"tiny_vae: .*\(no config.json there\)"):
        optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", tiny_vae=str(tmp_path / "missing")))
    from diffusers import AutoencoderTiny

    AutoencoderTiny(**{**sd21.TINY.tiny_vae, "latent_channels": 8}).save_pretrained(tmp_path / "wrong")
    with pytest.raises(ValueError, match="8 latent channels but the UNet expects 4"):
        optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", tiny_vae=str(tmp_path / "wrong")))


def test_compile_wiring_whole_unet_and_vae_decode(tiny_pipe, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(("vae.decode", kw)) or fn)
    optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", compile=True))
    assert [name for name, _ in calls] == ["UNet2DConditionModel", "vae.decode"]
    assert all(kw == {"mode": "max-autotune-no-cudagraphs", "fullgraph": True, "dynamic": False} for _, kw in calls)


def test_compile_with_deepcache_compiles_each_block(tiny_pipe, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", compile=True, deepcache_interval=2))
    unet = tiny_pipe.unet
    assert compiled == [*unet.down_blocks, unet.mid_block, *unet.up_blocks]


def test_cuda_graph_runner_runs_cpu_tensors_eagerly(tiny_pipe):
    runner = optimize.CudaGraphRunner(tiny_pipe.unet.forward)
    sample, t, states = _unet_inputs()
    with torch.no_grad():
        expected = tiny_pipe.unet(sample, t, states).sample
        got = runner(sample, t, states, return_dict=False)[0]
    assert torch.equal(got, expected) and runner.captured_shapes == []


def test_deepcache_full_step_is_the_unet_forward(tiny_pipe):
    unet = tiny_pipe.unet
    sample, t, states = _unet_inputs()
    with torch.no_grad():
        expected = unet(sample, t, states).sample
        state = enable_deepcache(tiny_pipe, 3)
        state.reset()
        assert torch.equal(unet(sample, t, states).sample, expected)
        # Same inputs again: the shallow path on cached deep features must rebuild the same output.
        assert torch.allclose(unet(sample, t, states, return_dict=False)[0], expected, atol=1e-5)
        odd = torch.randn(1, 4, 9, 9), t, states[:1]
        state.reset()
        assert torch.equal(unet(*odd).sample, state.original_forward(*odd).sample)
    assert (state.full_steps, state.partial_steps) == (2, 1)


def test_deepcache_interval_and_reset_per_call(tiny_pipe):
    optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", deepcache_interval=2))
    state = tiny_pipe._deepcache
    first = _generate(tiny_pipe, steps=4, cfg=5.0)
    # 4 steps at interval 2: full, shallow, full, shallow. CFG batches both halves into one UNet call.
    assert (state.full_steps, state.partial_steps) == (2, 2)
    second = _generate(tiny_pipe, steps=4, cfg=5.0)
    assert (state.full_steps, state.partial_steps) == (4, 4)
    assert (first == second).all()  # a fresh cache per call: no leakage between requests
    exact = _generate(sd21.build_pipeline("tiny", seed=0), steps=4, cfg=5.0)
    assert 0 < abs(first - exact).max() < 0.5  # an approximation of the same image, not a different one


def test_deepcache_keeps_the_pipeline_signature_for_step_callbacks(tiny_pipe):
    from serving.backends.base import cancel_callback_kwargs
    from serving.core.errors import GenerationCancelled

    optimize_pipeline(tiny_pipe, CudaOptions(dtype="float32", deepcache_interval=2))
    assert type(tiny_pipe).__name__ == "StableDiffusionPipeline"
    assert "callback_on_step_end" in inspect.signature(tiny_pipe.__call__).parameters
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        tiny_pipe("x", width=64, height=64, num_inference_steps=2, guidance_scale=0.0,
                  **cancel_callback_kwargs(tiny_pipe, cancel))


def test_deepcache_state_is_per_thread(tiny_pipe):
    state = enable_deepcache(tiny_pipe, 4)
    sample, t, states = _unet_inputs(batch=1)
    with torch.no_grad():
        state.reset()
        tiny_pipe.unet(sample, t, states)  # this thread now holds a cache
        seen = []

        def other():
            tiny_pipe.unet(sample, t, states)
            seen.append((state.full_steps, state.partial_steps))

        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert seen == [(2, 0)]  # the other thread started at step 0 with no cache: a full pass


def test_deepcache_extra_conditioning_runs_the_full_unet(tiny_pipe):
    state = enable_deepcache(tiny_pipe, 2)
    sample, t, states = _unet_inputs(batch=1)
    with torch.no_grad():
        state.reset()
        tiny_pipe.unet(sample, t, states)
        out = tiny_pipe.unet(sample, t, states, encoder_attention_mask=torch.ones(1, 77))
    assert out.sample.shape == sample.shape and state.partial_steps == 0


def test_deepcache_refuses_unsupported_unets_and_double_enable(tiny_pipe):
    enable_deepcache(tiny_pipe, 2)
    with pytest.raises(ValueError, match="already enabled"):
        enable_deepcache(tiny_pipe, 2)
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**{**sd21.TINY.unet, "class_embed_type": "timestep"})
    with pytest.raises(ValueError, match="deepcache_interval: this UNet uses class_embed_type"):
        optimize.DeepCache(unet, 2)
