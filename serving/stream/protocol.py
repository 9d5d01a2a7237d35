"""The frame stream's wire protocol shared by its transports: the config message and the media types."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

MEDIA = {"jpeg": "image/jpeg", "webp": "image/webp", "png": "image/png"}
# Frames up to this many pixels (or input bytes) are decoded and encoded on the event loop: for them a thread hop
# costs more than the work (a 256x256 JPEG decodes in ~0.3 ms).
INLINE_PIXELS = 256 * 256
INLINE_BYTES = 64 * 1024
# Prepared configs kept per stream (switching back and forth between a few prompts stays cheap).
PREPARED_PER_STREAM = 4


class ConfigMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Optional[Literal["config"]] = None
    prompt: str = Field(min_length=1)
    negative_prompt: Optional[str] = None
    strength: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False)
    num_inference_steps: Optional[int] = Field(None, ge=1)
    guidance_scale: Optional[float] = Field(None, ge=0, le=20, allow_inf_nan=False)
    seed: Optional[int] = Field(None, ge=0, le=2**32 - 1)
    output_format: Literal["jpeg", "webp", "png"] = "jpeg"
