"""Stable Diffusion 2.1 architecture, written out as numbers, for random-weight benchmarks (no download).

The component configs are the published `stabilityai/stable-diffusion-2-1` ones (unet/, vae/, text_encoder/
config.json: OpenCLIP ViT-H/14 text tower). `TINY` is the same layout scaled down for CPU smoke runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 96,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "only_cross_attention": False,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "dual_cross_attention": False,
    "use_linear_projection": True,
    "upcast_attention": True,
    "num_class_embeds": None,
}

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

# SD-Turbo's scheduler (trailing spacing) runs 1, 4 and 25 steps alike; its cost is negligible next to the UNet.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
    "steps_offset": 1,
}

# madebyollin/taesd (the tiny VAE for SD 1.x/2.x latents): diffusers' AutoencoderTiny defaults, spelled out.
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "encoder_block_out_channels": (64, 64, 64, 64),
    "decoder_block_out_channels": (64, 64, 64, 64),
    "act_fn": "relu",
    "latent_channels": 4,
    "upsampling_scaling_factor": 2,
    "num_encoder_blocks": (1, 3, 3, 3),
    "num_decoder_blocks": (3, 3, 3, 1),
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "scaling_factor": 1.0,
}

#: Parameter counts of the configs above (checked by tests on the meta device).
UNET_PARAMS = 865_910_724
VAE_PARAMS = 83_653_863
TEXT_ENCODER_PARAMS = 340_387_840

# Analytic FLOPs (multiply-add = 2 FLOPs) of the SD 2.1 components. The UNet, 512 VAE and text-encoder figures are
# the performance issue's; torch.utils.flop_counter on the meta device reproduces them to three decimals, and gave
# the 768 VAE figure (its mid-block attention is quadratic in pixels, so it is not a plain 2.25x of the 512 one).
UNET_TFLOP_PER_SAMPLE_STEP = {512: 0.804, 768: 2.149}
VAE_DECODE_TFLOP = {512: 2.515, 768: 5.754}
TEXT_ENCODER_TFLOP = 0.045


def generation_tflop(size: int, steps: int, cfg: bool) -> float:
    """Analytic TFLOP of one text-to-image generation at size x size.

    CFG doubles the UNet batch and encodes a second (negative) prompt.
    """
    if size not in UNET_TFLOP_PER_SAMPLE_STEP:
        raise ValueError(f"size: {size} has no analytic FLOP count; use one of {sorted(UNET_TFLOP_PER_SAMPLE_STEP)}")
    if steps < 1:
        raise ValueError(f"steps: {steps} must be >= 1")
    batch = 2 if cfg else 1
    unet = UNET_TFLOP_PER_SAMPLE_STEP[size] * batch * steps
    vae = VAE_DECODE_TFLOP[size]
    text = TEXT_ENCODER_TFLOP * batch
    return unet + vae + text


def torch_dtype(name: str) -> Any:
    import torch

    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"dtype: {name!r} is unknown; use one of {', '.join(dtypes)}")
    return dtypes[name]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: the real SD 2.1 sizes or the tiny smoke-test layout."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    tiny_vae: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SCHEDULER_CONFIG))


SD21 = ArchSpec("sd21", UNET_CONFIG, VAE_CONFIG, TEXT_ENCODER_CONFIG, TINY_VAE_CONFIG)

# Same block types, linear projections and head layout as SD 2.1, a few hundred thousand parameters in all.
TINY = ArchSpec(
    "tiny",
    unet={
        **UNET_CONFIG,
        "sample_size": 8,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 32,
        "attention_head_dim": (2, 4),
        "norm_num_groups": 16,
    },
    vae={
        **VAE_CONFIG,
        "block_out_channels": (16, 16, 16, 16),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 64,
    },
    text_encoder={
        **TEXT_ENCODER_CONFIG,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
    },
    tiny_vae={
        **TINY_VAE_CONFIG,
        "encoder_block_out_channels": (8, 8, 8, 8),
        "decoder_block_out_channels": (8, 8, 8, 8),
        "num_encoder_blocks": (1, 1, 1, 1),
        "num_decoder_blocks": (1, 1, 1, 1),
    },
)

SPECS = {spec.name: spec for spec in (SD21, TINY)}


def get_spec(name: str) -> ArchSpec:
    if name not in SPECS:
        raise ValueError(f"arch: {name!r} is unknown; use one of {', '.join(SPECS)}")
    return SPECS[name]


@lru_cache(maxsize=16)
def counted_component_tflop(spec_name: str, size: int) -> dict[str, float]:
    """TFLOP of each component at `size`, counted by torch.utils.flop_counter on the meta device (no memory,
    no compute): UNet per sample per step, VAE decode, text encoder per prompt."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_spec(spec_name)
    parts = build_components(spec, device="meta")
    latent = size // 8
    sample = torch.empty(1, spec.unet["in_channels"], latent, latent, device="meta")
    states = torch.empty(1, 77, spec.unet["cross_attention_dim"], device="meta")
    ids = torch.zeros(1, 77, dtype=torch.long, device="meta")
    calls = {
        "unet": lambda: parts["unet"](sample, torch.tensor(999, device="meta"), states),
        "vae_decode": lambda: parts["vae"].decode(sample),
        "text_encoder": lambda: parts["text_encoder"](ids),
    }
    counted = {}
    with torch.no_grad():
        for name, call in calls.items():
            with FlopCounterMode(display=False) as counter:
                call()
            counted[name] = counter.get_total_flops() / 1e12
    return counted


