"""The SD 2.1 architecture constants: parameter counts, analytic FLOPs and the random checkpoint writer."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import sd21


@pytest.fixture(scope="module")
def sd21_meta():
    return sd21.build_components(sd21.SD21, device="meta")


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sd21_parameter_counts_match_the_published_model(sd21_meta):
    assert _params(sd21_meta["unet"]) == sd21.UNET_PARAMS
    assert 860e6 < sd21.UNET_PARAMS < 870e6  # the "866M" UNet
    assert _params(sd21_meta["vae"]) == sd21.VAE_PARAMS
    assert _params(sd21_meta["text_encoder"]) == sd21.TEXT_ENCODER_PARAMS
    assert all(p.is_meta for p in sd21_meta["unet"].parameters())


def test_sd21_configs_are_the_published_numbers(sd21_meta):
    unet = sd21_meta["unet"].config
    assert unet.sample_size == 96 and tuple(unet.block_out_channels) == (320, 640, 1280, 1280)
    assert tuple(unet.attention_head_dim) == (5, 10, 20, 20) and unet.cross_attention_dim == 1024
    assert unet.use_linear_projection is True and unet.layers_per_block == 2
    text = sd21_meta["text_encoder"].config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (1024, 23, 16)
    assert (text.intermediate_size, text.max_position_embeddings, text.vocab_size) == (4096, 77, 49408)
    assert tuple(sd21_meta["vae"].config.block_out_channels) == (128, 256, 512, 512)


@pytest.mark.parametrize("size", [512, 768])
def test_analytic_flops_match_a_meta_device_count(size):
    counted = sd21.counted_component_tflop("sd21", size)
    assert counted["unet"] == pytest.approx(sd21.UNET_TFLOP_PER_SAMPLE_STEP[size], rel=2e-3)
    assert counted["vae_decode"] == pytest.approx(sd21.VAE_DECODE_TFLOP[size], rel=2e-3)
    assert counted["text_encoder"] == pytest.approx(sd21.TEXT_ENCODER_TFLOP, rel=5e-3)


def test_generation_tflop_counts_cfg_steps_and_decode():
    # 25 steps with CFG at 512: two UNet samples per step, one decode, two prompts.
    assert sd21.generation_tflop(512, 25, True) == pytest.approx(0.804 * 2 * 25 + 2.515 + 0.045 * 2)
    assert sd21.generation_tflop(768, 1, False) == pytest.approx(2.149 + 5.754 + 0.045)
    with pytest.raises(ValueError, match="size: 640"):
        sd21.generation_tflop(640, 4, False)
    with pytest.raises(ValueError, match="steps"):
        sd21.generation_tflop(512, 0, False)


def test_counted_generation_tflop_for_the_tiny_layout_is_positive_and_scales_with_steps():
    one = sd21.counted_generation_tflop(sd21.TINY, 64, 1, False)
    four = sd21.counted_generation_tflop(sd21.TINY, 64, 4, False)
    unet = sd21.counted_component_tflop("tiny", 64)["unet"]
    assert one > 0 and four == pytest.approx(one + 3 * unet)


def test_unknown_arch_and_dtype_are_named():
    with pytest.raises(ValueError, match="arch: 'sdxl'"):
        sd21.get_spec("sdxl")
    with pytest.raises(ValueError, match="dtype: 'int8'"):
        sd21.torch_dtype("int8")


def test_tokenizer_pads_to_77_tokens_inside_the_vocabulary():
    tokenizer = sd21.build_tokenizer(49408)
    ids = tokenizer("an astronaut on a horse, 8k", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and max(ids) < 49408
    with pytest.raises(ValueError, match="vocab_size"):
        sd21.build_tokenizer(100)


def test_random_checkpoint_is_fp16_safetensors_the_server_loader_reads(tmp_path):
    from safetensors import safe_open

    from serving.model.loading import load_pipeline

    out = sd21.write_random_checkpoint(tmp_path / "ckpt", sd21.TINY, seed=3)
    assert json.loads((out / "random-checkpoint.json").read_text())["arch"] == "tiny"
    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        dtypes = {handle.get_tensor(key).dtype for key in handle.keys()}
    assert dtypes == {torch.float16}
    pipe = load_pipeline(str(out), "cpu", "float32")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert _params(pipe.unet) == _params(sd21.build_components(sd21.TINY, device="meta")["unet"])
    image = pipe("a cube", width=64, height=64, num_inference_steps=1, guidance_scale=0.0,
                 generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 64, 64, 3)
