"""Image-to-image: input images (decode, bounds, resize), the strength rule, and the img2img twin pipeline.

The twin is built with ``from_pipe``: it holds references to the text-to-image pipeline's modules, so both modes
serve from one copy of the weights.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import threading
from typing import Any

from serving.core.errors import InvalidRequest

#: Pillow format names accepted as input, and how errors name them.
INPUT_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
DEFAULT_STRENGTH = 0.8
_twins_lock = threading.Lock()


def check_strength(steps: int, strength: float, param: str = "strength") -> None:
    """diffusers runs int(steps x strength) denoising steps; zero would be an empty schedule (and a crash)."""
    if not 0 < strength <= 1:
        raise InvalidRequest(f"{param}: must be within (0, 1], got {strength:g}", param=param)
    if int(steps * strength) < 1:
        raise InvalidRequest(
            f"{param}: num_inference_steps x strength must be >= 1 so at least one denoising step runs "
            f"(got {steps} x {strength:g}); raise strength to >= {1 / steps:.3g} or use more steps",
            param=param,
        )


def decode_image(data: bytes, param: str, min_size: int, max_size: int, width: int | None = None,
                 height: int | None = None):
    """An RGB PIL image from PNG, JPEG or WebP bytes, within the size bounds, resized to width/height when given.

    The size is read from the header before any pixel is decoded, so a small file that claims a huge image costs
    nothing. A side that is not overridden must be a multiple of 8 (the VAE downsamples by 8).
    """
    from PIL import Image

    image = open_image(data, param, min_size, max_size, width, height)
    src_w, src_h = image.size
    try:
        image = image.convert("RGB")
    except (OSError, ValueError, SyntaxError):
        raise InvalidRequest(f"{param}: the image data is truncated or corrupt", param=param) from None
    target = (width or src_w, height or src_h)
    if image.size != target:
        image = image.resize(target, Image.Resampling.BICUBIC)
    return image


def open_image(data: bytes, param: str, min_size: int, max_size: int, width: int | None = None,
               height: int | None = None):
    """decode_image's checks on the header alone: the opened, not yet decoded, PIL image (format, size)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # Pillow refuses headers claiming hundreds of megapixels before our own bound check could.
        raise InvalidRequest(f"{param}: the image is far larger than this server's bounds ({min_size}..{max_size} "
                             "per side)", param=param) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequest(f"{param}: not a decodable PNG, JPEG or WebP image", param=param) from None
    if image.format not in INPUT_FORMATS:
        raise InvalidRequest(f"{param}: {image.format} images are not accepted; send PNG, JPEG or WebP", param=param)
    src_w, src_h = image.size
    if not (min_size <= src_w <= max_size and min_size <= src_h <= max_size):
        raise InvalidRequest(
            f"{param}: {src_w}x{src_h} is outside this server's bounds: each side within {min_size}..{max_size}",
            param=param,
        )
    if (width is None and src_w % 8) or (height is None and src_h % 8):
        raise InvalidRequest(f"{param}: {src_w}x{src_h}: both sides must be multiples of 8 (or give width and height "
                             "to resize it)", param=param)
    return image


def decode_base64_image(text: str, param: str, min_size: int, max_size: int, width: int | None = None,
                        height: int | None = None):
    # A data: URL prefix is what browsers' FileReader produces; accept it rather than make every client strip it.
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param}: not valid base64", param=param) from None
    return decode_image(data, param, min_size, max_size, width, height)


def default_strength(steps: int) -> float:
    """diffusers' 0.8, except for 1-step models where only 1.0 leaves a denoising step."""
    return DEFAULT_STRENGTH if int(steps * DEFAULT_STRENGTH) >= 1 else 1.0


async def with_init_image(params, image: str | bytes | None, strength: float | None, settings, width: int | None,
                          height: int | None, param: str = "image"):
    """``params`` turned into an image-to-image request when ``image`` (base64 text or raw bytes) is given.

    The image is decoded off the event loop; its size becomes the output size.
    """
    if image is None:
        if strength is not None:
            raise InvalidRequest("strength: applies only to image-to-image; send image as well", param="strength")
        return params
    if strength is not None:
        check_strength(params.steps, strength)
    strength = default_strength(params.steps) if strength is None else strength
    decode = decode_base64_image if isinstance(image, str) else decode_image
    decoded = await asyncio.to_thread(decode, image, param, settings.min_image_size, settings.max_image_size, width,
                                      height)
    return dataclasses.replace(params, image=decoded, strength=strength, width=decoded.width, height=decoded.height)


def img2img_twin(pipe: Any) -> Any:
    """The image-to-image pipeline sharing ``pipe``'s modules and scheduler (cached on the pipeline object).

    Sharing the scheduler is safe: the backend hands each pipeline object to one generation at a time.
    """
    twin = getattr(pipe, "_edge_img2img", None)
    if twin is None:
        with _twins_lock:
            twin = getattr(pipe, "_edge_img2img", None)
            if twin is None:
                from diffusers import AutoPipelineForImage2Image

                twin = AutoPipelineForImage2Image.from_pipe(pipe)
                twin.set_progress_bar_config(disable=True)
                pipe._edge_img2img = twin
    return twin