def counted_generation_tflop(spec: ArchSpec, size: int, steps: int, cfg: bool) -> float:
    """Like generation_tflop, from meta-device counts (any layout, any size)."""
    counted = counted_component_tflop(spec.name, size)
    batch = 2 if cfg else 1
    return counted["unet"] * batch * steps + counted["vae_decode"] + counted["text_encoder"] * batch


def build_tokenizer(vocab_size: int) -> Any:
    """A CLIP tokenizer over the byte alphabet (no merges). Prompts pad to 77 tokens exactly as with the real one,
    so the text encoder sees the same shapes; the embedding table keeps its full `vocab_size` rows."""
    from transformers import CLIPTokenizer

    from serving.model.tiny import byte_alphabet

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 2, "!": 1}
    for ch in byte_alphabet().values():
        for token in (ch, ch + "</w>"):
            if token not in vocab:
                vocab[token] = len(vocab)
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size: {vocab_size} is smaller than the {len(vocab)}-token byte alphabet")
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token="!")


def build_components(spec: ArchSpec, device: Any = "cpu", dtype: Any = None, seed: int = 0) -> dict[str, Any]:
    """Random-weight modules for `spec`, created directly on `device` (meta works: no memory, no init cost)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**spec.unet)
        vae = AutoencoderKL(**spec.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text_encoder))
    if dtype is not None:
        for module in (unet, vae, text_encoder):
            module.to(dtype=dtype)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder}


def build_pipeline(spec: ArchSpec | str, device: Any = "cpu", dtype: Any = None, seed: int = 0) -> Any:
    """A random-weight StableDiffusionPipeline with `spec`'s architecture on `device`."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    spec = get_spec(spec) if isinstance(spec, str) else spec
    parts = build_components(spec, device=device, dtype=dtype, seed=seed)
    pipe = StableDiffusionPipeline(
        **parts,
        tokenizer=build_tokenizer(spec.text_encoder["vocab_size"]),
        scheduler=EulerDiscreteScheduler(**spec.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_tiny_vae(spec: ArchSpec | str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight AutoencoderTiny (taesd layout) for `spec` to `out_dir`; returns the directory."""
    import torch
    from diffusers import AutoencoderTiny

    spec = get_spec(spec) if isinstance(spec, str) else spec
    torch.manual_seed(seed)
    out = Path(out_dir)
    AutoencoderTiny(**spec.tiny_vae).save_pretrained(out, safe_serialization=True)
    return out


def write_random_checkpoint(out_dir: str | Path, spec: ArchSpec | str = SD21, seed: int = 0,
                            device: str = "cpu") -> Path:
    """Write a random-weight fp16 diffusers checkpoint with `spec`'s exact tensor shapes.

    Modules are built on the meta device and each tensor is drawn straight into fp16, so even the full SD 2.1
    (about 2.6 GB) writes without ever materialising an fp32 copy. `device` is where the numbers are drawn: on a
    GPU the 1.3 billion draws take milliseconds instead of the CPU's tens of seconds (a different stream of
    numbers for the same seed, equally random).
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from safetensors.torch import save_file

    spec = get_spec(spec) if isinstance(spec, str) else spec
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = build_components(spec, device="meta")
    generator = torch.Generator(device).manual_seed(seed)
    weight_files = {
        "unet": "diffusion_pytorch_model.safetensors",
        "vae": "diffusion_pytorch_model.safetensors",
        "text_encoder": "model.safetensors",
    }
    for name, module in parts.items():
        directory = out / name
        directory.mkdir(exist_ok=True)
        if name == "text_encoder":
            module.config.torch_dtype = torch.float16
            module.config.save_pretrained(directory)
        else:
            module.save_config(directory)
        tensors = {
            key: (torch.randn(value.shape, generator=generator, device=device) * 0.02).to(torch.float16).cpu()
            for key, value in module.state_dict().items()
        }
        save_file(tensors, str(directory / weight_files[name]), metadata={"format": "pt"})
        del tensors
    tokenizer = build_tokenizer(spec.text_encoder["vocab_size"])
    tokenizer.save_pretrained(out / "tokenizer")
    scheduler = EulerDiscreteScheduler(**spec.scheduler)
    scheduler.save_pretrained(out / "scheduler")
    pipe = StableDiffusionPipeline(
        **parts, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_config(out)
    (out / "random-checkpoint.json").write_text(json.dumps({"arch": spec.name, "seed": seed, "dtype": "float16"}) + "\n")
    return out
