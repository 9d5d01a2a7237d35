"""A tiny random-weight Stable Diffusion 2.x pipeline for demos and tests (no network, a few MB)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

#: Written next to model_index.json; serving.model.config reads it for request defaults.
SERVING_HINTS = {
    "default_width": 64,
    "default_height": 64,
    "default_steps": 2,
    "default_guidance_scale": 0.0,
}


def byte_alphabet() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _tiny_tokenizer():
    """A CLIP tokenizer over the byte alphabet (no merges): every prompt tokenizes, nothing is downloaded."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in byte_alphabet().values():
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    try:
        return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    except TypeError:
        # transformers 4.x (the Neuron image's set, constraints-neuron.txt) builds CLIP tokenizers from files only.
        with tempfile.TemporaryDirectory() as tmp:
            vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
            vocab_file.write_text(json.dumps(vocab))
            merges_file.write_text("#version: 0.2\n")
            return CLIPTokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file), model_max_length=77)


def write_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight SD 2.x pipeline in diffusers format to ``out_dir`` and return its path."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    torch.manual_seed(seed)
    # SD 2.x layout (linear projections, per-block head dims, cross-attention on CLIP hidden states), scaled down.
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 16, 16),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    # Trailing spacing is what few-step (SD-Turbo class) checkpoints ship with.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        timestep_spacing="trailing",
        prediction_type="epsilon",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "serving.json").write_text(json.dumps(SERVING_HINTS, indent=2) + "\n")
    return out


def write_tiny_taesd(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight AutoencoderTiny in TAESD's layout (4 latent channels, 8x downsampling), scaled down.

    It stands in for madebyollin/taesd in offline tests of --stream-vae: same classes, same config keys, same
    latent shape as the tiny pipeline's VAE.
    """
    import torch
    from diffusers import AutoencoderTiny

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vae = AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
        upsampling_scaling_factor=2,
        act_fn="relu",
        scaling_factor=1.0,
    )
    vae.save_pretrained(out, safe_serialization=True)
    return out
